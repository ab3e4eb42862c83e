//! Requests by outcome and per hour, as a transport [`Observer`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::host::ActivationRecord;
use crate::transport::Observer;
use crate::{FileTime, HResult};

/// FILETIME ticks in an hour.
const HOUR: u64 = 3_600 * 10_000_000;

/// Hours of requests kept.
const HOURS: usize = 24;

/// Distinct refusal codes counted one by one; later ones are counted
/// together under [`RequestCounts::refused_other`].
const MAX_CODES: usize = 64;

/// Counts every request a server decided by outcome, and per hour over the
/// last 24 hours. Give it to the server as an [`Observer`] and to
/// [`AdminState::with_outcomes`](super::AdminState::with_outcomes).
#[derive(Debug, Default)]
pub struct Outcomes {
    activated: AtomicU64,
    below_threshold: AtomicU64,
    refused: Mutex<BTreeMap<u32, u64>>,
    refused_other: AtomicU64,
    /// (hour since 1601, requests), oldest first.
    hours: Mutex<VecDeque<(u64, u64)>>,
}

/// A snapshot of [`Outcomes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Answered with a count at or above the client's N policy.
    pub activated: u64,
    /// Answered with a count below the client's N policy (the client stays
    /// unactivated and retries).
    pub below_threshold: u64,
    /// Refused, by HRESULT.
    pub refused: BTreeMap<HResult, u64>,
    /// Refused with codes past the first 64 distinct ones.
    pub refused_other: u64,
}

impl Outcomes {
    /// Counts one decided request.
    pub fn record(&self, record: &ActivationRecord) {
        if record.result == HResult::S_OK {
            let activated = record.count.is_some_and(|count| count >= record.n_policy);
            if activated {
                self.activated.fetch_add(1, Ordering::Relaxed);
            } else {
                self.below_threshold.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            let code = u32::from(record.result);
            if let Some(n) = refused.get_mut(&code) {
                *n += 1;
            } else if refused.len() < MAX_CODES {
                refused.insert(code, 1);
            } else {
                self.refused_other.fetch_add(1, Ordering::Relaxed);
            }
        }
        let hour = record.time.ticks() / HOUR;
        let mut hours = self.hours.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, n)) = hours.iter_mut().rev().find(|(h, _)| *h == hour) {
            *n += 1;
            return;
        }
        let window = HOURS as u64;
        let newest = hours.back().map_or(hour, |&(h, _)| h.max(hour));
        // A late record of an hour already out of the window is not kept.
        if hour + window > newest {
            let at = hours
                .iter()
                .position(|&(h, _)| h > hour)
                .unwrap_or(hours.len());
            hours.insert(at, (hour, 1));
        }
        while hours.front().is_some_and(|&(h, _)| h + window <= newest) {
            hours.pop_front();
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn counts(&self) -> RequestCounts {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&code, &n)| (HResult::from(code), n))
            .collect();
        RequestCounts {
            activated: self.activated.load(Ordering::Relaxed),
            below_threshold: self.below_threshold.load(Ordering::Relaxed),
            refused,
            refused_other: self.refused_other.load(Ordering::Relaxed),
        }
    }

    /// Requests in each of the 24 hours ending with the one holding `now`,
    /// oldest first: (start of the hour, requests).
    #[must_use]
    pub fn per_hour(&self, now: FileTime) -> Vec<(FileTime, u64)> {
        let current = now.ticks() / HOUR;
        let hours = self.hours.lock().unwrap_or_else(PoisonError::into_inner);
        (0..HOURS as u64)
            .rev()
            .map(|back| {
                let hour = current.saturating_sub(back);
                let n = hours
                    .iter()
                    .find(|&&(h, _)| h == hour)
                    .map_or(0, |&(_, n)| n);
                (FileTime::from_ticks(hour * HOUR), n)
            })
            .collect()
    }
}

impl Observer for Outcomes {
    fn request_processed(&self, record: &ActivationRecord, latency: Duration) {
        let _ = latency;
        self.record(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{RequestBody, Version};
    use crate::{LicenseStatus, Uuid};

    const T0: u64 = 134_397_882_570_000_000;

    fn record(at: u64, count: Option<u32>, result: HResult) -> ActivationRecord {
        let request = RequestBody {
            version: Version::V6,
            vm_info: 0,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 0,
            application_id: Uuid::nil(),
            sku_id: Uuid::nil(),
            kms_id: Uuid::nil(),
            cmid: Uuid::nil(),
            previous_cmid: Uuid::nil(),
            n_policy: 25,
            client_time: FileTime::from_ticks(at),
            workstation: String::new(),
        };
        ActivationRecord::new(FileTime::from_ticks(at), None, 0, &request, count, result)
    }

    #[test]
    fn outcomes_and_hours() {
        let outcomes = Outcomes::default();
        let start = T0 / HOUR * HOUR;
        outcomes.record(&record(start, Some(25), HResult::S_OK));
        outcomes.record(&record(start + 1, Some(24), HResult::S_OK));
        outcomes.record(&record(start + HOUR, None, HResult::KMS_ID_MISMATCH));
        outcomes.record(&record(start + 2 * HOUR, None, HResult::KMS_ID_MISMATCH));
        // A record 30 hours old is out of the window.
        outcomes.record(&record(start - 30 * HOUR, Some(1), HResult::S_OK));
        let counts = outcomes.counts();
        assert_eq!((counts.activated, counts.below_threshold), (1, 2));
        assert_eq!(counts.refused.get(&HResult::KMS_ID_MISMATCH), Some(&2));
        let hours = outcomes.per_hour(FileTime::from_ticks(start + 2 * HOUR + 5));
        assert_eq!(hours.len(), 24);
        let last: Vec<u64> = hours.iter().rev().take(4).map(|&(_, n)| n).collect();
        assert_eq!(last, [1, 1, 2, 0]);
        assert_eq!(hours.iter().map(|&(_, n)| n).sum::<u64>(), 4);
        assert_eq!(hours[23].0, FileTime::from_ticks(start + 2 * HOUR));
    }
}
