//! The tokio transport (feature `tokio`): [`Server`] and [`Client`] over
//! `tokio::net`.
//!
//! A host on 127.0.0.1 and `[::1]` (when the machine has IPv6), with
//! genuine counting in memory, until Ctrl-C:
//!
//! ```no_run
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{KmsHost, KmsHostConfig};
//! use kms_activation::transport::{ServerConfig, bind, tokio::Server};
//! use kms_activation::{FileTime, OsRandom};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let now = FileTime::try_from(std::time::SystemTime::now())?;
//! let host = KmsHost::start(KmsHostConfig::default(), MemoryStore::default(), now, &mut OsRandom).await?;
//! let listeners = bind(&["127.0.0.1:1688".parse()?, "[::1]:1688".parse()?])?;
//! Server::new(host, ServerConfig::default())
//!     .serve(listeners, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(())
//! # }
//! # let _ = run;
//! ```

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use ::tokio::io::AsyncWriteExt;
use ::tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use ::tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use ::tokio::task::JoinSet;
use ::tokio::time::{Instant as TokioInstant, Sleep, sleep_until, timeout};

use super::guard::{Registered, unwind_safe};
use super::io_loop::{self, write_output};
use super::random::BufferedOsRandom;
use super::registry::{Closer, Entry, Registry};
use super::session::{ClientSession, READ_CHUNK, ServerSession};
use super::{
    CloseReason, Error, FLUSH_TIMEOUT, Handler, NoObserver, Observer, Outcome, ServerConfig, clock,
    deadline_after, out_of_descriptors, refuse_left,
};
use crate::client::{ClientConfig, ClientConnection};
use crate::host::HostConnection;

/// How long a newcomer waits for a free slot at the connection cap when no
/// connection is idle; accepting stops meanwhile.
const ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// After the grace period and the close request, how long connections get
/// to notice before their tasks are cancelled.
const FORCE_CLOSE_WAIT: Duration = Duration::from_millis(250);

/// After `accept` failed, how long before the next try.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

impl Closer for Notify {
    fn close(&self) {
        self.notify_one();
    }
}

/// What every connection task shares.
struct Shared<H> {
    handler: H,
    config: ServerConfig,
    observer: Arc<dyn Observer>,
    registry: Registry<Notify>,
}

/// A KMS server on tokio: accepts connections on any number of listeners
/// and drives a [`HostConnection`] per connection, handing requests to a
/// [`Handler`]. See the [module documentation](self) for an example and
/// [`transport`](super) for the limits and the shutdown sequence.
pub struct Server<H> {
    handler: H,
    config: ServerConfig,
    observer: Arc<dyn Observer>,
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Server<H> {
    /// A server deciding with `handler`.
    #[must_use]
    pub fn new(handler: H, config: ServerConfig) -> Self {
        Self {
            handler,
            config,
            observer: Arc::new(NoObserver),
        }
    }

    /// Reports connections and requests to `observer` (logs, metrics).
    #[must_use]
    pub fn with_observer(mut self, observer: impl Observer) -> Self {
        self.observer = Arc::new(observer);
        self
    }

    /// Serves on `listeners` (from [`bind`](super::bind) or
    /// `std::net::TcpListener::bind`) until `shutdown` completes, then
    /// shuts down gracefully: stops accepting, lets exchanges in flight
    /// finish within [`ServerLimits::shutdown_grace`](super::ServerLimits::shutdown_grace),
    /// closes every connection and flushes the handler.
    ///
    /// Must be called within a tokio runtime with the I/O and time drivers
    /// enabled.
    ///
    /// # Errors
    ///
    /// A listener that cannot be registered with the runtime, or a store
    /// that cannot flush (as [`io::ErrorKind::Other`]) or does not within
    /// [`FLUSH_TIMEOUT`] ([`io::ErrorKind::TimedOut`]). Errors of single
    /// connections and of `accept` are not errors of the server: they close
    /// that connection (and are reported to the observer). Running out of
    /// file descriptors closes the oldest idle connection to make room.
    pub async fn serve(
        self,
        listeners: Vec<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let listeners = listeners
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let limits = *self.config.limits();
        let shared = Arc::new(Shared {
            handler: self.handler,
            config: self.config,
            observer: self.observer,
            registry: Registry::new(clock::instant()),
        });
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let accepted = ::tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = accept_any(&listeners) => accepted,
            };
            while tasks.try_join_next().is_some() {}
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors: as full as at the connection cap,
                    // so make room. Otherwise (a connection reset before it
                    // was accepted, say) breathe instead of spinning.
                    let full = out_of_descriptors(&error);
                    if full {
                        shared.registry.evict_oldest_idle(clock::instant());
                    }
                    if full || !is_transient(&error) {
                        shared.observer.accept_failed(&error, full);
                    }
                    ::tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let permit = if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                Some(permit)
            } else {
                shared.registry.evict_oldest_idle(clock::instant());
                ::tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    permit = timeout(ACCEPT_WAIT, Arc::clone(&slots).acquire_owned()) => {
                        permit.ok().and_then(Result::ok)
                    }
                }
            };
            let Some(permit) = permit else {
                shared.observer.connection_refused(peer);
                continue;
            };
            tasks.spawn(serve_connection(Arc::clone(&shared), stream, peer, permit));
        }
        drop(listeners);
        shared.registry.drain();
        let drained = timeout(limits.shutdown_grace, join_all(&mut tasks)).await;
        if drained.is_err() {
            shared.registry.close_all();
            if timeout(FORCE_CLOSE_WAIT, join_all(&mut tasks))
                .await
                .is_err()
            {
                tasks.abort_all();
                join_all(&mut tasks).await;
            }
        }
        match timeout(FLUSH_TIMEOUT, shared.handler.flush()).await {
            Ok(flushed) => flushed.map_err(io::Error::other),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the store did not flush in time",
            )),
        }
    }
}

/// `accept` errors that concern one connection only (reset or aborted
/// before it was taken): not worth a log line.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// The next connection from any of the listeners.
async fn accept_any(listeners: &[TcpListener]) -> io::Result<(TcpStream, SocketAddr)> {
    poll_fn(|cx| {
        for listener in listeners {
            if let Poll::Ready(result) = listener.poll_accept(cx) {
                return Poll::Ready(result);
            }
        }
        Poll::Pending
    })
    .await
}

async fn serve_connection<H: Handler>(
    shared: Arc<Shared<H>>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    // Both are given back however the task ends (cancelled or panicking
    // included): the entry by its guard, the permit by its drop.
    let _permit = permit;
    let registered = Registered::new(&shared.registry, Notify::new());
    let id = registered.entry().id();
    shared.observer.connection_opened(peer, id);
    let reason = drive(&shared, stream, peer, registered.entry()).await;
    shared.observer.connection_closed(peer, id, &reason);
}

async fn drive<H: Handler>(
    shared: &Shared<H>,
    mut stream: TcpStream,
    peer: SocketAddr,
    entry: &Entry<Notify>,
) -> CloseReason {
    let _ = stream.set_nodelay(true);
    let conn = HostConnection::new(shared.config.host())
        .with_peer(peer)
        .with_connection_id(entry.id());
    let mut session = ServerSession::new(conn, *shared.config.limits(), clock::instant());
    let mut rng = BufferedOsRandom;
    // One timer per connection, moved only to an earlier deadline; when it
    // fires early (the deadline moved on) it is set again. Most exchanges
    // thus touch no timer at all.
    let (first, _) = session.deadline();
    let mut timer_at = first;
    let mut timer = pin!(sleep_until(TokioInstant::from_std(first)));
    // Registered once: the table's close request wakes it.
    let mut close_requested = pin!(entry.closer().notified());
    let reason = 'conn: loop {
        if let Some(reason) = entry
            .close_request()
            .or_else(|| session.close_reason(shared.registry.is_draining()))
        {
            break reason;
        }
        shared.registry.set_idle(
            entry,
            session.is_idle(),
            session.is_drainable(),
            session.quiet_since(),
        );
        let (deadline, on_deadline) = session.deadline();
        if deadline < timer_at {
            timer_at = deadline;
            timer.as_mut().reset(TokioInstant::from_std(deadline));
        }
        ::tokio::select! {
            biased;
            () = close_requested.as_mut() => continue,
            () = timer.as_mut() => {
                if clock::instant() >= deadline {
                    break on_deadline;
                }
                timer_at = deadline;
                timer.as_mut().reset(TokioInstant::from_std(deadline));
                continue;
            }
            readable = stream.readable(), if session.wants_input() => {
                if let Err(e) = readable {
                    break CloseReason::Io(e.kind());
                }
            }
        }
        // The read buffer lives only here, between two awaits, so an idle
        // connection holds no buffer.
        let read = {
            let mut buf = [0u8; READ_CHUNK];
            match stream.try_read(&mut buf) {
                Ok(0) => Err(CloseReason::PeerClosed),
                Ok(n) => Ok(session.ingest(buf.get(..n).unwrap_or_default(), &mut rng)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(CloseReason::Io(e.kind())),
            }
        };
        shared
            .registry
            .set_idle(entry, false, false, session.quiet_since());
        let mut failed = match read {
            Ok(result) => result.err(),
            Err(reason) => break reason,
        };
        loop {
            let timer = (timer.as_mut(), &mut timer_at);
            if let Err(reason) = exchange(shared, &mut session, &mut stream, &mut rng, timer).await
            {
                break 'conn reason;
            }
            if let Some(error) = failed.take() {
                break 'conn CloseReason::Protocol(error);
            }
            match session.resume(&mut rng) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => failed = Some(error),
            }
        }
    };
    // Whatever the engine queued last (a fault, a bind_nak) goes out first,
    // within the handler's time limit.
    let _ = timeout(session.handler_timeout(), async {
        write_output(&mut stream, session.conn()).await?;
        stream.shutdown().await
    })
    .await;
    reason
}

/// One exchange: hands the connection's requests to the handler within
/// the handler timeout, then writes the replies within it again. A handler
/// that runs out of time (its work is dropped) or panics has the requests
/// it left refused with its [`Handler::timeout_refusal`]; a panic then
/// closes the connection, once the refusals are written.
async fn exchange<H: Handler>(
    shared: &Shared<H>,
    session: &mut ServerSession,
    stream: &mut TcpStream,
    rng: &mut BufferedOsRandom,
    (mut timer, timer_at): (Pin<&mut Sleep>, &mut Instant),
) -> Result<(), CloseReason> {
    let limit = deadline_after(clock::instant(), session.handler_timeout());
    let processed = {
        let work = pin!(unwind_safe(shared.handler.process(session.conn(), rng)));
        bounded(work, timer.as_mut(), timer_at, limit).await
    };
    let (records, panicked) = match processed {
        Some(Ok(records)) => (records, false),
        outcome => {
            let panicked = outcome.is_some();
            let conn = session.conn();
            let refused = refuse_left(conn, shared.handler.timeout_refusal());
            let peer = conn
                .peer()
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            shared
                .observer
                .handler_failed(peer, conn.connection_id(), refused, panicked);
            (Vec::new(), panicked)
        }
    };
    let limit = deadline_after(clock::instant(), session.handler_timeout());
    let written = {
        let write = pin!(write_output(stream, session.conn()));
        bounded(write, timer, timer_at, limit).await
    };
    match written {
        None => return Err(CloseReason::HandlerTimeout),
        Some(Err(e)) => return Err(CloseReason::Io(e.kind())),
        Some(Ok(written)) => session.finish_exchange(&records, written, &*shared.observer),
    }
    if panicked {
        return Err(CloseReason::HandlerPanicked);
    }
    Ok(())
}

/// Runs `work` to completion unless `limit` passes first (`None`), on the
/// connection's timer, which is moved earlier to `limit` when needed: work
/// that completes at its first poll (an in-memory store, a write to a
/// socket with room) never touches it.
async fn bounded<T>(
    mut work: Pin<&mut impl Future<Output = T>>,
    mut timer: Pin<&mut Sleep>,
    timer_at: &mut Instant,
    limit: Instant,
) -> Option<T> {
    let first = poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    if let Poll::Ready(out) = first {
        return Some(out);
    }
    if limit < *timer_at {
        *timer_at = limit;
        timer.as_mut().reset(TokioInstant::from_std(limit));
    }
    loop {
        ::tokio::select! {
            biased;
            out = work.as_mut() => return Some(out),
            () = timer.as_mut() => {
                if clock::instant() >= limit {
                    return None;
                }
                *timer_at = limit;
                timer.as_mut().reset(TokioInstant::from_std(limit));
            }
        }
    }
}

/// A KMS client on tokio: one connection, any number of activations on it,
/// each response verified by the client engine.
///
/// ```no_run
/// use kms_activation::client::ClientConfig;
/// use kms_activation::transport::{Outcome, tokio::Client};
/// use std::time::Duration;
/// # async fn run(request: kms_activation::RequestBody) -> Result<(), kms_activation::transport::Error> {
/// let mut client = Client::connect("127.0.0.1:1688", &ClientConfig::default(), Duration::from_secs(5)).await?;
/// match client.activate(request).await? {
///     Outcome::Answered(response) => println!("count {}", response.body.count),
///     Outcome::Refused(hresult) => println!("refused: {hresult}"),
///     _ => {}
/// }
/// # Ok(())
/// # }
/// # let _ = run;
/// ```
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    session: ClientSession,
    timeout: Duration,
}

impl Client {
    /// Connects to the first address of `addr` that answers within
    /// `deadline`; `deadline` then bounds each [`activate`](Self::activate).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], [`Error::Io`], or [`Error::NoAddress`].
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: &ClientConfig,
        deadline: Duration,
    ) -> Result<Self, Error> {
        let stream = timeout(deadline, async {
            let mut last = None;
            for addr in ::tokio::net::lookup_host(addr).await? {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.map_or(Error::NoAddress, Error::Io))
        })
        .await
        .map_err(|_| Error::Timeout)??;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            session: ClientSession::new(ClientConnection::new(config)),
            timeout: deadline,
        })
    }

    /// The host's address.
    ///
    /// # Errors
    ///
    /// When the socket has no peer any more.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Sends one activation request (binding first on a new connection)
    /// and waits for its verified outcome.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] past the deadline, [`Error::Closed`] if the host
    /// hung up, [`Error::Client`] for a reply that fails verification,
    /// [`Error::Io`].
    pub async fn activate(&mut self, request: crate::RequestBody) -> Result<Outcome, Error> {
        self.session.send(request)?;
        let exchange = io_loop::exchange(&mut self.stream, &mut self.session);
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout)?
    }
}
