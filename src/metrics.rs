//! Prometheus metrics of a KMS host (feature `metrics`), kept with
//! [`prometheus-client`](https://docs.rs/prometheus-client).
//!
// The links to `transport` and `serve_http` are made only when those are
// compiled, so that the docs build with the `metrics` feature alone.
#![cfg_attr(
    any(feature = "tokio", feature = "blocking"),
    doc = "[`HostMetrics`] is an [`Observer`](crate::transport::Observer) for the"
)]
#![cfg_attr(
    not(any(feature = "tokio", feature = "blocking")),
    doc = "[`HostMetrics`] is an `Observer` (feature `tokio` or `blocking`) for the"
)]
//! transports' servers and takes the host's
//! [`Statistics`] when they are refreshed. With the `tokio` feature too,
#![cfg_attr(
    feature = "tokio",
    doc = "[`serve_http`] answers `GET /metrics` on a listener of its own."
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "`serve_http` answers `GET /metrics` on a listener of its own."
)]
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kms_requests_total` | counter | `protocol` (`4.0`, `5.0`, `6.0`), `result` (`activated`; `below_threshold`: answered, but the count is below the client's N policy, so the client stays unactivated; or the refusal's HRESULT, `0xC004F042`) |
//! | `kms_request_duration_seconds` | histogram | (from the read completing a request to the end of the reply's write) |
//! | `kms_connections_open` | gauge | |
#![cfg_attr(
    any(feature = "tokio", feature = "blocking"),
    doc = "| `kms_connections_closed_total` | counter | `reason` ([`CloseReason::name`](crate::transport::CloseReason::name)) |"
)]
#![cfg_attr(
    not(any(feature = "tokio", feature = "blocking")),
    doc = "| `kms_connections_closed_total` | counter | `reason` (`transport::CloseReason::name`) |"
)]
//! | `kms_connections_refused_total` | counter | (server full, nothing idle to close) |
//! | `kms_clients` | gauge | `application` (distinct clients in the counting window; 0 once none is left) |
//! | `kms_current_count` | gauge | `application` (the count the host reports now; 0 once no client is left) |
//! | `kms_requests_by_license_status_total` | counter | `status` (since start, from the host's statistics) |
//! | `kms_store_errors_total` | counter | `operation` (store operations that failed or timed out: `host` for the host's own total from its [`Statistics`], others from [`HostMetrics::record_store_error`]) |
//! | `kms_dropped_activation_records_total` | counter | (activation records the store's log could not take: queue full or batch failed) |
//! | `kms_handler_failures_total` | counter | `kind` (`timeout` or `panic`: the handler's requests were refused) |
//! | `kms_dns_published` | gauge | `zone` (1 while the host's own SRV record is published in DNS and the last update succeeded, else 0; from [`HostMetrics::set_dns_publication`]) |
//! | `kms_dns_publications_total` | counter | `zone` (successful publications of the SRV record: the first and each refresh) |
//! | `kms_dns_publish_failures_total` | counter | `zone` (failed DNS updates: publish, refresh or withdraw; the counterpart of Microsoft's event 12293) |
//!
//! In the `OpenMetrics` text, a counter's samples end in `_total`.
//!
//! ```
//! use kms_activation::metrics::HostMetrics;
//!
//! let metrics = HostMetrics::new();
//! metrics.record_store_error("record_visit");
//! let text = metrics.encode();
//! assert!(text.contains("# TYPE kms_connections_open gauge"));
//! assert!(text.contains("kms_store_errors_total{operation=\"record_visit\"} 1"));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::HResult;
use crate::host::{ActivationRecord, Statistics};

/// The content type of [`HostMetrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    protocol: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplicationLabels {
    application: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Distinct `operation` labels kept for store errors: a caller that names
/// operations freely cannot grow the metrics without bound.
const MAX_OPERATIONS: usize = 32;

/// The license states of [`Statistics::requests_by_license_status`], in
/// order, then the rest: the metrics' `status` labels, and the admin
/// API's keys.
pub(crate) const STATUS_NAMES: [&str; 8] = [
    "unlicensed",
    "licensed",
    "initial_grace",
    "out_of_tolerance_grace",
    "non_genuine_grace",
    "notification",
    "extended_grace",
    "other",
];

/// A host's metrics, updated from any number of connections at once.
#[derive(Debug)]
pub struct HostMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    open: Gauge,
    closed: Family<ReasonLabels, Counter>,
    refused: Counter,
    clients: Family<ApplicationLabels, Gauge>,
    current_count: Family<ApplicationLabels, Gauge>,
    /// Applications given a value so far: set to zero when they leave the
    /// statistics.
    applications: Mutex<HashSet<ApplicationLabels>>,
    by_status: Family<StatusLabels, Counter>,
    store_errors: Family<OperationLabels, Counter>,
    operations: Mutex<HashSet<String>>,
    handler_failures: Family<KindLabels, Counter>,
    dropped_records: Counter,
    dns_published: Family<ZoneLabels, Gauge>,
    dns_publications: Family<ZoneLabels, Counter>,
    dns_failures: Family<ZoneLabels, Counter>,
}

impl Default for HostMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMetrics {
    /// Metrics at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kms_requests",
            "KMS requests decided, by protocol version and result",
            requests.clone(),
        );
        // 50 µs to about 3.3 s.
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 17));
        registry.register(
            "kms_request_duration_seconds",
            "Time from the read completing a request to the end of its reply's write",
            latency.clone(),
        );
        let open = Gauge::default();
        registry.register("kms_connections_open", "Connections open now", open.clone());
        let closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "kms_connections_closed",
            "Connections closed, by reason",
            closed.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "kms_connections_refused",
            "Connections dropped because the server was full and nothing was idle",
            refused.clone(),
        );
        let clients = Family::<ApplicationLabels, Gauge>::default();
        registry.register(
            "kms_clients",
            "Distinct clients in the counting window, by application",
            clients.clone(),
        );
        let current_count = Family::<ApplicationLabels, Gauge>::default();
        registry.register(
            "kms_current_count",
            "The count the host reports now, by application",
            current_count.clone(),
        );
        let by_status = Family::<StatusLabels, Counter>::default();
        registry.register(
            "kms_requests_by_license_status",
            "Requests since start by the license state the client reported",
            by_status.clone(),
        );
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register(
            "kms_store_errors",
            "Store operations that failed or timed out, by operation",
            store_errors.clone(),
        );
        let handler_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "kms_handler_failures",
            "Exchanges whose handler timed out or panicked (its requests were refused)",
            handler_failures.clone(),
        );
        let dropped_records = Counter::default();
        registry.register(
            "kms_dropped_activation_records",
            "Activation records the store's log could not take (queue full or batch failed)",
            dropped_records.clone(),
        );
        let dns_published = Family::<ZoneLabels, Gauge>::default();
        registry.register(
            "kms_dns_published",
            "1 while this host's SRV record is published and the last DNS update succeeded",
            dns_published.clone(),
        );
        let dns_publications = Family::<ZoneLabels, Counter>::default();
        registry.register(
            "kms_dns_publications",
            "Successful publications of this host's SRV record (the first and each refresh)",
            dns_publications.clone(),
        );
        let dns_failures = Family::<ZoneLabels, Counter>::default();
        registry.register(
            "kms_dns_publish_failures",
            "Failed DNS updates of this host's SRV record (publish, refresh or withdraw)",
            dns_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            open,
            closed,
            refused,
            clients,
            current_count,
            applications: Mutex::new(HashSet::new()),
            by_status,
            store_errors,
            operations: Mutex::new(HashSet::new()),
            handler_failures,
            dropped_records,
            dns_published,
            dns_publications,
            dns_failures,
        }
    }

    /// Takes how publishing this host's SRV record in `zone` has gone
    /// (from `host::dns_publish::SrvPublisher::status` with the `dns`
    /// feature): whether the record is published and the last update
    /// succeeded, and the running totals of successful publications and
    /// of failed updates (the counters move up to them, never down).
    ///
    /// ```
    /// use kms_activation::metrics::HostMetrics;
    ///
    /// let metrics = HostMetrics::new();
    /// metrics.set_dns_publication("example.org.", false, 0, 2);
    /// let text = metrics.encode();
    /// assert!(text.contains("kms_dns_published{zone=\"example.org.\"} 0"));
    /// assert!(text.contains("kms_dns_publish_failures_total{zone=\"example.org.\"} 2"));
    /// ```
    pub fn set_dns_publication(&self, zone: &str, published: bool, successes: u64, failures: u64) {
        let labels = ZoneLabels {
            zone: zone.to_owned(),
        };
        self.dns_published
            .get_or_create(&labels)
            .set(i64::from(published));
        let counter = self.dns_publications.get_or_create(&labels);
        counter.inc_by(successes.saturating_sub(counter.get()));
        let counter = self.dns_failures.get_or_create(&labels);
        counter.inc_by(failures.saturating_sub(counter.get()));
    }

    /// Counts a failed (or timed-out) store operation, by a short name
    /// (`"record_visit"`, `"append_activation"`, …). At most 32 distinct
    /// names are kept; later ones are counted as `"other"`.
    pub fn record_store_error(&self, operation: &str) {
        let operation = {
            let mut known = self
                .operations
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.contains(operation) {
                operation.to_owned()
            } else if known.len() < MAX_OPERATIONS {
                known.insert(operation.to_owned());
                operation.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.store_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// Counts an exchange whose handler timed out (`panicked` false) or
    /// panicked.
    pub fn handler_failed(&self, panicked: bool) {
        let kind = if panicked { "panic" } else { "timeout" };
        self.handler_failures
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts one decided request and its latency.
    pub fn observe_request(&self, record: &ActivationRecord, latency: Duration) {
        let result = if record.activates() {
            "activated".to_owned()
        } else if record.result == HResult::S_OK {
            "below_threshold".to_owned()
        } else {
            format!("{:#}", record.result)
        };
        self.requests
            .get_or_create(&RequestLabels {
                protocol: record.protocol.to_string(),
                result,
            })
            .inc();
        self.latency.observe(latency.as_secs_f64());
    }

    /// Counts a connection opened.
    pub fn connection_opened(&self) {
        self.open.inc();
    }

    /// Counts a connection closed, by a short reason name.
    pub fn connection_closed(&self, reason: &'static str) {
        self.open.dec();
        self.closed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection refused at the cap.
    pub fn connection_refused(&self) {
        self.refused.inc();
    }

    /// Takes the host's current counts and request tallies (from
    /// [`KmsHost::statistics`](crate::host::KmsHost::statistics)).
    ///
    /// An application the statistics no longer list (its last client left
    /// the counting window) has its gauges set to zero. The request
    /// tallies are running totals: their counters move up to the new
    /// totals (never down).
    pub fn set_statistics(&self, statistics: &Statistics) {
        let mut known = self
            .applications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut listed = HashSet::with_capacity(statistics.counts.len());
        for count in &statistics.counts {
            let labels = ApplicationLabels {
                application: count.name().map_or_else(
                    || count.application_id.to_string(),
                    std::borrow::ToOwned::to_owned,
                ),
            };
            self.clients
                .get_or_create(&labels)
                .set(i64::try_from(count.clients).unwrap_or(i64::MAX));
            self.current_count
                .get_or_create(&labels)
                .set(i64::from(count.current_count));
            listed.insert(labels);
        }
        for gone in known.difference(&listed) {
            self.clients.get_or_create(gone).set(0);
            self.current_count.get_or_create(gone).set(0);
        }
        known.extend(listed);
        drop(known);
        let tallies = statistics
            .requests_by_license_status
            .iter()
            .chain(std::iter::once(&statistics.requests_other_status));
        for (status, &n) in STATUS_NAMES.into_iter().zip(tallies) {
            let counter = self.by_status.get_or_create(&StatusLabels { status });
            counter.inc_by(n.saturating_sub(counter.get()));
        }
        let host_errors = self.store_errors.get_or_create(&OperationLabels {
            operation: "host".to_owned(),
        });
        host_errors.inc_by(statistics.store_errors.saturating_sub(host_errors.get()));
        self.dropped_records.inc_by(
            statistics
                .dropped_records
                .saturating_sub(self.dropped_records.get()),
        );
    }

    /// The metrics in the `OpenMetrics` text format (which Prometheus
    /// scrapes), ending with `# EOF`.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep the format valid anyway.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

#[cfg(any(feature = "tokio", feature = "blocking"))]
impl crate::transport::Observer for HostMetrics {
    fn connection_opened(&self, _: std::net::SocketAddr, _: u64) {
        HostMetrics::connection_opened(self);
    }

    fn connection_closed(
        &self,
        _: std::net::SocketAddr,
        _: u64,
        reason: &crate::transport::CloseReason,
    ) {
        HostMetrics::connection_closed(self, reason.name());
    }

    fn connection_refused(&self, _: std::net::SocketAddr) {
        HostMetrics::connection_refused(self);
    }

    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        self.observe_request(record, latency);
    }

    fn handler_failed(&self, _: std::net::SocketAddr, _: u64, _: usize, panicked: bool) {
        HostMetrics::handler_failed(self, panicked);
    }
}

#[cfg(feature = "tokio")]
pub use http::serve_http;

#[cfg(feature = "tokio")]
mod http {
    use std::future::Future;
    use std::io;
    use std::pin::pin;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Semaphore;
    use tokio::task::JoinSet;
    use tokio::time::timeout;

    use super::{CONTENT_TYPE, HostMetrics};

    /// Largest request head read from a scraper.
    const MAX_REQUEST: usize = 8192;
    /// How long a scraper has to send its request and read the answer.
    const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Scrapes served at once.
    const MAX_SCRAPES: usize = 64;

    /// Serves `GET /metrics` (404 for any other path) on `listener` until
    /// `shutdown` completes; `refresh` runs before each scrape (to take the
    /// host's statistics, say). Scrapes are served concurrently, up to 64
    /// at once (more are closed at once), each within 5 seconds from its
    /// connection to the end of the answer: idle or slow connections delay
    /// no one.
    ///
    /// ```no_run
    /// use kms_activation::metrics::{HostMetrics, serve_http};
    /// use std::sync::Arc;
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let metrics = Arc::new(HostMetrics::new());
    /// let listener = std::net::TcpListener::bind("127.0.0.1:9688")?;
    /// serve_http(listener, metrics, || async {}, std::future::pending()).await
    /// # }
    /// # let _ = run;
    /// ```
    ///
    /// # Errors
    ///
    /// When the listener cannot be registered with the runtime. A scrape
    /// that fails or times out only ends that scrape.
    pub async fn serve_http<F, Fut>(
        listener: std::net::TcpListener,
        metrics: Arc<HostMetrics>,
        refresh: F,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let refresh = Arc::new(refresh);
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        let mut scrapes = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            while scrapes.try_join_next().is_some() {}
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                // Too many at once: this one is closed unanswered.
                continue;
            };
            let (metrics, refresh) = (Arc::clone(&metrics), Arc::clone(&refresh));
            scrapes.spawn(async move {
                let _ = timeout(SCRAPE_TIMEOUT, scrape(stream, &metrics, &*refresh)).await;
                drop(permit);
            });
        }
        scrapes.abort_all();
        Ok(())
    }

    async fn scrape<F, Fut>(
        mut stream: TcpStream,
        metrics: &HostMetrics,
        refresh: &F,
    ) -> io::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_REQUEST {
                return Ok(());
            }
            head.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let (method, path) = (parts.next(), parts.next());
        let response = if method == Some(b"GET") && path == Some(b"/metrics") {
            refresh().await;
            let body = metrics.encode();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        };
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    }

    #[test]
    fn the_hosts_store_errors_and_dropped_records_are_counters_that_follow_its_totals() {
        let metrics = HostMetrics::new();
        let mut statistics = Statistics {
            store_errors: 3,
            dropped_records: 7,
            ..Statistics::default()
        };
        metrics.set_statistics(&statistics);
        metrics.set_statistics(&statistics);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "kms_store_errors_total{operation=\"host\"}"),
            Some(3)
        );
        assert_eq!(
            sample(&text, "kms_dropped_activation_records_total"),
            Some(7)
        );
        statistics.store_errors = 5;
        metrics.set_statistics(&statistics);
        assert_eq!(
            sample(
                &metrics.encode(),
                "kms_store_errors_total{operation=\"host\"}"
            ),
            Some(5)
        );
    }
}
