//! The PostgreSQL count store: one database shared by a fleet of hosts.
//!
//! # One statement per batch of decisions
//!
//! A decision (a [`CountStore::record_visit`]) costs one round trip, and
//! the decisions in flight share it. A batcher task takes the visits queued
//! (up to [`MAX_BATCH`](visits::MAX_BATCH)) and sends them as arrays to `record_visits`, a
//! PL/pgSQL function the store installs with its schema (version 3): one
//! statement, one implicit transaction, one commit. Within the batch the
//! visits are applied in order, and each gets the tally after its own
//! update, as if they had come one after the other. A renewal within
//! [`PostgresOptions::renewal_granularity`] (60 s) of its stored visit,
//! with the same N policy, only reads its row. Several batches may run
//! at once on different connections (at most [`BATCHES_IN_FLIGHT`](visits::BATCHES_IN_FLIGHT) per
//! store, then the queue fills the next one).
//!
//! # Concurrency
//!
//! The client row is keyed by (application, CMID), so two hosts never hold
//! two rows for one client: a repeat visit only updates its own row. The
//! number of clients per application lives in a counter row that changes in
//! the same transaction as the rows it counts. The function first takes
//! each application's lock (a transaction-scoped advisory lock keyed by
//! schema and application ID: held in memory, so a batch that writes
//! nothing stays read-only and commits without a WAL flush) **in the order
//! of the application IDs**, and only then touches client or counter rows;
//! every writer of those rows (the batches of every host, the pruning)
//! takes the locks in that order first, so concurrent batches wait for each
//! other instead of deadlocking, and a capacity or the per-application
//! bound holds exactly without `SERIALIZABLE`. A deadlock (two applications
//! whose lock keys collide) or serialization failure is retried, the whole
//! batch, up to three times.
//!
//! # Failures
//!
//! Every wait is bounded: connecting ([`PostgresOptions::connect_timeout`]),
//! each statement (`statement_timeout` and `lock_timeout` on the session)
//! and the whole operation, the wait for a pooled connection included
//! ([`PostgresOptions::operation_timeout`], 2 s by default). A visit's
//! deadline runs from its call: the wait in the queue counts, and a visit
//! whose deadline passed before its batch was sent is not sent. A batch
//! runs until the latest deadline among its visits; each visit fails at
//! its own.
//!
//! A batch is one transaction: it commits whole or not at all. A visit's
//! future completes only after the `COMMIT` of its batch has been
//! confirmed, so a success reported is never lost with a killed host. When
//! a batch fails (lost connection, timeout, server error) every visit in it
//! fails with that error ([`StoreError::Unavailable`] or
//! [`StoreError::TimedOut`] for the first two; the host refuses those
//! clients), and a connection lost or abandoned at the deadline is
//! discarded. A batch whose statement reached the server may still commit
//! after the store gave up on it (the statement is its own transaction, and
//! its commit needs no further message): its visits, refused, may be
//! counted. A retry of the same CMID is idempotent, so a client is never
//! counted twice and the counters always match the client rows. A visit
//! whose own values cannot be stored (a time past the year 30828) fails
//! alone, before it is queued. Errors name their cause (the
//! database does not exist, connection refused, authentication failed, TLS,
//! timed out) and never the password of the URL ([`redact_url`]).
//!
//! # Connections and TLS
//!
//! Connections come from a `deadpool-postgres` pool of at most
//! [`PostgresOptions::max_connections`], each with its own cache of
//! prepared statements. TLS follows the URL's `sslmode` (`disable`,
//! `prefer`, `require`), with the roots given by
//! [`PostgresOptions::with_root_certificates`] or the system's; see
//! [`tls`] for what each mode checks.
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

mod tls;
mod visits;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Config, Row, Statement};

use super::query::{self, ClientEntry, LogEntry, LogQuery, Page};
use super::sql::{self, bad};
use super::{
    Background, CountStore, DEFAULT_MAX_CLIENTS_PER_APPLICATION, DEFAULT_MAX_LOG_RECORDS,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_RENEWAL_GRANULARITY, PRUNE_BATCH, StoreError, StoreHealth,
    Tally, Visit, redact_url,
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
    /// retention in time; the oldest go first. The log is pruned at most
    /// once a second while records arrive (and before a `flush` completes),
    /// so between two prunes it may hold up to a second's records more.
    pub max_log_records: u64,
    /// Activation records waiting to be inserted at most (default 16 384);
    /// past it records are dropped and counted.
    pub max_log_queue: usize,
    /// How often aged rows are pruned (default 10 s).
    pub prune_interval: Duration,
    /// How stale a counted client's stored `last_seen` may be before a
    /// renewal rewrites it (default [`DEFAULT_RENEWAL_GRANULARITY`], 60 s,
    /// which explains the trade-off; zero writes every visit).
    ///
    /// A renewal within it only reads its row (no new row version, no
    /// index entries, nothing for the write-ahead log).
    ///
    /// [`DEFAULT_RENEWAL_GRANULARITY`]: super::DEFAULT_RENEWAL_GRANULARITY
    pub renewal_granularity: Duration,
    /// Root certificates (PEM) the database's TLS certificate is verified
    /// against, instead of the system's (see
    /// [`with_root_certificates`](Self::with_root_certificates)).
    pub root_certificates: Option<Vec<u8>>,
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
            renewal_granularity: DEFAULT_RENEWAL_GRANULARITY,
            root_certificates: None,
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

    /// These options verifying the database's TLS certificate against
    /// `pem` (one or more PEM certificates, e.g. the content of the
    /// server's CA file) rather than the system's roots; `kms-host` takes
    /// them with `--postgres-ca FILE`.
    ///
    /// With roots given, a TLS session is verified under `sslmode=prefer`
    /// too; `sslmode=require` verifies against the system's roots without
    /// them. The PEM is read at [`PostgresStore::connect_with`], which
    /// fails naming TLS when it holds no certificate.
    ///
    /// ```
    /// use kms_activation::host::store::PostgresOptions;
    ///
    /// let pem = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
    /// let options = PostgresOptions::default().with_root_certificates(pem.to_vec());
    /// assert!(options.root_certificates.is_some());
    /// ```
    #[must_use]
    pub fn with_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
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
/// dropped still runs to its end.
///
/// A decision costs one round trip, and the decisions in flight share it:
/// a batcher sends the visits queued (up to 256) as arrays to a PL/pgSQL
/// function the store installs with its schema, one statement and one
/// commit per batch, each visit answered with the tally after its own
/// update. The function takes the applications' locks in the order of
/// their IDs before any client row, so concurrent batches, of this host
/// or others, wait for each other and never deadlock. A visit's future
/// completes after its batch's `COMMIT`; a failed batch fails each of its
/// visits. Connections come from a `deadpool-postgres` pool, each with its
/// prepared statements; the database may be reached over TLS (`sslmode` in
/// the URL, [`PostgresOptions::with_root_certificates`]).
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
    visits: mpsc::Sender<visits::Queued>,
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
    /// The pool's own state changes under its locks, so a panic caught
    /// elsewhere cannot leave it half-changed; the store stays
    /// `UnwindSafe` as before the pool was `deadpool`'s.
    pool: AssertUnwindSafe<Pool>,
    /// The URL with its password redacted, for messages.
    target: String,
    options: PostgresOptions,
    sql: Sql,
    background: Background,
    /// The latest window start seen per application, for pruning.
    windows: Mutex<HashMap<Uuid, i64>>,
    /// The latest retention bound of the activation log seen.
    retain_since: Mutex<Option<i64>>,
    runtime: Handle,
    /// Tickets of the operations still running (for `flush`).
    in_flight: Mutex<InFlight>,
    finished: Notify,
}

#[derive(Default)]
struct InFlight {
    next: u64,
    running: BTreeSet<u64>,
}

/// A pooled connection during one operation, and the statements it may
/// prepare (each connection caches its prepared statements).
struct Session<'a> {
    client: &'a mut ClientWrapper,
    sql: &'a Sql,
}

impl Session<'_> {
    /// `text` prepared on this connection (once; then from its cache).
    async fn prepare(&self, text: &str) -> Result<Statement, Fail> {
        Ok(self.client.prepare_cached(text).await?)
    }
}

/// The text of every statement the store runs, for the statement caches.
struct Sql {
    record_visits: String,
    prune_clients: String,
    tally: String,
    append: String,
    prune_log_time: String,
    prune_log_rows: String,
    recent: String,
    epid: String,
}

impl Sql {
    fn new(s: &str) -> Self {
        Self {
            record_visits: visits::statement(s),
            // A bounded batch: the rest goes in the background.
            prune_clients: format!("SELECT {s}.prune_clients($1, $2, {PRUNE_BATCH})"),
            // The maintained counter minus the aged rows not yet pruned (an
            // index range, empty once pruning has run), and the first live
            // row of the N policy index from the top: no scan.
            tally: format!(
                "SELECT (SELECT clients FROM {s}.applications WHERE application_id = $1),
                        (SELECT count(*) FROM {s}.clients
                         WHERE application_id = $1 AND last_seen <= $2),
                        (SELECT n_policy FROM {s}.clients
                         WHERE application_id = $1 AND last_seen > $2
                         ORDER BY n_policy DESC LIMIT 1)"
            ),
            // Any number of records in one statement, one array per
            // column, inserted in the order given.
            append: format!(
                "INSERT INTO {s}.activations (time, peer, connection_id, protocol,
                     application_id, sku_id, kms_id, cmid, previous_cmid, workstation,
                     n_policy, client_time, virtual_machine, license_status,
                     minutes_to_expiry, count, result, peer_ip)
                 SELECT c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15,
                     c16, c17, c18
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[],
                     $5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::uuid[], $10::text[],
                     $11::bigint[], $12::bigint[], $13::boolean[], $14::bigint[],
                     $15::bigint[], $16::bigint[], $17::bigint[], $18::bytea[])
                     WITH ORDINALITY AS r(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12,
                         c13, c14, c15, c16, c17, c18, n)
                 ORDER BY n"
            ),
            prune_log_time: format!(
                "DELETE FROM {s}.activations WHERE id IN (
                     SELECT id FROM {s}.activations WHERE time < $1
                     ORDER BY time LIMIT {PRUNE_BATCH})"
            ),
            // Identity values only grow, so the newest `$1` rows have ids
            // above max(id) - $1.
            prune_log_rows: format!(
                "DELETE FROM {s}.activations WHERE id IN (
                     SELECT id FROM {s}.activations
                     WHERE id <= (SELECT max(id) FROM {s}.activations) - $1
                     ORDER BY id LIMIT {PRUNE_BATCH})"
            ),
            recent: format!(
                "SELECT time, peer, connection_id, protocol, application_id, sku_id, kms_id,
                     cmid, previous_cmid, workstation, n_policy, client_time,
                     virtual_machine, license_status, minutes_to_expiry, count, result
                 FROM {s}.activations ORDER BY time DESC, id DESC LIMIT $1"
            ),
            epid: format!(
                "WITH added AS (INSERT INTO {s}.epids (csvlk_id, epid) VALUES ($1, $2)
                     ON CONFLICT (csvlk_id) DO NOTHING RETURNING epid)
                 SELECT epid FROM added
                 UNION ALL SELECT epid FROM {s}.epids WHERE csvlk_id = $1"
            ),
        }
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
/// * 3: the functions `prune_clients` and `record_visits` (a batch of
///   visits in one statement, see the module documentation).
const SCHEMA_VERSION: i64 = 3;

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

/// The functions of one round trip per batch (schema version 3 added
/// them; each start installs them again).
///
/// `prune_clients` takes the application's lock, then deletes up to
/// `batch` aged rows and lowers the counter. `record_visits` takes the
/// visits as arrays (element `i` of each is visit `i`): it takes the locks
/// of the batch's applications in the order of their IDs, prunes what has
/// aged, and reads each application's tally once. It then looks up every
/// visit's row in one query and decides the visits in order, keeping the
/// tallies up to date as it goes, so each visit gets the tally after its
/// own update. The rows the batch changed are written at its end in one
/// upsert (a client's last state once), and each counter in one more
/// statement. A renewal within `granularity` ticks of its stored visit,
/// with the same N policy, writes nothing. Set-wise statements instead of
/// a few statements per visit: a batch of 64 costs the database about a
/// third of the CPU it did (schema version 3's first function).
fn functions(s: &str) -> String {
    format!(
        "{}\n{}",
        prune_clients_function(s),
        record_visits_function(s)
    )
}

/// `prune_clients(app, window_start, batch)`: see [`functions`].
fn prune_clients_function(s: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {s}.prune_clients(
             app uuid, window_start bigint, batch integer) RETURNS bigint
         LANGUAGE plpgsql AS $fn$
         DECLARE
             gone bigint;
         BEGIN
             -- The application's lock: a transaction-scoped advisory lock
             -- (memory only: a batch that writes nothing else stays
             -- read-only and commits without a WAL flush).
             PERFORM pg_advisory_xact_lock(hashtextextended('{s}.' || app::text, 0));
             WITH deleted AS (
                 DELETE FROM {s}.clients WHERE application_id = app AND cmid IN (
                     SELECT cmid FROM {s}.clients
                     WHERE application_id = app AND last_seen <= window_start LIMIT batch)
                 RETURNING 1)
             SELECT count(*) INTO gone FROM deleted;
             IF gone > 0 THEN
                 UPDATE {s}.applications SET clients = GREATEST(clients - gone, 0)
                 WHERE application_id = app;
             END IF;
             RETURN gone;
         END
         $fn$;"
    )
}

/// `record_visits(…)`: see [`functions`].
fn record_visits_function(s: &str) -> String {
    include_str!("postgres/record_visits.sql")
        .replace("{store_rows}", include_str!("postgres/store_rows.sql"))
        .replace("{s}", s)
}

/// Creates or migrates the schema and checks the counters, in one
/// transaction under the advisory lock. Returns how many counters were
/// rebuilt.
async fn set_up(
    client: &mut tokio_postgres::Client,
    s: &str,
    startup: Duration,
) -> Result<u64, Fail> {
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
    // The functions are code, not data: every start installs this
    // release's (the schema version says which tables they find).
    tx.batch_execute(&functions(s)).await?;
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
        // The session's timeouts, set at connection start-up (no round trip).
        let millis = server_millis(options.statement_timeout);
        let session = format!(
            "-c statement_timeout={millis} -c lock_timeout={millis} \
             -c idle_in_transaction_session_timeout={}",
            millis.saturating_mul(4).min(MAX_SERVER_MILLIS)
        );
        let session = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {session}"),
            _ => session,
        };
        config.options(&session);
        let runtime = Handle::try_current().map_err(|_| {
            StoreError::Backend("PostgresStore::connect must run within a Tokio runtime".into())
        })?;
        let schema = quoted_schema(&options.schema)?;
        let tls = tls::connector(config.get_ssl_mode(), options.root_certificates.as_deref())
            .map_err(|e| describe_at(&target, e))?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL at {target}: {e}")))?;
        let inner = Arc::new(Inner {
            pool: AssertUnwindSafe(pool),
            target,
            sql: Sql::new(&schema),
            background: Background::new(),
            windows: Mutex::new(HashMap::new()),
            retain_since: Mutex::new(None),
            options,
            runtime,
            in_flight: Mutex::new(InFlight::default()),
            finished: Notify::new(),
        });
        let task = {
            let inner = Arc::clone(&inner);
            async move {
                let startup = inner.options.startup_timeout;
                let set_up = async {
                    let mut lease = inner.lease().await?;
                    let client = lease.client()?;
                    let rebuilt = set_up(client, &schema, startup)
                        .await
                        .map_err(|f| inner.describe(f));
                    lease.settle(&rebuilt);
                    rebuilt
                };
                let rebuilt = match tokio::time::timeout(startup, set_up).await {
                    Ok(result) => result?,
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
        let (visits, queue) = mpsc::channel(visits::MAX_BATCH * visits::BATCHES_IN_FLIGHT * 4);
        inner
            .runtime
            .spawn(visits::batch(Arc::clone(&inner), queue));
        inner.runtime.spawn(prune(Arc::downgrade(&inner)));
        Ok(Self { inner, log, visits })
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

    /// A page of the log or of its clients: `build` writes the query in
    /// the store's schema, `map` reads each row, `seq` is an item's
    /// sequence number (where the next page starts).
    fn paged<T: Send + 'static>(
        &self,
        query: LogQuery,
        build: query::sql::Build,
        map: fn(&Row) -> Result<T, StoreError>,
        seq: fn(&T) -> u64,
    ) -> impl Future<Output = Result<Page<T>, StoreError>> + Send + 'static {
        let schema = quoted_schema(&self.inner.options.schema);
        self.spawn(move |inner| async move {
            let schema = format!("{}.", schema?);
            let (text, params) = build(&query, &schema, &dollar)?;
            let items = inner
                .run(async move |conn| {
                    let rows = select(conn.client, text.clone(), params.clone()).await?;
                    let items = rows
                        .iter()
                        .map(map)
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    Ok(items)
                })
                .await?;
            Ok(query.page(items, seq))
        })
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

/// A connection taken from the pool: back into it on drop only once its
/// operation settled without losing it (a lease dropped before, at its
/// deadline, may be mid-transaction: its connection is closed).
struct Lease {
    object: Option<deadpool_postgres::Object>,
    settled: bool,
}

impl Lease {
    fn client(&mut self) -> Result<&mut tokio_postgres::Client, StoreError> {
        self.object
            .as_deref_mut()
            .map(|wrapper| &mut **wrapper)
            .ok_or(StoreError::Closed)
    }

    fn wrapper(&mut self) -> Result<&mut ClientWrapper, StoreError> {
        self.object.as_deref_mut().ok_or(StoreError::Closed)
    }

    /// Keeps the connection only if the operation did not lose it.
    fn settle<T>(&mut self, result: &Result<T, StoreError>) {
        self.settled = !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::TimedOut(_))
        );
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(object) = self.object.take()
            && !self.settled
        {
            // Out of the pool; dropping the client ends its session.
            drop(deadpool_postgres::Object::take(object));
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
        _ if text.contains("TLS") => {
            "TLS failed (check the server's certificate and the root certificates given)"
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

/// `error` (a store error of the set-up) naming the database.
fn describe_at(target: &str, error: StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(text) => {
            StoreError::Unavailable(format!("PostgreSQL at {target}: {text}"))
        }
        StoreError::Backend(text) => StoreError::Backend(format!("PostgreSQL at {target}: {text}")),
        other => other,
    }
}

/// The instant `timeout` from now (far in the future for an unbounded one).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

impl Inner {
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
        describe_at(&self.target, fail.into_store())
    }

    fn timed_out(&self) -> StoreError {
        StoreError::TimedOut(format!(
            "PostgreSQL at {}: the operation took longer than {:?}",
            self.target,
            self.operation_timeout()
        ))
    }

    /// A pooled connection, or a new one (bounded by the caller).
    async fn lease(&self) -> Result<Lease, StoreError> {
        use deadpool_postgres::{PoolError, TimeoutType};
        match self.pool.get().await {
            Ok(object) => Ok(Lease {
                object: Some(object),
                settled: false,
            }),
            Err(PoolError::Backend(e)) => Err(self.describe(Fail::Pg(e))),
            Err(PoolError::Timeout(TimeoutType::Create)) => Err(StoreError::TimedOut(format!(
                "PostgreSQL at {}: connecting timed out after {:?}",
                self.target, self.options.connect_timeout
            ))),
            Err(PoolError::Closed) => Err(StoreError::Closed),
            Err(other) => Err(StoreError::Unavailable(format!(
                "PostgreSQL at {}: {other}",
                self.target
            ))),
        }
    }

    /// Runs `op` on a leased connection, retrying deadlocks, all within
    /// the operation's deadline (the wait for a connection included).
    async fn run<T>(
        self: Arc<Self>,
        op: impl AsyncFnMut(&mut Session<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let deadline = deadline_after(self.operation_timeout());
        self.run_until(deadline, op).await
    }

    /// [`run`](Self::run) with the deadline given.
    async fn run_until<T>(
        &self,
        deadline: Instant,
        op: impl AsyncFnMut(&mut Session<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut op = op;
        let work = async {
            let mut lease = self.lease().await?;
            let result = async {
                let mut session = Session {
                    client: lease.wrapper()?,
                    sql: &self.sql,
                };
                let mut attempt = 1;
                loop {
                    match op(&mut session).await {
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
        match tokio::time::timeout_at(deadline, work).await {
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
        let row = visits::Row::new(&visit);
        if let Ok(row) = &row {
            self.inner.note_window(row.application_id, row.window_start);
        }
        let queue = self.visits.clone();
        self.spawn(move |inner| visits::submit(inner, queue, row))
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
                    live_tally(conn, application_id, window_start).await?;
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
                let statements = LogStatements::new(conn).await?;
                insert_activations(&**conn.client, &statements, [&record]).await?;
                prune_log(&**conn.client, &statements, retain_since, max_rows).await?;
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
                let recent = conn.prepare(&conn.sql.recent).await?;
                let rows = conn.client.query(&recent, &[&limit]).await?;
                let records = rows.iter().map(activation).collect::<Result<_, _>>()?;
                Ok(records)
            })
        })
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
        self.spawn(move |inner| {
            inner.run(async move |conn| {
                // A host inserting the same ID concurrently commits after this
                // statement's snapshot: then it sees neither row and runs
                // again.
                let epid = conn.prepare(&conn.sql.epid).await?;
                for _ in 0..ATTEMPTS {
                    let rows = conn.client.query(&epid, &[&csvlk_id, &candidate]).await?;
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

/// How long an activation record may wait for others to share its
/// statement.
const LOG_DELAY: Duration = Duration::from_millis(100);
/// How often, at most, appending records also prunes the log.
const LOG_PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// The log task: inserts queued records in batches, one transaction each,
/// until the store is dropped.
async fn append_log(inner: Arc<Inner>, mut queue: mpsc::Receiver<LogItem>) {
    const BATCH: usize = 512;
    let mut items = Vec::with_capacity(BATCH);
    let mut last_prune: Option<tokio::time::Instant> = None;
    // Records appended since the last prune: at least as many rows may go.
    let mut unpruned: u64 = 0;
    while queue.recv_many(&mut items, BATCH).await > 0 {
        // More records join the batch until it is full, a flush asks for
        // it, or the first has waited `LOG_DELAY`: under load one
        // statement (and one commit) carries hundreds of records.
        let deadline = tokio::time::Instant::now() + LOG_DELAY;
        let is_flush = |item: &LogItem| matches!(item, LogItem::Flush(_));
        let mut flushing = items.iter().any(is_flush);
        while items.len() < BATCH && !flushing {
            let seen = items.len();
            let more = queue.recv_many(&mut items, BATCH - seen);
            if !matches!(tokio::time::timeout_at(deadline, more).await, Ok(n) if n > 0) {
                break;
            }
            flushing = items.iter().skip(seen).any(is_flush);
        }
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
            // The batch in one statement (its own transaction), then, when
            // due, the prune.
            let result = Arc::clone(&inner)
                .run(async move |conn| {
                    let statements = LogStatements::new(conn).await?;
                    insert_activations(&**conn.client, &statements, records.iter().map(|r| &**r))
                        .await?;
                    Ok(())
                })
                .await;
            // The log is pruned at most every `LOG_PRUNE_INTERVAL` (and
            // before a flush completes): its bounds may be passed by that
            // much meanwhile. A prune deletes, a bounded batch per
            // statement, at least as many rows as were appended since the
            // last, so the log is back within its bounds after it.
            if result.is_ok() {
                unpruned = unpruned.saturating_add(count);
            }
            let prune_due =
                flushing || last_prune.is_none_or(|at| at.elapsed() >= LOG_PRUNE_INTERVAL);
            match result {
                Ok(()) if prune_due => {
                    last_prune = Some(tokio::time::Instant::now());
                    prune_log_batches(&inner, Some(std::mem::take(&mut unpruned))).await;
                }
                Ok(()) => {}
                Err(e) => {
                    inner.background.failed("appending activation records", &e);
                    inner.background.dropped(count, &e);
                }
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
                        let prune = conn.prepare(&conn.sql.prune_clients).await?;
                        let row = conn
                            .client
                            .query_one(&prune, &[&app, &window_start])
                            .await?;
                        Ok(get::<i64>(&row, 0)?)
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
        prune_log_batches(&inner, None).await;
    }
}

/// Prunes the activation log a bounded batch per statement (each an
/// operation of its own, under its own deadline) until nothing is left to
/// prune or, with `at_least`, once that many rows went. A failure is
/// reported and ends the round.
async fn prune_log_batches(inner: &Arc<Inner>, at_least: Option<u64>) {
    let retain_since = inner.retention();
    let max_rows = inner.options.max_log_records;
    let mut owed = at_least;
    loop {
        let pruned = Arc::clone(inner)
            .run(async move |conn| {
                let statements = LogStatements::new(conn).await?;
                prune_log(&**conn.client, &statements, retain_since, max_rows).await
            })
            .await;
        match pruned {
            Ok(deleted) => {
                owed = owed.map(|owed| owed.saturating_sub(deleted));
                if deleted < PRUNE_BATCH.unsigned_abs() || owed == Some(0) {
                    return;
                }
            }
            Err(e) => {
                inner.background.failed("pruning the activation log", &e);
                return;
            }
        }
    }
}

/// `app`'s counted clients within the window and their largest N policy,
/// from the counter and two index look-ups (no scan).
async fn live_tally(conn: &Session<'_>, app: Uuid, window_start: i64) -> Result<(u64, u32), Fail> {
    let tally = conn.prepare(&conn.sql.tally).await?;
    let row = conn
        .client
        .query_one(&tally, &[&app, &window_start])
        .await?;
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

/// The statements that write the activation log, prepared.
struct LogStatements {
    append: Statement,
    prune_by_time: Statement,
    prune_by_rows: Statement,
}

impl LogStatements {
    async fn new(conn: &Session<'_>) -> Result<Self, Fail> {
        Ok(Self {
            append: conn.prepare(&conn.sql.append).await?,
            prune_by_time: conn.prepare(&conn.sql.prune_log_time).await?,
            prune_by_rows: conn.prepare(&conn.sql.prune_log_rows).await?,
        })
    }
}

/// `records` in one statement, in their order.
async fn insert_activations<'a>(
    client: &impl tokio_postgres::GenericClient,
    statements: &LogStatements,
    records: impl IntoIterator<Item = &'a ActivationRecord>,
) -> Result<(), Fail> {
    let mut columns = LogColumns::default();
    for record in records {
        columns.push(record)?;
    }
    let c = &columns;
    let params: [&(dyn ToSql + Sync); 18] = [
        &c.time,
        &c.peer,
        &c.connection_id,
        &c.protocol,
        &c.application_id,
        &c.sku_id,
        &c.kms_id,
        &c.cmid,
        &c.previous_cmid,
        &c.workstation,
        &c.n_policy,
        &c.client_time,
        &c.virtual_machine,
        &c.license_status,
        &c.minutes_to_expiry,
        &c.count,
        &c.result,
        &c.peer_ip,
    ];
    client.execute(&statements.append, &params).await?;
    Ok(())
}

/// Activation records as one array per column of `activations`.
#[derive(Default)]
struct LogColumns {
    time: Vec<i64>,
    peer: Vec<Option<String>>,
    connection_id: Vec<i64>,
    protocol: Vec<i64>,
    application_id: Vec<Uuid>,
    sku_id: Vec<Uuid>,
    kms_id: Vec<Uuid>,
    cmid: Vec<Uuid>,
    previous_cmid: Vec<Uuid>,
    workstation: Vec<String>,
    n_policy: Vec<i64>,
    client_time: Vec<i64>,
    virtual_machine: Vec<bool>,
    license_status: Vec<i64>,
    minutes_to_expiry: Vec<i64>,
    count: Vec<Option<i64>>,
    result: Vec<i64>,
    peer_ip: Vec<Option<Vec<u8>>>,
}

impl LogColumns {
    fn push(&mut self, record: &ActivationRecord) -> Result<(), StoreError> {
        // Checked first: a record out of range adds nothing.
        let time = sql::ticks(record.time)?;
        let client_time = sql::ticks(record.client_time)?;
        self.time.push(time);
        self.peer.push(record.peer.map(|p| p.to_string()));
        self.connection_id
            .push(sql::id_to_sql(record.connection_id));
        self.protocol.push(i64::from(u32::from(record.protocol)));
        self.application_id.push(record.application_id);
        self.sku_id.push(record.sku_id);
        self.kms_id.push(record.kms_id);
        self.cmid.push(record.cmid);
        self.previous_cmid.push(record.previous_cmid);
        self.workstation.push(record.workstation.clone());
        self.n_policy.push(i64::from(record.n_policy));
        self.client_time.push(client_time);
        self.virtual_machine.push(record.virtual_machine);
        self.license_status
            .push(i64::from(u32::from(record.license_status)));
        self.minutes_to_expiry
            .push(i64::from(record.minutes_to_expiry));
        self.count.push(record.count.map(i64::from));
        self.result.push(i64::from(u32::from(record.result)));
        self.peer_ip
            .push(query::peer_key(record.peer).map(Vec::from));
        Ok(())
    }
}

/// One bounded batch of activation records: older than `retain_since`,
/// then beyond the newest `max_rows`. Returns how many were deleted.
async fn prune_log(
    client: &impl tokio_postgres::GenericClient,
    statements: &LogStatements,
    retain_since: Option<i64>,
    max_rows: u64,
) -> Result<u64, Fail> {
    let mut deleted = 0;
    if let Some(retain_since) = retain_since {
        deleted += client
            .execute(&statements.prune_by_time, &[&retain_since])
            .await?;
    }
    deleted += client
        .execute(&statements.prune_by_rows, &[&sql::limit(max_rows)])
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
    client: &tokio_postgres::Client,
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

/// A row of [`query::sql::activations`].
fn log_entry(row: &Row) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        seq: sequence(row)?,
        record: activation(row)?,
    })
}

/// A row of [`query::sql::clients`].
fn client_entry(row: &Row) -> Result<ClientEntry, StoreError> {
    Ok(ClientEntry {
        seq: sequence(row)?,
        last: activation(row)?,
        first_seen: sql::file_time(get::<i64>(row, 18)?, "activations.time")?,
        requests: sql::count_of(get::<i64>(row, 19)?, "count(*)")?,
    })
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
