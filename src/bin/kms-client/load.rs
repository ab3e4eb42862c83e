//! `kms-client --load`: many clients at one KMS host, through the crate's
//! tokio client, every response verified by the client engine.
//!
//! `-c N` workers (tokio tasks on the multi-thread runtime) take numbered
//! activations (tickets) from one counter until `--count` or `--duration`
//! ends the run. Ticket `i` is sent by client `i mod --clients`
//! ([`Fleet`]); with `--rate R` it is due at `start + i / R` and its
//! latency is measured from then, not from when a worker got round to it,
//! so a host that falls behind shows it in the percentiles (no coordinated
//! omission). Without `--rate` the workers go as fast as the host answers.
//!
//! Each worker opens a new TCP connection per activation (bind, request,
//! close, as Windows does), or with `--keepalive` keeps one open and sends
//! request after request on it; a kept connection the host closed between
//! requests (idle timeout, its per-connection cap) is opened again and the
//! request sent once more, counted under `reconnects`.
//!
//! The tallies are sharded, one lock per few workers, and hold a histogram
//! rather than samples, so memory is the same for a second or a day. A
//! long run says how far it got on stderr every ten seconds.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kms_activation::client::{ClientConfig, ClientError, KmsHostName};
use kms_activation::message::RequestBody;
use kms_activation::transport::tokio::Client;
use kms_activation::transport::{Error as TransportError, Outcome};
use kms_activation::{FileTime, HResult};
use tokio::sync::watch;

use crate::fleet::{Fleet, MixEntry, parse_mix};
use crate::report::{Report, RunSettings};
use crate::tally::{Answer, ErrorKind, Tally};
use crate::{Args, EXIT_TIMEOUT, monotonic_clock, resolve_product, wall_clock};

/// How long a run lasts when neither `--count` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// The options of `--load` (each needs it).
#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Load mode: activate many clients at HOST[:PORT] and report
    /// activations/s, latency percentiles, outcomes by HRESULT and errors
    /// by kind (see "Load" below).
    #[arg(
        long,
        conflicts_with_all = ["charge", "requests", "print_srv", "workstation", "random_order", "no_host_caching", "dns_server"]
    )]
    pub(crate) load: bool,
    /// --load: concurrent workers, each with at most one connection open.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 16, requires = "load",
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    concurrency: u32,
    /// --load: distinct clients (CMIDs and workstation names) drawn from
    /// --seed; activation i is sent by client i mod N, so runs of the same
    /// seed renew the same machines [default: one per worker, -c].
    #[arg(long, value_name = "N", requires = "load",
          value_parser = clap::value_parser!(u64).range(1..))]
    clients: Option<u64>,
    /// --load: the seed the clients are drawn from.
    #[arg(long, value_name = "S", default_value_t = 0, requires = "load")]
    seed: u64,
    /// --load: products and weights, NAME=WEIGHT,… (a name, SKU ID or GVLK
    /// as --product takes; weight 1 when left out); client k requests the
    /// product at position k mod (sum of weights) of the weighted list
    /// [default: --product alone].
    #[arg(
        long,
        value_name = "NAME=W,…",
        requires = "load",
        conflicts_with = "product"
    )]
    mix: Option<String>,
    /// --load: keep one connection per worker and send request after
    /// request on it [default: a new connection per activation, as Windows].
    #[arg(long, requires = "load")]
    keepalive: bool,
    /// --load: activations per second over all workers, paced; latency is
    /// measured from when each activation was due [default: as fast as the
    /// host answers].
    #[arg(long, value_name = "R", requires = "load", value_parser = positive_rate)]
    rate: Option<f64>,
    /// --load: stop after this long (e.g. 30, 30s, 500ms, 5m) [default: 10s
    /// when --count is not given].
    #[arg(long, value_name = "D", requires = "load", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// --load: stop after this many activations (with --duration too,
    /// whichever comes first).
    #[arg(long, value_name = "N", requires = "load",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// A rate: a positive, finite number of activations per second.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("not a positive number of activations per second".into()),
    }
}

/// A duration: seconds, or a number with `ms`, `s`, `m` or `h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "not a positive duration, e.g. 30, 30s, 500ms or 5m".into())
}

/// Why one activation got no answer, and what happened.
type Failure = (ErrorKind, String);

/// What every worker shares.
struct Run {
    fleet: Fleet,
    address: SocketAddr,
    config: ClientConfig,
    timeout: Duration,
    keepalive: bool,
    /// The time between two due activations, with `--rate`.
    interval: Option<f64>,
    count: Option<u64>,
    start: Instant,
    end: Option<Instant>,
    next: AtomicU64,
    shards: Vec<Mutex<Tally>>,
}

impl Run {
    /// The next activation and when it is due, unless the run is over.
    fn take(&self) -> Option<(u64, Instant)> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        if self.count.is_some_and(|count| ticket >= count) {
            return None;
        }
        let due = match self.interval {
            #[expect(clippy::cast_precision_loss, reason = "ticket numbers far below 2^52")]
            Some(interval) => self
                .start
                .checked_add(Duration::try_from_secs_f64(ticket as f64 * interval).ok()?)?,
            None => monotonic_clock(),
        };
        if self.end.is_some_and(|end| due >= end) {
            return None;
        }
        Some((ticket, due))
    }

    async fn connect(&self) -> Result<Client, Failure> {
        Client::connect(self.address, &self.config, self.timeout)
            .await
            .map_err(|e| {
                let why = match e {
                    TransportError::Timeout => {
                        format!("not accepted within {} s", self.timeout.as_secs_f64())
                    }
                    e => e.to_string(),
                };
                (
                    ErrorKind::Connect,
                    format!("connect {}: {why}", self.address),
                )
            })
    }

    /// One activation on a connection of its own.
    async fn on_new_connection(&self, request: RequestBody) -> Result<Outcome, Failure> {
        let mut client = self.connect().await?;
        client
            .activate(request)
            .await
            .map_err(|e| self.exchange_failure(e))
    }

    /// One activation on the worker's kept connection (opened when there
    /// is none); once more on a new one when the host had closed it.
    async fn on_kept_connection(
        &self,
        kept: &mut Option<Client>,
        request: RequestBody,
        shard: &Mutex<Tally>,
    ) -> Result<Outcome, Failure> {
        let resend = kept.is_some().then(|| request.clone());
        let client = match kept {
            Some(client) => client,
            None => kept.insert(self.connect().await?),
        };
        match client.activate(request).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                *kept = None;
                let failure = self.exchange_failure(e);
                match resend {
                    Some(request) if failure.0 == ErrorKind::Closed => {
                        lock(shard).reconnected();
                        let client = kept.insert(self.connect().await?);
                        let outcome = client.activate(request).await;
                        outcome.map_err(|e| {
                            *kept = None;
                            self.exchange_failure(e)
                        })
                    }
                    _ => Err(failure),
                }
            }
        }
    }

    fn exchange_failure(&self, e: TransportError) -> Failure {
        use std::io::ErrorKind as Io;
        match e {
            TransportError::Timeout => (
                ErrorKind::Timeout,
                format!("no answer within {} s", self.timeout.as_secs_f64()),
            ),
            TransportError::Closed => (
                ErrorKind::Closed,
                "the host closed the connection before answering".into(),
            ),
            TransportError::Io(e)
                if matches!(
                    e.kind(),
                    Io::ConnectionReset
                        | Io::ConnectionAborted
                        | Io::BrokenPipe
                        | Io::UnexpectedEof
                ) =>
            {
                (ErrorKind::Closed, format!("the connection broke: {e}"))
            }
            TransportError::Client(e @ ClientError::Encode(_)) => {
                (ErrorKind::Protocol, format!("cannot send the request: {e}"))
            }
            TransportError::Client(e) => (ErrorKind::Protocol, format!("bad reply: {e}")),
            TransportError::NoAddress => (ErrorKind::Connect, e.to_string()),
            e => (ErrorKind::Io, e.to_string()),
        }
    }
}

fn lock(shard: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One worker: activations until the run is over or `stop` is set.
async fn worker(run: Arc<Run>, id: usize, mut stop: watch::Receiver<bool>) {
    let Some(shard) = run.shards.get(id % run.shards.len().max(1)) else {
        return;
    };
    let mut kept = None;
    while !*stop.borrow() {
        let Some((ticket, due)) = run.take() else {
            break;
        };
        if run.interval.is_some() {
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        let client = run.fleet.client_of(ticket);
        let now = FileTime::try_from(wall_clock())
            .unwrap_or_default()
            .truncated_to_seconds();
        let Some((product, request)) = run.fleet.request(client, now) else {
            break;
        };
        let n_policy = request.n_policy;
        let result = if run.keepalive {
            run.on_kept_connection(&mut kept, request, shard).await
        } else {
            run.on_new_connection(request).await
        };
        let done = monotonic_clock();
        let answer = match result {
            Ok(Outcome::Answered(response)) => Ok(Answer::Response {
                count: response.body.count,
                n_policy,
            }),
            Ok(Outcome::Refused(code)) => Ok(Answer::Refused(code)),
            Ok(other) => Err((ErrorKind::Protocol, format!("unexpected outcome {other:?}"))),
            Err(failure) => Err(failure),
        };
        let mut tally = lock(shard);
        match answer {
            Ok(answer) => {
                tally.answered(product, answer, done.saturating_duration_since(due), done);
            }
            Err((kind, why)) => tally.failed(product, kind, || why),
        }
    }
}

/// How often a long run says how far it got, on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Every [`PROGRESS_EVERY`], a line on stderr with the tallies so far.
async fn progress(run: Arc<Run>) {
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (mut sent, mut errors) = (0, 0);
        for shard in &run.shards {
            let tally = lock(shard);
            sent += tally.sent();
            errors += tally.error_total();
        }
        eprintln!(
            "kms-client: {:.0} s: {sent} sent, {errors} without an answer",
            run.start.elapsed().as_secs_f64()
        );
    }
}

/// Raises the soft limit of open files to the hard one, so that each
/// worker can hold its connection; says so when it stays too low.
fn raise_descriptor_limit(concurrency: u32) {
    #[cfg(unix)]
    {
        let needed = u64::from(concurrency) + 64;
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) if limit < needed => eprintln!(
                "kms-client: warning: {limit} open files allowed, fewer than {concurrency} workers need"
            ),
            Ok(_) => {}
            Err(e) => eprintln!("kms-client: warning: cannot raise the open-file limit: {e}"),
        }
    }
    #[cfg(not(unix))]
    let _ = concurrency;
}

/// The host to load: the first address `target` resolves to.
fn address(target: &str) -> Result<SocketAddr, String> {
    if target.starts_with('.') {
        return Err("--load needs HOST[:PORT], not SRV discovery".into());
    }
    let host =
        KmsHostName::parse(target).ok_or_else(|| format!("{target:?} is not HOST[:PORT]"))?;
    (host.host.as_str(), host.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", host.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", host.host))
}

/// The host and the clients the arguments name.
fn plan(args: &Args) -> Result<(SocketAddr, Fleet), String> {
    let load = &args.load;
    let address = address(&args.target)?;
    let resolve = |name: &str| resolve_product(name, args.protocol);
    let mix = match &load.mix {
        Some(text) => parse_mix(text, resolve)?,
        None => vec![MixEntry {
            product: resolve(&args.product)?,
            weight: 1,
        }],
    };
    let clients = load.clients.unwrap_or(u64::from(load.concurrency));
    Ok((address, Fleet::new(load.seed, clients, mix, wall_clock())))
}

/// Runs the workers on a multi-thread runtime until the run is over or
/// Ctrl-C; returns how long they took, with their merged tallies.
fn drive(run: &Arc<Run>, concurrency: usize) -> Result<(Duration, Tally), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let elapsed = runtime.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let interrupt = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("kms-client: interrupted; finishing the activations in flight");
                let _ = stop.send(true);
            }
        });
        let progress = tokio::spawn(progress(Arc::clone(run)));
        let workers: Vec<_> = (0..concurrency)
            .map(|id| tokio::spawn(worker(Arc::clone(run), id, stopped.clone())))
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        interrupt.abort();
        progress.abort();
        run.start.elapsed()
    });
    let mut tally = Tally::new(run.fleet.mix().len())?;
    for shard in &run.shards {
        tally.merge(&lock(shard));
    }
    Ok((elapsed, tally))
}

/// Runs `kms-client --load` and returns its exit status.
pub(crate) fn run(args: &Args) -> ExitCode {
    let load = &args.load;
    let (address, fleet) = match plan(args) {
        Ok(planned) => planned,
        Err(e) => {
            eprintln!("kms-client: {e}");
            return ExitCode::from(2);
        }
    };
    for entry in fleet.mix() {
        eprintln!(
            "kms-client: {} ({}), KMS ID {}, protocol {}, weight {}",
            entry.product.sku().name(),
            entry.product.sku().id(),
            entry.product.kms_item().id(),
            entry.product.version(),
            entry.weight
        );
    }
    let settings = RunSettings {
        target: address.to_string(),
        keepalive: load.keepalive,
        concurrency: load.concurrency,
        seed: load.seed,
        rate: load.rate,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let duration = match (load.count, load.duration) {
        (None, None) => Some(DEFAULT_DURATION),
        (_, duration) => duration,
    };
    eprintln!(
        "kms-client: --load {address}: {} workers, {} clients (seed {}), {}",
        load.concurrency,
        fleet.clients(),
        load.seed,
        match (load.count, duration) {
            (Some(count), Some(d)) => format!("{count} activations or {d:?}"),
            (Some(count), None) => format!("{count} activations"),
            (None, Some(d)) => format!("for {d:?}"),
            (None, None) => String::new(),
        }
    );
    let mut config = ClientConfig::default();
    config.set_ndr64(!args.no_ndr64).set_btfn(!args.no_btfn);
    raise_descriptor_limit(load.concurrency);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let concurrency = usize::try_from(load.concurrency).unwrap_or(1);
    let shards: Result<Vec<_>, String> = (0..concurrency.min(4 * threads).max(1))
        .map(|_| Tally::new(fleet.mix().len()).map(Mutex::new))
        .collect();
    let start = monotonic_clock();
    let driven = shards.and_then(|shards| {
        let run = Arc::new(Run {
            fleet,
            address,
            config,
            timeout: settings.timeout,
            keepalive: load.keepalive,
            interval: load.rate.map(|rate| 1.0 / rate),
            count: load.count,
            start,
            end: duration.and_then(|d| start.checked_add(d)),
            next: AtomicU64::new(0),
            shards,
        });
        let (elapsed, tally) = drive(&run, concurrency)?;
        Ok((Report::new(&settings, &run.fleet, &tally, elapsed), tally))
    });
    let (report, tally) = match driven {
        Ok(driven) => driven,
        Err(e) => {
            eprintln!("kms-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if args.json {
        report.json()
    } else {
        report.text()
    };
    // A closed stdout (`| head`) changes nothing about the host.
    let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
    if tally.error_total() > 0 {
        ExitCode::from(EXIT_TIMEOUT)
    } else if tally.outcomes().keys().any(|&code| code != HResult::S_OK) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["0", "-1", "5d", "", "s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(positive_rate("250"), Ok(250.0));
        for bad in ["0", "-3", "inf", "NaN", "x"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
    }
}
