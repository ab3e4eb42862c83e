//! No lock-out by file descriptors: `kms-host` under a lowered `ulimit -n`,
//! with more idle connections held open than it has descriptors, still
//! activates a good client.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kms_activation::client::ClientConfig;
use kms_activation::message::Version;
use kms_activation::transport::Outcome;
use kms_activation::transport::tokio::Client;

use crate::transport_support::request;

/// The descriptor limit the host runs under (soft and hard: it cannot
/// raise it).
const LIMIT: usize = 64;

/// Kills the host when the test ends, however it ends.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `kms-host` on `addr` under `ulimit -n LIMIT` and waits until it
/// accepts.
fn start_host(addr: SocketAddr) -> Host {
    let script = format!(
        "ulimit -n {LIMIT} || exit 97; exec \"$0\" --listen {addr} --idle-timeout 600 --max-connections 10000"
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_kms-host"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut host = Host(child);
    for _ in 0..200 {
        if let Some(status) = host.0.try_wait().unwrap() {
            panic!("kms-host exited: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return host;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("kms-host did not start");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_descriptors_do_not_lock_a_good_client_out() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut host = start_host(addr);
    // Twice as many idle connections as the host may open files, each
    // accepted by the kernel; they never send a byte.
    let idle: Vec<TcpStream> = (0..2 * LIMIT)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Let the host take in what it can, and the idle ones become evictable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut client = Client::connect(addr, &ClientConfig::default(), Duration::from_secs(30))
        .await
        .unwrap();
    let outcome = client.activate(request(Version::V6, 1)).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Answered(response) if response.body.count == 1),
        "{outcome:?}"
    );
    // A second one, on a fresh connection, too.
    let mut second = Client::connect(addr, &ClientConfig::default(), Duration::from_secs(30))
        .await
        .unwrap();
    let outcome = second.activate(request(Version::V5, 2)).await.unwrap();
    assert!(matches!(outcome, Outcome::Answered(_)), "{outcome:?}");
    assert!(host.0.try_wait().unwrap().is_none(), "kms-host died");
    drop(idle);
}
