//! What a `--load` run counts, in memory that does not grow with the run:
//! a latency histogram, outcomes by HRESULT and errors by kind, per
//! product of the mix, and the count the host reported.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kms_activation::HResult;

/// Latencies are kept in microseconds, from 1 µs to an hour (a longer one
/// is recorded as an hour), to three significant digits.
const LATENCY_MAX_MICROS: u64 = 3_600_000_000;

/// Why an activation got no answer from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No connection: refused, unreachable, or not accepted within the
    /// timeout.
    Connect,
    /// Connected, but no answer within the timeout.
    Timeout,
    /// A reply that failed the client engine's checks (decryption, hash or
    /// HMAC, the response not matching the request, bad DCE/RPC).
    Protocol,
    /// The host closed (or reset) the connection before answering.
    Closed,
    /// Another socket error.
    Io,
}

impl ErrorKind {
    /// Every kind, in the order reports list them.
    pub(crate) const ALL: [Self; 5] = [
        Self::Connect,
        Self::Timeout,
        Self::Protocol,
        Self::Closed,
        Self::Io,
    ];

    /// The kind's name in reports.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Closed => "closed",
            Self::Io => "io",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// What the host answered to one activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A verified response with the host's count; the client's N policy
    /// says whether the count is enough for it to activate.
    Response { count: u32, n_policy: u32 },
    /// A refusal with this HRESULT.
    Refused(HResult),
}

/// The counts one product's responses carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostCount {
    /// The count of the response that arrived last.
    pub(crate) last: u32,
    last_at: Instant,
    pub(crate) min: u32,
    pub(crate) max: u32,
}

impl HostCount {
    fn merge(self, other: Self) -> Self {
        let (last, last_at) = if other.last_at > self.last_at {
            (other.last, other.last_at)
        } else {
            (self.last, self.last_at)
        };
        Self {
            last,
            last_at,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }
}

/// One product's tallies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProductTally {
    /// Activations sent (answered or failed).
    pub(crate) sent: u64,
    /// Answers by HRESULT (`S_OK` for a verified response).
    pub(crate) outcomes: BTreeMap<HResult, u64>,
    /// Verified responses whose count is below the request's N policy (the
    /// client would show 0xC004F038 and retry).
    pub(crate) below_threshold: u64,
    /// Activations that got no answer.
    pub(crate) errors: u64,
    pub(crate) host_count: Option<HostCount>,
}

impl ProductTally {
    fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        for (code, n) in &other.outcomes {
            *self.outcomes.entry(*code).or_default() += n;
        }
        self.below_threshold += other.below_threshold;
        self.errors += other.errors;
        self.host_count = match (self.host_count, other.host_count) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A run's tallies (or one shard's, merged at the end).
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    /// Latencies of the answered activations, in microseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) products: Vec<ProductTally>,
    pub(crate) errors: [u64; ErrorKind::ALL.len()],
    /// The first message seen of each error kind.
    pub(crate) error_examples: [Option<String>; ErrorKind::ALL.len()],
    /// Keep-alive connections the host closed between requests, opened
    /// again and the request resent.
    pub(crate) reconnects: u64,
}

impl Tally {
    /// Empty tallies for a mix of `products`.
    pub(crate) fn new(products: usize) -> Result<Self, String> {
        let latency = Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
            .map_err(|e| format!("latency histogram: {e}"))?;
        Ok(Self {
            latency,
            products: vec![ProductTally::default(); products],
            errors: [0; ErrorKind::ALL.len()],
            error_examples: Default::default(),
            reconnects: 0,
        })
    }

    /// Product `product` was answered `answer`, `latency` after the
    /// activation was due, at `at`.
    pub(crate) fn answered(
        &mut self,
        product: usize,
        answer: Answer,
        latency: Duration,
        at: Instant,
    ) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
        let Some(tally) = self.products.get_mut(product) else {
            return;
        };
        tally.sent += 1;
        let code = match answer {
            Answer::Response { count, n_policy } => {
                tally.below_threshold += u64::from(count < n_policy);
                let seen = HostCount {
                    last: count,
                    last_at: at,
                    min: count,
                    max: count,
                };
                tally.host_count = Some(tally.host_count.map_or(seen, |h| h.merge(seen)));
                HResult::S_OK
            }
            Answer::Refused(code) => code,
        };
        *tally.outcomes.entry(code).or_default() += 1;
    }

    /// Product `product`'s activation got no answer: `kind`, with the
    /// message `describe` gives (kept for the first of each kind).
    pub(crate) fn failed(
        &mut self,
        product: usize,
        kind: ErrorKind,
        describe: impl FnOnce() -> String,
    ) {
        if let Some(tally) = self.products.get_mut(product) {
            tally.sent += 1;
            tally.errors += 1;
        }
        if let Some(n) = self.errors.get_mut(kind.index()) {
            *n += 1;
        }
        if let Some(example @ None) = self.error_examples.get_mut(kind.index()) {
            *example = Some(describe());
        }
    }

    /// A keep-alive connection was opened again.
    pub(crate) const fn reconnected(&mut self) {
        self.reconnects += 1;
    }

    /// Adds `other`'s tallies to these.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (mine, theirs) in self.products.iter_mut().zip(&other.products) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (mine, theirs) in self.error_examples.iter_mut().zip(&other.error_examples) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self.reconnects += other.reconnects;
    }

    /// Activations sent, answered or not.
    pub(crate) fn sent(&self) -> u64 {
        self.products.iter().map(|p| p.sent).sum()
    }

    /// Errors of every kind.
    pub(crate) fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Answers by HRESULT over the whole mix.
    pub(crate) fn outcomes(&self) -> BTreeMap<HResult, u64> {
        let mut all = BTreeMap::new();
        for product in &self.products {
            for (code, n) in &product.outcomes {
                *all.entry(*code).or_default() += n;
            }
        }
        all
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "a test reads the monotonic clock"
)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_the_sums_and_the_latest_count() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let mut a = Tally::new(2).unwrap();
        let mut b = Tally::new(2).unwrap();
        let ms = Duration::from_millis;
        a.answered(
            0,
            Answer::Response {
                count: 30,
                n_policy: 25,
            },
            ms(2),
            later,
        );
        a.answered(
            0,
            Answer::Response {
                count: 3,
                n_policy: 25,
            },
            ms(1),
            t0,
        );
        b.answered(1, Answer::Refused(HResult::KMS_ID_MISMATCH), ms(4), t0);
        b.answered(
            0,
            Answer::Response {
                count: 10,
                n_policy: 25,
            },
            ms(8),
            t0,
        );
        b.failed(1, ErrorKind::Closed, || "first".into());
        b.failed(1, ErrorKind::Closed, || "second".into());
        a.merge(&b);

        assert_eq!(a.sent(), 6);
        assert_eq!(a.error_total(), 2);
        assert_eq!(a.errors[ErrorKind::Closed.index()], 2);
        assert_eq!(
            a.error_examples[ErrorKind::Closed.index()].as_deref(),
            Some("first")
        );
        let product = &a.products[0];
        assert_eq!(product.outcomes[&HResult::S_OK], 3);
        assert_eq!(product.below_threshold, 2);
        let count = product.host_count.unwrap();
        assert_eq!((count.last, count.min, count.max), (30, 3, 30));
        assert_eq!(a.products[1].sent, 3);
        assert_eq!(a.products[1].errors, 2);
        assert_eq!(
            a.outcomes().into_iter().collect::<Vec<_>>(),
            [(HResult::S_OK, 3), (HResult::KMS_ID_MISMATCH, 1)]
        );
        assert_eq!(a.latency.len(), 4);
        assert_eq!(a.latency.max(), a.latency.highest_equivalent(8000));
    }
}
