//! Host statistics, as `slmgr /dlv` shows them on a KMS host.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{LicenseStatus, Uuid};

/// A snapshot of a host's statistics.
///
/// The request counters cover every request the host decided or the engine
/// rejected since it started; the counts come from the store, so they
/// survive restarts with a persistent store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Statistics {
    /// Requests received (answered or refused).
    pub total_requests: u64,
    /// Requests refused with an HRESULT.
    pub failed_requests: u64,
    /// Requests by the license state the client reported, indexed by its
    /// code: 0 unlicensed, 1 licensed, 2 initial grace, 3 out-of-tolerance
    /// grace, 4 non-genuine grace, 5 notification, 6 extended grace.
    pub requests_by_license_status: [u64; 7],
    /// Requests with a license state outside 0–6, or that did not decode.
    pub requests_other_status: u64,
    /// The current count of each application the host has seen.
    pub counts: Vec<ApplicationCount>,
    /// Store operations that failed: those the host waited for (a visit it
    /// then refused, an ePID, the counts of a statistics report) and those
    /// the store ran in the background (activation-log batches, pruning).
    /// A running total: export it as a counter.
    pub store_errors: u64,
    /// Activation records that never reached the store's log: the log's
    /// queue was full, or their batch failed. A running total.
    pub dropped_records: u64,
}

/// One application's count in [`Statistics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplicationCount {
    /// The application ID.
    pub application_id: Uuid,
    /// Distinct clients seen within the counting window.
    pub clients: u64,
    /// The count the host reports now: `clients` capped at twice the
    /// largest N policy among them.
    pub current_count: u32,
}

impl ApplicationCount {
    /// The application's name ("Windows", "Office 2010", …), if known.
    #[must_use]
    pub fn name(&self) -> Option<&'static str> {
        crate::product::application(self.application_id).map(crate::product::Application::name)
    }
}

/// Counters updated from any number of connections at once.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    total: AtomicU64,
    failed: AtomicU64,
    by_status: [AtomicU64; 7],
    other_status: AtomicU64,
    store_errors: AtomicU64,
    dropped_records: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, status: Option<LicenseStatus>, failed: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let slot = status
            .map(u32::from)
            .and_then(|code| usize::try_from(code).ok())
            .and_then(|code| self.by_status.get(code));
        slot.unwrap_or(&self.other_status)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed store operation; returns the new total.
    pub(crate) fn store_error(&self) -> u64 {
        self.store_errors.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one activation record the store did not take; returns the
    /// new total.
    pub(crate) fn dropped_record(&self) -> u64 {
        self.dropped_records.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `snapshot` plus what the store counted itself.
    pub(crate) fn snapshot_with(
        &self,
        counts: Vec<ApplicationCount>,
        store: crate::host::store::StoreHealth,
    ) -> Statistics {
        let mut statistics = self.snapshot(counts);
        statistics.store_errors = statistics.store_errors.saturating_add(store.errors);
        statistics.dropped_records = statistics
            .dropped_records
            .saturating_add(store.dropped_records);
        statistics
    }

    pub(crate) fn snapshot(&self, counts: Vec<ApplicationCount>) -> Statistics {
        let mut by_status = [0; 7];
        for (out, counter) in by_status.iter_mut().zip(&self.by_status) {
            *out = counter.load(Ordering::Relaxed);
        }
        Statistics {
            total_requests: self.total.load(Ordering::Relaxed),
            failed_requests: self.failed.load(Ordering::Relaxed),
            requests_by_license_status: by_status,
            requests_other_status: self.other_status.load(Ordering::Relaxed),
            counts,
            store_errors: self.store_errors.load(Ordering::Relaxed),
            dropped_records: self.dropped_records.load(Ordering::Relaxed),
        }
    }
}
