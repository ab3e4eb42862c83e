//! Where a host keeps what it must remember: the client table it counts,
//! the activation log and its ePIDs.
//!
//! [`CountStore`] is one trait for every backend, shaped for asynchronous
//! I/O: each operation returns a future, so a database can be awaited
//! between a request's event and its answer without blocking other
//! connections. Backends:
//!
//! * [`MemoryStore`]: in memory, bounded and aging; the default. Its futures
//!   are ready at once.
#![cfg_attr(
    feature = "sqlite",
    doc = "* [`SqliteStore`] (feature `sqlite`): an embedded file for one host, with"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "* `SqliteStore` (feature `sqlite`): an embedded file for one host, with"
)]
//!   group commit (one `fsync` for every visit waiting at that moment).
#![cfg_attr(
    feature = "postgres",
    doc = "* [`PostgresStore`] (feature `postgres`): one database shared by a fleet of"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "* `PostgresStore` (feature `postgres`): one database shared by a fleet of"
)]
//!   hosts behind one SRV name, so they report one count.
//!
//! The persistent stores keep, besides the client rows, one counter row per
//! application (the number of client rows it holds), updated in the same
//! transaction as the rows it counts: a visit then costs `O(log n)` however
//! many clients are known, where counting the rows would cost `O(n)`.
//!
//! # The counting rule every store implements
//!
//! A store keeps one entry per (application, CMID): when that client last
//! asked and the N policy it last reported. [`CountStore::record_visit`]
//! upserts the asking client's entry and returns the [`Tally`] of the
//! application *after* the upsert: the number of entries seen within the
//! window (strictly after [`Visit::window_start`]) and the largest N policy
//! among them. A repeat CMID therefore never counts twice, and the asking
//! client is always included. An entry last seen at or before the window
//! start has aged out: it no longer counts, and a store may delete it.
//!
//! When [`Visit::capacity`] is set and the CMID is not yet counted, the
//! store admits it only if fewer than `capacity` clients are counted; a
//! client refused this way is not recorded ([`Tally::admitted`] is false).
//!
//! Durability: a persistent store has committed a visit when the future of
//! `record_visit` completes, so a host that answers only afterwards never
//! reports a count it would forget on a crash.
//!
//! # Bounds and deadlines
//!
//! The persistent stores bound every operation by a deadline (2 s by
//! default, the wait for a connection or for the writer included, and
//! shorter than a transport's handler timeout), after which the operation
//! fails with [`StoreError::TimedOut`] and the host refuses the client
//! rather than leave it without an answer. The activation log is written
//! behind the answers ([`CountStore::queue_activation`]), in batches, from a
//! bounded queue. Aged clients and activation records are pruned in the
//! background in bounded batches, the activation log is also capped in rows,
//! and each application keeps at most a configured number of clients (the
//! one seen longest ago gives way to a new one).
//!
//! Both persistent stores carry a schema version and migrate an older
//! database forward when they open it; a database written by a newer
//! release is refused with [`StoreError::SchemaTooNew`].

#[cfg(feature = "sqlite")]
#[allow(
    clippy::disallowed_methods,
    reason = "a store's deadlines are I/O: they read the monotonic clock"
)]
mod deadline;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
#[cfg(feature = "sqlite")]
#[allow(
    clippy::disallowed_methods,
    reason = "the writer thread is I/O: its deadlines and pruning read the monotonic clock"
)]
mod sqlite;

use std::future::Future;

pub use memory::{DEFAULT_MAX_CLIENTS_PER_APPLICATION, MemoryStore, MemoryStoreLimits};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
pub use query::{ClientEntry, LogEntry, LogQuery, Page};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStore, SqliteSync};

use super::activation::ActivationRecord;
use crate::{FileTime, Uuid};

/// A client asking to be counted ([`Visit::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Visit {
    /// The application the client counts under (its request's application
    /// ID: Windows, Office 2010 or Office 2013+).
    pub application_id: Uuid,
    /// The client machine ID.
    pub cmid: Uuid,
    /// The N policy the client reported.
    pub n_policy: u32,
    /// When the host received the request.
    pub at: FileTime,
    /// Entries last seen at or before this instant no longer count
    /// (`at` minus the counting window, 30 days on a Windows host).
    pub window_start: FileTime,
    /// Admit a new CMID only while fewer clients than this are counted.
    pub capacity: Option<u64>,
}

/// The state of one application's client table ([`Tally::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Tally {
    /// Distinct CMIDs seen within the window.
    pub clients: u64,
    /// The largest N policy among those clients (0 when there are none).
    pub max_n_policy: u32,
    /// False when [`Visit::capacity`] kept a new client out.
    pub admitted: bool,
}

impl Visit {
    /// `cmid` of `application_id` reporting `n_policy` at `at`, counting
    /// entries seen after `window_start`, with no capacity (set the public
    /// field `capacity` to cap admissions).
    #[must_use]
    pub const fn new(
        application_id: Uuid,
        cmid: Uuid,
        n_policy: u32,
        at: FileTime,
        window_start: FileTime,
    ) -> Self {
        Self {
            application_id,
            cmid,
            n_policy,
            at,
            window_start,
            capacity: None,
        }
    }
}

impl Tally {
    /// A tally of `clients` with the largest N policy `max_n_policy`;
    /// `admitted` tells whether the visit was let in (what a [`CountStore`]
    /// implementation returns).
    #[must_use]
    pub const fn new(clients: u64, max_n_policy: u32, admitted: bool) -> Self {
        Self {
            clients,
            max_n_policy,
            admitted,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached right now (connection lost, database
    /// down); the operation may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error or data it should not hold.
    #[error("store error: {0}")]
    Backend(String),
    /// The store was shut down.
    #[error("store is closed")]
    Closed,
    /// The operation did not complete within the store's deadline (the
    /// database is slow, hung or unreachable, or its queue is full).
    #[error("store timed out: {0}")]
    TimedOut(String),
    /// The database was written by a newer release, whose schema this one
    /// does not know; it is left untouched.
    #[error(
        "the store's schema is version {found}, newer than version {supported} this release knows: upgrade kms-activation or use another database"
    )]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this release knows.
        supported: i64,
    },
    /// The store does not implement this operation.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}

/// What a store did wrong out of sight of any caller: background writes and
/// pruning that failed, activation records it had to drop. Counters since
/// the store was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Background operations (activation-log batches, pruning) that failed.
    pub errors: u64,
    /// Activation records accepted by [`CountStore::queue_activation`]
    /// that were never stored (lost with a failed batch). Records it
    /// refused (a full queue) are not counted here: the caller saw the
    /// error and counts them.
    pub dropped_records: u64,
}

/// A store URL with its password replaced by `***`, for messages and logs.
///
/// Accepts the URL forms PostgreSQL accepts (`postgres://user:pass@host/db`,
/// `postgresql://…`) and `key=value` strings (`password=…`); anything else
/// is returned unchanged.
///
/// ```
/// use kms_activation::host::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://kms:s3cret@db.example.org:5432/kms"),
///     "postgres://kms:***@db.example.org:5432/kms"
/// );
/// assert_eq!(redact_url("host=db password=s3cret user=kms"), "host=db password=*** user=kms");
/// assert_eq!(redact_url("postgres://kms@db/kms"), "postgres://kms@db/kms");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let rest = url.get(rest_start..).unwrap_or("");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = rest.get(..authority_end).unwrap_or("");
        let mut out = String::with_capacity(url.len());
        out.push_str(url.get(..rest_start).unwrap_or(""));
        if let Some(at) = authority.rfind('@') {
            let user_info = authority.get(..at).unwrap_or("");
            match user_info.find(':') {
                Some(colon) => {
                    out.push_str(user_info.get(..colon).unwrap_or(""));
                    out.push_str(":***");
                }
                None => out.push_str(user_info),
            }
            out.push_str(authority.get(at..).unwrap_or(""));
        } else {
            out.push_str(authority);
        }
        out.push_str(&redact_query(rest.get(authority_end..).unwrap_or("")));
        return out;
    }
    url.split(' ')
        .map(|word| match word.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `?…&password=…` parameters redacted.
fn redact_query(tail: &str) -> String {
    let Some(query_start) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(query_start);
    let query = query.get(1..).unwrap_or("");
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

/// A host's persistent state, behind one interface for every backend.
///
/// Implementations must be usable from several connections at once
/// (`&self` methods, `Send + Sync`). See the [module
/// documentation](self) for the counting rule and durability.
///
/// ```
/// use kms_activation::host::store::{CountStore, MemoryStore, Visit};
/// use kms_activation::{FileTime, Uuid};
///
/// let store = MemoryStore::default();
/// let at = FileTime::from_ticks(134_397_882_570_000_000);
/// let window_start = FileTime::from_ticks(at.ticks() - 30 * 86_400 * 10_000_000);
/// let visit = |cmid: u128| Visit::new(Uuid::from_u128(1), Uuid::from_u128(cmid), 25, at, window_start);
/// let tally = pollster::block_on(store.record_visit(visit(7)))?;
/// assert_eq!(tally.clients, 1);
/// let tally = pollster::block_on(store.record_visit(visit(7)))?; // same CMID again
/// assert_eq!(tally.clients, 1);
/// let tally = pollster::block_on(store.record_visit(visit(8)))?;
/// assert_eq!((tally.clients, tally.max_n_policy), (2, 25));
/// # Ok::<(), kms_activation::host::store::StoreError>(())
/// ```
pub trait CountStore: Send + Sync {
    /// Upserts the visiting client and returns its application's tally.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the visit could not be recorded; the host then
    /// refuses the request rather than guess a count.
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send;

    /// The tally of `application_id` at `window_start` (for statistics),
    /// without recording anything.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send;

    /// Appends a record to the activation log and drops records older than
    /// `retain_since`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the record could not be stored.
    fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hands `record` to the activation log without waiting for it to be
    /// stored: the host calls this after deciding a request, so a slow log
    /// never delays an answer. A persistent store queues the record (the
    /// queue is bounded) and appends it in a batch from the background;
    /// `retain_since` is as for [`append_activation`](Self::append_activation).
    ///
    /// The default drives [`append_activation`](Self::append_activation) as
    /// far as it goes without waiting, which stores a record in a store whose
    /// futures are ready at once (such as one in memory); a store that must
    /// wait should override it with a queue of its own, or its records are
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the record was dropped (a full queue, a closed
    /// store, or an append that could not complete at once).
    fn queue_activation(
        &self,
        record: ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        let mut append = std::pin::pin!(self.append_activation(&record, retain_since));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match append.as_mut().poll(&mut context) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => Err(StoreError::TimedOut(
                "this store cannot append an activation record without waiting".into(),
            )),
        }
    }

    /// Counters of what failed in the background (see [`StoreHealth`]);
    /// all zero by default.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }

    /// Up to `limit` activation records, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send;

    /// One page of the activation log, newest first, filtered (see
    /// [`LogQuery`] for the semantics every store shares).
    ///
    /// The default fails with [`StoreError::Unsupported`]: a store that
    /// keeps no log cannot answer.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn activations(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<LogEntry>, StoreError>> + Send {
        let _ = query;
        std::future::ready(Err(StoreError::Unsupported("activation-log queries")))
    }

    /// One page of the clients the activation log names, the one heard
    /// from last first, filtered (see [`LogQuery`]).
    ///
    /// The default fails with [`StoreError::Unsupported`].
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn clients(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<ClientEntry>, StoreError>> + Send {
        let _ = query;
        std::future::ready(Err(StoreError::Unsupported("client queries")))
    }

    /// The ePID kept for `csvlk_id`, storing `candidate` first if there is
    /// none yet (atomically: hosts sharing a store agree on one ePID).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn host_epid(
        &self,
        csvlk_id: Uuid,
        candidate: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Completes when everything accepted so far is durable.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot confirm.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl<S: CountStore> CountStore for std::sync::Arc<S> {
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        (**self).record_visit(visit)
    }

    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        (**self).tally(application_id, window_start)
    }

    fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).append_activation(record, retain_since)
    }

    fn queue_activation(
        &self,
        record: ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        (**self).queue_activation(record, retain_since)
    }

    fn health(&self) -> StoreHealth {
        (**self).health()
    }

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        (**self).recent_activations(limit)
    }

    fn activations(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<LogEntry>, StoreError>> + Send {
        (**self).activations(query)
    }

    fn clients(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<ClientEntry>, StoreError>> + Send {
        (**self).clients(query)
    }

    fn host_epid(
        &self,
        csvlk_id: Uuid,
        candidate: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send {
        (**self).host_epid(csvlk_id, candidate)
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).flush()
    }
}

/// What a persistent store counts and reports about its background work.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug)]
struct Background {
    errors: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
    #[cfg_attr(not(feature = "tracing"), allow(dead_code, reason = "used to log"))]
    warnings: crate::log_limit::LogLimit,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl Background {
    fn new() -> Self {
        Self {
            errors: std::sync::atomic::AtomicU64::new(0),
            dropped: std::sync::atomic::AtomicU64::new(0),
            warnings: crate::log_limit::LogLimit::new(std::time::Duration::from_secs(60), 10),
        }
    }

    fn health(&self) -> StoreHealth {
        use std::sync::atomic::Ordering::Relaxed;
        StoreHealth {
            errors: self.errors.load(Relaxed),
            dropped_records: self.dropped.load(Relaxed),
        }
    }

    /// Counts `dropped` activation records that will never be stored.
    fn dropped(&self, dropped: u64, why: &StoreError) {
        self.dropped
            .fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
        self.warn("activation records dropped", dropped, why);
    }

    /// Counts and reports a background operation that failed.
    fn failed(&self, what: &str, error: &StoreError) {
        self.errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.warn(what, 0, error);
    }

    #[cfg_attr(
        not(feature = "tracing"),
        allow(clippy::unused_self, reason = "logs only with the tracing feature")
    )]
    fn warn(&self, what: &str, records: u64, error: &StoreError) {
        #[cfg(feature = "tracing")]
        {
            #[allow(clippy::disallowed_methods, reason = "paces log lines only")]
            let now = std::time::Instant::now();
            if let crate::log_limit::Admit::Yes { suppressed } = self.warnings.admit(now) {
                tracing::warn!(
                    target: "kms_activation::store",
                    records,
                    suppressed,
                    "store failure in the background: {what}: {error}"
                );
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (what, records, error);
    }
}

/// Rows deleted by one pruning statement: bounded, so no statement holds
/// the database for long however much has aged.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const PRUNE_BATCH: i64 = 1000;

/// The default cap on activation-log rows of a persistent store:
/// 1 000 000 rows (a few hundred megabytes), pruned oldest first.
pub const DEFAULT_MAX_LOG_RECORDS: u64 = 1_000_000;

/// The default deadline of one operation of a persistent store: 2 s, the
/// wait for a connection or the writer included. Shorter than a transport's
/// handler timeout, so a client gets a refusal rather than silence.
pub const DEFAULT_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The default renewal granularity of a persistent store
/// (`renewal_granularity` of its options): 60 s.
///
/// The granularity is how stale a counted client's stored `last_seen` may
/// be before a renewal rewrites it; zero writes every visit. A renewal of
/// a client that is counted, reports the same N policy and was stored as
/// seen within this much of the visit changes no tally, so the store
/// writes nothing for it. Its answer still waits for its batch's commit,
/// and what it counted is already committed, so a crash forgets no
/// answered count.
///
/// The cost: the stored visit may be up to this much older than the
/// client's last one, so its entry can age out of the 30-day window that
/// much earlier (30 days against 60 s by default).
pub const DEFAULT_RENEWAL_GRANULARITY: std::time::Duration = std::time::Duration::from_secs(60);

/// Conversions between the store's types and the 64-bit signed integers SQL
/// databases hold; whatever comes back from a database is checked.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql {
    use super::StoreError;
    use crate::FileTime;

    /// A tick count as a database integer; ticks past `i64::MAX` (year
    /// 30828) are refused rather than wrapped, which would break ordering.
    pub(super) fn ticks(time: FileTime) -> Result<i64, StoreError> {
        i64::try_from(time.ticks())
            .map_err(|_| StoreError::Backend(format!("time {} out of range", time.ticks())))
    }

    /// `duration` in 100 ns ticks, saturating.
    pub(super) fn duration_ticks(duration: std::time::Duration) -> i64 {
        i64::try_from(duration.as_nanos() / 100).unwrap_or(i64::MAX)
    }

    /// A database integer as a tick count.
    pub(super) fn file_time(value: i64, column: &str) -> Result<FileTime, StoreError> {
        u64::try_from(value)
            .map(FileTime::from_ticks)
            .map_err(|_| bad(column, value))
    }

    /// A database integer that must fit a `u32`.
    pub(super) fn u32_of(value: i64, column: &str) -> Result<u32, StoreError> {
        u32::try_from(value).map_err(|_| bad(column, value))
    }

    /// A database integer that must be a count (non-negative).
    pub(super) fn count_of(value: i64, column: &str) -> Result<u64, StoreError> {
        u64::try_from(value).map_err(|_| bad(column, value))
    }

    /// A `u64` identifier kept bit for bit in a signed column.
    pub(super) fn id_to_sql(id: u64) -> i64 {
        i64::from_ne_bytes(id.to_ne_bytes())
    }

    /// The inverse of [`id_to_sql`].
    pub(super) fn id_from_sql(value: i64) -> u64 {
        u64::from_ne_bytes(value.to_ne_bytes())
    }

    /// A capacity or a row limit as a database integer (saturating: no
    /// table holds `i64::MAX` rows).
    pub(super) fn limit(value: u64) -> i64 {
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    pub(super) fn bad(column: &str, value: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(format!("bad value in column {column}: {value}"))
    }
}
