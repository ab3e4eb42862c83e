//! The blocking transport (feature `blocking`): [`Server`] and [`Client`]
//! over `std::net`, without an async runtime.
//!
//! The server serves each connection on a thread of a bounded pool
//! ([`ServerLimits::max_connections`](super::ServerLimits::max_connections)
//! threads at most, and never more than [`MAX_THREADS`], started as
//! needed; [`ServerLimits::threaded`](super::ServerLimits::threaded)
//! gives 64). A [`Handler`]'s future is run on the connection's thread
//! until it completes or [`ServerLimits::handler_timeout`](super::ServerLimits::handler_timeout)
//! passes: then it is dropped and the requests it left are refused with
//! [`Handler::timeout_refusal`]. A future that waits (on a channel, another
//! thread, a timer) is interrupted so; one that blocks its thread inside a
//! poll cannot be, and is bounded only by what it blocks on.
//!
//! ```no_run
//! use kms_activation::host::store::MemoryStore;
//! use kms_activation::host::{KmsHost, KmsHostConfig};
//! use kms_activation::transport::blocking::{Server, Shutdown};
//! use kms_activation::transport::{ServerConfig, ServerLimits, bind};
//! use kms_activation::{FileTime, OsRandom};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = FileTime::try_from(std::time::SystemTime::now())?;
//! let host = pollster::block_on(KmsHost::start(
//!     KmsHostConfig::default(), MemoryStore::default(), now, &mut OsRandom,
//! ))?;
//! let mut config = ServerConfig::default();
//! config.set_limits(ServerLimits::threaded());
//! let shutdown = Shutdown::new();
//! let stop = shutdown.clone(); // call stop.trigger() from elsewhere to drain and stop
//! # stop.trigger();
//! Server::new(host, config).serve(bind(&["127.0.0.1:1688".parse()?])?, &shutdown)?;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::guard::{Registered, block_on_until, unwind_safe};
use super::io_loop;
use super::random::BufferedOsRandom;
use super::registry::{Closer, Entry, Registry};
use super::session::{ClientSession, READ_CHUNK, ServerSession};
use super::{
    CloseReason, Error, FLUSH_TIMEOUT, Handler, NoObserver, Observer, Outcome, ServerConfig, clock,
    deadline_after, out_of_descriptors, refuse_left,
};
use crate::client::{ClientConfig, ClientConnection};
use crate::host::HostConnection;

/// How long a newcomer waits for a free thread at the connection cap when
/// no connection is idle; accepting stops meanwhile.
const ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// Longest pause between two looks at the (non-blocking) listeners.
const MAX_ACCEPT_POLL: Duration = Duration::from_millis(5);

/// After the grace period and the close request, how long connections get
/// to notice before `serve` returns without them.
const FORCE_CLOSE_WAIT: Duration = Duration::from_millis(250);

/// The most threads (and so connections) a blocking server runs, whatever
/// [`ServerLimits::max_connections`](super::ServerLimits::max_connections)
/// says: each takes a stack and a scheduler slot. A host that needs more
/// connections wants the [`tokio`](super::tokio) transport.
pub const MAX_THREADS: usize = 256;

/// How often an idle worker thread looks for the end of the server.
const WORKER_POLL: Duration = Duration::from_millis(200);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells a blocking [`Server`] to shut down gracefully; cheap to clone and
/// to share with a signal handler thread.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<(Mutex<bool>, Condvar)>);

impl Shutdown {
    /// A signal not yet triggered.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the shutdown of every server given this signal.
    pub fn trigger(&self) {
        *lock(&self.0.0) = true;
        self.0.1.notify_all();
    }

    /// Whether [`trigger`](Self::trigger) was called.
    #[must_use]
    pub fn is_triggered(&self) -> bool {
        *lock(&self.0.0)
    }

    /// Waits up to `timeout` for the trigger; true once triggered.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = lock(&self.0.0);
        let (guard, _) = self
            .0
            .1
            .wait_timeout_while(guard, timeout, |triggered| !*triggered)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

/// Closing a blocking connection: shutting its socket down wakes the
/// thread blocked reading it.
impl Closer for TcpStream {
    fn close(&self) {
        let _ = self.shutdown(Direction::Both);
    }
}

/// Connections handed from the accepting thread to the pool.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<(TcpStream, SocketAddr)>,
    /// Connections accepted and not yet finished (queued or served).
    active: usize,
    /// Worker threads started.
    workers: usize,
    /// Worker threads waiting for a connection.
    idle_workers: usize,
    stopped: bool,
}

struct Shared<H> {
    handler: H,
    config: ServerConfig,
    observer: Arc<dyn Observer>,
    registry: Registry<TcpStream>,
    queue: Mutex<Queue>,
    /// Signalled when a connection is queued, finishes, or the server stops.
    changed: Condvar,
}

/// A KMS server over `std::net`, on a bounded pool of threads. See the
/// [module documentation](self) for an example and
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
    /// A server deciding with `handler`. Use
    /// [`ServerLimits::threaded`](super::ServerLimits::threaded) (or
    /// another small connection cap) in `config`: each connection takes a
    /// thread.
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

    /// Serves on `listeners` until `shutdown` is triggered, then shuts
    /// down gracefully (see [`transport`](super)) and flushes the handler.
    /// Blocks the calling thread, which accepts; connections are served on
    /// the pool.
    ///
    /// The handler's work is bounded by
    /// [`ServerLimits::handler_timeout`](super::ServerLimits::handler_timeout)
    /// as far as a future on a thread can be (see the
    /// [module documentation](self)); writes to the peer are bounded too.
    /// Running out of file descriptors closes the oldest idle connection
    /// to make room.
    ///
    /// # Errors
    ///
    /// A listener that cannot be made non-blocking, a worker thread that
    /// cannot be started, or a store that cannot flush
    /// ([`io::ErrorKind::Other`]) or does not within
    /// [`FLUSH_TIMEOUT`] ([`io::ErrorKind::TimedOut`]).
    pub fn serve(self, listeners: Vec<TcpListener>, shutdown: &Shutdown) -> io::Result<()> {
        for listener in &listeners {
            listener.set_nonblocking(true)?;
        }
        let limits = *self.config.limits();
        let max = limits.max_connections.clamp(1, MAX_THREADS);
        let shared = Arc::new(Shared {
            handler: self.handler,
            config: self.config,
            observer: self.observer,
            registry: Registry::new(clock::instant()),
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let mut pause = Duration::from_millis(1);
        while !shutdown.is_triggered() {
            let (stream, peer) = match accept_any(&listeners) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => {
                    if shutdown.wait(pause) {
                        break;
                    }
                    pause = (pause * 2).min(MAX_ACCEPT_POLL);
                    continue;
                }
                Err(error) => {
                    // Out of descriptors: as full as at the connection cap.
                    if out_of_descriptors(&error) {
                        shared.registry.evict_oldest_idle(clock::instant());
                        shared.observer.accept_failed(&error, true);
                    } else {
                        shared.observer.accept_failed(&error, false);
                    }
                    if shutdown.wait(MAX_ACCEPT_POLL) {
                        break;
                    }
                    continue;
                }
            };
            pause = Duration::from_millis(1);
            if !take_slot(&shared, max) {
                shared.observer.connection_refused(peer);
                continue;
            }
            let start_worker = {
                let mut queue = lock(&shared.queue);
                queue.waiting.push_back((stream, peer));
                let start = queue.idle_workers == 0 && queue.workers < max;
                if start {
                    queue.workers += 1;
                }
                start
            };
            shared.changed.notify_all();
            if start_worker {
                let pool = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("kms-conn".into())
                    .spawn(move || worker(&pool));
                if let Err(e) = spawned {
                    lock(&shared.queue).workers -= 1;
                    return Err(e);
                }
            }
        }
        drop(listeners);
        shared.registry.drain();
        if !wait_until_idle(&shared, limits.shutdown_grace) {
            shared.registry.close_all();
            wait_until_idle(&shared, FORCE_CLOSE_WAIT);
        }
        lock(&shared.queue).stopped = true;
        shared.changed.notify_all();
        let flushed = block_on_until(
            shared.handler.flush(),
            deadline_after(clock::instant(), FLUSH_TIMEOUT),
        );
        match flushed {
            Some(flushed) => flushed.map_err(io::Error::other),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the store did not flush in time",
            )),
        }
    }
}

/// The next connection waiting on any listener, if any; an error that is
/// not about one connection (out of descriptors, say).
fn accept_any(listeners: &[TcpListener]) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    let mut failed = None;
    for listener in listeners {
        match listener.accept() {
            Ok(accepted) => return Ok(Some(accepted)),
            Err(e) if out_of_descriptors(&e) => failed = Some(e),
            Err(_) => {}
        }
    }
    failed.map_or(Ok(None), Err)
}

/// Counts a new connection in, closing the oldest idle one (and waiting
/// for it to go) at the cap. False when no room was made in time.
fn take_slot<H>(shared: &Shared<H>, max: usize) -> bool {
    let mut queue = lock(&shared.queue);
    if queue.active >= max {
        drop(queue);
        shared.registry.evict_oldest_idle(clock::instant());
        queue = lock(&shared.queue);
        let deadline = deadline_after(clock::instant(), ACCEPT_WAIT);
        while queue.active >= max {
            let left = deadline.saturating_duration_since(clock::instant());
            if left.is_zero() {
                return false;
            }
            queue = shared
                .changed
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
    queue.active += 1;
    true
}

/// Waits up to `limit` for every connection to finish; true if they did.
fn wait_until_idle<H>(shared: &Shared<H>, limit: Duration) -> bool {
    let deadline = deadline_after(clock::instant(), limit);
    let mut queue = lock(&shared.queue);
    while queue.active > 0 {
        // Connections still queued never started: close them now.
        while let Some((stream, _)) = queue.waiting.pop_front() {
            let _ = stream.shutdown(Direction::Both);
            queue.active -= 1;
        }
        let left = deadline.saturating_duration_since(clock::instant());
        if left.is_zero() {
            return false;
        }
        queue = shared
            .changed
            .wait_timeout(queue, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

/// A pool thread: serves queued connections until the server stops.
fn worker<H: Handler>(shared: &Shared<H>) {
    loop {
        let next = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(next) = queue.waiting.pop_front() {
                    break Some(next);
                }
                if queue.stopped {
                    break None;
                }
                queue.idle_workers += 1;
                queue = shared
                    .changed
                    .wait_timeout(queue, WORKER_POLL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                queue.idle_workers -= 1;
            }
        };
        let Some((stream, peer)) = next else {
            return;
        };
        // A panic (the handler's is caught further in; this is for the
        // rest) must not cost the pool its slot or its thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve_connection(shared, stream, peer);
        }));
        lock(&shared.queue).active -= 1;
        shared.changed.notify_all();
    }
}

fn serve_connection<H: Handler>(shared: &Shared<H>, stream: TcpStream, peer: SocketAddr) {
    let closer = match stream.try_clone() {
        Ok(closer) => closer,
        Err(e) => {
            shared.observer.connection_opened(peer, 0);
            shared
                .observer
                .connection_closed(peer, 0, &CloseReason::Io(e.kind()));
            return;
        }
    };
    let registered = Registered::new(&shared.registry, closer);
    let id = registered.entry().id();
    shared.observer.connection_opened(peer, id);
    let reason = drive(shared, stream, peer, registered.entry());
    shared.observer.connection_closed(peer, id, &reason);
}

fn drive<H: Handler>(
    shared: &Shared<H>,
    mut stream: TcpStream,
    peer: SocketAddr,
    entry: &Entry<TcpStream>,
) -> CloseReason {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let conn = HostConnection::new(shared.config.host())
        .with_peer(peer)
        .with_connection_id(entry.id());
    let mut session = ServerSession::new(conn, *shared.config.limits(), clock::instant());
    let _ = stream.set_write_timeout(Some(session.handler_timeout()));
    let mut rng = BufferedOsRandom;
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
        let left = deadline.saturating_duration_since(clock::instant());
        if left.is_zero() {
            break on_deadline;
        }
        if !session.wants_input() {
            std::thread::sleep(left.min(WORKER_POLL));
            continue;
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            break CloseReason::Io(e.kind());
        }
        let mut buf = [0u8; READ_CHUNK];
        let n = match stream.read(&mut buf) {
            Ok(0) => break entry.close_request().unwrap_or(CloseReason::PeerClosed),
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {
                    continue;
                }
                kind => break entry.close_request().unwrap_or(CloseReason::Io(kind)),
            },
        };
        shared
            .registry
            .set_idle(entry, false, false, session.quiet_since());
        let mut failed = session
            .ingest(buf.get(..n).unwrap_or_default(), &mut rng)
            .err();
        loop {
            let limit = deadline_after(clock::instant(), session.handler_timeout());
            let processed = block_on_until(
                unwind_safe(shared.handler.process(session.conn(), &mut rng)),
                limit,
            );
            let (records, panicked) = match processed {
                Some(Ok(records)) => (records, false),
                outcome => {
                    // Timed out (the handler's work is dropped) or panicked:
                    // what it left unanswered gets its refusal.
                    let panicked = outcome.is_some();
                    let refused = refuse_left(session.conn(), shared.handler.timeout_refusal());
                    shared
                        .observer
                        .handler_failed(peer, entry.id(), refused, panicked);
                    (Vec::new(), panicked)
                }
            };
            let written = match write_output(&mut stream, session.conn()) {
                Ok(written) => written,
                Err(e) => break 'conn write_failure(&e),
            };
            session.finish_exchange(&records, written, &*shared.observer);
            if panicked {
                break 'conn CloseReason::HandlerPanicked;
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
    // Whatever the engine queued last (a fault, a bind_nak) goes out first.
    let _ = write_output(&mut stream, session.conn());
    let _ = stream.shutdown(Direction::Write);
    reason
}

fn write_failure(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CloseReason::HandlerTimeout,
        kind => CloseReason::Io(kind),
    }
}

/// Writes everything the engine has queued; returns how many bytes.
fn write_output(stream: &mut TcpStream, conn: &mut HostConnection) -> io::Result<usize> {
    crate::block_on::block_on(io_loop::write_output(stream, conn))
}

/// A blocking KMS client: one connection, any number of activations on it,
/// each response verified by the client engine.
///
/// ```no_run
/// use kms_activation::client::ClientConfig;
/// use kms_activation::transport::{Outcome, blocking::Client};
/// use std::time::Duration;
/// # fn run(request: kms_activation::RequestBody) -> Result<(), kms_activation::transport::Error> {
/// let mut client = Client::connect("127.0.0.1:1688", &ClientConfig::default(), Duration::from_secs(5))?;
/// if let Outcome::Answered(response) = client.activate(request)? {
///     println!("count {}", response.body.count);
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
    /// `deadline` (each); `deadline` then bounds each
    /// [`activate`](Self::activate).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (a timed-out connect is [`Error::Timeout`]) or
    /// [`Error::NoAddress`].
    pub fn connect(
        addr: impl ToSocketAddrs,
        config: &ClientConfig,
        deadline: Duration,
    ) -> Result<Self, Error> {
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, deadline) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream.set_write_timeout(Some(deadline))?;
                    return Ok(Self {
                        stream,
                        session: ClientSession::new(ClientConnection::new(config)),
                        timeout: deadline,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => last = Some(Error::Timeout),
                Err(e) => last = Some(Error::Io(e)),
            }
        }
        Err(last.unwrap_or(Error::NoAddress))
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
    pub fn activate(&mut self, request: crate::RequestBody) -> Result<Outcome, Error> {
        let deadline = deadline_after(clock::instant(), self.timeout);
        self.session.send(request)?;
        let mut wire = io_loop::Deadlined {
            stream: &mut self.stream,
            deadline,
        };
        crate::block_on::block_on(io_loop::exchange(&mut wire, &mut self.session))
    }
}
