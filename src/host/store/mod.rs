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

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;

pub use memory::{MemoryStore, MemoryStoreLimits};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
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

    /// Up to `limit` activation records, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the backend cannot answer.
    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send;

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

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        (**self).recent_activations(limit)
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
