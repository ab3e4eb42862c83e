//! The SQLite count store: one file for one host, with group commit.
//!
//! One writer thread owns the connection. Every operation is sent to it over
//! a channel; the thread takes the first operation waiting, then every other
//! one already queued (up to [`SqliteOptions::max_batch`]), runs them in one
//! transaction, commits once and only then completes each operation's
//! future. Under load many visits therefore share one `fsync`, while a lone
//! visit is committed at once. Reads go through the same thread, so they see
//! every operation submitted before them.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::sql::{self, bad};
use super::{CountStore, StoreError, Tally, Visit};
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
    /// batch.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits reach the operating system but the
    /// log is `fsync`ed only at checkpoints. A visit survives the process
    /// being killed (`SIGKILL`), not a power loss, which may forget the last
    /// commits (never corrupt the file). Faster on slow disks.
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
    /// before the operation fails with [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: SqliteSync::Full,
            max_batch: 1024,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`CountStore`] in one SQLite file: clients, activation log and ePIDs
/// survive a restart (and a `SIGKILL`), for one host.
///
/// Every future completes once its operation is committed, and works under
/// any executor (`pollster::block_on` included): it only waits on a oneshot
/// channel the writer thread completes. Dropping the store lets the writer
/// finish what was submitted, then closes the file.
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
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

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
    /// locked, [`StoreError::Backend`] when it is not a usable database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store at `path`.
    ///
    /// ```no_run
    /// use kms_activation::host::store::{SqliteOptions, SqliteStore, SqliteSync};
    ///
    /// let mut options = SqliteOptions::default();
    /// options.synchronous = SqliteSync::Normal;
    /// let store = SqliteStore::open_with("host.sqlite", options)?;
    /// drop(store); // waits for the writer thread to finish
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
        let (jobs, queue) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("kms-sqlite-writer".into())
            .spawn(move || serve(conn, &queue, max_batch))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path,
            jobs: Some(jobs),
            writer: Some(writer),
        })
    }

    /// The file this store lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `job` to the writer; the future completes with its answer.
    fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Reply<T>) -> Job,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job(reply)).is_ok());
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            answer.await.unwrap_or(Err(StoreError::Closed))
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is empty.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
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

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        self.submit(move |reply| Job::Recent(limit, reply))
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

const SCHEMA: &str = "
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

/// Pragmas, schema, and the per-application counters rebuilt from the
/// client rows (so a file edited by hand cannot keep a wrong count).
fn prepare(conn: &mut Connection, options: SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout).map_err(error)?;
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
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error)?;
    tx.execute_batch(SCHEMA).map_err(error)?;
    tx.execute_batch(
        "DELETE FROM applications;
         INSERT INTO applications (application_id, clients)
             SELECT application_id, count(*) FROM clients GROUP BY application_id;",
    )
    .map_err(error)?;
    tx.commit().map_err(error)
}

/// The writer thread: batches, one transaction per batch.
fn serve(mut conn: Connection, queue: &mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch);
    }
}

fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let failure = Err(error(e));
            for job in batch {
                fail(job)(&failure);
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        done.push(execute(&mut tx, job));
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
        tx.commit().map_err(error)
    };
    for job in jobs {
        fail(job)(&outcome);
    }
    for complete in done {
        complete(&outcome);
    }
}

/// A completion that only reports the batch's failure.
fn fail(job: Job) -> Completion {
    fn aborted<T>() -> Result<T, StoreError> {
        Err(StoreError::Backend("batch aborted".into()))
    }
    match job {
        Job::Visit(_, reply) | Job::Tally(_, _, reply) => completion(reply, aborted()),
        Job::Append(_, _, reply) | Job::Flush(reply) => completion(reply, aborted()),
        Job::Recent(_, reply) => completion(reply, aborted()),
        Job::Epid(_, _, reply) => completion(reply, aborted()),
    }
}

/// Runs one job inside the batch; a failing write is rolled back to its
/// savepoint so the rest of the batch still commits.
fn execute(tx: &mut Transaction<'_>, job: Job) -> Completion {
    match job {
        Job::Visit(visit, reply) => completion(reply, in_savepoint(tx, |c| record(c, &visit))),
        Job::Tally(app, window_start, reply) => completion(reply, tally(tx, app, window_start)),
        Job::Append(record, retain_since, reply) => completion(
            reply,
            in_savepoint(tx, |c| append(c, &record, retain_since)),
        ),
        Job::Recent(limit, reply) => completion(reply, recent(tx, limit)),
        Job::Epid(csvlk_id, candidate, reply) => {
            completion(reply, in_savepoint(tx, |c| epid(c, csvlk_id, &candidate)))
        }
        Job::Flush(reply) => completion(reply, Ok(())),
    }
}

fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let savepoint = tx.savepoint().map_err(error)?;
    let result = work(&savepoint)?;
    savepoint.commit().map_err(error)?;
    Ok(result)
}

/// The counting rule (see the module documentation of `store`).
fn record(conn: &Connection, visit: &Visit) -> Result<Tally, StoreError> {
    let app = visit.application_id.as_bytes().as_slice();
    let cmid = visit.cmid.as_bytes().as_slice();
    let at = sql::ticks(visit.at)?;
    let window_start = sql::ticks(visit.window_start)?;
    let n_policy = i64::from(visit.n_policy);

    let aged = conn
        .prepare_cached("DELETE FROM clients WHERE application_id = ?1 AND last_seen <= ?2")
        .and_then(|mut s| s.execute((app, window_start)))
        .map_err(error)?;
    if aged > 0 {
        conn.prepare_cached(
            "UPDATE applications SET clients = clients - ?2 WHERE application_id = ?1",
        )
        .and_then(|mut s| s.execute((app, i64::try_from(aged).unwrap_or(i64::MAX))))
        .map_err(error)?;
    }
    let known = conn
        .prepare_cached(
            "UPDATE clients SET last_seen = max(last_seen, ?3), n_policy = ?4
             WHERE application_id = ?1 AND cmid = ?2",
        )
        .and_then(|mut s| s.execute((app, cmid, at, n_policy)))
        .map_err(error)?;
    let counted: i64 = conn
        .prepare_cached("SELECT clients FROM applications WHERE application_id = ?1")
        .and_then(|mut s| s.query_row([app], |row| row.get(0)).optional())
        .map_err(error)?
        .unwrap_or(0);
    let mut clients = sql::count_of(counted, "applications.clients")?;
    let mut admitted = true;
    if known == 0 {
        if visit.capacity.is_some_and(|cap| clients >= cap) {
            admitted = false;
        } else {
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
            clients += 1;
        }
    }
    let max_n: Option<i64> = conn
        .prepare_cached("SELECT max(n_policy) FROM clients WHERE application_id = ?1")
        .and_then(|mut s| s.query_row([app], |row| row.get(0)))
        .map_err(error)?;
    Ok(Tally {
        clients,
        max_n_policy: sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
        admitted,
    })
}

/// Counts the rows themselves (statistics: `O(n)` in the clients counted).
fn tally(conn: &Connection, app: Uuid, window_start: FileTime) -> Result<Tally, StoreError> {
    let window_start = sql::ticks(window_start)?;
    let (clients, max_n): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), max(n_policy) FROM clients
             WHERE application_id = ?1 AND last_seen > ?2",
        )
        .and_then(|mut s| {
            s.query_row((app.as_bytes().as_slice(), window_start), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
        })
        .map_err(error)?;
    Ok(Tally {
        clients: sql::count_of(clients, "count")?,
        max_n_policy: sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
        admitted: true,
    })
}

fn append(
    conn: &Connection,
    record: &ActivationRecord,
    retain_since: FileTime,
) -> Result<(), StoreError> {
    let time = sql::ticks(record.time)?;
    let client_time = sql::ticks(record.client_time)?;
    let retain_since = sql::ticks(retain_since)?;
    conn.prepare_cached("DELETE FROM activations WHERE time < ?1")
        .and_then(|mut s| s.execute([retain_since]))
        .map_err(error)?;
    conn.prepare_cached(
        "INSERT INTO activations (time, peer, connection_id, protocol, application_id, sku_id,
             kms_id, cmid, previous_cmid, workstation, n_policy, client_time, virtual_machine,
             license_status, minutes_to_expiry, count, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
