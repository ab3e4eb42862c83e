//! Thin transports: the engines' bytes over real sockets.
//!
//! The adapters here only move bytes and deadlines between a socket and a
//! sans-IO engine ([`HostConnection`], [`ClientConnection`]): read → engine →
//! write. They hold no protocol rule (compare `quinn` over `quinn-proto`, or
//! `rustls`'s `Stream`). Two flavours, one feature each, with the same shape:
//!
// Each bullet links to its module only when the module is compiled, so that
// the docs build (with the broken-link lint) under either feature alone.
#![cfg_attr(
    feature = "tokio",
    doc = "* [`tokio`] (feature `tokio`): an async [`Server`](self::tokio::Server)
  that holds thousands of cheap connections on one runtime, and an async
  [`Client`](self::tokio::Client);"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "* `tokio` (feature `tokio`, not enabled in this build): an async `Server`
  that holds thousands of cheap connections on one runtime, and an async
  `Client`;"
)]
#![cfg_attr(
    feature = "blocking",
    doc = "* [`blocking`] (feature `blocking`): the same over
  `std::net`, the server on a bounded pool of threads."
)]
#![cfg_attr(
    not(feature = "blocking"),
    doc = "* `blocking` (feature `blocking`, not enabled in this build): the same
  over `std::net`, the server on a bounded pool of threads."
)]
//!
//! # What a server does with a connection
//!
//! Each accepted connection gets a [`HostConnection`] numbered by the server
//! and told its peer's address. Every chunk read is fed to the engine; the
//! engine's events go to the server's [`Handler`] (a
//! [`KmsHost`] or the embedder's own), whose future is
//! awaited without blocking other connections; then the engine's output is
//! written. The [`ServerLimits`] bound what one peer can take:
//!
//! | limit | default (tokio / blocking) | at the limit |
//! |---|---|---|
//! | [`max_connections`](ServerLimits::max_connections) | 10 000 / 64 (the blocking server never runs more than `blocking::MAX_THREADS` (256) threads, whatever the cap) | the connection idle for longest (and for at least a second) is closed; with none, accepting stops for up to a second, then the newcomer is dropped. Running out of file descriptors in `accept` counts as being at the cap |
//! | [`idle_timeout`](ServerLimits::idle_timeout) | 30 s | an idle connection (nothing received since the last reply) is closed |
//! | [`pdu_timeout`](ServerLimits::pdu_timeout) | 10 s | a PDU (a request with all its fragments) must arrive whole within this time of its first byte, however the peer paces the bytes |
//! | [`handler_timeout`](ServerLimits::handler_timeout) | 5 s | the handler's work is abandoned and every request it left unanswered is refused with [`Handler::timeout_refusal`] (0xC004F039 for a [`KmsHost`] by default): a normal KMS reply, sent before a Windows client's own RPC timeout (about 10 s) |
//! | [`max_requests_per_connection`](ServerLimits::max_requests_per_connection) | 100 000 | the connection is closed after the last reply |
//! | PDU, stub and output caps | [`HostLimits`](crate::host::HostLimits) | enforced by the engine |
//!
//! The deadlines compose: each store operation of a [`KmsHost`] has a
//! deadline of its own (2 s by default for the database stores), shorter
//! than [`handler_timeout`](ServerLimits::handler_timeout) (5 s), which is
//! itself shorter than the client's wait (about 10 s for Windows and
//! `vlmcs`). A slow store thus yields the store's refusal, a hung one the
//! same refusal from the transport, and the client always gets an answer.
//! Keep that order when changing one of them. Every duration saturates:
//! [`Duration::MAX`] means "never" (for `idle_timeout`, say), not an
//! overflow.
//!
//! A handler that panics does not take the server with it: the requests it
//! left are refused as on a timeout, the connection is closed
//! ([`CloseReason::HandlerPanicked`]) and its slot is given back.
//!
//! A graceful shutdown stops accepting, closes idle connections, lets
//! exchanges in flight finish within [`ServerLimits::shutdown_grace`] (a
//! connection bound but not yet asked anything counts as in flight: its
//! request is on its way), then closes the rest and flushes the handler's
//! store ([`Handler::flush`]) within [`FLUSH_TIMEOUT`]: a server returns
//! within `shutdown_grace` and about a second and a half, whatever the
//! store does.
//!
//! An [`Observer`] sees connections open and close (with a [`CloseReason`])
//! and every [`ActivationRecord`] with its latency: the hook for logs and
//! metrics (see `metrics::HostMetrics` with the `metrics` feature). With
//! the `tracing` feature, `LogObserver` writes those events as log lines,
//! each kind rate-limited so that no peer can make the host write more than
//! a bounded amount.
//!
//! # The clock
//!
//! The engines never read the clock; the transports do, once per read, and
//! pass the time in. Client time is the host's wall clock as a
//! [`FileTime`].
//!
//! [`HostConnection`]: crate::host::HostConnection
//! [`ClientConnection`]: crate::client::ClientConnection

#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub mod blocking;
mod guard;
mod io_loop;
mod listen;
#[cfg(feature = "tracing")]
mod log;
mod random;
mod registry;
mod session;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use listen::bind;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use log::LogObserver;

use crate::client::ClientError;
use crate::host::store::{CountStore, StoreError};
use crate::host::{ActivationRecord, HostConfig, HostConnection, HostError, KmsHost};
use crate::message::VerifiedResponse;
use crate::{FileTime, HResult, RandomSource};

/// Resource limits a server applies to its connections, on top of the
/// engine's own [`HostLimits`](crate::host::HostLimits).
///
/// ```
/// use kms_activation::transport::ServerLimits;
/// use std::time::Duration;
///
/// let mut limits = ServerLimits::default();
/// limits.max_connections = 2_000;
/// limits.idle_timeout = Duration::from_secs(10);
/// assert!(limits.idle_timeout < ServerLimits::default().idle_timeout);
/// assert_eq!(ServerLimits::threaded().max_connections, 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections held at once. At the cap the connection idle for longest
    /// (at least a second) is closed to make room; when there is none the
    /// server stops accepting for up to a second, then drops the newcomer. For the blocking
    /// server this is also the number of threads, at most
    /// `blocking::MAX_THREADS`.
    pub max_connections: usize,
    /// How long a connection may wait for the first byte of its next PDU.
    pub idle_timeout: Duration,
    /// How long a PDU may take to arrive whole, counted from the first byte
    /// received after the previous reply (a peer dripping one byte at a
    /// time is closed at this deadline, not kept alive by each byte).
    pub pdu_timeout: Duration,
    /// How long the [`Handler`] may take over the requests of one read:
    /// past it the requests it left are refused with
    /// [`Handler::timeout_refusal`]. Also how long the peer gets to accept
    /// the replies; past that the connection is closed. Keep it above the
    /// store's own deadline and below the clients' (about 10 s).
    pub handler_timeout: Duration,
    /// Requests answered on one connection before it is closed.
    pub max_requests_per_connection: u64,
    /// On shutdown, how long exchanges in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    /// Limits for the async server: many cheap connections.
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30),
            pdu_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(5),
            max_requests_per_connection: 100_000,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServerLimits {
    /// Limits for the blocking server, whose connections each take a
    /// thread: 64 connections, otherwise as [`Default`].
    #[must_use]
    pub fn threaded() -> Self {
        Self {
            max_connections: 64,
            ..Self::default()
        }
    }
}

/// What a server needs besides its handler: the engine's configuration
/// (used for every connection) and the server's limits.
///
/// ```
/// use kms_activation::transport::{ServerConfig, ServerLimits};
///
/// let mut config = ServerConfig::default();
/// config.host_mut().set_max_clock_skew(None);
/// config.set_limits(ServerLimits::threaded());
/// assert_eq!(config.limits().max_connections, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerConfig {
    host: HostConfig,
    limits: ServerLimits,
}

impl ServerConfig {
    /// A configuration with these engine settings and limits.
    #[must_use]
    pub fn new(host: HostConfig, limits: ServerLimits) -> Self {
        Self { host, limits }
    }

    /// The engine's configuration.
    #[must_use]
    pub fn host(&self) -> &HostConfig {
        &self.host
    }

    /// The engine's configuration, to change.
    pub fn host_mut(&mut self) -> &mut HostConfig {
        &mut self.host
    }

    /// The server's limits.
    #[must_use]
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Replaces the server's limits.
    pub fn set_limits(&mut self, limits: ServerLimits) -> &mut Self {
        self.limits = limits;
        self
    }
}

/// Decides the requests of a connection: what a server hands each
/// connection's events to.
///
/// [`KmsHost`] implements it (with any [`CountStore`]). An embedder with its
/// own policy implements [`process`](Self::process): take every event from
/// [`HostConnection::poll_event`] and answer or refuse each request. The
/// future may wait (for a database, say); other connections go on
/// meanwhile.
///
/// ```
/// use kms_activation::host::{HostConnection, HostEvent};
/// use kms_activation::transport::Handler;
/// use kms_activation::{HResult, RandomSource};
///
/// /// Refuses every request.
/// struct Closed;
///
/// impl Handler for Closed {
///     async fn process(
///         &self,
///         conn: &mut HostConnection,
///         _rng: &mut (dyn RandomSource + Send),
///     ) -> Vec<kms_activation::host::ActivationRecord> {
///         while let Some(event) = conn.poll_event() {
///             if let HostEvent::Request(request) = event {
///                 let _ = conn.refuse(request.id, HResult::KMS_NOT_ACTIVATED);
///             }
///         }
///         Vec::new()
///     }
/// }
/// # let _ = Closed;
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers or refuses every request `conn` has reported, and returns the
    /// records of what was decided (for the server's [`Observer`]). `rng`
    /// is the operating system's generator.
    fn process(
        &self,
        conn: &mut HostConnection,
        rng: &mut (dyn RandomSource + Send),
    ) -> impl Future<Output = Vec<ActivationRecord>> + Send;

    /// The refusal sent for every request the handler left unanswered when
    /// it ran past [`ServerLimits::handler_timeout`] (or panicked):
    /// [`HResult::BINDING_SERVICE_NOT_ENABLED`] (0xC004F039, "the KMS could
    /// not be used") unless overridden. A [`KmsHost`] answers with its
    /// configured store-failure result.
    fn timeout_refusal(&self) -> HResult {
        HResult::BINDING_SERVICE_NOT_ENABLED
    }

    /// Completes when what the handler accepted so far is durable; called
    /// once at the end of a graceful shutdown (within [`FLUSH_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot confirm.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }
}

impl<S: CountStore + 'static> Handler for KmsHost<S> {
    fn process(
        &self,
        conn: &mut HostConnection,
        rng: &mut (dyn RandomSource + Send),
    ) -> impl Future<Output = Vec<ActivationRecord>> + Send {
        KmsHost::process(self, conn, rng)
    }

    fn timeout_refusal(&self) -> HResult {
        self.store_failure_result()
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.store().flush()
    }
}

impl<H: Handler> Handler for std::sync::Arc<H> {
    fn process(
        &self,
        conn: &mut HostConnection,
        rng: &mut (dyn RandomSource + Send),
    ) -> impl Future<Output = Vec<ActivationRecord>> + Send {
        (**self).process(conn, rng)
    }

    fn timeout_refusal(&self) -> HResult {
        (**self).timeout_refusal()
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).flush()
    }
}

/// Why a server closed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// Nothing arrived within [`ServerLimits::idle_timeout`].
    IdleTimeout,
    /// A PDU did not arrive whole within [`ServerLimits::pdu_timeout`].
    PduTimeout,
    /// The peer reading the replies took longer than
    /// [`ServerLimits::handler_timeout`]. (A handler that takes longer gets
    /// its requests refused; the connection stays open.)
    HandlerTimeout,
    /// The handler panicked; its requests were refused first.
    HandlerPanicked,
    /// [`ServerLimits::max_requests_per_connection`] requests were answered.
    MaxRequests,
    /// Closed while idle to make room for a new connection at
    /// [`ServerLimits::max_connections`].
    Evicted,
    /// The server shut down.
    Shutdown,
    /// The peer broke the protocol; the engine's error (a fault or
    /// `bind_nak` was sent first when the protocol has one).
    Protocol(HostError),
    /// The socket failed.
    Io(io::ErrorKind),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("closed by the peer"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::PduTimeout => f.write_str("PDU deadline passed"),
            Self::HandlerTimeout => f.write_str("write timeout"),
            Self::HandlerPanicked => f.write_str("handler panicked"),
            Self::MaxRequests => f.write_str("request limit reached"),
            Self::Evicted => f.write_str("evicted (connection limit)"),
            Self::Shutdown => f.write_str("server shutdown"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Io(kind) => write!(f, "I/O error: {kind}"),
        }
    }
}

impl CloseReason {
    /// A short, stable name for logs and metric labels (`"peer_closed"`,
    /// `"idle_timeout"`, …).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::IdleTimeout => "idle_timeout",
            Self::PduTimeout => "pdu_timeout",
            Self::HandlerTimeout => "handler_timeout",
            Self::HandlerPanicked => "handler_panicked",
            Self::MaxRequests => "max_requests",
            Self::Evicted => "evicted",
            Self::Shutdown => "shutdown",
            Self::Protocol(_) => "protocol_error",
            Self::Io(_) => "io_error",
        }
    }
}

/// Sees what a server does: for logs and metrics. Every method has an
/// empty default.
///
/// ```
/// use kms_activation::host::ActivationRecord;
/// use kms_activation::transport::Observer;
/// use std::time::Duration;
///
/// struct Log;
/// impl Observer for Log {
///     fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
///         eprintln!("{:?} {} in {latency:?}", record.peer, record.result);
///     }
/// }
/// # let _ = Log;
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A connection was accepted.
    fn connection_opened(&self, peer: SocketAddr, connection_id: u64) {
        let _ = (peer, connection_id);
    }

    /// A connection was closed, and why.
    fn connection_closed(&self, peer: SocketAddr, connection_id: u64, reason: &CloseReason) {
        let _ = (peer, connection_id, reason);
    }

    /// A connection was refused because the server was full and no
    /// connection was idle.
    fn connection_refused(&self, peer: SocketAddr) {
        let _ = peer;
    }

    /// `accept` failed; `full` when for lack of file descriptors (the
    /// server then closed its oldest idle connection, if any, and retries).
    fn accept_failed(&self, error: &io::Error, full: bool) {
        let _ = (error, full);
    }

    /// The handler ran past [`ServerLimits::handler_timeout`] (or
    /// panicked, `panicked`) on a connection; `refused` requests were
    /// refused with [`Handler::timeout_refusal`].
    fn handler_failed(&self, peer: SocketAddr, connection_id: u64, refused: usize, panicked: bool) {
        let _ = (peer, connection_id, refused, panicked);
    }

    /// A request was decided and its reply written; `latency` runs from
    /// the read that completed the request to the end of that write.
    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        let _ = (record, latency);
    }
}

/// An observer that sees nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

impl<A: Observer, B: Observer> Observer for (A, B) {
    fn connection_opened(&self, peer: SocketAddr, connection_id: u64) {
        self.0.connection_opened(peer, connection_id);
        self.1.connection_opened(peer, connection_id);
    }

    fn connection_closed(&self, peer: SocketAddr, connection_id: u64, reason: &CloseReason) {
        self.0.connection_closed(peer, connection_id, reason);
        self.1.connection_closed(peer, connection_id, reason);
    }

    fn connection_refused(&self, peer: SocketAddr) {
        self.0.connection_refused(peer);
        self.1.connection_refused(peer);
    }

    fn accept_failed(&self, error: &io::Error, full: bool) {
        self.0.accept_failed(error, full);
        self.1.accept_failed(error, full);
    }

    fn handler_failed(&self, peer: SocketAddr, connection_id: u64, refused: usize, panicked: bool) {
        self.0
            .handler_failed(peer, connection_id, refused, panicked);
        self.1
            .handler_failed(peer, connection_id, refused, panicked);
    }

    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        self.0.request_processed(record, latency);
        self.1.request_processed(record, latency);
    }
}

impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    fn connection_opened(&self, peer: SocketAddr, connection_id: u64) {
        (**self).connection_opened(peer, connection_id);
    }

    fn connection_closed(&self, peer: SocketAddr, connection_id: u64, reason: &CloseReason) {
        (**self).connection_closed(peer, connection_id, reason);
    }

    fn connection_refused(&self, peer: SocketAddr) {
        (**self).connection_refused(peer);
    }

    fn accept_failed(&self, error: &io::Error, full: bool) {
        (**self).accept_failed(error, full);
    }

    fn handler_failed(&self, peer: SocketAddr, connection_id: u64, refused: usize, panicked: bool) {
        (**self).handler_failed(peer, connection_id, refused, panicked);
    }

    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        (**self).request_processed(record, latency);
    }
}

/// The result of one activation request made by a client transport: what
/// the host sent back, before a client's conclusion
/// ([`conclusion`](Self::conclusion)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The host answered with a response that passed every check. The client
    /// activates only if the response's count reaches the request's N
    /// policy; below it, it shows 0xC004F038.
    Answered(VerifiedResponse),
    /// The host refused the request with this HRESULT.
    Refused(HResult),
}

impl Outcome {
    /// What a real client concludes from this outcome of `request` at `now`:
    /// activated, or the HRESULT it shows (0xC004F038 for an answer whose
    /// count is below the request's N policy).
    #[must_use]
    pub fn conclusion(
        &self,
        request: &crate::RequestBody,
        now: chrono::DateTime<chrono::Utc>,
    ) -> crate::client::ActivationOutcome {
        match self {
            Self::Answered(response) => {
                crate::client::ActivationOutcome::from_response(request, &response.body, now)
            }
            Self::Refused(hresult) => crate::client::ActivationOutcome::refused(*hresult),
        }
    }
}

/// Why a client transport failed. The connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The deadline passed before the exchange completed.
    #[error("timed out")]
    Timeout,
    /// The host's reply failed the client engine's checks, or the request
    /// could not be sent.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The host closed the connection before answering.
    #[error("the host closed the connection")]
    Closed,
    /// The address resolved to nothing.
    #[error("no address to connect to")]
    NoAddress,
}

/// The clocks, read in one place: a monotonic instant for deadlines and
/// latencies, and the wall clock handed to the engines.
#[expect(
    clippy::disallowed_methods,
    reason = "the transports are where the clock enters the sans-IO engines"
)]
mod clock {
    use std::time::{Instant, SystemTime};

    use crate::FileTime;

    /// The monotonic clock.
    pub(super) fn instant() -> Instant {
        Instant::now()
    }

    /// The wall clock as the engines take it.
    pub(super) fn wall() -> FileTime {
        FileTime::try_from(SystemTime::now()).unwrap_or_default()
    }
}

/// Both clocks at once.
fn now() -> (Instant, FileTime) {
    (clock::instant(), clock::wall())
}

/// How long a server waits for [`Handler::flush`] at the end of a
/// shutdown before giving up on it (an error of `serve`, of kind
/// [`io::ErrorKind::TimedOut`]).
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// A horizon no deadline goes past: about a century. Far enough to mean
/// "never", near enough for any clock's arithmetic.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `at + after`, saturating: a duration too long for the clock (such as
/// [`Duration::MAX`]) gives a deadline that never comes, not an overflow.
fn deadline_after(at: Instant, after: Duration) -> Instant {
    at.checked_add(after.min(FOREVER))
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}

/// Refuses with `refusal` every request `conn` still has unanswered (with
/// 0xC004F039 if `refusal` is no refusal at all); returns how many.
fn refuse_left(conn: &mut HostConnection, refusal: HResult) -> usize {
    let refusal = if refusal == HResult::S_OK {
        HResult::BINDING_SERVICE_NOT_ENABLED
    } else {
        refusal
    };
    conn.refuse_unanswered(refusal).unwrap_or(0)
}

/// Whether `accept` failed for lack of file descriptors (`EMFILE`,
/// `ENFILE`): the server is full as far as the system is concerned.
fn out_of_descriptors(error: &io::Error) -> bool {
    // EMFILE and ENFILE: 24 and 23 on Linux, macOS and the BSDs; Windows
    // reports WSAEMFILE (10024).
    matches!(error.raw_os_error(), Some(24 | 23 | 10024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        let t0 = clock::instant();
        assert!(deadline_after(t0, Duration::MAX) > deadline_after(t0, Duration::from_secs(1)));
        assert_eq!(
            deadline_after(t0, Duration::from_secs(3)),
            t0.checked_add(Duration::from_secs(3)).unwrap()
        );
        assert!(out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(!out_of_descriptors(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
    }
}
