//! Runs a future to completion on the current thread, for the blocking entry
//! points ([`KmsHost::process_blocking`](crate::host::KmsHost::process_blocking)
//! and the `blocking` transport), so that the core needs no executor crate.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Wakes the thread blocked in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` until it is ready, parking the thread in between. A wake
/// that comes before the park leaves the thread's token set, so it is never
/// lost; a spurious unpark only costs one more poll.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn ready_future() {
        assert_eq!(block_on(async { 7 }), 7);
    }

    #[test]
    fn woken_from_another_thread() {
        // A oneshot whose sender fires from another thread after the first poll.
        let (tx, rx) = futures_oneshot();
        let (started_tx, started_rx) = mpsc::channel();
        let sender = thread::spawn(move || {
            started_rx.recv().unwrap();
            thread::sleep(Duration::from_millis(20));
            tx.send(42);
        });
        let got = block_on(async move {
            started_tx.send(()).unwrap();
            rx.await
        });
        sender.join().unwrap();
        assert_eq!(got, 42);
    }

    /// A minimal oneshot channel (std only) to drive the waker.
    fn futures_oneshot() -> (Sender, Receiver) {
        let shared = Arc::new(std::sync::Mutex::new((None, None::<Waker>)));
        (Sender(Arc::clone(&shared)), Receiver(shared))
    }

    type Slot = Arc<std::sync::Mutex<(Option<u32>, Option<Waker>)>>;

    struct Sender(Slot);

    impl Sender {
        fn send(self, value: u32) {
            let mut slot = self.0.lock().unwrap();
            slot.0 = Some(value);
            if let Some(waker) = slot.1.take() {
                waker.wake();
            }
        }
    }

    struct Receiver(Slot);

    impl Future for Receiver {
        type Output = u32;

        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let mut slot = self.0.lock().unwrap();
            if let Some(value) = slot.0.take() {
                Poll::Ready(value)
            } else {
                slot.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
