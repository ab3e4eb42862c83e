//! The table of a server's open connections, shared by both transports:
//! who is idle since when (to close the oldest idle one at the connection
//! cap), and closing connections on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::CloseReason;

/// How a transport tells one of its connections to close.
pub(crate) trait Closer: Send + Sync {
    /// Wakes the connection so it sees its close request.
    fn close(&self);
}

/// How long a connection must have been idle before it may be closed to
/// make room: a client that just connected, or just got a reply and is about
/// to send its next request, is not taken for an idle one.
pub(crate) const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

const OPEN: u8 = 0;
const EVICTED: u8 = 1;
const SHUTDOWN: u8 = 2;

/// One open connection, shared by its task or thread and the table.
pub(crate) struct Entry<C> {
    id: u64,
    /// Nanoseconds since the table's epoch, plus one, at which the
    /// connection became idle; 0 while it is busy.
    idle_since: AtomicU64,
    /// Idle with no activation half done: closed at once on shutdown.
    drainable: AtomicBool,
    close: AtomicU8,
    closer: C,
}

impl<C: Closer> Entry<C> {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn closer(&self) -> &C {
        &self.closer
    }

    /// Why the table asked this connection to close, if it did.
    pub(crate) fn close_request(&self) -> Option<CloseReason> {
        match self.close.load(Ordering::Acquire) {
            EVICTED => Some(CloseReason::Evicted),
            SHUTDOWN => Some(CloseReason::Shutdown),
            _ => None,
        }
    }

    fn request_close(&self, why: u8) {
        if self
            .close
            .compare_exchange(OPEN, why, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.closer.close();
        }
    }
}

/// The open connections of one server.
pub(crate) struct Registry<C> {
    epoch: Instant,
    entries: Mutex<HashMap<u64, Arc<Entry<C>>>>,
    next_id: AtomicU64,
    draining: AtomicBool,
}

impl<C: Closer> Registry<C> {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry<C>>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection (busy) and returns its entry; remove it with
    /// [`remove`](Self::remove) when the connection ends.
    pub(crate) fn register(&self, closer: C) -> Arc<Entry<C>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            idle_since: AtomicU64::new(0),
            drainable: AtomicBool::new(false),
            close: AtomicU8::new(OPEN),
            closer,
        });
        self.lock().insert(id, Arc::clone(&entry));
        if self.is_draining() {
            entry.request_close(SHUTDOWN);
        }
        entry
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records whether the connection is idle (waiting for a new PDU with
    /// nothing in progress) and, if so, whether it is `drainable` (no
    /// activation half done). A drainable connection during a shutdown is
    /// asked to close.
    pub(crate) fn set_idle(&self, entry: &Entry<C>, idle: bool, drainable: bool, now: Instant) {
        let stamp = if idle { self.stamp(now) } else { 0 };
        let was = entry.idle_since.load(Ordering::Relaxed);
        if (was == 0) != (stamp == 0) {
            entry.drainable.store(idle && drainable, Ordering::SeqCst);
            entry.idle_since.store(stamp, Ordering::SeqCst);
        }
        if idle && drainable && self.is_draining() {
            entry.request_close(SHUTDOWN);
        }
    }

    /// Asks the connection idle for longest, and for at least
    /// [`EVICTABLE_AFTER`], to close; false when there is none.
    pub(crate) fn evict_oldest_idle(&self, now: Instant) -> bool {
        let newest_allowed = now
            .checked_sub(EVICTABLE_AFTER)
            .map_or(0, |at| self.stamp(at));
        let oldest = self
            .lock()
            .values()
            .filter(|e| e.close.load(Ordering::Relaxed) == OPEN)
            .filter_map(|e| {
                let since = e.idle_since.load(Ordering::SeqCst);
                (since != 0 && since <= newest_allowed).then(|| (since, Arc::clone(e)))
            })
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, entry)) => {
                entry.request_close(EVICTED);
                true
            }
            None => false,
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts a graceful shutdown: drainable idle connections are asked to
    /// close now, the others as soon as they become so.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let idle: Vec<_> = self
            .lock()
            .values()
            .filter(|e| {
                e.idle_since.load(Ordering::SeqCst) != 0 && e.drainable.load(Ordering::SeqCst)
            })
            .map(Arc::clone)
            .collect();
        for entry in idle {
            entry.request_close(SHUTDOWN);
        }
    }

    /// Asks every connection to close (the grace period is over).
    pub(crate) fn close_all(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let all: Vec<_> = self.lock().values().map(Arc::clone).collect();
        for entry in all {
            entry.request_close(SHUTDOWN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Closer for Arc<Count> {
        fn close(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn evicts_the_oldest_idle_connection_only() {
        let t0 = super::super::now().0;
        let registry = Registry::new(t0);
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::default()).collect();
        let entries: Vec<_> = counts
            .iter()
            .map(|c| registry.register(Arc::clone(c)))
            .collect();
        registry.set_idle(&entries[0], true, true, t0 + Duration::from_secs(5));
        registry.set_idle(&entries[1], true, true, t0 + Duration::from_secs(2));
        let later = t0 + Duration::from_secs(6);
        assert!(registry.evict_oldest_idle(later));
        assert_eq!(entries[1].close_request(), Some(CloseReason::Evicted));
        assert_eq!(counts[1].0.load(Ordering::SeqCst), 1);
        // Idle for less than EVICTABLE_AFTER: kept.
        assert!(!registry.evict_oldest_idle(t0 + Duration::from_millis(5500)));
        assert!(registry.evict_oldest_idle(later));
        assert_eq!(entries[0].close_request(), Some(CloseReason::Evicted));
        // The busy one is never evicted.
        assert!(!registry.evict_oldest_idle(later));
        assert_eq!(entries[2].close_request(), None);
        registry.drain();
        assert_eq!(entries[2].close_request(), None);
        // Idle between its bind and its request: kept during the drain.
        registry.set_idle(&entries[2], true, false, later);
        assert_eq!(entries[2].close_request(), None);
        registry.set_idle(&entries[2], false, false, later);
        registry.set_idle(&entries[2], true, true, later);
        assert_eq!(entries[2].close_request(), Some(CloseReason::Shutdown));
        for e in &entries {
            registry.remove(e.id());
        }
        assert_eq!(registry.len(), 0);
    }
}
