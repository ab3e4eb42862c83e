//! `kms-host` on PostgreSQL through a TCP proxy that the test pauses (stops
//! forwarding, as a hung database or network would): every client gets
//! the refusal 0xC004F039 as a KMS reply before its own timeout, nothing
//! committed is lost once the proxy resumes, and a stop signal during the
//! pause still stops the host.
//!
//! Needs `KMS_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`); skipped without it, except
//! in CI (`CI=true`), where a missing database is a failure. The test works
//! in a database of its own, created and dropped here.

use crate::support::{KilledOnDrop, free_tcp_port, kms_host_until_ready};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use kms_activation::HResult;
use kms_activation::client::ClientConfig;
use kms_activation::message::Version;
use kms_activation::transport::Outcome;
use kms_activation::transport::tokio::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::transport_support::request;

/// The database this test creates for itself.
const DATABASE: &str = "kms_test_faults_pause";

/// A client's wait: below the ~10 s of a Windows or vlmcs client, above the
/// host's handler timeout (5 s).
const CLIENT_WAIT: Duration = Duration::from_secs(9);

/// The server URL, or `None` when the test is to be skipped.
fn database_url() -> Option<String> {
    match std::env::var("KMS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "KMS_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("postgres_pause: skipped, KMS_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A TCP proxy to `upstream` that forwards while not paused. Paused, it
/// keeps reading nothing more than one buffer per direction and writes
/// nothing: the database seems hung to the host.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    paused: watch::Sender<bool>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (from_host, to_host) = inbound.into_split();
                    let (from_db, to_db) = outbound.into_split();
                    tokio::spawn(pump(from_host, to_db, watching.clone()));
                    pump(from_db, to_host, watching).await;
                });
            }
        });
        Self { addr, paused }
    }

    pub(crate) fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub(crate) fn resume(&self) {
        self.paused.send_replace(false);
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut paused: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The database server's address and settings, and an admin connection,
/// with [`DATABASE`] created afresh.
async fn fresh_database(url: &str) -> (SocketAddr, tokio_postgres::Config, tokio_postgres::Client) {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let admin = admin(url).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .unwrap();
    (upstream, config, admin)
}

/// Sends `signal` (`-TERM`, `-HUP`) to `child`.
fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn activate(
    addr: SocketAddr,
    cmid: u128,
) -> Result<Outcome, kms_activation::transport::Error> {
    let mut client = Client::connect(addr, &ClientConfig::default(), CLIENT_WAIT).await?;
    client.activate(request(Version::V6, cmid)).await
}

fn count(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Answered(response) => response.body.count,
        other => panic!("not activated: {other:?}"),
    }
}

/// Activates `cmid`, retrying for a while: the host is starting, or its
/// store is reconnecting after the pause.
async fn activate_eventually(addr: SocketAddr, cmid: u128) -> u32 {
    let mut last = None;
    for _ in 0..40 {
        match activate(addr, cmid).await {
            Ok(outcome @ Outcome::Answered(_)) => return count(&outcome),
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("client {cmid} never activated: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_database_gets_every_client_the_refusal_and_loses_nothing() {
    let Some(url) = database_url() else {
        return;
    };
    let (upstream, config, admin) = fresh_database(&url).await;
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let proxy = Proxy::start(upstream).await;
    let store = match config.get_password() {
        Some(password) => format!(
            "postgres://{user}:{}@{}/{DATABASE}",
            String::from_utf8_lossy(password),
            proxy.addr
        ),
        None => format!("postgres://{user}@{}/{DATABASE}", proxy.addr),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let (host, ready) = kms_host_until_ready([
        "--listen",
        &addr.to_string(),
        "--store",
        &store,
        "--grace",
        "2",
    ]);
    let mut host = KilledOnDrop(host);
    ready.expect("kms-host never got ready");

    // Three clients counted while the database answers.
    for cmid in 1..=3 {
        assert_eq!(
            activate_eventually(addr, cmid).await,
            u32::try_from(cmid).unwrap()
        );
    }

    // The database stops answering: every client, new connection or not,
    // gets the refusal as a KMS reply within its own wait.
    proxy.pause();
    let paused: Vec<_> = (4..=8u128)
        .map(|cmid| tokio::spawn(activate(addr, cmid)))
        .collect();
    for (cmid, client) in (4..=8).zip(paused) {
        let outcome = client.await.unwrap();
        assert!(
            matches!(
                outcome,
                Ok(Outcome::Refused(HResult::BINDING_SERVICE_NOT_ENABLED))
            ),
            "client {cmid}: {outcome:?}"
        );
    }

    // Back: the three counted before are still counted. (The refused
    // clients' writes may land late, once their bytes are forwarded.)
    proxy.resume();
    let again = activate_eventually(addr, 1).await;
    assert!((3..=8).contains(&again), "count {again}");
    let next = activate_eventually(addr, 9).await;
    assert!((4..=9).contains(&next), "count {next}");

    // A stop signal while the database hangs, and while the host prints
    // its statistics (SIGHUP), still stops the host, well within a service
    // manager's stop timeout (15 s in the README's unit).
    proxy.pause();
    let pending = tokio::spawn(activate(addr, 10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&host.0, "-HUP");
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&host.0, "-TERM");
    let mut exited = None;
    for _ in 0..150 {
        exited = host.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exited.is_some(),
        "kms-host still running 15 s after SIGTERM"
    );
    let _ = pending.await;
    proxy.resume();
    drop(host);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .unwrap();
}
