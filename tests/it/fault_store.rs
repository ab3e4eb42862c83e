//! A fault-injection store (a `MemoryStore` that hangs, fails or panics on
//! command) driving the transports' deadlines: a hung store yields the
//! host's refusal as a KMS reply on both transports, the connection stays
//! usable, a panicking handler leaks nothing, and no configured duration
//! overflows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use kms_activation::client::ClientConfig;
use kms_activation::host::store::{CountStore, MemoryStore, StoreError, Tally, Visit};
use kms_activation::host::{ActivationRecord, HostConfig, KmsHost, KmsHostConfig};
use kms_activation::message::Version;
use kms_activation::transport::{CloseReason, Outcome, ServerConfig, ServerLimits, bind};
use kms_activation::{FileTime, HResult, OsRandom, Uuid};
use tokio::sync::Notify;

use crate::transport_support::{Recorder, request, wall_now};

/// What every operation of a [`FaultStore`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Passes through to the memory store.
    None = 0,
    /// Waits until the fault is changed (a database that stopped answering).
    Hang = 1,
    /// Fails at once with `StoreError::Unavailable`.
    Fail = 2,
    /// Panics (a bug in a store or a handler).
    Panic = 3,
}

/// A [`MemoryStore`] whose operations hang, fail or panic on command. The
/// wait of a hung operation needs no runtime (it works under the blocking
/// transport too) and ends when [`set`](Self::set) changes the fault.
#[derive(Default)]
pub struct FaultStore {
    inner: MemoryStore,
    fault: AtomicU8,
    changed: Notify,
}

impl FaultStore {
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Applies the fault in force to one operation.
    async fn inject(&self) -> Result<(), StoreError> {
        loop {
            let changed = self.changed.notified();
            match self.fault.load(Ordering::SeqCst) {
                1 => changed.await,
                2 => return Err(StoreError::Unavailable("injected fault".into())),
                3 => panic!("injected store panic"),
                _ => return Ok(()),
            }
        }
    }
}

impl CountStore for FaultStore {
    async fn record_visit(&self, visit: Visit) -> Result<Tally, StoreError> {
        self.inject().await?;
        self.inner.record_visit(visit).await
    }

    async fn tally(
        &self,
        application_id: Uuid,
        window_start: FileTime,
    ) -> Result<Tally, StoreError> {
        self.inject().await?;
        self.inner.tally(application_id, window_start).await
    }

    async fn append_activation(
        &self,
        record: &ActivationRecord,
        retain_since: FileTime,
    ) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.append_activation(record, retain_since).await
    }

    async fn recent_activations(&self, limit: usize) -> Result<Vec<ActivationRecord>, StoreError> {
        self.inject().await?;
        self.inner.recent_activations(limit).await
    }

    async fn host_epid(&self, csvlk_id: Uuid, candidate: &str) -> Result<String, StoreError> {
        self.inject().await?;
        self.inner.host_epid(csvlk_id, candidate).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.flush().await
    }
}

/// A refusal of our own, to tell the host's configured result from the
/// default one.
const CONFIGURED_REFUSAL: HResult = HResult::new(0xC004_F074);

/// A genuine-counting host on `store`; refusing with `refusal` when the
/// store fails, if given.
fn host(store: Arc<FaultStore>, refusal: Option<HResult>) -> KmsHost<Arc<FaultStore>> {
    let mut config = KmsHostConfig::default();
    if let Some(refusal) = refusal {
        config.set_store_failure_result(refusal);
    }
    pollster::block_on(KmsHost::start(config, store, wall_now(), &mut OsRandom)).unwrap()
}

/// Short deadlines, one connection at a time (a leaked slot would lock the
/// next client out).
fn limits() -> ServerLimits {
    let mut limits = ServerLimits::default();
    limits.max_connections = 1;
    limits.handler_timeout = Duration::from_millis(700);
    limits.idle_timeout = Duration::from_secs(30);
    limits.shutdown_grace = Duration::from_secs(2);
    limits
}

/// The client's wait: generous, but below what would hide a missing reply.
const CLIENT_WAIT: Duration = Duration::from_secs(20);

fn count(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Answered(response) => response.body.count,
        other => panic!("not activated: {other:?}"),
    }
}

mod on_tokio {
    use kms_activation::transport::tokio::{Client, Server};

    use super::*;

    struct Running {
        addr: SocketAddr,
        stop: tokio::sync::oneshot::Sender<()>,
        done: tokio::task::JoinHandle<std::io::Result<()>>,
        recorder: Arc<Recorder>,
    }

    fn spawn(host: KmsHost<Arc<FaultStore>>, limits: ServerLimits) -> Running {
        let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::new(host, ServerConfig::new(HostConfig::default(), limits))
            .with_observer(Arc::clone(&recorder));
        let done = tokio::spawn(server.serve(listeners, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop,
            done,
            recorder,
        }
    }

    async fn connect(addr: SocketAddr) -> Client {
        Client::connect(addr, &ClientConfig::default(), CLIENT_WAIT)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_store_gets_the_hosts_refusal_and_the_connection_goes_on() {
        for refusal in [None, Some(CONFIGURED_REFUSAL)] {
            let store = Arc::new(FaultStore::default());
            let server = spawn(host(Arc::clone(&store), refusal), limits());
            let mut client = connect(server.addr).await;
            assert_eq!(
                count(&client.activate(request(Version::V6, 1)).await.unwrap()),
                1
            );
            store.set(Fault::Hang);
            let outcome = client.activate(request(Version::V6, 2)).await.unwrap();
            let expected = refusal.unwrap_or(HResult::BINDING_SERVICE_NOT_ENABLED);
            assert_eq!(outcome, Outcome::Refused(expected));
            // Not reset: the same connection is answered once the store is back.
            store.set(Fault::None);
            let outcome = client.activate(request(Version::V6, 3)).await.unwrap();
            assert!(count(&outcome) >= 2, "{outcome:?}");
            drop(client);
            let _ = server.stop.send(());
            server.done.await.unwrap().unwrap();
            assert!(
                !server
                    .recorder
                    .reasons()
                    .iter()
                    .any(|r| matches!(r, CloseReason::HandlerTimeout | CloseReason::Io(_))),
                "{:?}",
                server.recorder.reasons()
            );
        }
    }

    /// A handler of an embedder's own that never decides anything.
    struct Stuck;

    impl kms_activation::transport::Handler for Stuck {
        async fn process(
            &self,
            _: &mut kms_activation::host::HostConnection,
            _: &mut (dyn kms_activation::RandomSource + Send),
        ) -> Vec<ActivationRecord> {
            std::future::pending().await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_that_never_answers_gets_the_default_refusal_sent() {
        let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = Server::new(Stuck, ServerConfig::new(HostConfig::default(), limits()));
        let done = tokio::spawn(server.serve(listeners, async {
            let _ = stopped.await;
        }));
        let mut client = connect(addr).await;
        for cmid in 1..=2 {
            let outcome = client.activate(request(Version::V5, cmid)).await.unwrap();
            assert_eq!(
                outcome,
                Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED)
            );
        }
        drop(client);
        let _ = stop.send(());
        done.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_store_gets_the_refusal_at_once() {
        let store = Arc::new(FaultStore::default());
        let server = spawn(host(Arc::clone(&store), None), limits());
        let mut client = connect(server.addr).await;
        store.set(Fault::Fail);
        let outcome = client.activate(request(Version::V5, 9)).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED)
        );
        store.set(Fault::None);
        let _ = server.stop.send(());
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_leaks_no_slot_and_the_next_client_is_served() {
        let store = Arc::new(FaultStore::default());
        // One connection at most: a slot or registry entry kept by the
        // panicked connection would leave no room for the next client.
        let server = spawn(host(Arc::clone(&store), None), limits());
        for round in 0..3u128 {
            store.set(Fault::Panic);
            let mut client = connect(server.addr).await;
            let outcome = client.activate(request(Version::V6, 10 + round)).await;
            assert!(
                matches!(
                    outcome,
                    Ok(Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED))
                ),
                "{outcome:?}"
            );
            store.set(Fault::None);
            let mut next = connect(server.addr).await;
            let outcome = next
                .activate(request(Version::V6, 20 + round))
                .await
                .unwrap();
            assert!(count(&outcome) >= 1);
        }
        let _ = server.stop.send(());
        server.done.await.unwrap().unwrap();
        let panicked = server
            .recorder
            .reasons()
            .iter()
            .filter(|r| **r == CloseReason::HandlerPanicked)
            .count();
        assert_eq!(panicked, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durations_too_long_for_the_clock_mean_never() {
        let mut limits = limits();
        limits.idle_timeout = Duration::MAX;
        limits.pdu_timeout = Duration::MAX;
        limits.handler_timeout = Duration::MAX;
        let server = spawn(host(Arc::default(), None), limits);
        let mut client = connect(server.addr).await;
        for cmid in 1..=2 {
            let outcome = client.activate(request(Version::V6, cmid)).await.unwrap();
            assert_eq!(count(&outcome), u32::try_from(cmid).unwrap());
        }
        drop(client);
        // Still serving: the connection's task did not panic.
        let mut client = connect(server.addr).await;
        let outcome = client.activate(request(Version::V4, 3)).await.unwrap();
        assert_eq!(count(&outcome), 3);
        drop(client);
        let _ = server.stop.send(());
        server.done.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_that_never_flushes_does_not_hold_the_shutdown() {
        let store = Arc::new(FaultStore::default());
        let server = spawn(host(Arc::clone(&store), None), limits());
        store.set(Fault::Hang);
        let _ = server.stop.send(());
        let result = tokio::time::timeout(CLIENT_WAIT, server.done)
            .await
            .expect("serve returned")
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    }
}

mod on_threads {
    use kms_activation::transport::blocking::{Client, Server, Shutdown};

    use super::*;

    struct Running {
        addr: SocketAddr,
        shutdown: Shutdown,
        done: std::thread::JoinHandle<std::io::Result<()>>,
        recorder: Arc<Recorder>,
    }

    fn spawn(host: KmsHost<Arc<FaultStore>>, limits: ServerLimits) -> Running {
        let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let recorder = Arc::new(Recorder::default());
        let shutdown = Shutdown::new();
        let server = Server::new(host, ServerConfig::new(HostConfig::default(), limits))
            .with_observer(Arc::clone(&recorder));
        let signal = shutdown.clone();
        let done = std::thread::spawn(move || server.serve(listeners, &signal));
        Running {
            addr,
            shutdown,
            done,
            recorder,
        }
    }

    fn connect(addr: SocketAddr) -> Client {
        Client::connect(addr, &ClientConfig::default(), CLIENT_WAIT).unwrap()
    }

    #[test]
    fn a_hung_store_gets_the_hosts_refusal_and_the_connection_goes_on() {
        for refusal in [None, Some(CONFIGURED_REFUSAL)] {
            let store = Arc::new(FaultStore::default());
            let server = spawn(host(Arc::clone(&store), refusal), limits());
            let mut client = connect(server.addr);
            assert_eq!(count(&client.activate(request(Version::V6, 1)).unwrap()), 1);
            store.set(Fault::Hang);
            let outcome = client.activate(request(Version::V6, 2)).unwrap();
            let expected = refusal.unwrap_or(HResult::BINDING_SERVICE_NOT_ENABLED);
            assert_eq!(outcome, Outcome::Refused(expected));
            store.set(Fault::None);
            let outcome = client.activate(request(Version::V6, 3)).unwrap();
            assert!(count(&outcome) >= 2, "{outcome:?}");
            drop(client);
            server.shutdown.trigger();
            server.done.join().unwrap().unwrap();
            assert!(
                !server
                    .recorder
                    .reasons()
                    .iter()
                    .any(|r| matches!(r, CloseReason::HandlerTimeout | CloseReason::Io(_))),
                "{:?}",
                server.recorder.reasons()
            );
        }
    }

    #[test]
    fn a_panicking_handler_leaks_no_slot_and_the_next_client_is_served() {
        let store = Arc::new(FaultStore::default());
        let server = spawn(host(Arc::clone(&store), None), limits());
        for round in 0..3u128 {
            store.set(Fault::Panic);
            let mut client = connect(server.addr);
            let outcome = client.activate(request(Version::V6, 10 + round));
            assert!(
                matches!(
                    outcome,
                    Ok(Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED))
                ),
                "{outcome:?}"
            );
            store.set(Fault::None);
            let mut next = connect(server.addr);
            let outcome = next.activate(request(Version::V6, 20 + round)).unwrap();
            assert!(count(&outcome) >= 1);
        }
        server.shutdown.trigger();
        server.done.join().unwrap().unwrap();
        let panicked = server
            .recorder
            .reasons()
            .iter()
            .filter(|r| **r == CloseReason::HandlerPanicked)
            .count();
        assert_eq!(panicked, 3);
    }

    #[test]
    fn durations_too_long_for_the_clock_mean_never() {
        let mut limits = limits();
        limits.idle_timeout = Duration::MAX;
        limits.pdu_timeout = Duration::MAX;
        limits.handler_timeout = Duration::MAX;
        limits.shutdown_grace = Duration::MAX;
        let server = spawn(host(Arc::default(), None), limits);
        let mut client = connect(server.addr);
        for cmid in 1..=2 {
            let outcome = client.activate(request(Version::V6, cmid)).unwrap();
            assert_eq!(count(&outcome), u32::try_from(cmid).unwrap());
        }
        drop(client);
        let mut client = connect(server.addr);
        assert_eq!(count(&client.activate(request(Version::V4, 3)).unwrap()), 3);
        drop(client);
        server.shutdown.trigger();
        server.done.join().unwrap().unwrap();
    }
}
