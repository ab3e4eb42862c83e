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
//! | `kms_requests_total` | counter | `protocol` (`4.0`, `5.0`, `6.0`), `result` (`activated` or the HRESULT, `0xC004F042`) |
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
//! | `kms_clients` | gauge | `application` (distinct clients in the counting window) |
//! | `kms_current_count` | gauge | `application` (the count the host reports now) |
//! | `kms_requests_by_license_status` | gauge | `status` (since start, from the host's statistics) |
//!
//! ```
//! use kms_activation::metrics::HostMetrics;
//!
//! let metrics = HostMetrics::new();
//! let text = metrics.encode();
//! assert!(text.contains("# TYPE kms_connections_open gauge"));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::fmt::Write as _;
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

/// The license states of [`Statistics::requests_by_license_status`], in
/// order, then the rest.
const STATUS_NAMES: [&str; 8] = [
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
    by_status: Family<StatusLabels, Gauge>,
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
        let by_status = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "kms_requests_by_license_status",
            "Requests since start by the license state the client reported",
            by_status.clone(),
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
            by_status,
        }
    }

    /// Counts one decided request and its latency.
    pub fn observe_request(&self, record: &ActivationRecord, latency: Duration) {
        let result = if record.result == HResult::S_OK {
            "activated".to_owned()
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
    pub fn set_statistics(&self, statistics: &Statistics) {
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
        }
        let tallies = statistics
            .requests_by_license_status
            .iter()
            .chain(std::iter::once(&statistics.requests_other_status));
        for (status, &n) in STATUS_NAMES.into_iter().zip(tallies) {
            self.by_status
                .get_or_create(&StatusLabels { status })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
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
    use tokio::time::timeout;

    use super::{CONTENT_TYPE, HostMetrics};

    /// Largest request head read from a scraper.
    const MAX_REQUEST: usize = 8192;
    /// How long a scraper has to send its request and read the answer.
    const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Serves `GET /metrics` (404 for any other path) on `listener` until
    /// `shutdown` completes, one scrape at a time; `refresh` runs before
    /// each scrape (to take the host's statistics, say).
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
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let mut shutdown = pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return Ok(()),
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = timeout(SCRAPE_TIMEOUT, scrape(stream, &metrics, &refresh)).await;
        }
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
