//! The SQLite count store: one file for one host, with group commit.
//!
//! One writer thread owns the connection. Every operation is sent to it over
//! a bounded channel; the thread takes the first operation waiting, then
//! every other one already queued (up to [`SqliteOptions::max_batch`]), runs
//! them in one transaction, commits once and only then completes each
//! operation's future. Under load many visits therefore share one `fsync`,
//! while a lone visit is committed at once. Reads go through the same
//! thread, so they see every operation submitted before them.
//!
//! A renewal of a client already counted, within
//! [`SqliteOptions::renewal_granularity`] of its stored visit and with the
//! same N policy, writes nothing (its tally would not change); a batch
//! that wrote nothing commits without an `fsync`. Its answer still waits
//! for the batch.
//!
//! Activation records queued by [`CountStore::queue_activation`] are
//! appended in a transaction of their own between batches, once 4096 of
//! them wait or the first has waited 100 ms (and before a `flush` or a
//! `recent_activations`), so they never delay a visit's commit and share
//! one `fsync`. Between batches, and when idle, the thread prunes aged
//! clients and activation records in bounded batches.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use rusqlite::{Connection, ErrorCode, Row, TransactionBehavior};

use super::query::{self, ClientEntry, LogEntry, LogQuery, Page};
use super::sql::{self, bad};
use super::{
    Background, CountStore, DEFAULT_MAX_CLIENTS_PER_APPLICATION, DEFAULT_MAX_LOG_RECORDS,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_RENEWAL_GRANULARITY, PRUNE_BATCH, StoreError, StoreHealth,
    Tally, Visit, deadline,
};
use crate::host::activation::ActivationRecord;
use crate::message::Version;
use crate::{FileTime, HResult, LicenseStatus, Uuid};

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`;
/// the journal is always in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqliteSync {
    /// `synchronous=FULL`: every commit `fsync`s the write-ahead log, so a
    /// visit survives a crash of the process *and* of the machine (power
    /// loss). The default; group commit keeps its cost to one `fsync` per
    /// batch. Measured (benches/README.md), a host still decides thousands
    /// of times a second with it, far above any organisation's load, so
    /// nothing a KMS host needs is bought by giving it up.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits reach the operating system but the
    /// log is `fsync`ed only at checkpoints. A visit survives the process
    /// being killed (`SIGKILL`), not a power loss, which may forget the last
    /// commits (never corrupt the file). Faster where `fsync` is slow: a
    /// lone visit about 15×, 64 decisions in flight about 2× (one
    /// measurement on a virtual disk); for such disks and for load tests.
    /// `kms-host --store sqlite:FILE?sync=normal`.
    Normal,
}

/// How a [`SqliteStore`] opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of a commit.
    pub synchronous: SqliteSync,
    /// The most operations one transaction carries.
    pub max_batch: usize,
    /// How long to wait for a lock held by another process on the same file
    /// (never longer than [`operation_timeout`](Self::operation_timeout)).
    pub busy_timeout: Duration,
    /// The deadline of one operation, its wait in the queue included
    /// (default [`DEFAULT_OPERATION_TIMEOUT`], 2 s); past it the operation
    /// fails with [`StoreError::TimedOut`].
    pub operation_timeout: Duration,
    /// Operations waiting for the writer at most (default 4096); one more
    /// fails at once with [`StoreError::TimedOut`].
    pub max_queue: usize,
    /// Activation records waiting to be appended at most (default 16 384);
    /// past it records are dropped and counted ([`StoreHealth`]).
    pub max_log_queue: usize,
    /// Clients kept per application (default
    /// [`DEFAULT_MAX_CLIENTS_PER_APPLICATION`], 1 000 000); at the bound the
    /// client seen longest ago gives way to a new one.
    pub max_clients_per_application: u64,
    /// Activation-log rows kept at most (default [`DEFAULT_MAX_LOG_RECORDS`],
    /// 1 000 000), besides the retention in time; the oldest go first, in
    /// the transaction that appends the new ones.
    pub max_log_records: u64,
    /// How often the writer prunes aged rows when it is otherwise idle
    /// (default 10 s).
    pub prune_interval: Duration,
    /// How stale a counted client's stored `last_seen` may be before a
    /// renewal rewrites it (default [`DEFAULT_RENEWAL_GRANULARITY`], 60 s,
    /// which explains the trade-off; zero writes every visit).
    ///
    /// A renewal within it writes nothing, so its batch commits (and
    /// `fsync`s) only if another operation in it wrote. The check reads the
    /// file inside the writer's transaction (no copy in memory), so it
    /// holds when other processes write the same file.
    pub renewal_granularity: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: SqliteSync::Full,
            max_batch: 1024,
            busy_timeout: DEFAULT_OPERATION_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_queue: 4096,
            max_log_queue: 16_384,
            max_clients_per_application: DEFAULT_MAX_CLIENTS_PER_APPLICATION,
            max_log_records: DEFAULT_MAX_LOG_RECORDS,
            prune_interval: Duration::from_secs(10),
            renewal_granularity: DEFAULT_RENEWAL_GRANULARITY,
        }
    }
}

/// A [`CountStore`] in one SQLite file: clients, activation log and ePIDs
/// survive a restart (and a `SIGKILL`), for one host.
///
/// Every future completes once its operation is committed, or fails at its
/// deadline ([`SqliteOptions::operation_timeout`]), and works under any
/// executor (`pollster::block_on` included): it only waits on a oneshot
/// channel the writer thread completes, and on a timer thread. Dropping the
/// store never blocks: the writer finishes what was submitted, then closes
/// the file, on its own; [`close`](Self::close) waits for that.
///
/// ```no_run
/// use kms_activation::host::store::{CountStore, SqliteStore, Visit};
/// use kms_activation::{FileTime, Uuid};
///
/// let store = SqliteStore::open("/var/lib/kms/host.sqlite")?;
/// let at = FileTime::from_ticks(134_397_882_570_000_000);
/// let window_start = FileTime::from_ticks(at.ticks() - 30 * 86_400 * 10_000_000);
/// let visit = Visit::new(Uuid::from_u128(1), Uuid::from_u128(7), 25, at, window_start);
/// let tally = pollster::block_on(store.record_visit(visit))?;
/// assert!(tally.clients >= 1);
/// # Ok::<(), kms_activation::host::store::StoreError>(())
/// ```
pub struct SqliteStore {
    path: PathBuf,
    jobs: Option<mpsc::SyncSender<Queued>>,
    writer: Option<JoinHandle<()>>,
    log: Arc<LogQueue>,
    background: Arc<Background>,
    timeout: Duration,
    /// The reader thread's queue: queries run on a connection of their
    /// own, never on the writer's.
    reads: Option<mpsc::SyncSender<Read>>,
}

/// A query for the reader thread.
type Read = Box<dyn FnOnce(&Connection) + Send>;

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("open", &self.jobs.is_some())
            .finish_non_exhaustive()
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One operation for the writer thread, with where its answer goes.
enum Job {
    Visit(Visit, Reply<Tally>),
    Tally(Uuid, FileTime, Reply<Tally>),
    Append(Box<ActivationRecord>, FileTime, Reply<()>),
    Recent(usize, Reply<Vec<ActivationRecord>>),
    Epid(Uuid, String, Reply<String>),
    Flush(Reply<()>),
    /// Activation records are waiting in the log queue.
    Wake,
}

/// A job and the instant past which its caller no longer waits.
struct Queued {
    job: Job,
    /// `None`: no deadline (an operation timeout past the clock's range).
    deadline: Option<Instant>,
}

/// Activation records waiting for the writer, bounded.
struct LogQueue {
    records: Mutex<Vec<(ActivationRecord, FileTime)>>,
    capacity: usize,
}

/// An executed job waiting for its batch to commit; called with the
/// commit's outcome.
type Completion = Box<dyn FnOnce(&Result<(), StoreError>)>;

fn completion<T: 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Completion {
    Box::new(move |commit: &Result<(), StoreError>| {
        let answer = match commit {
            Ok(()) => result,
            Err(e) => Err(e.clone()),
        };
        // The caller may have stopped waiting; nothing to do then.
        let _ = reply.send(answer);
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with default options.
    ///
    /// ```no_run
    /// let store = kms_activation::host::store::SqliteStore::open("host.sqlite")?;
    /// assert!(store.path().ends_with("host.sqlite"));
    /// # Ok::<(), kms_activation::host::store::StoreError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be opened or is
    /// locked, [`StoreError::SchemaTooNew`] when a newer release wrote it,
    /// [`StoreError::Backend`] when it is not a usable database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store at `path`, migrating a file
    /// written by an older release to the current schema.
    ///
    /// ```no_run
    /// use kms_activation::host::store::{SqliteOptions, SqliteStore, SqliteSync};
    ///
    /// let mut options = SqliteOptions::default();
    /// options.synchronous = SqliteSync::Normal;
    /// let store = SqliteStore::open_with("host.sqlite", options)?;
    /// store.close()?; // waits for the writer thread to finish
    /// # Ok::<(), kms_activation::host::store::StoreError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path).map_err(error)?;
        prepare(&mut conn, options)?;
        let (jobs, queue) = mpsc::sync_channel(options.max_queue.max(1));
        let log = Arc::new(LogQueue {
            records: Mutex::new(Vec::new()),
            capacity: options.max_log_queue,
        });
        let background = Arc::new(Background::new());
        let mut writer = Writer {
            conn,
            options,
            log: Arc::clone(&log),
            background: Arc::clone(&background),
            windows: HashMap::new(),
            retain_since: None,
            last_prune: Instant::now(),
            log_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("kms-sqlite-writer".into())
            .spawn(move || writer.serve(&queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        let reads = start_reader(&path, options)?;
        Ok(Self {
            path,
            jobs: Some(jobs),
            writer: Some(thread),
            log,
            background,
            timeout: options.operation_timeout,
            reads: Some(reads),
        })
    }

    /// The file this store lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops taking operations, waits until the writer has finished those
    /// submitted (queued activation records included) and closes the file.
    ///
    /// This blocks the calling thread: call it from a plain thread (or
    /// `tokio::task::spawn_blocking`), not from an async task. Dropping the
    /// store instead never blocks; the writer then finishes on its own.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the writer thread panicked.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.jobs = None;
        self.reads = None;
        match self.writer.take() {
            Some(writer) => writer
                .join()
                .map_err(|_| StoreError::Backend("the SQLite writer thread panicked".into())),
            None => Ok(()),
        }
    }

    /// Hands `job` to the writer; the future completes with its answer, or
    /// fails at the deadline.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Reply<T>) -> Job,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let timeout = self.timeout;
        let sent = match &self.jobs {
            None => Err(StoreError::Closed),
            Some(jobs) => {
                let deadline = Instant::now().checked_add(timeout);
                match jobs.try_send(Queued {
                    job: job(reply),
                    deadline,
                }) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => Err(StoreError::TimedOut(
                        "the SQLite writer's queue is full".into(),
                    )),
                    Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
                }
            }
        };
        async move {
            sent?;
            deadline::within(timeout, "the SQLite operation", async move {
                answer.await.unwrap_or(Err(StoreError::Closed))
            })
            .await
        }
    }
}

impl SqliteStore {
    /// Runs `query` on the reader thread; the future completes with its
    /// answer, or fails at the deadline.
    fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let timeout = self.timeout;
        let sent = match &self.reads {
            None => Err(StoreError::Closed),
            Some(reads) => {
                let read: Read = Box::new(move |conn| {
                    let _ = reply.send(query(conn));
                });
                match reads.try_send(read) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => Err(StoreError::TimedOut(
                        "the SQLite reader's queue is full".into(),
                    )),
                    Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
                }
            }
        };
        async move {
            sent?;
            deadline::within(timeout, "the SQLite query", async move {
                answer.await.unwrap_or(Err(StoreError::Closed))
            })
            .await
        }
    }

    /// A page of the log or of its clients, read on the reader thread:
    /// `build` writes the query, `map` reads each row, `seq` is an item's
    /// sequence number (where the next page starts).
    fn paged<T: Send + 'static>(
        &self,
        query: LogQuery,
        build: query::sql::Build,
        map: fn(&Row<'_>) -> Result<T, StoreError>,
        seq: fn(&T) -> u64,
    ) -> impl Future<Output = Result<Page<T>, StoreError>> + Send + 'static {
        self.read(move |conn| {
            let items = select(conn, build(&query, "", &numbered)?, map)?;
            Ok(query.page(items, seq))
        })
    }
}

/// Queries waiting for the reader at most; one more fails at once.
const MAX_READS: usize = 64;

/// Opens a second connection to `path`, read-only, and the thread that
/// answers queries on it (WAL lets it read while the writer commits).
fn start_reader(path: &Path, options: SqliteOptions) -> Result<mpsc::SyncSender<Read>, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(error)?;
    let busy = options
        .busy_timeout
        .min(options.operation_timeout)
        .min(Duration::from_millis(i32::MAX.unsigned_abs().into()));
    conn.busy_timeout(busy).map_err(error)?;
    let (reads, queue) = mpsc::sync_channel::<Read>(MAX_READS);
    std::thread::Builder::new()
        .name("kms-sqlite-reader".into())
        .spawn(move || {
            while let Ok(read) = queue.recv() {
                read(&conn);
            }
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start the reader thread: {e}")))?;
    Ok(reads)
}

/// `?n`, SQLite's numbered parameter.
fn numbered(n: usize) -> String {
    format!("?{n}")
}

/// Runs a query built by [`query::sql`] and maps its rows.
fn select<T>(
    conn: &Connection,
    (text, params): (String, Vec<query::sql::Param>),
    mut map: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let values: Vec<rusqlite::types::Value> = params
        .into_iter()
        .map(|param| match param {
            query::sql::Param::Int(n) => rusqlite::types::Value::Integer(n),
            query::sql::Param::Uuid(id) => rusqlite::types::Value::Blob(id.as_bytes().to_vec()),
            query::sql::Param::Bytes(bytes) => rusqlite::types::Value::Blob(bytes.to_vec()),
        })
        .collect();
    let mut statement = conn.prepare_cached(&text).map_err(error)?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(values))
        .map_err(error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Column 17: the record's sequence number (its row ID).
fn sequence(row: &Row<'_>) -> Result<u64, StoreError> {
    let id: i64 = row.get(17).map_err(error)?;
    u64::try_from(id).map_err(|_| bad("activations.id", id))
}

/// A row of [`query::sql::activations`].
fn log_entry(row: &Row<'_>) -> Result<LogEntry, StoreError> {
    let record = activation(row)?;
    Ok(LogEntry {
        seq: sequence(row)?,
        record,
    })
}

/// A row of [`query::sql::clients`].
fn client_entry(row: &Row<'_>) -> Result<ClientEntry, StoreError> {
    let last = activation(row)?;
    let first: i64 = row.get(18).map_err(error)?;
    let requests: i64 = row.get(19).map_err(error)?;
    Ok(ClientEntry {
        seq: sequence(row)?,
        last,
        first_seen: sql::file_time(first, "activations.time")?,
        requests: sql::count_of(requests, "count(*)")?,
    })
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is
        // empty. The writer is not joined: a drop on an async runtime's
        // worker must not block it (`close` waits, when asked).
        self.jobs = None;
        self.reads = None;
        drop(self.writer.take());
    }
}

impl CountStore for SqliteStore {
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        self.submit(move |reply| Job::Visit(visit, reply))
    }

    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        self.submit(move |reply| Job::Tally(application_id, window_start, reply))
    }

    fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let record = Box::new(record.clone());
        self.submit(move |reply| Job::Append(record, retain_since, reply))
    }

    fn queue_activation(
        &self,
        record: ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        let Some(jobs) = &self.jobs else {
            return Err(StoreError::Closed);
        };
        let mut records = self
            .log
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if records.len() >= self.log.capacity {
            // The caller counts and reports the refusal.
            return Err(StoreError::TimedOut(
                "the activation log's queue is full".into(),
            ));
        }
        let wake = records.is_empty();
        records.push((record, retain_since));
        drop(records);
        if wake {
            // A full channel means a batch is coming, which drains the log
            // queue too.
            let _ = jobs.try_send(Queued {
                job: Job::Wake,
                deadline: None,
            });
        }
        Ok(())
    }

    fn health(&self) -> StoreHealth {
        self.background.health()
    }

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        self.submit(move |reply| Job::Recent(limit, reply))
    }

    fn activations(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<LogEntry>, StoreError>> + Send {
        self.paged(query, query::sql::activations, log_entry, |entry| entry.seq)
    }

    fn clients(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<ClientEntry>, StoreError>> + Send {
        self.paged(query, query::sql::clients, client_entry, |entry| entry.seq)
    }

    fn host_epid(
        &self,
        csvlk_id: Uuid,
        candidate: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send {
        let candidate = candidate.to_owned();
        self.submit(move |reply| Job::Epid(csvlk_id, candidate, reply))
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.submit(Job::Flush)
    }
}

/// The schema version this release writes (`PRAGMA user_version`).
///
/// * 0: the first release, unversioned.
/// * 1: the maximum N policy is read from an index that also holds
///   `last_seen`, so aged rows not yet pruned are skipped without a scan.
/// * 2: the activation log keeps the client's address as a sortable key
///   (`peer_ip`) and is indexed by client and by application, for the
///   clients and log queries.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Version 0, as the first release created it.
const SCHEMA_V0: &str = "
CREATE TABLE IF NOT EXISTS clients (
    application_id BLOB NOT NULL,
    cmid BLOB NOT NULL,
    last_seen INTEGER NOT NULL,
    n_policy INTEGER NOT NULL,
    PRIMARY KEY (application_id, cmid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clients_by_last_seen ON clients (application_id, last_seen);
CREATE INDEX IF NOT EXISTS clients_by_n_policy ON clients (application_id, n_policy);
CREATE TABLE IF NOT EXISTS applications (
    application_id BLOB PRIMARY KEY,
    clients INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    peer TEXT,
    connection_id INTEGER NOT NULL,
    protocol INTEGER NOT NULL,
    application_id BLOB NOT NULL,
    sku_id BLOB NOT NULL,
    kms_id BLOB NOT NULL,
    cmid BLOB NOT NULL,
    previous_cmid BLOB NOT NULL,
    workstation TEXT NOT NULL,
    n_policy INTEGER NOT NULL,
    client_time INTEGER NOT NULL,
    virtual_machine INTEGER NOT NULL,
    license_status INTEGER NOT NULL,
    minutes_to_expiry INTEGER NOT NULL,
    count INTEGER,
    result INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS activations_by_time ON activations (time);
CREATE TABLE IF NOT EXISTS epids (
    csvlk_id BLOB PRIMARY KEY,
    epid TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 0 → 1.
const MIGRATE_V1: &str = "
DROP INDEX IF EXISTS clients_by_n_policy;
CREATE INDEX IF NOT EXISTS clients_by_n_policy_seen ON clients (application_id, n_policy, last_seen);
";

/// Version 1 → 2 (records stored before keep no `peer_ip`: address
/// filters skip them).
const MIGRATE_V2: &str = "
ALTER TABLE activations ADD COLUMN peer_ip BLOB;
CREATE INDEX IF NOT EXISTS activations_by_client ON activations (application_id, cmid, id);
CREATE INDEX IF NOT EXISTS activations_by_application ON activations (application_id, id);
";

/// Pragmas, schema (migrated forward), and the per-application counters
/// rebuilt from the client rows (so a file edited by hand cannot keep a
/// wrong count).
/// The page cache of each connection, at most (SQLite's default is 2 MiB):
/// new clients land on random pages of the client table's indexes, so a
/// cache smaller than them reads a page from the operating system for
/// nearly every insert. Grows only as pages are used.
const CACHE_KIB: i64 = 64 * 1024;
/// The write-ahead log is copied back into the database once it holds this
/// many pages (SQLite's default is 1000): the pages every batch rewrites
/// (the counter, the indexes' upper levels) are copied once per checkpoint,
/// so fewer checkpoints copy less. The log file grows to about 64 MiB.
const CHECKPOINT_PAGES: i64 = 16_384;

fn prepare(conn: &mut Connection, options: SqliteOptions) -> Result<(), StoreError> {
    // SQLite takes the wait in milliseconds as a C int.
    let busy = options
        .busy_timeout
        .min(options.operation_timeout)
        .min(Duration::from_millis(i32::MAX.unsigned_abs().into()));
    conn.busy_timeout(busy).map_err(error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "journal_mode is {mode}, not WAL"
        )));
    }
    let synchronous = match options.synchronous {
        SqliteSync::Full => "FULL",
        SqliteSync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(error)?;
    // A negative cache size is in KiB.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(error)?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
        .map_err(error)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V0).map_err(error)?;
        tx.execute_batch(MIGRATE_V1).map_err(error)?;
    }
    if version < 2 {
        tx.execute_batch(MIGRATE_V2).map_err(error)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(error)?;
    tx.execute_batch(
        "DELETE FROM applications;
         INSERT INTO applications (application_id, clients)
             SELECT application_id, count(*) FROM clients GROUP BY application_id;",
    )
    .map_err(error)?;
    tx.commit().map_err(error)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    options: SqliteOptions,
    log: Arc<LogQueue>,
    background: Arc<Background>,
    /// The latest window start seen per application (for pruning).
    windows: HashMap<[u8; 16], i64>,
    /// The latest retention bound of the activation log seen.
    retain_since: Option<i64>,
    last_prune: Instant,
    /// When the writer first found activation records waiting, if it has
    /// not appended them since.
    log_since: Option<Instant>,
}

/// Activation records are appended once this many wait (or half the log
/// queue's capacity, if less)…
///
/// The log's index by client takes each record at a random place, so a
/// commit writes about one page per record to the write-ahead log until a
/// batch is large enough for records to share pages: 4096 rather than 1024
/// took the host's CPU per keep-alive decision from 29.5 to 26 µs with
/// 100 000 distinct clients (benches/README.md).
const LOG_BATCH: usize = 4096;
/// … or once the first has waited this long: one transaction (one `fsync`,
/// the same few pages rewritten) for many records, instead of one after
/// every batch of visits.
const LOG_DELAY: Duration = Duration::from_millis(100);

impl Writer {
    /// Batches, one transaction per batch; the log and pruning in between.
    fn serve(&mut self, queue: &mpsc::Receiver<Queued>) {
        let interval = self.options.prune_interval.max(Duration::from_millis(10));
        let mut backlog = false;
        loop {
            // With pruning left over, come back to it soon.
            let wait = if backlog {
                Duration::from_millis(10)
            } else {
                interval
            };
            // Queued activation records are due within `LOG_DELAY`.
            let wait = match self.log_since {
                Some(since) => wait.min(LOG_DELAY.saturating_sub(since.elapsed())),
                None => wait,
            };
            let first = match queue.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.append_due();
                    if backlog || self.last_prune.elapsed() >= interval {
                        backlog = self.prune();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < self.options.max_batch.max(1) {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A flush also covers the records queued before it, and the
            // recent records include them.
            if batch
                .iter()
                .any(|queued| matches!(queued.job, Job::Flush(_) | Job::Recent(..)))
            {
                self.append_queued();
            }
            // A batch of wake-ups alone needs no transaction.
            if batch.iter().any(|queued| !matches!(queued.job, Job::Wake)) {
                self.run_batch(batch);
            }
            self.append_due();
            if backlog || self.last_prune.elapsed() >= interval {
                backlog = self.prune();
            }
        }
        self.append_queued();
    }

    fn run_batch(&mut self, batch: Vec<Queued>) {
        let now = Instant::now();
        // `BEGIN` and `COMMIT` from the statement cache: rusqlite's
        // `Transaction` parses them anew for every batch.
        let tx = &self.conn;
        if let Err(e) = run(tx, "BEGIN IMMEDIATE") {
            let failure = Err(e);
            for queued in batch {
                fail(queued.job)(&failure);
            }
            return;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut jobs = batch.into_iter();
        for queued in jobs.by_ref() {
            if queued.deadline.is_some_and(|deadline| deadline < now) {
                // Its caller has stopped waiting: skip it.
                done.push(expired(queued.job));
                continue;
            }
            done.push(execute(
                tx,
                queued.job,
                &mut self.windows,
                &mut self.retain_since,
                self.options,
            ));
            if tx.is_autocommit() {
                // SQLite rolled the whole transaction back (disk full, I/O
                // error): nothing of this batch is committed.
                break;
            }
        }
        let outcome = if tx.is_autocommit() {
            Err(StoreError::Backend(
                "the transaction was rolled back by SQLite".into(),
            ))
        } else {
            run(tx, "COMMIT")
        };
        if !tx.is_autocommit() {
            // The commit failed: nothing of the batch stays.
            let _ = run(tx, "ROLLBACK");
        }
        for queued in jobs {
            fail(queued.job)(&outcome);
        }
        for complete in done {
            complete(&outcome);
        }
    }

    /// Appends the queued activation records once [`LOG_BATCH`] of them
    /// wait or the first has waited [`LOG_DELAY`].
    fn append_due(&mut self) {
        let waiting = self
            .log
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if waiting == 0 {
            self.log_since = None;
            return;
        }
        let since = *self.log_since.get_or_insert_with(Instant::now);
        if waiting >= LOG_BATCH.min(self.log.capacity / 2).max(1) || since.elapsed() >= LOG_DELAY {
            self.append_queued();
        }
    }

    /// Appends the queued activation records in one transaction.
    fn append_queued(&mut self) {
        self.log_since = None;
        let records = std::mem::take(
            &mut *self
                .log
                .records
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if records.is_empty() {
            return;
        }
        let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(error)?;
            for (record, retain_since) in &records {
                insert_activation(&tx, record)?;
                let bound = sql::ticks(*retain_since)?;
                self.retain_since = Some(self.retain_since.map_or(bound, |b| b.max(bound)));
            }
            // At least as many rows may go as came in, so the log stays
            // within its bounds however many records a batch brings.
            let mut owed = i64::try_from(records.len()).unwrap_or(i64::MAX);
            loop {
                let deleted = prune_log(&tx, self.retain_since, self.options.max_log_records)?;
                owed = owed.saturating_sub(deleted);
                if deleted < PRUNE_BATCH || owed <= 0 {
                    break;
                }
            }
            tx.commit().map_err(error)
        })();
        if let Err(e) = result {
            self.background.failed("appending activation records", &e);
            self.background.dropped(count, &e);
        }
    }

    /// Deletes aged clients and activation records, a bounded batch per
    /// statement and transaction, at most [`PRUNE_ROUNDS`] batches per
    /// table before the writer returns to its jobs. Returns true when
    /// something was left for the next call.
    fn prune(&mut self) -> bool {
        self.last_prune = Instant::now();
        let mut left = false;
        let windows: Vec<([u8; 16], i64)> = self.windows.iter().map(|(a, w)| (*a, *w)).collect();
        for (app, window_start) in windows {
            let mut rounds = 0;
            loop {
                match prune_clients(&mut self.conn, &app, window_start) {
                    Ok(deleted) if deleted >= PRUNE_BATCH => {
                        rounds += 1;
                        if rounds >= PRUNE_ROUNDS {
                            left = true;
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        self.background.failed("pruning aged clients", &e);
                        return false;
                    }
                }
            }
        }
        let mut rounds = 0;
        loop {
            let result = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(error)
                .and_then(|tx| {
                    let deleted = prune_log(&tx, self.retain_since, self.options.max_log_records)?;
                    tx.commit().map_err(error)?;
                    Ok(deleted)
                });
            match result {
                Ok(deleted) if deleted >= PRUNE_BATCH => {
                    rounds += 1;
                    if rounds >= PRUNE_ROUNDS {
                        return true;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    self.background.failed("pruning the activation log", &e);
                    return false;
                }
            }
        }
        left
    }
}

/// Pruning batches per table before the writer returns to its jobs.
const PRUNE_ROUNDS: u32 = 8;

/// One bounded batch of `app`'s clients last seen at or before
/// `window_start`, deleted with its counter in one transaction.
fn prune_clients(conn: &mut Connection, app: &[u8], window_start: i64) -> Result<i64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error)?;
    let deleted = delete_aged(&tx, app, window_start)?;
    tx.commit().map_err(error)?;
    Ok(deleted)
}

/// Parameters whose value can change a statement's plan (a `LIMIT`, a key
/// compared with an ordered index) make SQLite re-prepare the statement at
/// every use of a cached copy (the cache clears its bindings): those are
/// wrapped in a `CAST`, which keeps the plan and drops the dependency.
/// `sqlite_hot_statements_are_prepared_once` checks it.
const DELETE_AGED: &str = "DELETE FROM clients WHERE application_id = ?1 AND cmid IN (
    SELECT cmid FROM clients WHERE application_id = ?1 AND last_seen <= ?2
    LIMIT CAST(?3 AS INTEGER))";
const PRUNE_LOG_BY_TIME: &str = "DELETE FROM activations WHERE id IN (
    SELECT id FROM activations WHERE time < ?1 ORDER BY time LIMIT CAST(?2 AS INTEGER))";
/// Row ids only grow, so the newest `max_rows` rows have ids above
/// `max(id) - max_rows`.
const PRUNE_LOG_BY_ROWS: &str = "DELETE FROM activations WHERE id IN (
    SELECT id FROM activations WHERE id <= (SELECT max(id) FROM activations) - ?1
    ORDER BY id LIMIT CAST(?2 AS INTEGER))";
const EVICT_OLDEST: &str = "DELETE FROM clients WHERE application_id = ?1 AND cmid = (
    SELECT cmid FROM clients WHERE application_id = CAST(?1 AS BLOB)
    ORDER BY last_seen LIMIT 1)";
/// `app` (`?1`)'s counter, its rows aged out at window start `?2` and not
/// yet pruned, and the largest N policy among the live ones (the first live
/// row of the N policy index from the top).
macro_rules! tally_columns {
    () => {
        "(SELECT clients FROM applications WHERE application_id = ?1),
        (SELECT count(*) FROM clients INDEXED BY clients_by_last_seen
         WHERE application_id = ?1 AND last_seen <= ?2),
        (SELECT n_policy FROM clients INDEXED BY clients_by_n_policy_seen
         WHERE application_id = CAST(?1 AS BLOB) AND last_seen > ?2
         ORDER BY n_policy DESC LIMIT 1)"
    };
}
const LIVE_TALLY: &str = concat!("SELECT ", tally_columns!());
/// The stored visit of client `?3` and the tally: a renewal that writes
/// nothing is this one statement.
const LOOKUP_AND_TALLY: &str = concat!(
    "SELECT
        (SELECT last_seen FROM clients WHERE application_id = ?1 AND cmid = ?3),
        (SELECT n_policy FROM clients WHERE application_id = ?1 AND cmid = ?3), ",
    tally_columns!()
);

/// Deletes up to [`PRUNE_BATCH`] aged clients of `app`, counter included;
/// returns how many.
fn delete_aged(conn: &Connection, app: &[u8], window_start: i64) -> Result<i64, StoreError> {
    let deleted = conn
        .prepare_cached(DELETE_AGED)
        .and_then(|mut s| s.execute((app, window_start, PRUNE_BATCH)))
        .map_err(error)?;
    let deleted = i64::try_from(deleted).unwrap_or(i64::MAX);
    if deleted > 0 {
        conn.prepare_cached(
            "UPDATE applications SET clients = max(clients - ?2, 0) WHERE application_id = ?1",
        )
        .and_then(|mut s| s.execute((app, deleted)))
        .map_err(error)?;
    }
    Ok(deleted)
}

/// One bounded batch of activation records: older than `retain_since`,
/// then beyond the newest `max_rows`. Returns how many were deleted.
fn prune_log(
    conn: &Connection,
    retain_since: Option<i64>,
    max_rows: u64,
) -> Result<i64, StoreError> {
    let mut deleted = 0;
    if let Some(retain_since) = retain_since {
        deleted += conn
            .prepare_cached(PRUNE_LOG_BY_TIME)
            .and_then(|mut s| s.execute((retain_since, PRUNE_BATCH)))
            .map_err(error)?;
    }
    deleted += conn
        .prepare_cached(PRUNE_LOG_BY_ROWS)
        .and_then(|mut s| s.execute((sql::limit(max_rows), PRUNE_BATCH)))
        .map_err(error)?;
    Ok(i64::try_from(deleted).unwrap_or(i64::MAX))
}

/// A completion that only reports the batch's failure.
fn fail(job: Job) -> Completion {
    fn aborted<T>() -> Result<T, StoreError> {
        Err(StoreError::Backend("batch aborted".into()))
    }
    finish(job, aborted(), aborted(), aborted(), aborted())
}

/// A completion for a job whose caller's deadline passed in the queue.
fn expired(job: Job) -> Completion {
    fn late<T>() -> Result<T, StoreError> {
        Err(StoreError::TimedOut(
            "the operation waited past its deadline for the SQLite writer".into(),
        ))
    }
    finish(job, late(), late(), late(), late())
}

fn finish(
    job: Job,
    tally: Result<Tally, StoreError>,
    unit: Result<(), StoreError>,
    recent: Result<Vec<ActivationRecord>, StoreError>,
    epid: Result<String, StoreError>,
) -> Completion {
    match job {
        Job::Visit(_, reply) | Job::Tally(_, _, reply) => completion(reply, tally),
        Job::Append(_, _, reply) | Job::Flush(reply) => completion(reply, unit),
        Job::Recent(_, reply) => completion(reply, recent),
        Job::Epid(_, _, reply) => completion(reply, epid),
        Job::Wake => Box::new(|_: &Result<(), StoreError>| {}),
    }
}

/// Runs one job inside the batch; a failing write is rolled back to its
/// savepoint so the rest of the batch still commits.
fn execute(
    tx: &Connection,
    job: Job,
    windows: &mut HashMap<[u8; 16], i64>,
    retain: &mut Option<i64>,
    options: SqliteOptions,
) -> Completion {
    match job {
        Job::Visit(visit, reply) => {
            if let Ok(start) = sql::ticks(visit.window_start) {
                windows.insert(*visit.application_id.as_bytes(), start);
            }
            completion(reply, record(tx, &visit, options))
        }
        Job::Tally(app, window_start, reply) => completion(reply, tally(tx, app, window_start)),
        Job::Append(record, retain_since, reply) => {
            if let Ok(bound) = sql::ticks(retain_since) {
                *retain = Some(retain.map_or(bound, |b| b.max(bound)));
            }
            let bound = *retain;
            completion(
                reply,
                in_savepoint(tx, || {
                    insert_activation(tx, &record)?;
                    prune_log(tx, bound, options.max_log_records)?;
                    Ok(())
                }),
            )
        }
        Job::Recent(limit, reply) => completion(reply, recent(tx, limit)),
        Job::Epid(csvlk_id, candidate, reply) => {
            completion(reply, in_savepoint(tx, || epid(tx, csvlk_id, &candidate)))
        }
        Job::Flush(reply) => completion(reply, Ok(())),
        Job::Wake => Box::new(|_: &Result<(), StoreError>| {}),
    }
}

/// Runs `work`'s statements all or none: a failure rolls back to a
/// savepoint, so the rest of the batch still commits. The savepoint
/// statements are prepared once (rusqlite's `Savepoint` parses them anew
/// each time).
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    run(conn, "SAVEPOINT job")?;
    match work() {
        Ok(result) => {
            run(conn, "RELEASE job")?;
            Ok(result)
        }
        Err(e) => {
            // Nothing to undo when SQLite already rolled the whole
            // transaction back; the batch sees that (`is_autocommit`).
            let _ = run(conn, "ROLLBACK TO job").and_then(|()| run(conn, "RELEASE job"));
            Err(e)
        }
    }
}

/// Runs a statement without parameters or rows, prepared once.
fn run(conn: &Connection, statement: &str) -> Result<(), StoreError> {
    conn.prepare_cached(statement)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(error)
}

/// `app`'s counted clients within the window and their largest N policy:
/// the maintained counter minus the aged rows not yet pruned (an index
/// range, empty once pruning has run), and the first live row of the N
/// policy index from the top. No scan of the live clients.
fn live_tally(conn: &Connection, app: &[u8], window_start: i64) -> Result<(u64, u32), StoreError> {
    let columns: TallyColumns = conn
        .prepare_cached(LIVE_TALLY)
        .and_then(|mut s| s.query_row((app, window_start), |row| read_tally(row, 0)))
        .map_err(error)?;
    tally_of(columns)
}

/// What [`tally_columns!`] reads: the counter, the aged rows, the largest
/// live N policy.
type TallyColumns = (Option<i64>, i64, Option<i64>);

fn read_tally(row: &Row<'_>, first: usize) -> rusqlite::Result<TallyColumns> {
    Ok((row.get(first)?, row.get(first + 1)?, row.get(first + 2)?))
}

/// The live count and the largest N policy from [`TallyColumns`].
fn tally_of((counted, aged, max_n): TallyColumns) -> Result<(u64, u32), StoreError> {
    Ok((
        sql::count_of(
            counted.unwrap_or(0).saturating_sub(aged).max(0),
            "applications.clients",
        )?,
        sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
    ))
}

/// The counting rule (see the module documentation of `store`).
///
/// A counted client renewing within [`SqliteOptions::renewal_granularity`]
/// of its stored `last_seen`, with the same N policy, writes nothing: its
/// tally is the same with or without the write. A known client otherwise
/// is one `UPDATE` (a single statement, atomic without a savepoint); a new
/// one is admitted in a savepoint.
fn record(conn: &Connection, visit: &Visit, options: SqliteOptions) -> Result<Tally, StoreError> {
    let app = visit.application_id.as_bytes().as_slice();
    let cmid = visit.cmid.as_bytes().as_slice();
    let at = sql::ticks(visit.at)?;
    let window_start = sql::ticks(visit.window_start)?;
    let n_policy = i64::from(visit.n_policy);
    let granularity = sql::duration_ticks(options.renewal_granularity);

    let (last_seen, stored_n, columns): (Option<i64>, Option<i64>, TallyColumns) = conn
        .prepare_cached(LOOKUP_AND_TALLY)
        .and_then(|mut s| {
            s.query_row((app, window_start, cmid), |row| {
                Ok((row.get(0)?, row.get(1)?, read_tally(row, 2)?))
            })
        })
        .map_err(error)?;
    let stored = last_seen.zip(stored_n);
    let admitted = match stored {
        Some((last_seen, stored_n))
            if granularity > 0
                && stored_n == n_policy
                && last_seen > window_start
                && last_seen >= at.saturating_sub(granularity) =>
        {
            // Nothing written: the tally read with the lookup stands.
            let (clients, max_n_policy) = tally_of(columns)?;
            return Ok(Tally {
                clients,
                max_n_policy,
                admitted: true,
            });
        }
        Some((last_seen, stored_n)) if last_seen > window_start => {
            conn.prepare_cached(
                "UPDATE clients SET last_seen = max(last_seen, ?3), n_policy = ?4
                 WHERE application_id = ?1 AND cmid = ?2",
            )
            .and_then(|mut s| s.execute((app, cmid, at, n_policy)))
            .map_err(error)?;
            if stored_n == n_policy {
                // A live row stays live with the same N policy: the tally
                // read with the lookup stands.
                let (clients, max_n_policy) = tally_of(columns)?;
                return Ok(Tally {
                    clients,
                    max_n_policy,
                    admitted: true,
                });
            }
            true
        }
        // Unknown, or aged out of the window: a new client.
        _ => {
            let admission = in_savepoint(conn, || {
                admit(
                    conn,
                    visit,
                    stored.is_some(),
                    columns,
                    options.max_clients_per_application,
                )
            })?;
            let (clients, max_n_policy) = tally_of(columns)?;
            match admission {
                // Only aged rows were deleted: the live tally is the one read.
                Admission::Refused => {
                    return Ok(Tally {
                        clients,
                        max_n_policy,
                        admitted: false,
                    });
                }
                // One more live row, and no live row gone (aged rows, this
                // client's own included, were not in the tally read): the
                // writer holds the file's write lock, so nothing else moved.
                Admission::Added => {
                    return Ok(Tally {
                        clients: clients.saturating_add(1),
                        max_n_policy: max_n_policy.max(visit.n_policy),
                        admitted: true,
                    });
                }
                Admission::AddedAfterEviction => true,
            }
        }
    };
    let (clients, max_n_policy) = live_tally(conn, app, window_start)?;
    Ok(Tally {
        clients,
        max_n_policy,
        admitted,
    })
}

/// What [`admit`] did.
enum Admission {
    /// At the capacity: nothing inserted.
    Refused,
    /// Inserted, and no other row went but aged ones.
    Added,
    /// Inserted in place of the client seen longest ago, which may have
    /// been live: the tally is read again.
    AddedAfterEviction,
}

/// A CMID not counted in the window (`aged`: its row is still stored):
/// admitted (inserted, counter raised, the client seen longest ago evicted
/// at the bound) unless the capacity is reached. `columns`: the tally read
/// before (deleting aged rows leaves the live count as it was).
fn admit(
    conn: &Connection,
    visit: &Visit,
    aged: bool,
    columns: TallyColumns,
    max_clients: u64,
) -> Result<Admission, StoreError> {
    let app = visit.application_id.as_bytes().as_slice();
    let cmid = visit.cmid.as_bytes().as_slice();
    let at = sql::ticks(visit.at)?;
    let window_start = sql::ticks(visit.window_start)?;
    let n_policy = i64::from(visit.n_policy);

    let mut held = columns.0.unwrap_or(0);
    if aged {
        let deleted = conn
            .prepare_cached("DELETE FROM clients WHERE application_id = ?1 AND cmid = ?2")
            .and_then(|mut s| s.execute((app, cmid)))
            .map_err(error)?;
        if deleted > 0 {
            held = held.saturating_sub(1);
            conn.prepare_cached(
                "UPDATE applications SET clients = max(clients - 1, 0) WHERE application_id = ?1",
            )
            .and_then(|mut s| s.execute([app]))
            .map_err(error)?;
        }
    }
    // A bounded batch of aged rows goes now (when the tally read saw any
    // besides this client's own); the rest in the background.
    if columns.1 > i64::from(aged) {
        held = held.saturating_sub(delete_aged(conn, app, window_start)?);
    }
    let (live, _) = tally_of(columns)?;
    if visit.capacity.is_some_and(|cap| live >= cap) {
        return Ok(Admission::Refused);
    }
    let mut admission = Admission::Added;
    if sql::count_of(held.max(0), "applications.clients")? >= max_clients.max(1) {
        // The client seen longest ago gives way.
        let evicted = conn
            .prepare_cached(EVICT_OLDEST)
            .and_then(|mut s| s.execute([app]))
            .map_err(error)?;
        if evicted > 0 {
            admission = Admission::AddedAfterEviction;
            conn.prepare_cached(
                "UPDATE applications SET clients = clients - 1 WHERE application_id = ?1",
            )
            .and_then(|mut s| s.execute([app]))
            .map_err(error)?;
        }
    }
    conn.prepare_cached(
        "INSERT INTO clients (application_id, cmid, last_seen, n_policy)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute((app, cmid, at, n_policy)))
    .map_err(error)?;
    conn.prepare_cached(
        "INSERT INTO applications (application_id, clients) VALUES (?1, 1)
         ON CONFLICT (application_id) DO UPDATE SET clients = clients + 1",
    )
    .and_then(|mut s| s.execute([app]))
    .map_err(error)?;
    Ok(admission)
}

/// The tally from the maintained counter (statistics: no scan).
fn tally(conn: &Connection, app: Uuid, window_start: FileTime) -> Result<Tally, StoreError> {
    let (clients, max_n_policy) =
        live_tally(conn, app.as_bytes().as_slice(), sql::ticks(window_start)?)?;
    Ok(Tally {
        clients,
        max_n_policy,
        admitted: true,
    })
}

fn insert_activation(conn: &Connection, record: &ActivationRecord) -> Result<(), StoreError> {
    let time = sql::ticks(record.time)?;
    let client_time = sql::ticks(record.client_time)?;
    conn.prepare_cached(
        "INSERT INTO activations (time, peer, connection_id, protocol, application_id, sku_id,
             kms_id, cmid, previous_cmid, workstation, n_policy, client_time, virtual_machine,
             license_status, minutes_to_expiry, count, result, peer_ip)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            time,
            record.peer.map(|p| p.to_string()),
            sql::id_to_sql(record.connection_id),
            i64::from(u32::from(record.protocol)),
            record.application_id.as_bytes().as_slice(),
            record.sku_id.as_bytes().as_slice(),
            record.kms_id.as_bytes().as_slice(),
            record.cmid.as_bytes().as_slice(),
            record.previous_cmid.as_bytes().as_slice(),
            record.workstation,
            i64::from(record.n_policy),
            client_time,
            record.virtual_machine,
            i64::from(u32::from(record.license_status)),
            i64::from(record.minutes_to_expiry),
            record.count.map(i64::from),
            i64::from(u32::from(record.result)),
            query::peer_key(record.peer).map(Vec::from),
        ])
    })
    .map_err(error)?;
    Ok(())
}

fn recent(conn: &Connection, limit: usize) -> Result<Vec<ActivationRecord>, StoreError> {
    let limit = sql::limit(u64::try_from(limit).unwrap_or(u64::MAX));
    let mut statement = conn
        .prepare_cached(
            "SELECT time, peer, connection_id, protocol, application_id, sku_id, kms_id, cmid,
                 previous_cmid, workstation, n_policy, client_time, virtual_machine,
                 license_status, minutes_to_expiry, count, result
             FROM activations ORDER BY time DESC, id DESC LIMIT ?1",
        )
        .map_err(error)?;
    let mut rows = statement.query([limit]).map_err(error)?;
    let mut records = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        records.push(activation(row)?);
    }
    Ok(records)
}

/// One activation row, every column checked.
fn activation(row: &Row<'_>) -> Result<ActivationRecord, StoreError> {
    let int = |i: usize| row.get::<_, i64>(i).map_err(error);
    let uuid = |i: usize, column: &str| {
        let bytes: Vec<u8> = row.get(i).map_err(error)?;
        Uuid::from_slice(&bytes).map_err(|_| bad(column, format!("{} bytes", bytes.len())))
    };
    let peer = match row.get::<_, Option<String>>(1).map_err(error)? {
        Some(text) => Some(
            text.parse::<SocketAddr>()
                .map_err(|_| bad("activations.peer", &text))?,
        ),
        None => None,
    };
    Ok(ActivationRecord {
        time: sql::file_time(int(0)?, "activations.time")?,
        peer,
        connection_id: sql::id_from_sql(int(2)?),
        protocol: Version::from(sql::u32_of(int(3)?, "activations.protocol")?),
        application_id: uuid(4, "activations.application_id")?,
        sku_id: uuid(5, "activations.sku_id")?,
        kms_id: uuid(6, "activations.kms_id")?,
        cmid: uuid(7, "activations.cmid")?,
        previous_cmid: uuid(8, "activations.previous_cmid")?,
        workstation: row.get(9).map_err(error)?,
        n_policy: sql::u32_of(int(10)?, "activations.n_policy")?,
        client_time: sql::file_time(int(11)?, "activations.client_time")?,
        virtual_machine: int(12)? != 0,
        license_status: LicenseStatus::from(sql::u32_of(int(13)?, "activations.license_status")?),
        minutes_to_expiry: sql::u32_of(int(14)?, "activations.minutes_to_expiry")?,
        count: row
            .get::<_, Option<i64>>(15)
            .map_err(error)?
            .map(|c| sql::u32_of(c, "activations.count"))
            .transpose()?,
        result: HResult::from(sql::u32_of(int(16)?, "activations.result")?),
    })
}

fn epid(conn: &Connection, csvlk_id: Uuid, candidate: &str) -> Result<String, StoreError> {
    let id = csvlk_id.as_bytes().as_slice();
    conn.prepare_cached(
        "INSERT INTO epids (csvlk_id, epid) VALUES (?1, ?2) ON CONFLICT (csvlk_id) DO NOTHING",
    )
    .and_then(|mut s| s.execute((id, candidate)))
    .map_err(error)?;
    conn.prepare_cached("SELECT epid FROM epids WHERE csvlk_id = ?1")
        .and_then(|mut s| s.query_row([id], |row| row.get(0)))
        .map_err(error)
}

/// A locked or unreachable file may work later; anything else is an error
/// of the database itself.
#[allow(clippy::needless_pass_by_value, reason = "called as `map_err(error)`")]
fn error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    const T0: u64 = 134_397_882_570_000_000;
    const DAY: u64 = 86_400 * 10_000_000;

    fn visit(client: u128, at: u64) -> Visit {
        Visit::new(
            Uuid::from_u128(1),
            Uuid::from_u128(client),
            25,
            FileTime::from_ticks(at),
            FileTime::from_ticks(at - 30 * DAY),
        )
    }

    /// New clients (eviction at the bound of 2, aged rows deleted), renewals
    /// and a log prune, each statement with other parameter values than
    /// the round before.
    fn round(conn: &mut Connection, options: SqliteOptions, at: u64) {
        let tx = conn.transaction().unwrap();
        for client in 1..=3 {
            record(&tx, &visit(client, at), options).unwrap();
            record(&tx, &visit(client, at + 10 * DAY), options).unwrap();
        }
        let at = i64::try_from(at).unwrap();
        prune_log(&tx, Some(at), 10).unwrap();
        tx.commit().unwrap();
    }

    /// The statements of every visit and append are parsed once, then
    /// taken from the statement cache: none is re-prepared because a
    /// parameter changed.
    #[test]
    fn sqlite_hot_statements_are_prepared_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("hot.sqlite")).unwrap();
        let options = SqliteOptions {
            max_clients_per_application: 2,
            ..SqliteOptions::default()
        };
        prepare(&mut conn, options).unwrap();
        let hot = [
            LOOKUP_AND_TALLY,
            LIVE_TALLY,
            DELETE_AGED,
            EVICT_OLDEST,
            PRUNE_LOG_BY_TIME,
            PRUNE_LOG_BY_ROWS,
        ];
        let reprepared = |conn: &Connection| -> Vec<i32> {
            hot.iter()
                .map(|sql| {
                    conn.prepare_cached(sql)
                        .unwrap()
                        .get_status(StatementStatus::RePrepare)
                })
                .collect()
        };
        round(&mut conn, options, T0);
        let before = reprepared(&conn);
        for n in 1..=5 {
            round(&mut conn, options, T0 + n * 40 * DAY);
        }
        assert_eq!(reprepared(&conn), before);
    }
}
