//! An admin endpoint for a [`KmsHost`] (feature `admin`): health,
//! readiness, Prometheus metrics, the host's status as `slmgr /dlv` shows
//! it, the clients and the activation log as JSON and CSV, and a dashboard,
//! on axum and hyper.
//!
//! | route | answer |
//! |---|---|
//! | `GET /livez` | 200 while the process serves (never needs a token) |
//! | `GET /readyz` | 200 when the KMS listeners are bound, the store answers within its deadline and (when the host publishes its SRV record, feature `dns`) the record is published and its last DNS update succeeded; else 503 with a JSON reason (never needs a token) |
//! | `GET /metrics` | Prometheus text ([`HostMetrics::encode`]), the host's statistics refreshed first |
//! | `GET /api/v1/status` | counts and thresholds per application, listening addresses, ePIDs, intervals, requests by outcome and license status, uptime, version, store, DNS publishing (`dns`, `null` when the host does not publish) |
//! | `GET /api/v1/clients` | one row per client, heard from last first (`?application=&product=&address=&since=&limit=&cursor=`) |
//! | `GET /api/v1/activations` | the activation log, newest first (same parameters) |
//! | `GET /api/v1/clients.csv`, `/api/v1/activations.csv` | the same as CSV (RFC 4180, a header row), streamed page by page (`limit` caps the rows, none by default; not a snapshot: a client heard from again while its file streams moves above the part already sent) |
//! | `GET /` | the dashboard: server-rendered HTML and CSS, no script |
//!
//! Filters: `application` and `product` take a GUID, `address` a network in
//! CIDR notation or one address, `since` an RFC 3339 time; `limit` is at
//! most [`MAX_PAGE`] (default 100) and `cursor` is the `next` of the
//! previous page. Their semantics are the store's ([`LogQuery`]).
//!
//! [`router`] builds the routes for an embedder's own server; [`serve`]
//! runs them on a listener with bounded requests: header and request
//! timeouts, a request-body limit and a cap on connections
//! ([`AdminLimits`]). With a token ([`AdminState::with_token`]) every route
//! but `/livez` and `/readyz` needs `Authorization: Bearer TOKEN`, compared
//! in constant time. [`check_bind`] refuses a non-loopback address without
//! a token.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kms_activation::admin::{self, AdminState};
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{KmsHost, KmsHostConfig};
//! use kms_activation::{FileTime, OsRandom};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let now = FileTime::try_from(std::time::SystemTime::now())?;
//! let host = Arc::new(
//!     KmsHost::start(KmsHostConfig::default(), MemoryStore::default(), now, &mut OsRandom).await?,
//! );
//! let state = Arc::new(AdminState::new(host, "memory"));
//! state.set_listening(vec!["127.0.0.1:1688".parse()?]);
//! let listener = std::net::TcpListener::bind("127.0.0.1:9688")?;
//! admin::serve(listener, state, std::future::pending()).await?;
//! # Ok(())
//! # }
//! # let _ = run;
//! ```

mod api;
mod csv;
mod dashboard;
mod outcomes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use outcomes::{Outcomes, RequestCounts};

use crate::FileTime;
use crate::host::KmsHost;
use crate::host::store::{CountStore, LogQuery};
use crate::metrics::HostMetrics;

/// The most rows one JSON page holds.
pub const MAX_PAGE: usize = 1000;

/// Bounds of the server [`serve`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminLimits {
    /// Connections served at once; more are closed at once (default 64).
    pub max_connections: usize,
    /// Time a client gets to send a request's headers, on a new connection
    /// and between requests of a kept-alive one (default 5 s).
    pub header_timeout: Duration,
    /// Time a request gets to be answered, its body read included (the
    /// streaming of a CSV answer is not bounded; it ends with the log)
    /// (default 10 s).
    pub request_timeout: Duration,
    /// The largest request body accepted (default 16 KiB; the routes take
    /// none).
    pub max_body_bytes: usize,
    /// The largest request head (line and headers) buffered (default
    /// 16 KiB).
    pub max_header_bytes: usize,
    /// How long connections get to finish at shutdown (default 2 s).
    pub shutdown_grace: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// A bearer token, kept as its SHA-256 digest so that comparisons take the
/// same time whatever the candidate.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// The token `secret` (surrounding white space removed, as in a file
    /// written with a final newline). `None` when nothing is left.
    #[must_use]
    pub fn new(secret: &str) -> Option<Self> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| Self(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether `candidate` is the token, in constant time.
    #[must_use]
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        self.0.ct_eq(&digest).into()
    }
}

/// Why [`check_bind`] refused an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A non-loopback address without a token.
    #[error(
        "the admin endpoint {0} is not a loopback address: give it a bearer token (--admin-token-file FILE), or bind it to 127.0.0.1 or [::1]"
    )]
    NeedsToken(SocketAddr),
}

/// Refuses to expose the admin endpoint beyond this machine without a
/// token: `Ok` for a loopback address, or for any address with a token.
///
/// ```
/// use kms_activation::admin::check_bind;
///
/// assert!(check_bind("127.0.0.1:9688".parse().unwrap(), false).is_ok());
/// assert!(check_bind("[::1]:9688".parse().unwrap(), false).is_ok());
/// assert!(check_bind("0.0.0.0:9688".parse().unwrap(), false).is_err());
/// assert!(check_bind("0.0.0.0:9688".parse().unwrap(), true).is_ok());
/// ```
///
/// # Errors
///
/// [`AdminError::NeedsToken`] for a non-loopback address without a token.
pub fn check_bind(addr: SocketAddr, has_token: bool) -> Result<(), AdminError> {
    if addr.ip().to_canonical().is_loopback() || has_token {
        Ok(())
    } else {
        Err(AdminError::NeedsToken(addr))
    }
}

/// What the admin routes read: the host, its metrics and what the embedder
/// tells about it.
pub struct AdminState<S> {
    host: Arc<KmsHost<S>>,
    metrics: Option<Arc<HostMetrics>>,
    outcomes: Option<Arc<Outcomes>>,
    store: String,
    host_name: String,
    token: Option<AdminToken>,
    limits: AdminLimits,
    store_deadline: Duration,
    listening: Mutex<Vec<SocketAddr>>,
    started: Instant,
    #[cfg(feature = "dns")]
    dns_publisher: Option<Arc<crate::host::dns_publish::SrvPublisher>>,
}

impl<S> std::fmt::Debug for AdminState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("host_name", &self.host_name)
            .field("token", &self.token.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<S: CountStore + 'static> AdminState<S> {
    /// The state of `host`, whose store is described by `store` (`memory`,
    /// `sqlite:PATH` or a PostgreSQL URL, whose password is redacted
    /// wherever it is shown). No listener is bound yet
    /// ([`set_listening`](Self::set_listening)), so `/readyz` answers 503.
    #[must_use]
    pub fn new(host: Arc<KmsHost<S>>, store: &str) -> Self {
        Self {
            host,
            metrics: None,
            outcomes: None,
            store: crate::host::store::redact_url(store),
            host_name: host_name(),
            token: None,
            limits: AdminLimits::default(),
            store_deadline: Duration::from_secs(2),
            listening: Mutex::new(Vec::new()),
            started: Instant::now(),
            #[cfg(feature = "dns")]
            dns_publisher: None,
        }
    }

    /// Serves `/metrics` from these metrics (without, `/metrics` is 404).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<HostMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reports requests by outcome and per hour from this observer (give
    /// it to the transport's server too).
    #[must_use]
    pub fn with_outcomes(mut self, outcomes: Arc<Outcomes>) -> Self {
        self.outcomes = Some(outcomes);
        self
    }

    /// Requires this bearer token on every route but `/livez` and
    /// `/readyz`.
    #[must_use]
    pub fn with_token(mut self, token: AdminToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Uses these bounds in [`serve`].
    #[must_use]
    pub fn with_limits(mut self, limits: AdminLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long `/readyz` and the pages wait for the store (default 2 s).
    #[must_use]
    pub fn with_store_deadline(mut self, deadline: Duration) -> Self {
        self.store_deadline = deadline;
        self
    }

    /// The name the dashboard and status show (default: the machine's
    /// host name, from `HOSTNAME` or `/etc/hostname`).
    #[must_use]
    pub fn with_host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = name.into();
        self
    }

    /// Shows how `publisher` (the host's own SRV record, feature `dns`)
    /// is doing: `/readyz` is 503 while its record is not published or its
    /// last update failed, `/api/v1/status` carries its status, and
    /// `/metrics` its `kms_dns_*` metrics.
    #[cfg(feature = "dns")]
    #[must_use]
    pub fn with_dns_publisher(
        mut self,
        publisher: Arc<crate::host::dns_publish::SrvPublisher>,
    ) -> Self {
        self.dns_publisher = Some(publisher);
        self
    }

    /// Why DNS publishing keeps the host from being ready, if it does.
    #[cfg_attr(
        not(feature = "dns"),
        allow(clippy::unused_self, reason = "the publisher exists with `dns`")
    )]
    fn dns_not_ready(&self) -> Option<String> {
        #[cfg(feature = "dns")]
        if let Some(publisher) = &self.dns_publisher {
            let status = publisher.status();
            if !status.is_healthy() {
                return Some(match status.last_error {
                    Some(error) if status.consecutive_failures > 0 => format!(
                        "dns: {} failed {} time(s) in a row: {error}",
                        publisher.record_text(),
                        status.consecutive_failures
                    ),
                    _ => format!("dns: {} is not published yet", publisher.record_text()),
                });
            }
        }
        None
    }

    /// Hands the DNS publisher's status to the metrics.
    #[cfg_attr(
        not(feature = "dns"),
        allow(clippy::unused_self, reason = "the publisher exists with `dns`")
    )]
    fn update_dns_metrics(&self, metrics: &HostMetrics) {
        #[cfg(feature = "dns")]
        if let Some(publisher) = &self.dns_publisher {
            let status = publisher.status();
            metrics.set_dns_publication(
                &publisher.zone(),
                status.is_healthy(),
                status.successes,
                status.failures,
            );
        }
        #[cfg(not(feature = "dns"))]
        let _ = metrics;
    }

    /// The DNS publisher's status for `/api/v1/status` (`null` without).
    #[cfg_attr(
        not(feature = "dns"),
        allow(clippy::unused_self, reason = "the publisher exists with `dns`")
    )]
    pub(crate) fn dns_status(&self) -> serde_json::Value {
        #[cfg(feature = "dns")]
        if let Some(publisher) = &self.dns_publisher {
            let status = publisher.status();
            return serde_json::json!({
                "record": publisher.record_text(),
                "published": status.published,
                "healthy": status.is_healthy(),
                "successes": status.successes,
                "failures": status.failures,
                "consecutive_failures": status.consecutive_failures,
                "last_error": status.last_error,
            });
        }
        serde_json::Value::Null
    }

    /// The addresses the KMS listeners are bound to; `/readyz` is 503
    /// while there is none.
    pub fn set_listening(&self, addrs: Vec<SocketAddr>) {
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addrs;
    }

    fn listening(&self) -> Vec<SocketAddr> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The store's kind: `memory`, `sqlite` or `postgres`.
    fn store_kind(&self) -> &str {
        if self.store.starts_with("sqlite") {
            "sqlite"
        } else if self.store.starts_with("postgres") || self.store.contains('=') {
            "postgres"
        } else {
            "memory"
        }
    }

    /// Runs `work` on the store within the store deadline.
    async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, crate::host::store::StoreError>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.store_deadline, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the store did not answer within {} ms",
                self.store_deadline.as_millis()
            )),
        }
    }
}

/// The machine's name, best effort.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "kms-host".to_owned())
}

/// The wall clock as a FILETIME.
pub(crate) fn now() -> FileTime {
    FileTime::try_from(std::time::SystemTime::now()).unwrap_or_default()
}

/// Every admin route, for an embedder's own server (or [`serve`]).
/// `/livez` and `/readyz` never need the token.
pub fn router<S: CountStore + 'static>(state: Arc<AdminState<S>>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard::page::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/api/v1/status", get(api::status::<S>))
        .route("/api/v1/clients", get(api::clients::<S>))
        .route("/api/v1/activations", get(api::activations::<S>))
        .route("/api/v1/clients.csv", get(csv::clients::<S>))
        .route("/api/v1/activations.csv", get(csv::activations::<S>))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize::<S>,
        ));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz::<S>))
        .merge(protected)
        .with_state(state)
}

/// Bearer-token check of the protected routes.
async fn authorize<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| {
                // The scheme is case-insensitive (RFC 9110).
                let value = value.as_bytes();
                let (scheme, token) = value.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
            });
        if !given.is_some_and(|given| token.matches(given)) {
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "a bearer token is required"}),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kms-admin\""),
            );
            return response;
        }
    }
    next.run(request).await
}

async fn livez() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "live"}))
}

async fn readyz<S: CountStore + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    let listening = state.listening();
    if listening.is_empty() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "reason": "no KMS listener is bound"}),
        );
    }
    // A read of the store (an application no client has: nothing is
    // written), so a store that is down shows even before any request.
    let probe = state.host.store().tally(crate::Uuid::nil(), now());
    let store = state.within(probe).await;
    if let (Ok(_), Some(reason)) = (&store, state.dns_not_ready()) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "reason": reason}),
        );
    }
    match store {
        Ok(_) => json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready", "listening": listening}),
        ),
        Err(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "reason": format!("store: {reason}")}),
        ),
    }
}

async fn metrics<S: CountStore + 'static>(State(state): State<Arc<AdminState<S>>>) -> Response {
    let Some(metrics) = &state.metrics else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no metrics are kept"}),
        );
    };
    // A store that does not answer leaves the last statistics in place.
    if let Ok(statistics) = state.within(state.host.statistics(now())).await {
        metrics.set_statistics(&statistics);
    }
    state.update_dns_metrics(metrics);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    (headers, metrics.encode()).into_response()
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (status, headers, value.to_string()).into_response()
}

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes,
/// then lets connections finish within [`AdminLimits::shutdown_grace`].
///
/// # Errors
///
/// When the listener cannot be registered with the runtime. A connection
/// that fails only ends that connection.
pub async fn serve<S: CountStore + 'static>(
    listener: std::net::TcpListener,
    state: Arc<AdminState<S>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

    let limits = state.limits;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = router(state)
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(limits.request_timeout))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors, most likely: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            // At the cap: this connection is closed unanswered.
            continue;
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
    Ok(())
}

/// The query parameters of the clients and log routes, parsed.
pub(crate) fn log_query(
    params: &std::collections::HashMap<String, String>,
    default_limit: usize,
    max_limit: usize,
) -> Result<LogQuery, String> {
    let mut query = LogQuery::new(default_limit);
    for (key, value) in params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match key.as_str() {
            "application" => {
                query.application = Some(
                    value
                        .parse()
                        .map_err(|_| format!("application: not a GUID: {value:?}"))?,
                );
            }
            "product" => {
                query.product = Some(
                    value
                        .parse()
                        .map_err(|_| format!("product: not a GUID: {value:?}"))?,
                );
            }
            "address" => {
                query.address = Some(parse_network(value)?);
            }
            "since" => {
                let time = chrono::DateTime::parse_from_rfc3339(value)
                    .map_err(|e| format!("since: not an RFC 3339 time ({e}): {value:?}"))?;
                query.since = Some(
                    FileTime::try_from(time.with_timezone(&chrono::Utc))
                        .map_err(|_| format!("since: out of range: {value:?}"))?,
                );
            }
            "limit" => {
                let limit: usize = value
                    .parse()
                    .map_err(|_| format!("limit: not a number: {value:?}"))?;
                query.limit = limit.min(max_limit);
            }
            "cursor" => {
                query.before = Some(
                    value
                        .parse()
                        .map_err(|_| format!("cursor: not a cursor: {value:?}"))?,
                );
            }
            _ => {}
        }
    }
    Ok(query)
}

/// A network in CIDR notation, or one address.
pub(crate) fn parse_network(value: &str) -> Result<ipnet::IpNet, String> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("address: not a network or an address: {value:?}"))
}
