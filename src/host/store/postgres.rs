//! The PostgreSQL count store: one database shared by a fleet of hosts.
//!
//! # Concurrency
//!
//! A visit is one transaction at `READ COMMITTED`. The client row is keyed
//! by (application, CMID), so two hosts never hold two rows for one client:
//! a repeat visit only updates its own row. The number of clients per
//! application lives in a counter row that changes in the same transaction
//! as the rows it counts. Admitting a new CMID increments that counter with
//! `UPDATE … WHERE clients < capacity`: the row lock makes concurrent
//! admissions of one application wait for each other and re-check the
//! capacity against the committed count, so the capacity holds exactly
//! without `SERIALIZABLE` or advisory locks. Repeat visits never take that
//! lock, so they commit in parallel (and PostgreSQL's WAL flush groups their
//! commits). A deadlock or serialization failure is retried up to three
//! times.
//!
//! # Failures
//!
//! Every wait is bounded: connecting ([`PostgresOptions::connect_timeout`]),
//! each statement (`statement_timeout` and `lock_timeout` on the session)
//! and the whole operation, the wait for a pooled connection included
//! ([`PostgresOptions::operation_timeout`], 2 s by default). A lost
//! connection fails the operation in progress with
//! [`StoreError::Unavailable`]; the connection is discarded and the next
//! operation opens a new one. A visit whose commit was sent but not
//! confirmed may or may not be counted; a retry of the same CMID is
//! idempotent, so the count is never wrong. Errors name their cause (the
//! database does not exist, connection refused, authentication failed,
//! timed out) and never the password of the URL ([`redact_url`]).
//!
//! # Background work
//!
//! Activation records queued by [`CountStore::queue_activation`] are
//! inserted in batches by a task of their own. Another task prunes aged
//! clients and activation records, and the log beyond
//! [`PostgresOptions::max_log_records`], in bounded batches.
//!
//! # Schema
//!
//! The table `kms_schema_version` holds the schema version; opening a
//! database of an older release migrates it, under an advisory lock, and
//! checks the per-application counters against the client rows (rebuilding
//! those that differ).

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use std::collections::HashMap;
use std::sync::Weak;

use tokio::sync::mpsc;

use super::query::{self, ClientEntry, LogEntry, LogQuery, Page};
use super::sql::{self, bad};
use super::{
    Background, CountStore, DEFAULT_MAX_CLIENTS_PER_APPLICATION, DEFAULT_MAX_LOG_RECORDS,
    DEFAULT_OPERATION_TIMEOUT, PRUNE_BATCH, StoreError, StoreHealth, Tally, Visit, redact_url,
};
use crate::host::activation::ActivationRecord;
use crate::message::Version;
use crate::{FileTime, HResult, LicenseStatus, Uuid};

/// How a [`PostgresStore`] connects and where its tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The schema holding the tables, created if missing (lowercase ASCII
    /// letters, digits and `_`, at most 63 bytes). Hosts that share a count
    /// use the same schema; a test uses one of its own.
    pub schema: String,
    /// Connections kept open at most; an operation waits for a free one.
    pub max_connections: usize,
    /// The longest wait to open a connection.
    pub connect_timeout: Duration,
    /// The longest a statement (or a lock wait) may take on the server.
    pub statement_timeout: Duration,
    /// The deadline of one operation as a whole, the wait for a free
    /// connection (or a new one) included (default
    /// [`DEFAULT_OPERATION_TIMEOUT`], 2 s); past it the operation fails with
    /// [`StoreError::TimedOut`].
    ///
    /// [`DEFAULT_OPERATION_TIMEOUT`]: super::DEFAULT_OPERATION_TIMEOUT
    pub operation_timeout: Duration,
    /// The longest the work at [`connect`](PostgresStore::connect) may
    /// take: schema creation or migration, and the check of the counters
    /// against the client rows (default 60 s).
    pub startup_timeout: Duration,
    /// Clients kept per application (default
    /// [`DEFAULT_MAX_CLIENTS_PER_APPLICATION`], 1 000 000); at the bound the
    /// client seen longest ago gives way to a new one.
    ///
    /// [`DEFAULT_MAX_CLIENTS_PER_APPLICATION`]: super::DEFAULT_MAX_CLIENTS_PER_APPLICATION
    pub max_clients_per_application: u64,
    /// Activation-log rows kept at most (default 1 000 000), besides the
    /// retention in time; the oldest go first.
    pub max_log_records: u64,
    /// Activation records waiting to be inserted at most (default 16 384);
    /// past it records are dropped and counted.
    pub max_log_queue: usize,
    /// How often aged rows are pruned (default 10 s).
    pub prune_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: DEFAULT_OPERATION_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            startup_timeout: Duration::from_secs(60),
            max_clients_per_application: DEFAULT_MAX_CLIENTS_PER_APPLICATION,
            max_log_records: DEFAULT_MAX_LOG_RECORDS,
            max_log_queue: 16_384,
            prune_interval: Duration::from_secs(10),
        }
    }
}

impl PostgresOptions {
    /// These options with another operation deadline (see
    /// [`operation_timeout`](Self::operation_timeout)); the statement
    /// timeout follows it.
    ///
    /// ```
    /// use kms_activation::host::store::PostgresOptions;
    /// use std::time::Duration;
    ///
    /// let options = PostgresOptions::default().with_operation_timeout(Duration::from_secs(1));
    /// assert_eq!(options.statement_timeout, Duration::from_secs(1));
    /// ```
    #[must_use]
    pub const fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self.statement_timeout = timeout;
        self
    }

    /// These options with another schema.
    ///
    /// ```
    /// use kms_activation::host::store::PostgresOptions;
    ///
    /// let options = PostgresOptions::default().with_schema("kms");
    /// assert_eq!(options.schema, "kms");
    /// ```
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

/// A [`CountStore`] in PostgreSQL: every host connected to the same
/// database and schema reports one count and writes one activation log.
///
/// The store runs its work on the Tokio runtime it was connected from, so
/// its futures can be awaited under any executor; each completes after the
/// operation's `COMMIT` (or its failure). An operation whose future is
/// dropped still runs to its end. TLS is not supported: reach the database
/// over a trusted network or a local socket.
///
/// ```no_run
/// use kms_activation::host::store::{CountStore, PostgresStore, Visit};
/// use kms_activation::{FileTime, Uuid};
///
/// # async fn run() -> Result<(), kms_activation::host::store::StoreError> {
/// let store = PostgresStore::connect("postgres://kms@db.example.org/kms").await?;
/// let at = FileTime::from_ticks(134_397_882_570_000_000);
/// let window_start = FileTime::from_ticks(at.ticks() - 30 * 86_400 * 10_000_000);
/// let visit = Visit::new(Uuid::from_u128(1), Uuid::from_u128(7), 25, at, window_start);
/// let tally = store.record_visit(visit).await?;
/// assert!(tally.clients >= 1);
/// # Ok(())
/// # }
/// # fn main() { drop(run()); }
/// ```
pub struct PostgresStore {
    inner: Arc<Inner>,
    log: mpsc::Sender<LogItem>,
}

/// What the log task takes: a record, or a request to report once every
/// record before it is stored.
enum LogItem {
    Record(Box<ActivationRecord>, FileTime),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.options.schema)
            .field("max_connections", &self.inner.options.max_connections)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Config,
    /// The URL with its password redacted, for messages.
    target: String,
    options: PostgresOptions,
    background: Background,
    /// The latest window start seen per application, for pruning.
    windows: Mutex<HashMap<Uuid, i64>>,
    /// The latest retention bound of the activation log seen.
    retain_since: Mutex<Option<i64>>,
    runtime: Handle,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// Tickets of the operations still running (for `flush`).
    in_flight: Mutex<InFlight>,
    finished: Notify,
}

#[derive(Default)]
struct InFlight {
    next: u64,
    running: BTreeSet<u64>,
}

/// One open connection and its prepared statements.
struct Conn {
    client: Client,
    st: Prepared,
}

struct Prepared {
    delete_aged: Statement,
    touch: Statement,
    ensure_application: Statement,
    admit: Statement,
    evict_oldest: Statement,
    insert_client: Statement,
    unadmit: Statement,
    tally: Statement,
    append: Statement,
    prune_log_time: Statement,
    prune_log_rows: Statement,
    recent: Statement,
    epid: Statement,
}

impl Prepared {
    #[allow(clippy::too_many_lines, reason = "one statement after another")]
    async fn new(client: &Client, schema: &str) -> Result<Self, tokio_postgres::Error> {
        let s = schema;
        Ok(Self {
            // A bounded batch: the rest goes in the background.
            delete_aged: client
                .prepare(&format!(
                    "WITH gone AS (DELETE FROM {s}.clients
                         WHERE application_id = $1 AND cmid IN (
                             SELECT cmid FROM {s}.clients
                             WHERE application_id = $1 AND last_seen <= $2 LIMIT {PRUNE_BATCH})
                         RETURNING 1),
                     n AS (SELECT count(*) AS n FROM gone)
                     UPDATE {s}.applications SET clients = GREATEST(clients - n.n, 0) FROM n
                     WHERE application_id = $1 AND n.n > 0
                     RETURNING n.n"
                ))
                .await?,
            touch: client
                .prepare(&format!(
                    "UPDATE {s}.clients SET last_seen = GREATEST(last_seen, $3), n_policy = $4
                     WHERE application_id = $1 AND cmid = $2"
                ))
                .await?,
            ensure_application: client
                .prepare(&format!(
                    "INSERT INTO {s}.applications (application_id, clients) VALUES ($1, 0)
                     ON CONFLICT (application_id) DO NOTHING"
                ))
                .await?,
            admit: client
                .prepare(&format!(
                    "UPDATE {s}.applications SET clients = clients + 1
                     WHERE application_id = $1 AND ($2::bigint IS NULL OR clients < $2)
                     RETURNING clients"
                ))
                .await?,
            evict_oldest: client
                .prepare(&format!(
                    "WITH gone AS (DELETE FROM {s}.clients
                         WHERE application_id = $1 AND cmid = (
                             SELECT cmid FROM {s}.clients WHERE application_id = $1
                             ORDER BY last_seen LIMIT 1)
                         RETURNING 1)
                     UPDATE {s}.applications SET clients = clients - 1
                     WHERE application_id = $1 AND EXISTS (SELECT 1 FROM gone)"
                ))
                .await?,
            insert_client: client
                .prepare(&format!(
                    "INSERT INTO {s}.clients (application_id, cmid, last_seen, n_policy)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (application_id, cmid) DO NOTHING"
                ))
                .await?,
            unadmit: client
                .prepare(&format!(
                    "UPDATE {s}.applications SET clients = clients - 1 WHERE application_id = $1"
                ))
                .await?,
            // The maintained counter minus the aged rows not yet pruned (an
            // index range, empty once pruning has run), and the first live
            // row of the N policy index from the top: no scan.
            tally: client
                .prepare(&format!(
                    "SELECT (SELECT clients FROM {s}.applications WHERE application_id = $1),
                            (SELECT count(*) FROM {s}.clients
                             WHERE application_id = $1 AND last_seen <= $2),
                            (SELECT n_policy FROM {s}.clients
                             WHERE application_id = $1 AND last_seen > $2
                             ORDER BY n_policy DESC LIMIT 1)"
                ))
                .await?,
            append: client
                .prepare(&format!(
                    "INSERT INTO {s}.activations (time, peer, connection_id, protocol,
                         application_id, sku_id, kms_id, cmid, previous_cmid, workstation,
                         n_policy, client_time, virtual_machine, license_status,
                         minutes_to_expiry, count, result, peer_ip)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                         $16, $17, $18)"
                ))
                .await?,
            prune_log_time: client
                .prepare(&format!(
                    "DELETE FROM {s}.activations WHERE id IN (
                         SELECT id FROM {s}.activations WHERE time < $1
                         ORDER BY time LIMIT {PRUNE_BATCH})"
                ))
                .await?,
            // Identity values only grow, so the newest `$1` rows have ids
            // above max(id) - $1.
            prune_log_rows: client
                .prepare(&format!(
                    "DELETE FROM {s}.activations WHERE id IN (
                         SELECT id FROM {s}.activations
                         WHERE id <= (SELECT max(id) FROM {s}.activations) - $1
                         ORDER BY id LIMIT {PRUNE_BATCH})"
                ))
                .await?,
            recent: client
                .prepare(&format!(
                    "SELECT time, peer, connection_id, protocol, application_id, sku_id, kms_id,
                         cmid, previous_cmid, workstation, n_policy, client_time,
                         virtual_machine, license_status, minutes_to_expiry, count, result
                     FROM {s}.activations ORDER BY time DESC, id DESC LIMIT $1"
                ))
                .await?,
            epid: client
                .prepare(&format!(
                    "WITH added AS (INSERT INTO {s}.epids (csvlk_id, epid) VALUES ($1, $2)
                         ON CONFLICT (csvlk_id) DO NOTHING RETURNING epid)
                     SELECT epid FROM added
                     UNION ALL SELECT epid FROM {s}.epids WHERE csvlk_id = $1"
                ))
                .await?,
        })
    }
}

/// The largest timeout PostgreSQL takes, in milliseconds (`INT_MAX`).
const MAX_SERVER_MILLIS: u128 = 2_147_483_647;

/// A timeout as PostgreSQL's setting: whole milliseconds, at least 1, at
/// most [`MAX_SERVER_MILLIS`] (about 24.8 days; longer is "unbounded").
fn server_millis(timeout: Duration) -> u128 {
    timeout.as_millis().clamp(1, MAX_SERVER_MILLIS)
}

/// Serializes schema creation between hosts starting at once (concurrent
/// `CREATE TABLE IF NOT EXISTS` can otherwise fail on the catalog).
const SCHEMA_LOCK: i64 = 0x6b6d_735f_7363_6865;

/// The schema version this release writes (table `kms_schema_version`).
///
/// * 0: the first release, unversioned.
/// * 1: the maximum N policy is read from an index that also holds
///   `last_seen`, so aged rows not yet pruned are skipped without a scan.
/// * 2: the activation log keeps the client's address as a sortable key
///   (`peer_ip`) and is indexed by client and by application, for the
///   clients and log queries.
const SCHEMA_VERSION: i64 = 2;

/// Version 0, as the first release created it.
fn schema_v0(s: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {s}.clients (
             application_id uuid NOT NULL,
             cmid uuid NOT NULL,
             last_seen bigint NOT NULL,
             n_policy bigint NOT NULL,
             PRIMARY KEY (application_id, cmid));
         CREATE INDEX IF NOT EXISTS clients_by_last_seen ON {s}.clients (application_id, last_seen);
         CREATE INDEX IF NOT EXISTS clients_by_n_policy ON {s}.clients (application_id, n_policy);
         CREATE TABLE IF NOT EXISTS {s}.applications (
             application_id uuid PRIMARY KEY,
             clients bigint NOT NULL CHECK (clients >= 0));
         CREATE TABLE IF NOT EXISTS {s}.activations (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             time bigint NOT NULL,
             peer text,
             connection_id bigint NOT NULL,
             protocol bigint NOT NULL,
             application_id uuid NOT NULL,
             sku_id uuid NOT NULL,
             kms_id uuid NOT NULL,
             cmid uuid NOT NULL,
             previous_cmid uuid NOT NULL,
             workstation text NOT NULL,
             n_policy bigint NOT NULL,
             client_time bigint NOT NULL,
             virtual_machine boolean NOT NULL,
             license_status bigint NOT NULL,
             minutes_to_expiry bigint NOT NULL,
             count bigint,
             result bigint NOT NULL);
         CREATE INDEX IF NOT EXISTS activations_by_time ON {s}.activations (time);
         CREATE TABLE IF NOT EXISTS {s}.epids (
             csvlk_id uuid PRIMARY KEY,
             epid text NOT NULL);"
    )
}

/// Version 0 → 1.
fn migrate_v1(s: &str) -> String {
    format!(
        "DROP INDEX IF EXISTS {s}.clients_by_n_policy;
         CREATE INDEX IF NOT EXISTS clients_by_n_policy_seen
             ON {s}.clients (application_id, n_policy, last_seen);"
    )
}

/// Version 1 → 2 (records stored before keep no `peer_ip`: address
/// filters skip them).
fn migrate_v2(s: &str) -> String {
    format!(
        "ALTER TABLE {s}.activations ADD COLUMN IF NOT EXISTS peer_ip bytea;
         CREATE INDEX IF NOT EXISTS activations_by_client
             ON {s}.activations (application_id, cmid, id);
         CREATE INDEX IF NOT EXISTS activations_by_application
             ON {s}.activations (application_id, id);"
    )
}

/// Creates or migrates the schema and checks the counters, in one
/// transaction under the advisory lock. Returns how many counters were
/// rebuilt.
async fn set_up(client: &mut Client, s: &str, startup: Duration) -> Result<u64, Fail> {
    let tx = client.transaction().await?;
    let millis = server_millis(startup);
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {millis}; SET LOCAL lock_timeout = {millis};
         SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.kms_schema_version (version bigint NOT NULL);"
    ))
    .await?;
    let row = tx
        .query_one(
            &format!("SELECT max(version) FROM {s}.kms_schema_version"),
            &[],
        )
        .await?;
    let version: Option<i64> = get(&row, 0)?;
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(Fail::Store(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        }));
    }
    if version < 1 {
        tx.batch_execute(&schema_v0(s)).await?;
        tx.batch_execute(&migrate_v1(s)).await?;
    }
    if version < 2 {
        tx.batch_execute(&migrate_v2(s)).await?;
    }
    if version < SCHEMA_VERSION {
        tx.execute(&format!("DELETE FROM {s}.kms_schema_version"), &[])
            .await?;
        tx.execute(
            &format!("INSERT INTO {s}.kms_schema_version (version) VALUES ($1)"),
            &[&SCHEMA_VERSION],
        )
        .await?;
    }
    // No visit may change a counter while they are checked.
    tx.batch_execute(&format!("LOCK TABLE {s}.applications IN EXCLUSIVE MODE"))
        .await?;
    let rebuilt = tx
        .execute(
            &format!(
                "WITH actual AS (
                     SELECT a.application_id, count(c.cmid) AS n
                     FROM {s}.applications a LEFT JOIN {s}.clients c USING (application_id)
                     GROUP BY a.application_id
                     UNION ALL
                     SELECT c.application_id, count(*) FROM {s}.clients c
                     WHERE NOT EXISTS (SELECT 1 FROM {s}.applications a
                                       WHERE a.application_id = c.application_id)
                     GROUP BY c.application_id)
                 INSERT INTO {s}.applications AS a (application_id, clients)
                     SELECT application_id, n FROM actual
                 ON CONFLICT (application_id) DO UPDATE SET clients = EXCLUDED.clients
                     WHERE a.clients <> EXCLUDED.clients"
            ),
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(rebuilt)
}

/// The schema name, checked and quoted for use in SQL text.
fn quoted_schema(schema: &str) -> Result<String, StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(format!("\"{schema}\""))
    } else {
        Err(StoreError::Backend(format!(
            "invalid schema name {schema:?}"
        )))
    }
}

impl PostgresStore {
    /// Connects with default options to the database named by `url`
    /// (`postgres://user@host:port/database`, or a key=value string), and
    /// creates the tables if they are missing.
    ///
    /// Must be called within a Tokio runtime (with time and I/O enabled);
    /// the store runs its work there.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), kms_activation::host::store::StoreError> {
    /// let store =
    ///     kms_activation::host::store::PostgresStore::connect("postgres://kms@127.0.0.1/kms")
    ///         .await?;
    /// drop(store);
    /// # Ok(())
    /// # }
    /// # fn main() { drop(run()); }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database cannot be reached in
    /// time; [`StoreError::Backend`] for a bad URL, a missing runtime or a
    /// schema that cannot be created.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects as [`PostgresStore::connect`] with `options`.
    ///
    /// ```no_run
    /// use kms_activation::host::store::{PostgresOptions, PostgresStore};
    ///
    /// # async fn run() -> Result<(), kms_activation::host::store::StoreError> {
    /// let options = PostgresOptions::default().with_schema("kms_fleet");
    /// let store = PostgresStore::connect_with("postgres://kms@127.0.0.1/kms", options).await?;
    /// drop(store);
    /// # Ok(())
    /// # }
    /// # fn main() { drop(run()); }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::connect`].
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let target = redact_url(url);
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL {target}: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("kms-activation");
        }
        let runtime = Handle::try_current().map_err(|_| {
            StoreError::Backend("PostgresStore::connect must run within a Tokio runtime".into())
        })?;
        let schema = quoted_schema(&options.schema)?;
        let inner = Arc::new(Inner {
            config,
            target,
            background: Background::new(),
            windows: Mutex::new(HashMap::new()),
            retain_since: Mutex::new(None),
            permits: Arc::new(Semaphore::new(options.max_connections.max(1))),
            options,
            runtime,
            idle: Mutex::new(Vec::new()),
            in_flight: Mutex::new(InFlight::default()),
            finished: Notify::new(),
        });
        let task =
            {
                let inner = Arc::clone(&inner);
                async move {
                    let mut client = inner.open().await?;
                    let startup = inner.options.startup_timeout;
                    let rebuilt =
                        match tokio::time::timeout(startup, set_up(&mut client, &schema, startup))
                            .await
                        {
                            Ok(result) => result.map_err(|f| inner.describe(f))?,
                            Err(_) => {
                                return Err(StoreError::TimedOut(format!(
                                    "setting up the schema in {} took longer than {startup:?}",
                                    inner.target
                                )));
                            }
                        };
                    if rebuilt > 0 {
                        inner.background.failed(
                            "counters differed from the client rows",
                            &StoreError::Backend(format!("{rebuilt} counter(s) rebuilt")),
                        );
                    }
                    let st = inner
                        .bounded(async { Ok(Prepared::new(&client, &schema).await?) })
                        .await?;
                    inner.lock_idle().push(Conn { client, st });
                    Ok(())
                }
            };
        inner
            .runtime
            .spawn(task)
            .await
            .unwrap_or_else(|e| Err(joined(&e)))?;
        let (log, queue) = mpsc::channel(inner.options.max_log_queue.max(1));
        inner.runtime.spawn(append_log(Arc::clone(&inner), queue));
        inner.runtime.spawn(prune(Arc::downgrade(&inner)));
        Ok(Self { inner, log })
    }

    /// Runs `work` on the store's runtime, tracked for `flush`.
    fn spawn<T, F>(
        &self,
        work: impl FnOnce(Arc<Inner>) -> F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let ticket = Ticket::issue(&self.inner);
        let task = work(Arc::clone(&self.inner));
        let handle = self.inner.runtime.spawn(async move {
            let _ticket = ticket;
            task.await
        });
        async move { handle.await.unwrap_or_else(|e| Err(joined(&e))) }
    }
}

fn joined(e: &tokio::task::JoinError) -> StoreError {
    if e.is_cancelled() {
        StoreError::Closed
    } else {
        StoreError::Backend("a store task panicked".into())
    }
}

/// Marks an operation as running until dropped.
struct Ticket {
    inner: Arc<Inner>,
    number: u64,
}

impl Ticket {
    fn issue(inner: &Arc<Inner>) -> Self {
        let mut flight = inner.lock_in_flight();
        let number = flight.next;
        flight.next += 1;
        flight.running.insert(number);
        Self {
            inner: Arc::clone(inner),
            number,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inner.lock_in_flight().running.remove(&self.number);
        self.inner.finished.notify_waiters();
    }
}

/// A connection taken from the pool; back into it on drop unless broken.
struct Lease {
    conn: Option<Conn>,
    inner: Arc<Inner>,
    /// The operation finished (a lease dropped before, at its deadline,
    /// may be mid-transaction: its connection is discarded).
    settled: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }

    /// Keeps the connection only if the operation did not lose it.
    fn settle<T>(&mut self, result: &Result<T, StoreError>) {
        self.settled = true;
        if matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::TimedOut(_))
        ) {
            self.conn = None;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.settled
            && !conn.client.is_closed()
        {
            self.inner.lock_idle().push(conn);
        }
    }
}

/// A failure inside an operation: from the database, or a value it held.
enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Fail {
    /// A deadlock or serialization failure: worth running the transaction
    /// again.
    fn retry(&self) -> bool {
        matches!(self, Self::Pg(e) if e.code().is_some_and(|c| matches!(c.code(), "40001" | "40P01")))
    }

    fn into_store(self) -> StoreError {
        match self {
            Self::Pg(e) => classify(&e),
            Self::Store(e) => e,
        }
    }
}

/// A lost connection, a timeout or an overloaded server may work later;
/// other server errors are errors of the store. The message names the
/// cause first, then PostgreSQL's own words.
fn classify(e: &tokio_postgres::Error) -> StoreError {
    let text = detail(e);
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let cause = match code {
            "3D000" => Some("the database does not exist"),
            "28P01" | "28000" => Some("authentication failed"),
            "3F000" => Some("the schema does not exist"),
            "57014" => Some("timed out on the server (statement_timeout)"),
            "55P03" => Some("timed out waiting for a lock (lock_timeout)"),
            "53300" => Some("too many connections"),
            "57P01" | "57P02" | "57P03" => Some("the server is shutting down or starting"),
            _ => None,
        };
        let message = match cause {
            Some(cause) => format!("{cause}: {text}"),
            None => text,
        };
        let transient = ["08", "53", "57", "58", "40"]
            .iter()
            .any(|class| code.starts_with(class))
            || matches!(code, "55P03" | "3D000" | "28P01" | "28000");
        return if transient {
            StoreError::Unavailable(message)
        } else {
            StoreError::Backend(message)
        };
    }
    let io = std::iter::successors(std::error::Error::source(e), |s| s.source())
        .find_map(|s| s.downcast_ref::<std::io::Error>());
    let cause = match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused",
        Some(std::io::ErrorKind::TimedOut) => "timed out",
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
            "connection lost"
        }
        _ if e.is_closed() => "connection closed",
        _ if text.contains("authentication") || text.contains("password") => {
            "authentication failed"
        }
        _ if text.starts_with("timeout") => "timed out",
        _ => "",
    };
    if cause.is_empty() {
        StoreError::Unavailable(text)
    } else {
        StoreError::Unavailable(format!("{cause}: {text}"))
    }
}

/// The error and every cause under it (`tokio_postgres` shows only the
/// outermost, "db error").
fn detail(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

const ATTEMPTS: usize = 3;

impl Inner {
    fn lock_idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The list is consistent whenever the lock is released.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_in_flight(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn operation_timeout(&self) -> Duration {
        self.options.operation_timeout
    }

    /// A failure as a store error naming the database (never its password).
    fn describe(&self, fail: Fail) -> StoreError {
        match fail.into_store() {
            StoreError::Unavailable(text) => {
                StoreError::Unavailable(format!("PostgreSQL at {}: {text}", self.target))
            }
            StoreError::Backend(text) => {
                StoreError::Backend(format!("PostgreSQL at {}: {text}", self.target))
            }
            other => other,
        }
    }

    /// Bounds `work` by the operation timeout.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Fail>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.operation_timeout(), work).await {
            Ok(result) => result.map_err(|f| self.describe(f)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::TimedOut(format!(
            "PostgreSQL at {}: the operation took longer than {:?}",
            self.target,
            self.operation_timeout()
        ))
    }

    /// A new session with its timeouts set.
    async fn open(&self) -> Result<Client, StoreError> {
        let connecting =
            tokio::time::timeout(self.options.connect_timeout, self.config.connect(NoTls));
        let (client, connection) = match connecting.await {
            Ok(result) => result.map_err(|e| self.describe(Fail::Pg(e)))?,
            Err(_) => {
                return Err(StoreError::TimedOut(format!(
                    "PostgreSQL at {}: connecting timed out after {:?}",
                    self.target, self.options.connect_timeout
                )));
            }
        };
        // The connection's own errors reach the client as closed-connection
        // errors on its next query.
        self.runtime.spawn(async move {
            let _ = connection.await;
        });
        let millis = server_millis(self.options.statement_timeout);
        self.bounded(async {
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {millis}; SET lock_timeout = {millis};
                     SET idle_in_transaction_session_timeout = {}",
                    millis.saturating_mul(4).min(MAX_SERVER_MILLIS)
                ))
                .await?;
            Ok(())
        })
        .await?;
        Ok(client)
    }

    /// An idle connection, or a new one (bounded by the caller).
    async fn lease(self: &Arc<Self>) -> Result<Lease, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let reused = loop {
            let conn = self.lock_idle().pop();
            match conn {
                Some(conn) if conn.client.is_closed() => {}
                other => break other,
            }
        };
        let conn = if let Some(conn) = reused {
            conn
        } else {
            let client = self.open().await?;
            let schema = quoted_schema(&self.options.schema)?;
            let st = Prepared::new(&client, &schema)
                .await
                .map_err(|e| self.describe(Fail::Pg(e)))?;
            Conn { client, st }
        };
        Ok(Lease {
            conn: Some(conn),
            inner: Arc::clone(self),
            settled: false,
            _permit: permit,
        })
    }

    /// Runs `op` on a leased connection, retrying deadlocks, all within
    /// the operation's deadline (the wait for a connection included).
    async fn run<T>(
        self: Arc<Self>,
        op: impl AsyncFnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut op = op;
        let work = async {
            let mut lease = self.lease().await?;
            let result = async {
                let conn = lease.conn()?;
                let mut attempt = 1;
                loop {
                    match op(conn).await {
                        Err(fail) if fail.retry() && attempt < ATTEMPTS => attempt += 1,
                        other => break other,
                    }
                }
            }
            .await
            .map_err(|f| self.describe(f));
            lease.settle(&result);
            result
        };
        // A connection abandoned mid-operation is dropped with its lease
        // (its session ends; the server rolls the transaction back).
        match tokio::time::timeout(self.operation_timeout(), work).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out()),
        }
    }

    fn note_window(&self, application_id: Uuid, window_start: i64) {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(application_id, window_start);
    }

    fn note_retention(&self, retain_since: i64) {
        let mut bound = self
            .retain_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *bound = Some(bound.map_or(retain_since, |b| b.max(retain_since)));
    }

    fn retention(&self) -> Option<i64> {
        *self
            .retain_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl CountStore for PostgresStore {
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        let cap = self.inner.options.max_clients_per_application;
        if let Ok(start) = sql::ticks(visit.window_start) {
            self.inner.note_window(visit.application_id, start);
        }
        self.spawn(move |inner| inner.run(async move |conn| record(conn, &visit, cap).await))
    }

    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        self.spawn(move |inner| {
            inner.run(async move |conn| {
                let window_start = sql::ticks(window_start)?;
                let (clients, max_n_policy) =
                    live_tally(&conn.client, &conn.st, application_id, window_start).await?;
                Ok(Tally {
                    clients,
                    max_n_policy,
                    admitted: true,
                })
            })
        })
    }

    fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let record = record.clone();
        let max_rows = self.inner.options.max_log_records;
        if let Ok(bound) = sql::ticks(retain_since) {
            self.inner.note_retention(bound);
        }
        self.spawn(move |inner| {
            let retain_since = inner.retention();
            inner.run(async move |conn| {
                insert_activation(&conn.client, &conn.st, &record).await?;
                prune_log(&conn.client, &conn.st, retain_since, max_rows).await?;
                Ok(())
            })
        })
    }

    fn queue_activation(
        &self,
        record: ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        match self
            .log
            .try_send(LogItem::Record(Box::new(record), retain_since))
        {
            Ok(()) => Ok(()),
            // The caller counts and reports the refusal.
            Err(mpsc::error::TrySendError::Full(_)) => Err(StoreError::TimedOut(
                "the activation log's queue is full".into(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        }
    }

    fn health(&self) -> StoreHealth {
        self.inner.background.health()
    }

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        self.spawn(move |inner| {
            inner.run(async move |conn| {
                let limit = sql::limit(u64::try_from(limit).unwrap_or(u64::MAX));
                let rows = conn.client.query(&conn.st.recent, &[&limit]).await?;
                let records = rows.iter().map(activation).collect::<Result<_, _>>()?;
                Ok(records)
            })
        })
    }

    fn activations(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<LogEntry>, StoreError>> + Send {
        let schema = quoted_schema(&self.inner.options.schema);
        self.spawn(move |inner| async move {
            let schema = format!("{}.", schema?);
            let (text, params) = query::sql::activations(&query, &schema, &dollar)?;
            let items = inner
                .run(async move |conn| {
                    let rows = select(&conn.client, text.clone(), params.clone()).await?;
                    let entries = rows
                        .iter()
                        .map(|row| {
                            Ok(LogEntry {
                                seq: sequence(row)?,
                                record: activation(row)?,
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    Ok(entries)
                })
                .await?;
            Ok(query.page(items, |entry| entry.seq))
        })
    }

    fn clients(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<ClientEntry>, StoreError>> + Send {
        let schema = quoted_schema(&self.inner.options.schema);
        self.spawn(move |inner| async move {
            let schema = format!("{}.", schema?);
            let (text, params) = query::sql::clients(&query, &schema, &dollar)?;
            let items = inner
                .run(async move |conn| {
                    let rows = select(&conn.client, text.clone(), params.clone()).await?;
                    let entries = rows
                        .iter()
                        .map(|row| {
                            Ok(ClientEntry {
                                seq: sequence(row)?,
                                last: activation(row)?,
                                first_seen: sql::file_time(
                                    get::<i64>(row, 18)?,
                                    "activations.time",
                                )?,
                                requests: sql::count_of(get::<i64>(row, 19)?, "count(*)")?,
                            })
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    Ok(entries)
                })
                .await?;
            Ok(query.page(items, |entry| entry.seq))
        })
    }

    fn host_epid(
        &self,
        csvlk_id: Uuid,
        candidate: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send {
        let candidate = candidate.to_owned();
        self.spawn(move |inner| {
            inner.run(async move |conn| {
                // A host inserting the same ID concurrently commits after this
                // statement's snapshot: then it sees neither row and runs
                // again.
                for _ in 0..ATTEMPTS {
                    let rows = conn
                        .client
                        .query(&conn.st.epid, &[&csvlk_id, &candidate])
                        .await?;
                    if let Some(row) = rows.first() {
                        return Ok(get(row, 0)?);
                    }
                }
                Err(StoreError::Unavailable("ePID row kept changing".into()).into())
            })
        })
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        // Every operation completes after its COMMIT; wait for those
        // submitted before this call, then for the queued log records.
        let inner = Arc::clone(&self.inner);
        let before = inner.lock_in_flight().next;
        let log = self.log.clone();
        let limit = inner.options.operation_timeout;
        async move {
            loop {
                let mut finished = pin!(inner.finished.notified());
                finished.as_mut().enable();
                let pending = inner
                    .lock_in_flight()
                    .running
                    .first()
                    .is_some_and(|&first| first < before);
                if !pending {
                    break;
                }
                finished.await;
            }
            let (done, stored) = tokio::sync::oneshot::channel();
            let waited = async move {
                log.send(LogItem::Flush(done))
                    .await
                    .map_err(|_| StoreError::Closed)?;
                stored.await.map_err(|_| StoreError::Closed)
            };
            // The log may be far behind a hung database: bounded.
            let waited = inner
                .runtime
                .spawn(async move { tokio::time::timeout(limit.saturating_mul(4), waited).await });
            match waited.await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(StoreError::TimedOut(format!(
                    "PostgreSQL at {}: the activation log was not written within {:?}",
                    inner.target,
                    limit.saturating_mul(4)
                ))),
                Err(e) => Err(joined(&e)),
            }
        }
    }
}

/// The log task: inserts queued records in batches, one transaction each,
/// until the store is dropped.
async fn append_log(inner: Arc<Inner>, mut queue: mpsc::Receiver<LogItem>) {
    const BATCH: usize = 512;
    let mut items = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut items, BATCH).await > 0 {
        let mut records = Vec::with_capacity(items.len());
        let mut flushes = Vec::new();
        for item in items.drain(..) {
            match item {
                LogItem::Record(record, retain_since) => {
                    if let Ok(bound) = sql::ticks(retain_since) {
                        inner.note_retention(bound);
                    }
                    records.push(record);
                }
                LogItem::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
            let retain_since = inner.retention();
            let max_rows = inner.options.max_log_records;
            let result = Arc::clone(&inner)
                .run(async move |conn| {
                    let tx = conn.client.transaction().await?;
                    for record in &records {
                        insert_activation(&tx, &conn.st, record).await?;
                    }
                    prune_log(&tx, &conn.st, retain_since, max_rows).await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                inner.background.failed("appending activation records", &e);
                inner.background.dropped(count, &e);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The pruning task: every [`PostgresOptions::prune_interval`], deletes
/// aged clients and activation records in bounded batches (each its own
/// operation under the deadline), until the store is dropped.
async fn prune(inner: Weak<Inner>) {
    let Some(interval) = inner
        .upgrade()
        .map(|i| i.options.prune_interval.max(Duration::from_millis(10)))
    else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let windows: Vec<(Uuid, i64)> = inner
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(a, w)| (*a, *w))
            .collect();
        'clients: for (app, window_start) in windows {
            loop {
                let deleted = Arc::clone(&inner)
                    .run(async move |conn| {
                        let rows = conn
                            .client
                            .query(&conn.st.delete_aged, &[&app, &window_start])
                            .await?;
                        Ok(rows.first().map_or(Ok(0), |row| get::<i64>(row, 0))?)
                    })
                    .await;
                match deleted {
                    Ok(n) if n >= PRUNE_BATCH => {}
                    Ok(_) => break,
                    Err(e) => {
                        inner.background.failed("pruning aged clients", &e);
                        break 'clients;
                    }
                }
            }
        }
        let retain_since = inner.retention();
        let max_rows = inner.options.max_log_records;
        loop {
            let deleted = Arc::clone(&inner)
                .run(async move |conn| {
                    prune_log(&conn.client, &conn.st, retain_since, max_rows).await
                })
                .await;
            match deleted {
                Ok(n) if n >= PRUNE_BATCH.unsigned_abs() => {}
                Ok(_) => break,
                Err(e) => {
                    inner.background.failed("pruning the activation log", &e);
                    break;
                }
            }
        }
    }
}

/// `app`'s counted clients within the window and their largest N policy,
/// from the counter and two index look-ups (no scan).
async fn live_tally(
    client: &impl tokio_postgres::GenericClient,
    st: &Prepared,
    app: Uuid,
    window_start: i64,
) -> Result<(u64, u32), Fail> {
    let row = client.query_one(&st.tally, &[&app, &window_start]).await?;
    let counted: Option<i64> = get(&row, 0)?;
    let aged: i64 = get(&row, 1)?;
    let max_n: Option<i64> = get(&row, 2)?;
    Ok((
        sql::count_of(
            counted.unwrap_or(0).saturating_sub(aged).max(0),
            "applications.clients",
        )?,
        sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
    ))
}

/// The counting rule in one transaction (see the module documentation).
async fn record(conn: &mut Conn, visit: &Visit, max_clients: u64) -> Result<Tally, Fail> {
    let app = visit.application_id;
    let cmid = visit.cmid;
    let at = sql::ticks(visit.at)?;
    let window_start = sql::ticks(visit.window_start)?;
    let n_policy = i64::from(visit.n_policy);
    let capacity = visit.capacity.map(sql::limit);
    let st = &conn.st;
    let tx = conn.client.transaction().await?;
    tx.query(&st.delete_aged, &[&app, &window_start]).await?;
    let known = tx
        .execute(&st.touch, &[&app, &cmid, &at, &n_policy])
        .await?;
    let mut admitted = true;
    if known == 0 {
        tx.execute(&st.ensure_application, &[&app]).await?;
        let admission = tx.query(&st.admit, &[&app, &capacity]).await?;
        admitted = !admission.is_empty();
        if let Some(row) = admission.first() {
            let held: i64 = get(row, 0)?;
            if sql::count_of(held, "applications.clients")? > max_clients.max(1) {
                // The client seen longest ago gives way.
                tx.execute(&st.evict_oldest, &[&app]).await?;
            }
            let inserted = tx
                .execute(&st.insert_client, &[&app, &cmid, &at, &n_policy])
                .await?;
            if inserted == 0 {
                // Another host admitted this CMID meanwhile: count it once.
                tx.execute(&st.unadmit, &[&app]).await?;
                tx.execute(&st.touch, &[&app, &cmid, &at, &n_policy])
                    .await?;
            }
        }
    }
    let (clients, max_n_policy) = live_tally(&tx, st, app, window_start).await?;
    tx.commit().await?;
    Ok(Tally {
        clients,
        max_n_policy,
        admitted,
    })
}

async fn insert_activation(
    client: &impl tokio_postgres::GenericClient,
    st: &Prepared,
    record: &ActivationRecord,
) -> Result<(), Fail> {
    let peer = record.peer.map(|p| p.to_string());
    let peer_ip = query::peer_key(record.peer).map(Vec::from);
    let params: [&(dyn ToSql + Sync); 18] = [
        &sql::ticks(record.time)?,
        &peer,
        &sql::id_to_sql(record.connection_id),
        &i64::from(u32::from(record.protocol)),
        &record.application_id,
        &record.sku_id,
        &record.kms_id,
        &record.cmid,
        &record.previous_cmid,
        &record.workstation,
        &i64::from(record.n_policy),
        &sql::ticks(record.client_time)?,
        &record.virtual_machine,
        &i64::from(u32::from(record.license_status)),
        &i64::from(record.minutes_to_expiry),
        &record.count.map(i64::from),
        &i64::from(u32::from(record.result)),
        &peer_ip,
    ];
    client.execute(&st.append, &params).await?;
    Ok(())
}

/// One bounded batch of activation records: older than `retain_since`,
/// then beyond the newest `max_rows`. Returns how many were deleted.
async fn prune_log(
    client: &impl tokio_postgres::GenericClient,
    st: &Prepared,
    retain_since: Option<i64>,
    max_rows: u64,
) -> Result<u64, Fail> {
    let mut deleted = 0;
    if let Some(retain_since) = retain_since {
        deleted += client.execute(&st.prune_log_time, &[&retain_since]).await?;
    }
    deleted += client
        .execute(&st.prune_log_rows, &[&sql::limit(max_rows)])
        .await?;
    Ok(deleted)
}

/// `$n`, PostgreSQL's numbered parameter.
fn dollar(n: usize) -> String {
    format!("${n}")
}

/// Runs a query built by [`query::sql`] (a read: one statement, no
/// transaction).
async fn select(
    client: &Client,
    text: String,
    params: Vec<query::sql::Param>,
) -> Result<Vec<Row>, Fail> {
    let values: Vec<SqlValue> = params
        .into_iter()
        .map(|param| match param {
            query::sql::Param::Int(n) => SqlValue::Int(n),
            query::sql::Param::Uuid(id) => SqlValue::Uuid(id),
            query::sql::Param::Bytes(bytes) => SqlValue::Bytes(bytes.to_vec()),
        })
        .collect();
    let rows = client.query_raw(text.as_str(), values.iter()).await?;
    Ok(futures_util::TryStreamExt::try_collect(rows).await?)
}

/// A parameter of [`select`], owned.
#[derive(Debug)]
enum SqlValue {
    Int(i64),
    Uuid(Uuid),
    Bytes(Vec<u8>),
}

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Int(n) => n.to_sql(ty, out),
            Self::Uuid(id) => id.to_sql(ty, out),
            Self::Bytes(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <Uuid as ToSql>::accepts(ty)
            || <Vec<u8> as ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Column 17: the record's sequence number (its identity).
fn sequence(row: &Row) -> Result<u64, StoreError> {
    let id = get::<i64>(row, 17)?;
    u64::try_from(id).map_err(|_| bad("activations.id", id))
}

/// One column, its type checked.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    index: usize,
) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Backend(format!("column {index}: {e}")))
}

/// One activation row, every column checked.
fn activation(row: &Row) -> Result<ActivationRecord, StoreError> {
    let int = |i: usize| get::<i64>(row, i);
    let peer = match get::<Option<String>>(row, 1)? {
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
        application_id: get(row, 4)?,
        sku_id: get(row, 5)?,
        kms_id: get(row, 6)?,
        cmid: get(row, 7)?,
        previous_cmid: get(row, 8)?,
        workstation: get(row, 9)?,
        n_policy: sql::u32_of(int(10)?, "activations.n_policy")?,
        client_time: sql::file_time(int(11)?, "activations.client_time")?,
        virtual_machine: get(row, 12)?,
        license_status: LicenseStatus::from(sql::u32_of(int(13)?, "activations.license_status")?),
        minutes_to_expiry: sql::u32_of(int(14)?, "activations.minutes_to_expiry")?,
        count: get::<Option<i64>>(row, 15)?
            .map(|c| sql::u32_of(c, "activations.count"))
            .transpose()?,
        result: HResult::from(sql::u32_of(int(16)?, "activations.result")?),
    })
}
