//! The tokio transport over loopback: every protocol version, many clients,
//! limits, bad peers, eviction, graceful shutdown, IPv6.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kms_activation::client::ClientConfig;
use kms_activation::host::store::{MemoryStore, StoreError};
use kms_activation::host::{ActivationRecord, HostConfig, HostConnection, KmsHost};
use kms_activation::message::Version;
use kms_activation::transport::tokio::{Client, Server};
use kms_activation::transport::{
    CloseReason, Error, Handler, Outcome, ServerConfig, ServerLimits, bind,
};
use kms_activation::{HResult, RandomSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::transport_support::{
    Recorder, WINDOWS, half_a_bind, instant, kms_host, oversized_header, quick_limits, request,
};

const DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: JoinHandle<std::io::Result<()>>,
    recorder: Arc<Recorder>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn spawn<H: Handler>(handler: H, limits: ServerLimits, at: &str) -> Running {
    let listeners = bind(&[at.parse().unwrap()]).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let recorder = Arc::new(Recorder::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::new(handler, ServerConfig::new(HostConfig::default(), limits))
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

async fn connect(addr: SocketAddr, ndr64: bool) -> Client {
    let mut config = ClientConfig::default();
    config.set_ndr64(ndr64);
    Client::connect(addr, &config, DEADLINE).await.unwrap()
}

fn count(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Answered(response) => response.body.count,
        other => panic!("not activated: {other:?}"),
    }
}

/// Waits until the peer closes `stream` (EOF or reset); returns how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = instant();
    let mut buf = [0u8; 256];
    loop {
        let Ok(read) = tokio::time::timeout(limit, stream.read(&mut buf)).await else {
            panic!("still open after {limit:?}");
        };
        if !matches!(read, Ok(n) if n > 0) {
            return start.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_version_and_transfer_syntax_with_several_requests_per_connection() {
    let server = spawn(kms_host().await, ServerLimits::default(), "127.0.0.1:0");
    let mut cmid = 0x1000;
    for version in [Version::V4, Version::V5, Version::V6] {
        for ndr64 in [false, true] {
            let mut client = connect(server.addr, ndr64).await;
            for _ in 0..3 {
                cmid += 1;
                let outcome = client.activate(request(version, cmid)).await.unwrap();
                let Outcome::Answered(response) = outcome else {
                    panic!("{version} ndr64={ndr64}: {outcome:?}");
                };
                assert_eq!(response.body.version, version);
                assert_eq!(response.body.count, u32::try_from(cmid - 0x1000).unwrap());
            }
        }
    }
    assert_eq!(server.recorder.records.lock().unwrap().len(), 18);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_are_each_verified_and_counted_once() {
    let host = Arc::new(kms_host().await);
    let server = spawn(Arc::clone(&host), ServerLimits::default(), "127.0.0.1:0");
    let mut clients = tokio::task::JoinSet::new();
    for cmid in 0..1000u128 {
        let addr = server.addr;
        clients.spawn(async move {
            let mut client = connect(addr, true).await;
            client
                .activate(request(Version::V6, 0x10_0000 + cmid))
                .await
        });
    }
    let mut activated = 0;
    while let Some(result) = clients.join_next().await {
        assert!(matches!(result.unwrap(), Ok(Outcome::Answered(_))));
        activated += 1;
    }
    assert_eq!(activated, 1000);
    let statistics = host
        .statistics(crate::transport_support::wall_now())
        .await
        .unwrap();
    assert_eq!(statistics.total_requests, 1000);
    assert_eq!(statistics.failed_requests, 0);
    let windows = statistics
        .counts
        .iter()
        .find(|c| c.application_id == WINDOWS)
        .unwrap();
    assert_eq!(windows.clients, 1000, "every CMID counted exactly once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_at_its_timeout() {
    let mut limits = quick_limits();
    limits.idle_timeout = Duration::from_millis(300);
    let server = spawn(kms_host().await, limits, "127.0.0.1:0");
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let peer = idle.local_addr().unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        server.recorder.reason_for(peer),
        Some(CloseReason::IdleTimeout)
    );
    // A client that binds and then waits too long is closed the same way.
    let mut client = connect(server.addr, true).await;
    client.activate(request(Version::V6, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(client.activate(request(Version::V6, 1)).await.is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dripping_bytes_is_closed_at_the_pdu_deadline() {
    let server = spawn(kms_host().await, quick_limits(), "127.0.0.1:0");
    let mut drip = TcpStream::connect(server.addr).await.unwrap();
    let peer = drip.local_addr().unwrap();
    let start = instant();
    // One byte every 100 ms restarts no timer: the PDU deadline (400 ms)
    // counts from the first byte, well before the idle timeout (1.5 s).
    for byte in half_a_bind() {
        if drip.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    closed_within(&mut drip, Duration::from_secs(3)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1400), "closed after {took:?}");
    assert_eq!(
        server.recorder.reason_for(peer),
        Some(CloseReason::PduTimeout)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_do_not_hurt_good_clients() {
    let server = spawn(kms_host().await, quick_limits(), "127.0.0.1:0");
    let addr = server.addr;
    let mut bad = Vec::new();
    for bytes in [
        b"GET / HTTP/1.1\r\nHost: kms\r\n\r\n".to_vec(),
        oversized_header(),
        half_a_bind(),
        vec![0xff; 3000],
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        bad.push(stream);
    }
    let mut good = tokio::task::JoinSet::new();
    for cmid in 0..50u128 {
        good.spawn(async move {
            let mut client = connect(addr, cmid % 2 == 0).await;
            let first = client.activate(request(Version::V6, 0x2000 + cmid)).await;
            let second = client.activate(request(Version::V5, 0x2000 + cmid)).await;
            (first, second)
        });
    }
    while let Some(result) = good.join_next().await {
        let (first, second) = result.unwrap();
        assert!(matches!(first, Ok(Outcome::Answered(_))), "{first:?}");
        assert!(matches!(second, Ok(Outcome::Answered(_))), "{second:?}");
    }
    for mut stream in bad {
        closed_within(&mut stream, Duration::from_secs(3)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reasons = server.recorder.reasons();
    let protocol = reasons
        .iter()
        .filter(|r| matches!(r, CloseReason::Protocol(_)))
        .count();
    assert_eq!(protocol, 3, "{reasons:?}");
    assert!(reasons.contains(&CloseReason::PduTimeout), "{reasons:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_idle_connection_makes_room() {
    let mut limits = quick_limits();
    limits.max_connections = 3;
    limits.idle_timeout = Duration::from_secs(5);
    let server = spawn(kms_host().await, limits, "127.0.0.1:0");
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Connections idle for less than a second are not taken for idle ones.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut client = connect(server.addr, true).await;
    assert_eq!(
        count(client.activate(request(Version::V6, 7)).await.unwrap()),
        1
    );
    // The first (oldest idle) connection was closed; the others stay.
    closed_within(&mut idle[0], Duration::from_secs(2)).await;
    let mut buf = [0u8; 16];
    for stream in &mut idle[1..] {
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        assert!(read.is_err(), "a newer idle connection was closed");
    }
    let oldest = idle[0].local_addr().unwrap();
    assert_eq!(
        server.recorder.reason_for(oldest),
        Some(CloseReason::Evicted)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_nothing_idle_a_newcomer_waits_for_a_slot() {
    let mut limits = quick_limits();
    limits.max_connections = 1;
    let server = spawn(kms_host().await, limits, "127.0.0.1:0");
    // The only slot is held by a peer stuck mid-PDU: not idle, so not
    // evicted, but gone at its PDU deadline (400 ms), within the 1 s wait.
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(&half_a_bind()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = instant();
    let mut client = connect(server.addr, true).await;
    assert_eq!(
        count(client.activate(request(Version::V6, 9)).await.unwrap()),
        1
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closes_after_its_request_limit() {
    let mut limits = quick_limits();
    limits.max_requests_per_connection = 2;
    let server = spawn(kms_host().await, limits, "127.0.0.1:0");
    let mut client = connect(server.addr, true).await;
    for cmid in 1..=2 {
        client.activate(request(Version::V6, cmid)).await.unwrap();
    }
    let third = client.activate(request(Version::V6, 3)).await;
    assert!(
        matches!(third, Err(Error::Closed | Error::Io(_))),
        "{third:?}"
    );
    server.stop().await;
}

/// A handler that takes its time, to catch exchanges in flight.
struct Slow {
    host: KmsHost<MemoryStore>,
    delay: Duration,
    flushed: AtomicBool,
}

impl Handler for Slow {
    async fn process(
        &self,
        conn: &mut HostConnection,
        rng: &mut (dyn RandomSource + Send),
    ) -> Vec<ActivationRecord> {
        tokio::time::sleep(self.delay).await;
        self.host.process(conn, rng).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.flushed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_exchanges_in_flight_and_flushes() {
    let slow = Arc::new(Slow {
        host: kms_host().await,
        delay: Duration::from_millis(500),
        flushed: AtomicBool::new(false),
    });
    let server = spawn(Arc::clone(&slow), quick_limits(), "127.0.0.1:0");
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let mut client = connect(addr, true).await;
        client.activate(request(Version::V6, 5)).await
    });
    // Bind (500 ms in the handler) and request (500 ms) are under way.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let start = instant();
    let Running {
        stop,
        done,
        recorder,
        ..
    } = server;
    stop.send(()).unwrap();
    // The idle connection goes at once; the busy one finishes its exchange.
    closed_within(&mut idle, Duration::from_millis(300)).await;
    let outcome = in_flight.await.unwrap().unwrap();
    assert_eq!(count(outcome), 1);
    tokio::time::timeout(DEADLINE, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(slow.flushed.load(Ordering::SeqCst));
    assert!(recorder.reasons().contains(&CloseReason::Shutdown));
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_ipv6_loopback() {
    let Ok(listeners) = bind(&["[::1]:0".parse().unwrap()]) else {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    };
    drop(listeners);
    let server = spawn(kms_host().await, ServerLimits::default(), "[::1]:0");
    assert!(server.addr.is_ipv6());
    let mut client = connect(server.addr, true).await;
    assert_eq!(
        count(client.activate(request(Version::V6, 1)).await.unwrap()),
        1
    );
    let records = server.recorder.records.lock().unwrap().clone();
    assert!(records[0].peer.unwrap().is_ipv6());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_as_outcomes() {
    let server = spawn(kms_host().await, ServerLimits::default(), "127.0.0.1:0");
    let mut client = connect(server.addr, true).await;
    let mut unknown = request(Version::V6, 1);
    unknown.kms_id = kms_activation::Uuid::from_u128(42);
    assert_eq!(
        client.activate(unknown).await.unwrap(),
        Outcome::Refused(HResult::KMS_ID_MISMATCH)
    );
    server.stop().await;
}
