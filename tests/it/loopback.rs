//! KMS hosts on loopback TCP for tests that need real sockets: a `KmsHost`
//! with genuine counting driven by a small `std::net` listener thread, a host
//! that closes after each answer (as py-kms does), and one that accepts and
//! never answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use kms_activation::host::store::MemoryStore;
use kms_activation::host::{HostConfig, HostConnection, KmsHost, KmsHostConfig};
use kms_activation::{FileTime, OsRandom};

/// How a loopback host treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves any number of requests per connection.
    KeepOpen,
    /// Closes the connection after each answer.
    CloseAfterAnswer,
    /// Accepts and never answers.
    Silent,
}

#[allow(
    clippy::disallowed_methods,
    reason = "a loopback host on real sockets reads the wall clock"
)]
fn now() -> FileTime {
    FileTime::try_from(chrono::Utc::now()).unwrap()
}

/// Starts a host on 127.0.0.1 (a free port) and returns its address. The
/// listener thread lives until the test process ends.
pub fn spawn_host(config: KmsHostConfig, behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let host = Arc::new(
        pollster::block_on(KmsHost::start(
            config,
            MemoryStore::default(),
            now(),
            &mut OsRandom,
        ))
        .unwrap(),
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let host = Arc::clone(&host);
            std::thread::spawn(move || serve(&host, stream, behaviour));
        }
    });
    addr
}

fn serve(host: &KmsHost<MemoryStore>, mut stream: TcpStream, behaviour: Behaviour) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = HostConnection::new(&HostConfig::default());
    let mut rng = OsRandom;
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 || behaviour == Behaviour::Silent {
            if n == 0 {
                return;
            }
            continue;
        }
        let mut offered = &buf[..n];
        while !offered.is_empty() {
            let Ok(used) = conn.handle_input(now(), offered, &mut rng) else {
                return;
            };
            let answered = !host.process_blocking(&mut conn, &mut rng).is_empty();
            let out = conn.transmit().to_vec();
            conn.advance_transmit(out.len());
            if stream.write_all(&out).is_err() {
                return;
            }
            if answered && behaviour == Behaviour::CloseAfterAnswer {
                return;
            }
            offered = &offered[used..];
            if used == 0 && out.is_empty() {
                break;
            }
        }
    }
}

/// The `kms-client` example binary `cargo test` built beside this test.
/// Runs the `kms-client` tool with `args`; fails the test after 60 s.
pub fn kms_client(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kms-client"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    panic!("kms-client {args:?} hung");
}

/// Runs the `kms-catalog` tool with `args`.
pub fn kms_catalog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kms-catalog"))
        .args(args)
        .output()
        .unwrap()
}
