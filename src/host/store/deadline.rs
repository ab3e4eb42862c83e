//! Deadlines for futures under any executor (`pollster::block_on`
//! included): one timer thread for the process wakes the futures whose
//! deadline has passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::StoreError;

/// One armed deadline: fired once its instant has passed.
struct Alarm {
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

struct Timers {
    queue: Mutex<Queue>,
    changed: Condvar,
}

#[derive(Default)]
struct Queue {
    next: u64,
    heap: BinaryHeap<Reverse<Armed>>,
    running: bool,
}

/// An alarm in the queue, ordered by its instant (then by arming order).
/// It is held weakly: a future that completed first has dropped it.
struct Armed {
    at: Instant,
    id: u64,
    alarm: Weak<Alarm>,
}

impl PartialEq for Armed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}

impl Eq for Armed {}

impl PartialOrd for Armed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Armed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

fn timers() -> &'static Timers {
    static TIMERS: OnceLock<Timers> = OnceLock::new();
    TIMERS.get_or_init(|| Timers {
        queue: Mutex::new(Queue::default()),
        changed: Condvar::new(),
    })
}

/// Arms an alarm at `at`; `None` when the timer thread cannot start (the
/// future then runs without a deadline rather than fail).
fn arm(at: Instant) -> Option<Arc<Alarm>> {
    let timers = timers();
    let alarm = Arc::new(Alarm {
        fired: AtomicBool::new(false),
        waker: Mutex::new(None),
    });
    let mut queue = timers.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if !queue.running {
        std::thread::Builder::new()
            .name("kms-store-timer".into())
            .spawn(run)
            .ok()?;
        queue.running = true;
    }
    let id = queue.next;
    queue.next = queue.next.wrapping_add(1);
    // The timer thread sleeps until the earliest alarm: it needs waking only
    // when this one comes first. Deadlines are mostly `now + the same
    // limit`, so under load almost no arming wakes it (one context switch
    // per operation saved).
    let first = queue
        .heap
        .peek()
        .is_none_or(|Reverse(earliest)| at < earliest.at);
    queue.heap.push(Reverse(Armed {
        at,
        id,
        alarm: Arc::downgrade(&alarm),
    }));
    drop(queue);
    if first {
        timers.changed.notify_one();
    }
    Some(alarm)
}

/// How late an alarm may fire (never early): the timer thread sleeps at
/// least this long between rounds and fires every alarm due by then, so
/// under load it wakes a few hundred times a second, not once per
/// operation (against deadlines of seconds).
const SLACK: Duration = Duration::from_millis(5);

/// The timer thread: fires every alarm whose instant has passed.
fn run() {
    let timers = timers();
    let mut queue = timers.queue.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        while queue
            .heap
            .peek()
            .is_some_and(|Reverse(next)| next.at <= now)
        {
            let Some(Reverse(armed)) = queue.heap.pop() else {
                break;
            };
            if let Some(alarm) = armed.alarm.upgrade() {
                alarm.fired.store(true, Ordering::Release);
                let waker = alarm
                    .waker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
        queue = match queue.heap.peek() {
            Some(Reverse(next)) => {
                let wait = next.at.saturating_duration_since(now).max(SLACK);
                timers
                    .changed
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => timers
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// `work`, or [`StoreError::TimedOut`] (saying `what`) once `limit` has
/// passed.
pub(super) async fn within<T>(
    limit: Duration,
    what: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let alarm = Instant::now().checked_add(limit).and_then(arm);
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(alarm) = &alarm {
            *alarm.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            if alarm.fired.load(Ordering::Acquire) {
                return Poll::Ready(Err(StoreError::TimedOut(format!(
                    "{what} took longer than {limit:?}"
                ))));
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_future_that_never_completes_times_out() {
        let never = std::future::pending::<Result<(), StoreError>>();
        let result = pollster::block_on(within(Duration::from_millis(20), "waiting", never));
        assert!(matches!(result, Err(StoreError::TimedOut(_))), "{result:?}");
    }

    #[test]
    fn a_ready_future_is_not_timed_out() {
        let ready = std::future::ready(Ok::<_, StoreError>(7));
        let result = pollster::block_on(within(Duration::from_secs(60), "waiting", ready));
        assert_eq!(result, Ok(7));
    }
}
