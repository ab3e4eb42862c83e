//! The blocking transport over loopback: every protocol version, several
//! requests per connection, a bounded pool, timeouts, bad peers, shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kms_activation::client::ClientConfig;
use kms_activation::host::HostConfig;
use kms_activation::message::Version;
use kms_activation::transport::blocking::{Client, Server, Shutdown};
use kms_activation::transport::{CloseReason, Outcome, ServerConfig, ServerLimits, bind};

use crate::transport_support::{Recorder, half_a_bind, instant, kms_host, quick_limits, request};

const DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    shutdown: Shutdown,
    done: JoinHandle<std::io::Result<()>>,
    recorder: Arc<Recorder>,
}

impl Running {
    fn stop(self) {
        self.shutdown.trigger();
        self.done.join().unwrap().unwrap();
    }
}

fn spawn(limits: ServerLimits) -> Running {
    let host = pollster::block_on(kms_host());
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

fn connect(addr: SocketAddr, ndr64: bool) -> Client {
    let mut config = ClientConfig::default();
    config.set_ndr64(ndr64);
    Client::connect(addr, &config, DEADLINE).unwrap()
}

fn closed_within(stream: &mut TcpStream, limit: Duration) {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("still open after {limit:?}: {e}"),
        }
    }
}

#[test]
fn every_version_and_transfer_syntax_with_several_requests_per_connection() {
    let mut limits = ServerLimits::threaded();
    limits.max_connections = 4;
    let server = spawn(limits);
    let mut cmid = 0;
    for version in [Version::V4, Version::V5, Version::V6] {
        for ndr64 in [false, true] {
            let mut client = connect(server.addr, ndr64);
            for _ in 0..3 {
                cmid += 1;
                match client.activate(request(version, cmid)).unwrap() {
                    Outcome::Answered(r) => {
                        assert_eq!(r.body.version, version);
                        assert_eq!(u128::from(r.body.count), cmid);
                    }
                    other => panic!("{version} ndr64={ndr64}: {other:?}"),
                }
            }
        }
    }
    server.stop();
}

#[test]
fn the_pool_serves_more_clients_than_threads() {
    let mut limits = ServerLimits::threaded();
    limits.max_connections = 4;
    let server = spawn(limits);
    let addr = server.addr;
    let clients: Vec<_> = (0..16u128)
        .map(|cmid| {
            std::thread::spawn(move || {
                let mut client = connect(addr, true);
                client.activate(request(Version::V6, 0x100 + cmid)).unwrap()
            })
        })
        .collect();
    for client in clients {
        assert!(matches!(client.join().unwrap(), Outcome::Answered(_)));
    }
    server.stop();
}

#[test]
fn idle_and_stuck_peers_are_closed_while_good_clients_are_served() {
    let mut limits = quick_limits();
    limits.max_connections = 8;
    limits.idle_timeout = Duration::from_millis(500);
    let server = spawn(limits);
    let mut idle = TcpStream::connect(server.addr).unwrap();
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    stuck.write_all(&half_a_bind()).unwrap();
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    for cmid in 0..5 {
        let mut client = connect(server.addr, false);
        assert!(matches!(
            client.activate(request(Version::V6, 0x200 + cmid)).unwrap(),
            Outcome::Answered(_)
        ));
    }
    let start = instant();
    closed_within(&mut garbage, Duration::from_secs(2));
    closed_within(&mut stuck, Duration::from_secs(2));
    closed_within(&mut idle, Duration::from_secs(2));
    assert!(start.elapsed() < Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(50));
    let reasons = server.recorder.reasons();
    assert!(reasons.contains(&CloseReason::IdleTimeout), "{reasons:?}");
    assert!(reasons.contains(&CloseReason::PduTimeout), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, CloseReason::Protocol(_))),
        "{reasons:?}"
    );
    server.stop();
}

#[test]
fn shutdown_closes_idle_connections_and_returns() {
    let server = spawn(quick_limits());
    let mut client = connect(server.addr, true);
    client.activate(request(Version::V6, 1)).unwrap();
    let mut idle = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (addr, recorder) = (server.addr, Arc::clone(&server.recorder));
    let start = instant();
    server.stop();
    assert!(start.elapsed() < Duration::from_secs(2));
    closed_within(&mut idle, Duration::from_secs(1));
    assert!(recorder.reasons().contains(&CloseReason::Shutdown));
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
}
