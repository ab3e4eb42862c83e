//! The report of a `--load` run: one JSON object (`--json`) or a short
//! text, from the run's settings and its merged tallies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kms_activation::HResult;
use serde::Serialize;

use crate::fleet::Fleet;
use crate::tally::{ErrorKind, ProductTally, Tally};

/// What the run was asked to do.
#[derive(Debug)]
pub(crate) struct RunSettings {
    pub(crate) target: String,
    pub(crate) keepalive: bool,
    pub(crate) concurrency: u32,
    pub(crate) seed: u64,
    pub(crate) rate: Option<f64>,
    pub(crate) timeout: Duration,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    target: String,
    /// `new-connection` (one TCP connection per activation) or `keepalive`.
    mode: &'static str,
    concurrency: u32,
    clients: u64,
    seed: u64,
    /// The paced rate asked for (activations/s), `null` for as fast as
    /// possible.
    rate: Option<f64>,
    timeout_seconds: f64,
    elapsed_seconds: f64,
    /// Activations sent: answered plus errors.
    sent: u64,
    /// Answered by the host: a verified response or a refusal.
    answered: u64,
    /// Verified responses (`S_OK`).
    activations: u64,
    activations_per_second: f64,
    answered_per_second: f64,
    /// Of the answered activations, from when each was due; `null` when
    /// nothing was answered.
    latency_ms: Option<Latency>,
    /// Answers by HRESULT (`0x00000000` for a verified response).
    outcomes: BTreeMap<String, Outcome>,
    /// Verified responses whose count was below the request's N policy
    /// (the client would show 0xC004F038).
    below_threshold: u64,
    /// Activations without an answer, by kind (every kind listed, in
    /// this order).
    errors: serde_json::Map<String, serde_json::Value>,
    /// The first message of each kind that occurred.
    error_examples: serde_json::Map<String, serde_json::Value>,
    /// Keep-alive connections the host closed, opened again.
    reconnects: u64,
    products: Vec<ProductReport>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
struct Outcome {
    /// The symbolic name (`S_OK`, `SL_E_…`), `null` for a code the catalog
    /// does not know.
    name: Option<&'static str>,
    count: u64,
}

#[derive(Debug, Serialize)]
struct ProductReport {
    name: &'static str,
    sku_id: String,
    protocol: String,
    weight: u32,
    sent: u64,
    outcomes: BTreeMap<String, Outcome>,
    below_threshold: u64,
    errors: u64,
    /// The count of the last response and the lowest and highest seen;
    /// `null` when no response came.
    host_count: Option<HostCount>,
}

#[derive(Debug, Serialize)]
struct HostCount {
    last: u32,
    min: u32,
    max: u32,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "microseconds and counts far below 2^52"
)]
fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a rate shown to one decimal: counts far below 2^52"
)]
fn per_second(n: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (n as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn outcomes(tally: &BTreeMap<HResult, u64>) -> BTreeMap<String, Outcome> {
    tally
        .iter()
        .map(|(code, &count)| {
            (
                format!("{code:#}"),
                Outcome {
                    name: code.name(),
                    count,
                },
            )
        })
        .collect()
}

impl Report {
    pub(crate) fn new(
        settings: &RunSettings,
        fleet: &Fleet,
        tally: &Tally,
        elapsed: Duration,
    ) -> Self {
        let all_outcomes = tally.outcomes();
        let activations = all_outcomes.get(&HResult::S_OK).copied().unwrap_or(0);
        let answered = all_outcomes.values().sum();
        let h = &tally.latency;
        let latency = (!h.is_empty()).then(|| Latency {
            p50: millis(h.value_at_quantile(0.5)),
            p90: millis(h.value_at_quantile(0.9)),
            p99: millis(h.value_at_quantile(0.99)),
            max: millis(h.max()),
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a mean of positive microseconds"
            )]
            mean: millis(h.mean().round() as u64),
        });
        let products = fleet
            .mix()
            .iter()
            .zip(&tally.products)
            .map(|(entry, p): (_, &ProductTally)| ProductReport {
                name: entry.product.sku().name(),
                sku_id: entry.product.sku().id().to_string(),
                protocol: entry.product.version().to_string(),
                weight: entry.weight,
                sent: p.sent,
                outcomes: outcomes(&p.outcomes),
                below_threshold: p.below_threshold,
                errors: p.errors,
                host_count: p.host_count.map(|c| HostCount {
                    last: c.last,
                    min: c.min,
                    max: c.max,
                }),
            })
            .collect();
        Self {
            target: settings.target.clone(),
            mode: if settings.keepalive {
                "keepalive"
            } else {
                "new-connection"
            },
            concurrency: settings.concurrency,
            clients: fleet.clients(),
            seed: settings.seed,
            rate: settings.rate,
            timeout_seconds: settings.timeout.as_secs_f64(),
            elapsed_seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            sent: tally.sent(),
            answered,
            activations,
            activations_per_second: per_second(activations, elapsed),
            answered_per_second: per_second(answered, elapsed),
            latency_ms: latency,
            outcomes: outcomes(&all_outcomes),
            below_threshold: tally.products.iter().map(|p| p.below_threshold).sum(),
            errors: ErrorKind::ALL
                .iter()
                .zip(tally.errors)
                .map(|(kind, n)| (kind.name().to_owned(), n.into()))
                .collect(),
            error_examples: ErrorKind::ALL
                .iter()
                .zip(&tally.error_examples)
                .filter_map(|(kind, e)| Some((kind.name().to_owned(), e.clone()?.into())))
                .collect(),
            reconnects: tally.reconnects,
            products,
        }
    }

    /// The report as one line of JSON.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The report as text for a person.
    pub(crate) fn text(&self) -> String {
        let mut text = format!(
            "{}: {} workers, {}, {} clients (seed {}), {}\n",
            self.target,
            self.concurrency,
            if self.mode == "keepalive" {
                "keep-alive connections"
            } else {
                "a new connection per activation"
            },
            self.clients,
            self.seed,
            self.rate.map_or_else(
                || "as fast as possible".to_owned(),
                |r| format!("paced at {r}/s")
            ),
        );
        let _ = writeln!(
            text,
            "  {} sent in {:.3} s: {} activations ({}/s), {} answered ({}/s)",
            self.sent,
            self.elapsed_seconds,
            self.activations,
            self.activations_per_second,
            self.answered,
            self.answered_per_second
        );
        if let Some(l) = &self.latency_ms {
            let _ = writeln!(
                text,
                "  latency ms: p50 {}  p90 {}  p99 {}  max {}  mean {}",
                l.p50, l.p90, l.p99, l.max, l.mean
            );
        }
        let _ = writeln!(text, "  outcomes:");
        for (code, outcome) in &self.outcomes {
            let _ = writeln!(
                text,
                "    {code} {:<44} {:>10}",
                outcome.name.unwrap_or("-"),
                outcome.count
            );
        }
        if self.below_threshold > 0 {
            let _ = writeln!(
                text,
                "    ({} responses below the client's threshold: 0xC004F038 on the client)",
                self.below_threshold
            );
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let _ = writeln!(text, "  errors: {}", errors.join(", "));
        for (kind, example) in &self.error_examples {
            let example = example.as_str().unwrap_or_default();
            let _ = writeln!(text, "    first {kind} error: {example}");
        }
        if self.reconnects > 0 {
            let _ = writeln!(text, "  reconnects: {}", self.reconnects);
        }
        for p in &self.products {
            let _ = write!(
                text,
                "  {} (protocol {}, weight {}): {} sent",
                p.name, p.protocol, p.weight, p.sent
            );
            for (code, outcome) in &p.outcomes {
                let _ = write!(text, ", {} {}", outcome.name.unwrap_or(code), outcome.count);
            }
            if p.errors > 0 {
                let _ = write!(text, ", {} errors", p.errors);
            }
            if let Some(c) = &p.host_count {
                let _ = write!(
                    text,
                    "; host count last {}, min {}, max {}",
                    c.last, c.min, c.max
                );
            }
            text.push('\n');
        }
        text
    }
}
