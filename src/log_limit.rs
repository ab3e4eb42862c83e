//! A bound on how much one kind of log line can write.
//!
//! A peer that opens a thousand bad connections a second, or a store that
//! fails every operation, must not turn the host's log into a flood. Each
//! kind of line gets a [`LogLimit`]: at most `burst` lines per `interval`,
//! and the first line admitted after a quiet spell says how many were
//! suppressed in between. The limiter takes the time as an argument (no
//! clock inside), so it is deterministic under test.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` admitted lines per `interval`; the rest are counted.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Start of the current interval (`None` before the first line).
    start: Option<Instant>,
    /// Lines admitted in the current interval.
    admitted: u32,
    /// Lines refused since the last admitted one.
    suppressed: u64,
}

/// Whether a line may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write it; `suppressed` lines of the same kind were dropped since the
    /// last one written (say so in the line when non-zero).
    Yes {
        /// Lines dropped since the previous admitted one.
        suppressed: u64,
    },
    /// Drop it (it has been counted).
    No,
}

impl LogLimit {
    /// A limit of `burst` lines per `interval` (a `burst` of 0 admits one).
    pub(crate) const fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst: if burst == 0 { 1 } else { burst },
            state: Mutex::new(Window {
                start: None,
                admitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Counts one line at `now` and says whether to write it.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let mut window = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let expired = window
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if expired {
            window.start = Some(now);
            window.admitted = 0;
        }
        if window.admitted < self.burst {
            window.admitted += 1;
            let suppressed = std::mem::take(&mut window.suppressed);
            Admit::Yes { suppressed }
        } else {
            window.suppressed = window.suppressed.saturating_add(1);
            Admit::No
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    reason = "tests start from the real clock"
)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_burst_per_interval_and_reports_what_it_dropped() {
        let limit = LogLimit::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Admit::Yes { suppressed: 0 });
        assert_eq!(limit.admit(t0), Admit::Yes { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(limit.admit(t0 + Duration::from_secs(9)), Admit::No);
        }
        assert_eq!(
            limit.admit(t0 + Duration::from_secs(10)),
            Admit::Yes { suppressed: 1000 }
        );
        assert_eq!(
            limit.admit(t0 + Duration::from_secs(11)),
            Admit::Yes { suppressed: 0 }
        );
        assert_eq!(limit.admit(t0 + Duration::from_secs(12)), Admit::No);
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_panic() {
        let limit = LogLimit::new(Duration::from_secs(1), 1);
        let t0 = Instant::now() + Duration::from_secs(100);
        assert_eq!(limit.admit(t0), Admit::Yes { suppressed: 0 });
        assert_eq!(
            limit.admit(t0.checked_sub(Duration::from_secs(50)).unwrap()),
            Admit::No
        );
    }
}
