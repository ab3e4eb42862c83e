//! The in-memory count store: bounded, aging, lost on exit.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::query::{ClientEntry, LogEntry, LogQuery, Page};
use super::{CountStore, StoreError, Tally, Visit};
use crate::host::activation::ActivationRecord;
use crate::{FileTime, Uuid};

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreLimits {
    /// Client entries kept over all applications. At the bound, the entry
    /// seen longest ago (of any application) gives way to the new one. A
    /// genuine count never needs more than twice the largest N policy per
    /// application (2 000 at most), so the default (1 048 576) only matters
    /// for statistics.
    pub max_clients: usize,
    /// Client entries kept per application (default
    /// [`DEFAULT_MAX_CLIENTS_PER_APPLICATION`]). At the bound, that
    /// application's entry seen longest ago gives way to the new one.
    pub max_clients_per_application: usize,
    /// Activation records kept; the oldest are dropped first.
    pub max_log_records: usize,
}

/// The default bound on the clients a store keeps per application:
/// 1 000 000, far above any count a host reports (at most twice the largest
/// N policy) and small enough to bound the table.
pub const DEFAULT_MAX_CLIENTS_PER_APPLICATION: u64 = 1_000_000;

impl Default for MemoryStoreLimits {
    fn default() -> Self {
        Self {
            max_clients: 1 << 20,
            max_clients_per_application: 1_000_000,
            max_log_records: 100_000,
        }
    }
}

/// A [`CountStore`] in memory: the default for a single host that may
/// forget its clients on restart (they come back within a renewal interval).
///
/// Every operation is one lock and `O(log n)` work; its futures are ready
/// at once, so a synchronous host can drive it with any `block_on`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    limits: MemoryStoreLimits,
    state: Mutex<State>,
}

/// Every entry of every application by last visit: (last seen,
/// application, CMID).
type Ages = BTreeSet<(u64, Uuid, Uuid)>;

#[derive(Debug, Default)]
struct State {
    applications: HashMap<Uuid, ClientTable>,
    clients: usize,
    ages: Ages,
    log: VecDeque<ActivationRecord>,
    /// The sequence number of `log[0]`.
    log_start: u64,
    /// (application, CMID) → the sequence numbers of its records, oldest
    /// first.
    log_clients: HashMap<(Uuid, Uuid), VecDeque<u64>>,
    epids: HashMap<Uuid, String>,
}

impl State {
    fn push_log(&mut self, record: ActivationRecord) {
        let seq = self.log_start + self.log.len() as u64;
        self.log_clients
            .entry((record.application_id, record.cmid))
            .or_default()
            .push_back(seq);
        self.log.push_back(record);
    }

    fn pop_log(&mut self) {
        let Some(record) = self.log.pop_front() else {
            return;
        };
        let key = (record.application_id, record.cmid);
        if let Some(seqs) = self.log_clients.get_mut(&key) {
            seqs.pop_front();
            if seqs.is_empty() {
                self.log_clients.remove(&key);
            }
        }
        self.log_start += 1;
    }

    fn record_at(&self, seq: u64) -> Option<&ActivationRecord> {
        let index = usize::try_from(seq.checked_sub(self.log_start)?).ok()?;
        self.log.get(index)
    }

    /// The log's sequence numbers below the cursor, newest first.
    fn newest_first(&self, before: Option<u64>) -> impl Iterator<Item = u64> + '_ {
        let end = self.log_start + self.log.len() as u64;
        let end = before.map_or(end, |b| b.min(end));
        (self.log_start..end.max(self.log_start)).rev()
    }

    fn activations(&self, query: &LogQuery) -> Page<LogEntry> {
        let items = self
            .newest_first(query.before)
            .filter_map(|seq| Some((seq, self.record_at(seq)?)))
            .filter(|(_, record)| query.matches(record))
            .take(query.limit)
            .map(|(seq, record)| LogEntry {
                seq,
                record: record.clone(),
            })
            .collect();
        query.page(items, |entry| entry.seq)
    }

    fn clients(&self, query: &LogQuery) -> Page<ClientEntry> {
        let items = self
            .newest_first(query.before)
            .filter_map(|seq| {
                let record = self.record_at(seq)?;
                let seqs = self
                    .log_clients
                    .get(&(record.application_id, record.cmid))?;
                // Only the client's newest record stands for it.
                if seqs.back() != Some(&seq) || !query.matches(record) {
                    return None;
                }
                let first_seen = seqs
                    .front()
                    .and_then(|&first| self.record_at(first))
                    .map_or(record.time, |first| first.time);
                Some(ClientEntry {
                    seq,
                    last: record.clone(),
                    first_seen,
                    requests: seqs.len() as u64,
                })
            })
            .take(query.limit)
            .collect();
        query.page(items, |entry| entry.seq)
    }
}

/// One application's clients, indexed by CMID and by last visit.
#[derive(Debug, Default)]
struct ClientTable {
    entries: HashMap<Uuid, Entry>,
    by_last_seen: BTreeSet<(u64, Uuid)>,
    /// N policy → number of entries reporting it (a multiset, for the max).
    n_policies: BTreeMap<u32, usize>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_seen: u64,
    n_policy: u32,
}

impl ClientTable {
    fn tally(&self, admitted: bool) -> Tally {
        Tally {
            clients: u64::try_from(self.entries.len()).unwrap_or(u64::MAX),
            max_n_policy: self.n_policies.keys().next_back().copied().unwrap_or(0),
            admitted,
        }
    }

    /// Removes entries last seen at or before `window_start`; returns how
    /// many.
    fn expire(&mut self, app: Uuid, window_start: FileTime, ages: &mut Ages) -> usize {
        let mut removed = 0;
        while let Some(&(seen, cmid)) = self.by_last_seen.first() {
            if seen > window_start.ticks() {
                break;
            }
            self.remove(app, cmid, ages);
            removed += 1;
        }
        removed
    }

    fn remove(&mut self, app: Uuid, cmid: Uuid, ages: &mut Ages) -> Option<Entry> {
        let entry = self.entries.remove(&cmid)?;
        self.by_last_seen.remove(&(entry.last_seen, cmid));
        ages.remove(&(entry.last_seen, app, cmid));
        self.forget_n_policy(entry.n_policy);
        Some(entry)
    }

    fn insert(&mut self, app: Uuid, cmid: Uuid, entry: Entry, ages: &mut Ages) {
        self.entries.insert(cmid, entry);
        self.by_last_seen.insert((entry.last_seen, cmid));
        ages.insert((entry.last_seen, app, cmid));
        *self.n_policies.entry(entry.n_policy).or_insert(0) += 1;
    }

    fn forget_n_policy(&mut self, n_policy: u32) {
        if let Some(count) = self.n_policies.get_mut(&n_policy) {
            *count -= 1;
            if *count == 0 {
                self.n_policies.remove(&n_policy);
            }
        }
    }

    fn oldest(&self) -> Option<Uuid> {
        self.by_last_seen.first().map(|&(_, cmid)| cmid)
    }
}

impl MemoryStore {
    /// An empty store with these bounds.
    #[must_use]
    pub fn new(limits: MemoryStoreLimits) -> Self {
        Self {
            limits,
            state: Mutex::default(),
        }
    }

    /// The bounds in force.
    #[must_use]
    pub fn limits(&self) -> MemoryStoreLimits {
        self.limits
    }

    /// Client entries held over all applications (aged ones included until
    /// their application is next visited).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().clients
    }

    /// True when no client entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock cannot leave the tables half-updated in a
        // way that breaks a later call, so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, visit: Visit) -> Tally {
        let mut state = self.lock();
        let State {
            applications,
            clients,
            ages,
            ..
        } = &mut *state;
        let app = visit.application_id;
        let table = applications.entry(app).or_default();
        *clients -= table.expire(app, visit.window_start, ages);
        let previous = table.remove(app, visit.cmid, ages);
        if previous.is_none() {
            let held = table.entries.len();
            let full = visit
                .capacity
                .is_some_and(|cap| u64::try_from(held).unwrap_or(u64::MAX) >= cap);
            if full {
                return table.tally(false);
            }
            if held >= self.limits.max_clients_per_application.max(1) {
                // This application's longest-unseen client gives way.
                if let Some(oldest) = table.oldest() {
                    table.remove(app, oldest, ages);
                    *clients -= 1;
                }
            }
            if *clients >= self.limits.max_clients {
                // The longest-unseen client of any application gives way.
                let evicted = ages.first().copied().and_then(|(_, owner, oldest)| {
                    applications.get_mut(&owner)?.remove(owner, oldest, ages)
                });
                if evicted.is_none() {
                    return applications
                        .get(&app)
                        .map(|t| t.tally(false))
                        .unwrap_or_default();
                }
                *clients -= 1;
            }
            *clients += 1;
        }
        let last_seen = previous.map_or(visit.at.ticks(), |p| p.last_seen.max(visit.at.ticks()));
        let Some(table) = applications.get_mut(&app) else {
            return Tally::default();
        };
        table.insert(
            app,
            visit.cmid,
            Entry {
                last_seen,
                n_policy: visit.n_policy,
            },
            ages,
        );
        table.tally(true)
    }
}

impl CountStore for MemoryStore {
    fn record_visit(&self, visit: Visit) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        ready(Ok(self.record(visit)))
    }

    fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
        let mut state = self.lock();
        let state = &mut *state;
        let tally = match state.applications.get_mut(&application_id) {
            Some(table) => {
                state.clients -= table.expire(application_id, window_start, &mut state.ages);
                table.tally(true)
            }
            None => Tally {
                admitted: true,
                ..Tally::default()
            },
        };
        ready(Ok(tally))
    }

    fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.append(record.clone(), retain_since);
        ready(Ok(()))
    }

    fn queue_activation(
        &self,
        record: ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        self.append(record, retain_since);
        Ok(())
    }

    fn recent_activations(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
        let state = self.lock();
        ready(Ok(state.log.iter().rev().take(limit).cloned().collect()))
    }

    fn activations(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<LogEntry>, StoreError>> + Send {
        ready(Ok(self.lock().activations(&query)))
    }

    fn clients(
        &self,
        query: LogQuery,
    ) -> impl Future<Output = Result<Page<ClientEntry>, StoreError>> + Send {
        ready(Ok(self.lock().clients(&query)))
    }

    fn host_epid(
        &self,
        csvlk_id: Uuid,
        candidate: &str,
    ) -> impl Future<Output = Result<String, StoreError>> + Send {
        let mut state = self.lock();
        let epid = state
            .epids
            .entry(csvlk_id)
            .or_insert_with(|| candidate.to_owned())
            .clone();
        ready(Ok(epid))
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Ok(()))
    }
}

impl MemoryStore {
    fn append(&self, record: ActivationRecord, retain_since: FileTime) {
        let mut state = self.lock();
        while state
            .log
            .front()
            .is_some_and(|r| r.time < retain_since || state_log_full(&state.log, self.limits))
        {
            state.pop_log();
        }
        if self.limits.max_log_records > 0 {
            state.push_log(record);
        }
    }
}

fn state_log_full(log: &VecDeque<ActivationRecord>, limits: MemoryStoreLimits) -> bool {
    log.len() >= limits.max_log_records
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400 * 10_000_000;
    const MINUTE: u64 = 60 * 10_000_000;
    const T0: u64 = 134_397_882_570_000_000;

    fn visit(app: u128, cmid: u128, n: u32, at: u64) -> Visit {
        Visit {
            application_id: Uuid::from_u128(app),
            cmid: Uuid::from_u128(cmid),
            n_policy: n,
            at: FileTime::from_ticks(at),
            window_start: FileTime::from_ticks(at - 30 * DAY),
            capacity: None,
        }
    }

    #[test]
    fn counts_distinct_clients_per_application() {
        let store = MemoryStore::default();
        for cmid in 1..=5 {
            assert_eq!(
                store.record(visit(1, cmid, 25, T0)).clients,
                u64::try_from(cmid).unwrap()
            );
        }
        assert_eq!(store.record(visit(1, 3, 25, T0 + MINUTE)).clients, 5);
        assert_eq!(store.record(visit(2, 3, 5, T0)).clients, 1);
        assert_eq!(store.record(visit(2, 3, 5, T0)).max_n_policy, 5);
        assert_eq!(store.len(), 6);
    }

    #[test]
    fn entries_age_out_after_thirty_days() {
        let store = MemoryStore::default();
        store.record(visit(1, 1, 25, T0));
        // One minute before 30 days: still counted with the asking client.
        assert_eq!(
            store
                .record(visit(1, 2, 25, T0 + 30 * DAY - MINUTE))
                .clients,
            2
        );
        // Exactly 30 days: the first entry is at the window start, so gone.
        assert_eq!(store.record(visit(1, 3, 25, T0 + 30 * DAY)).clients, 2);
        assert_eq!(
            store
                .record(visit(1, 4, 25, T0 + 30 * DAY + MINUTE))
                .clients,
            3
        );
    }

    #[test]
    fn max_n_policy_follows_live_entries() {
        let store = MemoryStore::default();
        store.record(visit(1, 1, 25, T0));
        assert_eq!(store.record(visit(1, 2, 5, T0 + 31 * DAY)).max_n_policy, 5);
        // The client that reported 5 now reports 25 again.
        assert_eq!(
            store.record(visit(1, 2, 25, T0 + 31 * DAY)).max_n_policy,
            25
        );
    }

    #[test]
    fn capacity_keeps_new_clients_out_but_not_known_ones() {
        let store = MemoryStore::default();
        let cap = |cmid| Visit {
            capacity: Some(2),
            ..visit(1, cmid, 25, T0)
        };
        assert!(store.record(cap(1)).admitted);
        assert!(store.record(cap(2)).admitted);
        let refused = store.record(cap(3));
        assert!(!refused.admitted);
        assert_eq!(refused.clients, 2);
        assert!(store.record(cap(1)).admitted);
    }

    #[test]
    fn bounded_by_evicting_the_longest_unseen() {
        let store = MemoryStore::new(MemoryStoreLimits {
            max_clients: 3,
            max_log_records: 2,
            ..MemoryStoreLimits::default()
        });
        for cmid in 1..=10 {
            store.record(visit(1, cmid, 25, T0 + u64::try_from(cmid).unwrap()));
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.record(visit(2, 1, 5, T0 + 20)).clients, 1);
        assert_eq!(store.len(), 3);
        let tally = pollster::block_on(store.tally(Uuid::from_u128(1), FileTime::from_ticks(0)));
        assert_eq!(tally.unwrap().clients, 2);
    }

    fn held(store: &MemoryStore, app: u128) -> Vec<u128> {
        let state = store.lock();
        let mut cmids: Vec<u128> = state
            .applications
            .get(&Uuid::from_u128(app))
            .map(|t| t.entries.keys().map(Uuid::as_u128).collect())
            .unwrap_or_default();
        cmids.sort_unstable();
        cmids
    }

    #[test]
    fn at_the_global_bound_the_oldest_entry_of_any_application_goes() {
        let store = MemoryStore::new(MemoryStoreLimits {
            max_clients: 3,
            ..MemoryStoreLimits::default()
        });
        // Application 2 holds the entry seen longest ago.
        store.record(visit(2, 20, 5, T0));
        store.record(visit(1, 11, 25, T0 + MINUTE));
        store.record(visit(1, 12, 25, T0 + 2 * MINUTE));
        // A new client of application 1: application 2's entry gives way,
        // not application 1's oldest (seen later).
        store.record(visit(1, 13, 25, T0 + 3 * MINUTE));
        assert_eq!(held(&store, 1), vec![11, 12, 13]);
        assert_eq!(held(&store, 2), Vec::<u128>::new());
        assert_eq!(store.len(), 3);
        // Then application 1's own oldest, 11.
        store.record(visit(3, 30, 5, T0 + 4 * MINUTE));
        assert_eq!(held(&store, 1), vec![12, 13]);
        assert_eq!(held(&store, 3), vec![30]);
    }

    #[test]
    fn at_the_application_bound_its_oldest_entry_goes() {
        let store = MemoryStore::new(MemoryStoreLimits {
            max_clients_per_application: 2,
            ..MemoryStoreLimits::default()
        });
        store.record(visit(2, 20, 5, T0));
        // 11 is application 1's oldest although it visited last but one.
        store.record(visit(1, 12, 25, T0 + 2 * MINUTE));
        store.record(visit(1, 11, 25, T0 + MINUTE));
        let tally = store.record(visit(1, 13, 25, T0 + 3 * MINUTE));
        assert_eq!((tally.clients, tally.admitted), (2, true));
        assert_eq!(held(&store, 1), vec![12, 13]);
        assert_eq!(held(&store, 2), vec![20]);
        assert_eq!(store.len(), 3);
    }
}
