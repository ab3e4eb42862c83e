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
//! and the whole operation. A lost connection fails the operation in
//! progress with [`StoreError::Unavailable`]; the connection is discarded
//! and the next operation opens a new one. A visit whose commit was sent
//! but not confirmed may or may not be counted; a retry of the same CMID is
//! idempotent, so the count is never wrong.

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

use super::sql::{self, bad};
use super::{CountStore, StoreError, Tally, Visit};
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
    /// The longest a statement (or a lock wait) may take on the server; an
    /// operation as a whole may take three times as long, waiting for a
    /// free connection included.
    pub statement_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }
}

impl PostgresOptions {
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
    options: PostgresOptions,
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
    insert_client: Statement,
    unadmit: Statement,
    tally_after: Statement,
    tally: Statement,
    append: Statement,
    recent: Statement,
    epid: Statement,
}

impl Prepared {
    async fn new(client: &Client, schema: &str) -> Result<Self, tokio_postgres::Error> {
        let s = schema;
        Ok(Self {
            delete_aged: client
                .prepare(&format!(
                    "WITH gone AS (DELETE FROM {s}.clients
                         WHERE application_id = $1 AND last_seen <= $2 RETURNING 1)
                     UPDATE {s}.applications SET clients = clients - (SELECT count(*) FROM gone)
                     WHERE application_id = $1 AND EXISTS (SELECT 1 FROM gone)"
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
            tally_after: client
                .prepare(&format!(
                    "SELECT (SELECT clients FROM {s}.applications WHERE application_id = $1),
                            (SELECT max(n_policy) FROM {s}.clients WHERE application_id = $1)"
                ))
                .await?,
            tally: client
                .prepare(&format!(
                    "SELECT count(*), max(n_policy) FROM {s}.clients
                     WHERE application_id = $1 AND last_seen > $2"
                ))
                .await?,
            append: client
                .prepare(&format!(
                    "WITH pruned AS (DELETE FROM {s}.activations WHERE time < $18)
                     INSERT INTO {s}.activations (time, peer, connection_id, protocol,
                         application_id, sku_id, kms_id, cmid, previous_cmid, workstation,
                         n_policy, client_time, virtual_machine, license_status,
                         minutes_to_expiry, count, result)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                         $16, $17)"
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

/// Serializes schema creation between hosts starting at once (concurrent
/// `CREATE TABLE IF NOT EXISTS` can otherwise fail on the catalog).
const SCHEMA_LOCK: i64 = 0x6b6d_735f_7363_6865;

fn schema_sql(s: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.clients (
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
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
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
            permits: Arc::new(Semaphore::new(options.max_connections.max(1))),
            options,
            runtime,
            idle: Mutex::new(Vec::new()),
            in_flight: Mutex::new(InFlight::default()),
            finished: Notify::new(),
        });
        let task = {
            let inner = Arc::clone(&inner);
            async move {
                let mut client = inner.open().await?;
                let created = inner
                    .bounded(async {
                        let tx = client.transaction().await?;
                        tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
                            .await?;
                        tx.batch_execute(&schema_sql(&schema)).await?;
                        tx.commit().await?;
                        Ok(())
                    })
                    .await;
                created?;
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
        Ok(Self { inner })
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
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn.as_mut().ok_or(StoreError::Closed)
    }

    /// Keeps the connection only if the operation did not lose it.
    fn settle<T>(&mut self, result: &Result<T, StoreError>) {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            self.conn = None;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
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
/// other server errors are errors of the store.
fn classify(e: &tokio_postgres::Error) -> StoreError {
    let text = e.to_string();
    if e.is_closed() {
        return StoreError::Unavailable(text);
    }
    match e.code() {
        // No SQLSTATE: I/O, connect or protocol failure.
        None => StoreError::Unavailable(text),
        Some(code) => {
            let code = code.code();
            let transient = ["08", "53", "57", "58", "40"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "55P03";
            if transient {
                StoreError::Unavailable(text)
            } else {
                StoreError::Backend(text)
            }
        }
    }
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
        self.options.statement_timeout.saturating_mul(3)
    }

    /// Bounds `work` by the operation timeout.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, Fail>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.operation_timeout(), work).await {
            Ok(result) => result.map_err(Fail::into_store),
            Err(_) => Err(StoreError::Unavailable(
                "PostgreSQL operation timed out".into(),
            )),
        }
    }

    /// A new session with its timeouts set.
    async fn open(&self) -> Result<Client, StoreError> {
        let connecting =
            tokio::time::timeout(self.options.connect_timeout, self.config.connect(NoTls));
        let (client, connection) = match connecting.await {
            Ok(result) => result.map_err(|e| classify(&e))?,
            Err(_) => {
                return Err(StoreError::Unavailable(
                    "connecting to PostgreSQL timed out".into(),
                ));
            }
        };
        // The connection's own errors reach the client as closed-connection
        // errors on its next query.
        self.runtime.spawn(async move {
            let _ = connection.await;
        });
        let millis = self.options.statement_timeout.as_millis().max(1);
        self.bounded(async {
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {millis}; SET lock_timeout = {millis};
                     SET idle_in_transaction_session_timeout = {}",
                    millis.saturating_mul(4)
                ))
                .await?;
            Ok(())
        })
        .await?;
        Ok(client)
    }

    /// An idle connection, or a new one.
    async fn lease(self: &Arc<Self>) -> Result<Lease, StoreError> {
        let permit = tokio::time::timeout(
            self.operation_timeout(),
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| StoreError::Unavailable("no free PostgreSQL connection".into()))?
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
            let st = self
                .bounded(async { Ok(Prepared::new(&client, &schema).await?) })
                .await?;
            Conn { client, st }
        };
        Ok(Lease {
            conn: Some(conn),
            inner: Arc::clone(self),
            _permit: permit,
        })
    }

    /// Runs `op` on a leased connection, retrying deadlocks.
    async fn run<T>(
        self: Arc<Self>,
        op: impl AsyncFnMut(&mut Conn) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut op = op;
        let mut lease = self.lease().await?;
        let result = self
            .bounded(async {
                let conn = lease.conn()?;
                let mut attempt = 1;
                loop {
                    match op(conn).await {
                        Err(fail) if fail.retry() && attempt < ATTEMPTS => attempt += 1,
                        other => break other,
                    }
                }
            })
            .await;
        lease.settle(&result);
        result
    }
}

impl CountStore for PostgresStore {
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        self.spawn(move |inner| inner.run(async move |conn| record(conn, &visit).await))
    }

    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        self.spawn(move |inner| {
            inner.run(async move |conn| {
                let window_start = sql::ticks(window_start)?;
                let row = conn
                    .client
                    .query_one(&conn.st.tally, &[&application_id, &window_start])
                    .await?;
                let clients: i64 = get(&row, 0)?;
                let max_n: Option<i64> = get(&row, 1)?;
                Ok(Tally {
                    clients: sql::count_of(clients, "count")?,
                    max_n_policy: sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
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
        self.spawn(move |inner| {
            inner.run(async move |conn| append(conn, &record, retain_since).await)
        })
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
        // submitted before this call.
        let inner = Arc::clone(&self.inner);
        let before = inner.lock_in_flight().next;
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
                    return Ok(());
                }
                finished.await;
            }
        }
    }
}

/// The counting rule in one transaction (see the module documentation).
async fn record(conn: &mut Conn, visit: &Visit) -> Result<Tally, Fail> {
    let app = visit.application_id;
    let cmid = visit.cmid;
    let at = sql::ticks(visit.at)?;
    let window_start = sql::ticks(visit.window_start)?;
    let n_policy = i64::from(visit.n_policy);
    let capacity = visit.capacity.map(sql::limit);
    let st = &conn.st;
    let tx = conn.client.transaction().await?;
    tx.execute(&st.delete_aged, &[&app, &window_start]).await?;
    let known = tx
        .execute(&st.touch, &[&app, &cmid, &at, &n_policy])
        .await?;
    let mut admitted = true;
    if known == 0 {
        tx.execute(&st.ensure_application, &[&app]).await?;
        admitted = !tx.query(&st.admit, &[&app, &capacity]).await?.is_empty();
        if admitted {
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
    let row = tx.query_one(&st.tally_after, &[&app]).await?;
    let clients: Option<i64> = get(&row, 0)?;
    let max_n: Option<i64> = get(&row, 1)?;
    tx.commit().await?;
    Ok(Tally {
        clients: sql::count_of(clients.unwrap_or(0), "applications.clients")?,
        max_n_policy: sql::u32_of(max_n.unwrap_or(0), "clients.n_policy")?,
        admitted,
    })
}

async fn append(
    conn: &mut Conn,
    record: &ActivationRecord,
    retain_since: FileTime,
) -> Result<(), Fail> {
    let peer = record.peer.map(|p| p.to_string());
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
        &sql::ticks(retain_since)?,
    ];
    conn.client.execute(&conn.st.append, &params).await?;
    Ok(())
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
