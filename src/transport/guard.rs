//! What keeps one connection's failure from leaking into the server: a
//! registry entry removed however the connection ends, a handler's panic
//! caught, and (blocking) a future run with a deadline.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use super::registry::{Closer, Entry, Registry};

/// A connection's place in the registry, given back on drop: when the
/// connection ends normally, and also when its task is cancelled or its
/// thread unwinds.
pub(crate) struct Registered<'a, C: Closer> {
    registry: &'a Registry<C>,
    entry: Arc<Entry<C>>,
}

impl<'a, C: Closer> Registered<'a, C> {
    pub(crate) fn new(registry: &'a Registry<C>, closer: C) -> Self {
        let entry = registry.register(closer);
        Self { registry, entry }
    }

    pub(crate) fn entry(&self) -> &Entry<C> {
        &self.entry
    }
}

impl<C: Closer> Drop for Registered<'_, C> {
    fn drop(&mut self) {
        self.registry.remove(self.entry.id());
    }
}

/// Runs `work`, turning a panic in any of its polls into `Err(())`.
pub(crate) async fn unwind_safe<F: Future>(work: F) -> Result<F::Output, ()> {
    let mut work = pin!(work);
    poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        },
    )
    .await
}

#[cfg(feature = "blocking")]
pub(crate) use deadline::block_on_until;

#[cfg(feature = "blocking")]
mod deadline {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::thread;
    use std::time::Instant;

    use super::super::clock;
    use crate::block_on::Unpark;

    /// Runs `work` on this thread until it completes (`Some`) or
    /// `deadline` passes (`None`; the future is dropped). A future that
    /// blocks the thread inside a poll cannot be interrupted; one that
    /// waits (on a channel, a timer, another thread) is.
    pub(crate) fn block_on_until<F: Future>(work: F, deadline: Instant) -> Option<F::Output> {
        let mut work = pin!(work);
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            if let Poll::Ready(out) = work.as_mut().poll(&mut cx) {
                return Some(out);
            }
            let left = deadline.saturating_duration_since(clock::instant());
            if left.is_zero() {
                return None;
            }
            thread::park_timeout(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_the_entry_is_removed() {
        struct Nothing;
        impl Closer for Nothing {
            fn close(&self) {}
        }
        let registry = Registry::new(super::super::clock::instant());
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _entry = Registered::new(&registry, Nothing);
            assert_eq!(registry.len(), 1);
            panic!("handler bug");
        }));
        assert!(caught.is_err());
        assert_eq!(registry.len(), 0);
        let out = pollster::block_on(unwind_safe(async { panic!("in a future") }));
        assert_eq!(out, Err::<(), ()>(()));
        assert_eq!(pollster::block_on(unwind_safe(async { 7 })), Ok(7));
    }

    #[cfg(feature = "blocking")]
    #[test]
    fn a_future_that_waits_past_its_deadline_is_dropped() {
        use std::time::Duration;
        let t0 = super::super::clock::instant();
        let never = block_on_until(std::future::pending::<()>(), t0 + Duration::from_millis(20));
        assert_eq!(never, None);
        let at_once = block_on_until(async { 3 }, t0);
        assert_eq!(at_once, Some(3));
    }
}
