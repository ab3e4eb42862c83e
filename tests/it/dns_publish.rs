//! DNS self-publishing against BIND 9: each test writes a zone and a TSIG
//! key (made by BIND's own `tsig-keygen` when it is there) into a temporary
//! directory and starts `named` on 127.0.0.1 at a free port. The records
//! are read back with `client::discovery`'s resolver, and removed behind
//! the publisher's back with a plain hickory client.
//!
//! Without `named` the tests are skipped, except under `CI=true`, where
//! they fail (`.ci/run` installs `bind9`).

use crate::support::KilledOnDrop;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::tsig::TsigAlgorithm as WireAlgorithm;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType, TSigner};
use kms_activation::ScriptedRandom;
use kms_activation::client::discovery::{
    DiscoveryError, DnsSettings, SrvResolver, activate_through_async,
};
use kms_activation::client::{KmsHostName, KmsLocator, LocatorConfig, SrvRecord};
use kms_activation::host::dns_publish::{PublishError, PublisherConfig, SrvPublisher, TsigKey};

const ZONE: &str = "example.test";
const KEY_NAME: &str = "kms-update";
/// A key BIND does not hold (same name, other secret).
const WRONG_KEY: &str = "key \"kms-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"VGhpcyBpcyBub3QgdGhlIGtleSBCSU5EIGhvbGRzLi4=\";\n};\n";
/// Used when `tsig-keygen` is missing.
const FALLBACK_KEY: &str = "key \"kms-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"q0pIqu7/hVbvuVXAr3dMKo4x4WMhX5s8gK7WQW9kXkI=\";\n};\n";

fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// BIND's `named`, or `None` (the test is skipped) outside CI.
fn named_binary() -> Option<PathBuf> {
    let found = find_program("named");
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "BIND 9's named is required under CI=true (apt-get install bind9)"
        );
        eprintln!("skipped: BIND 9's named is not installed");
    }
    found
}

/// A `named` serving `example.test` (updates allowed with the key),
/// killed when dropped.
struct Named {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Named {
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("update.key")
    }

    fn wrong_key_file(&self) -> PathBuf {
        let path = self.dir.path().join("wrong.key");
        std::fs::write(&path, WRONG_KEY).unwrap();
        path
    }

    fn key(&self) -> TsigKey {
        TsigKey::from_file(self.key_file()).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    fn settings(&self) -> DnsSettings {
        DnsSettings::system()
            .with_name_servers([self.addr])
            .with_timeout(Duration::from_secs(2), 2)
    }

    /// The `_vlmcs._tcp.example.test` records, as a client sees them.
    async fn records(&self) -> Vec<Srv> {
        let resolver = SrvResolver::new(&self.settings()).unwrap();
        match resolver.lookup_srv(ZONE).await {
            Ok(records) => {
                let mut records: Vec<Srv> = records
                    .into_iter()
                    .map(|r: SrvRecord| (r.priority, r.weight, r.port, r.target))
                    .collect();
                records.sort_by(|a, b| (&a.3, a.2).cmp(&(&b.3, b.2)));
                records
            }
            Err(DiscoveryError::NoRecords { .. } | DiscoveryError::NameDoesNotExist { .. }) => {
                Vec::new()
            }
            Err(e) => panic!("lookup failed: {e}\n{}", self.log()),
        }
    }

    /// Waits (bounded) until the records satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Srv]) -> bool) -> Vec<Srv> {
        let mut records = Vec::new();
        for _ in 0..120 {
            records = self.records().await;
            if done(&records) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{what}: never happened; records {records:?}\n{}",
            self.log()
        );
    }

    /// Deletes the whole `_vlmcs._tcp` RRset, signed with the good key:
    /// an administrator's edit, not the publisher's.
    async fn delete_all_srv(&self) {
        let key = std::fs::read_to_string(self.key_file()).unwrap();
        let secret = key
            .split('"')
            .nth(3)
            .map(|s| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(s).unwrap()
            })
            .unwrap();
        let signer = TSigner::new(
            secret,
            WireAlgorithm::HmacSha256,
            Name::from_ascii(KEY_NAME).unwrap(),
            300,
        )
        .unwrap();
        let stream = UdpClientStream::builder(self.addr, TokioRuntimeProvider::default())
            .with_timeout(Some(Duration::from_secs(5)))
            .with_signer(Some(signer))
            .build();
        let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
        let background = tokio::spawn(background);
        let owner = Name::from_ascii("_vlmcs._tcp.example.test.").unwrap();
        let mut record = Record::update0(owner, 0, RecordType::SRV).into_record_of_rdata();
        record.data = RData::Update0(RecordType::SRV);
        let response = client
            .delete_rrset(record, Name::from_ascii("example.test.").unwrap())
            .await
            .unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::NoError);
        background.abort();
    }
}

fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn key_text(dir: &Path) -> String {
    if let Some(keygen) = find_program("tsig-keygen") {
        let out = Command::new(keygen)
            .args(["-a", "hmac-sha256", KEY_NAME])
            .current_dir(dir)
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
    }
    FALLBACK_KEY.to_owned()
}

/// Starts `named` on 127.0.0.1 at a free port, or returns `None` when it
/// is not installed (outside CI). Waits until it answers for the zone.
async fn start_named() -> Option<Named> {
    start_named_at(Ipv4Addr::LOCALHOST, None).await
}

/// Starts `named` on `ip` at `port` (a free one when `None`). The zone's
/// SOA names `ns.example.test`, whose address is `ip`; a second zone,
/// `elsewhere.test`, names a primary at 127.0.0.3, where nothing listens.
async fn start_named_at(ip: Ipv4Addr, port: Option<u16>) -> Option<Named> {
    let binary = named_binary()?;
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        let key = key_text(dir.path());
        std::fs::write(dir.path().join("update.key"), &key).unwrap();
        std::fs::write(
            dir.path().join("example.test.zone"),
            format!(
                "$ORIGIN example.test.\n$TTL 3600\n\
             @ IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\n\
             @ IN NS ns.example.test.\n\
             ns IN A {ip}\n\
             kms1 IN A 127.0.0.1\n\
             kms2 IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("elsewhere.test.zone"),
            "$ORIGIN elsewhere.test.\n$TTL 3600\n\
             @ IN SOA ns.elsewhere.test. admin.elsewhere.test. 1 3600 600 86400 60\n\
             @ IN NS ns.elsewhere.test.\n\
             ns IN A 127.0.0.3\n",
        )
        .unwrap();
        let port = port.unwrap_or_else(free_port);
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "options {{\n\
                 \tdirectory \"{root}\";\n\
                 \tpid-file \"{root}/named.pid\";\n\
                 \tsession-keyfile \"{root}/session.key\";\n\
                 \tlisten-on port {port} {{ {ip}; }};\n\
                 \tlisten-on-v6 {{ none; }};\n\
                 \trecursion no;\n\
                 \tnotify no;\n\
                 \tdnssec-validation no;\n\
                 }};\n\
                 controls {{ }};\n\
                 {key}\n\
                 zone \"example.test\" {{\n\
                 \ttype primary;\n\
                 \tfile \"{root}/example.test.zone\";\n\
                 \tallow-update {{ key \"{KEY_NAME}\"; }};\n\
                 }};\n\
                 zone \"elsewhere.test\" {{\n\
                 \ttype primary;\n\
                 \tfile \"{root}/elsewhere.test.zone\";\n\
                 \tallow-update {{ key \"{KEY_NAME}\"; }};\n\
                 }};\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new(&binary)
            .arg("-g")
            .arg("-c")
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut named = Named {
            child,
            addr: SocketAddr::from((ip, port)),
            dir,
        };
        let resolver = SrvResolver::new(&named.settings()).unwrap();
        let host = KmsHostName::new("kms1.example.test", 1688);
        // Up to 30 s, however long each lookup takes.
        let answered = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if named.child.try_wait().unwrap().is_some() {
                    return false;
                }
                if resolver.lookup_host(&host).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        if answered == Ok(true) {
            return Some(named);
        }
        eprintln!("named did not start; retrying:\n{}", named.log());
        let _ = named.child.kill();
    }
    panic!("named would not start");
}

/// A record's fields (`SrvRecord` is not constructible outside the crate).
type Srv = (u16, u16, u16, String);

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
    (priority, weight, port, target.to_owned())
}

fn publisher(named: &Named, target: &str, port: u16, key: Option<TsigKey>) -> SrvPublisher {
    let mut config = PublisherConfig::new(ZONE, port)
        .unwrap()
        .with_server(named.addr)
        .with_target(target)
        .unwrap()
        .with_priority_weight(10, 20)
        .with_ttl(600)
        .with_timeout(Duration::from_secs(3));
    if let Some(key) = key {
        config = config.with_tsig_key(key);
    }
    SrvPublisher::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_is_discovered_and_withdraws_only_its_own_record() {
    let Some(named) = start_named().await else {
        return;
    };
    assert_eq!(named.records().await, []);
    // A KMS host stands behind the first record.
    let kms = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kms_port = kms.local_addr().unwrap().port();

    let first = publisher(&named, "kms1.example.test", kms_port, Some(named.key()));
    first.publish().await.unwrap();
    assert_eq!(
        named.records().await,
        [srv(10, 20, kms_port, "kms1.example.test")]
    );
    let second = publisher(&named, "kms2.example.test.", 1688, Some(named.key()));
    second.publish().await.unwrap();
    assert_eq!(
        named.records().await,
        [
            srv(10, 20, kms_port, "kms1.example.test"),
            srv(10, 20, 1688, "kms2.example.test")
        ]
    );
    // Publishing again (the refresh) changes nothing.
    first.publish().await.unwrap();
    assert_eq!(named.records().await.len(), 2);
    let status = first.status();
    assert!(status.published);
    assert_eq!((status.successes, status.failures), (2, 0));

    // A client discovers the host through the published record.
    second.withdraw().await.unwrap();
    let resolver = SrvResolver::new(&named.settings()).unwrap();
    let mut locator = KmsLocator::new(LocatorConfig::discover(ZONE));
    let mut rng = ScriptedRandom::new([0u8; 4096]);
    let (host, (), failures) = activate_through_async(
        &mut locator,
        &resolver,
        &mut rng,
        |_| std::io::ErrorKind::NotFound,
        async |_: &KmsHostName, addrs: &[SocketAddr]| {
            tokio::net::TcpStream::connect(addrs[0])
                .await
                .map(|_| ())
                .map_err(|e| e.kind())
        },
    )
    .await
    .unwrap();
    assert_eq!(host, KmsHostName::new("kms1.example.test", kms_port));
    assert!(failures.is_empty(), "{failures:?}");
    let (_accepted, _) = kms.accept().await.unwrap();

    // Withdrawing removes exactly its own record.
    second.publish().await.unwrap();
    first.withdraw().await.unwrap();
    assert_eq!(
        named.records().await,
        [srv(10, 20, 1688, "kms2.example.test")]
    );
    assert!(!first.status().published);
    // A record that differs only in its port is another host's: kept.
    let other_port = publisher(&named, "kms2.example.test", 1689, Some(named.key()));
    other_port.withdraw().await.unwrap();
    assert_eq!(
        named.records().await,
        [srv(10, 20, 1688, "kms2.example.test")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_publishes_at_start_and_refreshes_what_was_removed() {
    let Some(named) = start_named().await else {
        return;
    };
    let config = PublisherConfig::new(ZONE, 1688)
        .unwrap()
        .with_server(named.addr)
        .with_target("kms1.example.test")
        .unwrap()
        .with_tsig_key(named.key())
        .with_refresh(Duration::from_secs(1));
    let publisher = Arc::new(SrvPublisher::new(config).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn({
        let publisher = Arc::clone(&publisher);
        async move {
            publisher
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        }
    });
    let expected = [srv(0, 0, 1688, "kms1.example.test")];
    named
        .wait_for("published at start", |records| records == expected)
        .await;
    // An administrator deletes the record; the next refresh puts it back.
    named.delete_all_srv().await;
    assert_eq!(named.records().await, []);
    named
        .wait_for("published again by the refresh", |records| {
            records == expected
        })
        .await;
    assert!(publisher.status().successes >= 2);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .expect("the driver stops when told")
        .unwrap();
    publisher.withdraw().await.unwrap();
    assert_eq!(named.records().await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_and_the_failure_shows() {
    let Some(named) = start_named().await else {
        return;
    };
    let wrong = TsigKey::from_file(named.wrong_key_file()).unwrap();
    let publisher = publisher(&named, "kms1.example.test", 1688, Some(wrong));
    let err = publisher.publish().await.unwrap_err();
    // BIND answers NOTAUTH (BADSIG), unsigned.
    assert!(
        matches!(&err, PublishError::Unauthenticated { key, .. } if key == "kms-update."),
        "{err:?}"
    );
    let status = publisher.status();
    assert!(!status.published);
    assert_eq!(
        (
            status.successes,
            status.failures,
            status.consecutive_failures
        ),
        (0, 1, 1)
    );
    assert_eq!(status.last_error.as_deref(), Some(err.to_string().as_str()));
    assert!(named.log().contains("kms-update"), "{}", named.log());

    // Without a key the zone refuses the update outright.
    let unsigned = publisher_without_key(&named);
    let err = unsigned.publish().await.unwrap_err();
    assert!(matches!(&err, PublishError::Refused { .. }), "{err:?}");
    assert_eq!(unsigned.status().failures, 1);
    assert_eq!(named.records().await, []);

    // The driver retries with backoff and keeps counting.
    let config = PublisherConfig::new(ZONE, 1688)
        .unwrap()
        .with_server(named.addr)
        .with_target("kms1.example.test")
        .unwrap()
        .with_tsig_key(TsigKey::from_file(named.wrong_key_file()).unwrap())
        .with_retry(Duration::from_millis(100));
    let retried = Arc::new(SrvPublisher::new(config).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn({
        let retried = Arc::clone(&retried);
        async move {
            retried
                .run(async {
                    let _ = stop_rx.await;
                })
                .await;
        }
    });
    for _ in 0..300 {
        if retried.status().failures >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = retried.status();
    assert!(status.failures >= 3, "{status:?}");
    assert_eq!(status.consecutive_failures, status.failures);
    assert!(status.last_error.is_some());
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(named.records().await, []);
}

fn publisher_without_key(named: &Named) -> SrvPublisher {
    publisher(named, "kms1.example.test", 1688, None)
}

/// kms-host publishing in `named`'s zone, with its admin endpoint on
/// `admin`.
fn kms_host(
    named: &Named,
    key: &Path,
    port: u16,
    admin: SocketAddr,
    stderr: std::fs::File,
) -> KilledOnDrop {
    KilledOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kms-host"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &admin.to_string()])
            .args([
                "--dns-publish",
                ZONE,
                "--dns-server",
                &named.addr.to_string(),
            ])
            .arg("--dns-tsig-key")
            .arg(key)
            .args(["--dns-target", "kms1.example.test", "--dns-priority", "5"])
            .args([
                "--dns-weight",
                "50",
                "--dns-ttl",
                "300",
                "--dns-refresh",
                "1h",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_host_publishes_at_start_and_withdraws_at_shutdown() {
    let Some(named) = start_named().await else {
        return;
    };
    let other = publisher(&named, "kms2.example.test", 1688, Some(named.key()));
    other.publish().await.unwrap();
    let port = free_port();
    let log = named.dir.path().join("kms-host.log");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut host = kms_host(
        &named,
        &named.key_file(),
        port,
        admin,
        std::fs::File::create(&log).unwrap(),
    );
    let mine = srv(5, 50, port, "kms1.example.test");
    let theirs = srv(10, 20, 1688, "kms2.example.test");
    named
        .wait_for("kms-host published", |records| records.contains(&mine))
        .await;
    // Readiness, status and metrics show the record published.
    let (code, ready) = poll_admin(admin, "/readyz", |code, _| code == 200).await;
    assert_eq!(code, 200, "{ready}");
    let (_, status) = poll_admin(admin, "/api/v1/status", |_, _| true).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["dns"]["healthy"], true, "{status}");
    assert_eq!(status["dns"]["successes"], 1, "{status}");
    assert_eq!(
        status["dns"]["record"],
        format!("_vlmcs._tcp.example.test. 300 IN SRV 5 50 {port} kms1.example.test.")
    );
    let (_, metrics) = poll_admin(admin, "/metrics", |_, _| true).await;
    assert!(
        metrics.contains("kms_dns_published{zone=\"example.test.\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kms_dns_publications_total{zone=\"example.test.\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kms_dns_publish_failures_total{zone=\"example.test.\"} 0"),
        "{metrics}"
    );

    let sent = Command::new("kill")
        .args(["-TERM", &host.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = host.0.wait().unwrap();
        drop(host);
        status
    })
    .await
    .unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(named.records().await, [theirs]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_host_warns_when_publishing_fails() {
    let Some(named) = start_named().await else {
        return;
    };
    let port = free_port();
    let log = named.dir.path().join("kms-host.log");
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _host = kms_host(
        &named,
        &named.wrong_key_file(),
        port,
        admin,
        std::fs::File::create(&log).unwrap(),
    );
    let mut text = String::new();
    for _ in 0..120 {
        text = std::fs::read_to_string(&log).unwrap();
        if text.contains("WARN") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        text.lines().any(|line| line.contains("WARN")
            && line.contains("DNS publish of the KMS SRV record failed")),
        "{text}"
    );
    assert_eq!(named.records().await, []);
    // The host serves, but is not ready: readiness names the failure, and
    // the metrics count it.
    let (code, ready) = poll_admin(admin, "/readyz", |_, body| body.contains("failed")).await;
    assert_eq!(code, 503, "{ready}");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let reason = ready["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("dns: _vlmcs._tcp.example.test.") && reason.contains("TSIG"),
        "{reason}"
    );
    let (_, metrics) = poll_admin(admin, "/metrics", |_, _| true).await;
    assert!(
        metrics.contains("kms_dns_published{zone=\"example.test.\"} 0"),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("kms_dns_publish_failures_total{zone=\"example.test.\"} ")
        })
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(failures >= 1, "{metrics}");
}

/// GETs `path` from the admin endpoint until `done(code, body)` holds
/// (bounded: 30 s); returns the last answer.
async fn poll_admin(
    admin: SocketAddr,
    path: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://{admin}{path}");
    let mut last = (0, String::new());
    for _ in 0..120 {
        if let Ok(response) = client.get(&url).send().await {
            let code = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            if done(code, &body) {
                return (code, body);
            }
            last = (code, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

/// Whether `named` may listen on port 53 of `ip` (root, as under CI, and
/// no other DNS server there); outside CI a test that needs it is skipped
/// without.
fn may_bind_port_53(ip: Ipv4Addr) -> bool {
    match UdpSocket::bind((ip, 53)) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "port 53 on {ip} is needed under CI=true: {e}"
            );
            eprintln!("skipped: cannot bind port 53 on {ip}: {e}");
            false
        }
    }
}

/// Without `--dns-server`, the update goes where the zone's SOA points
/// (its MNAME's address, port 53), found through the given resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_the_update_goes_to_the_primary_the_soa_names() {
    let ip = Ipv4Addr::LOCALHOST;
    if !may_bind_port_53(ip) {
        return;
    }
    let Some(named) = start_named_at(ip, Some(53)).await else {
        return;
    };
    let resolver = named.settings();
    let publisher = SrvPublisher::new(
        PublisherConfig::new(ZONE, 1688)
            .unwrap()
            .with_resolver(resolver.clone())
            .with_target("kms1.example.test")
            .unwrap()
            .with_tsig_key(named.key())
            .with_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    publisher.publish().await.unwrap();
    assert_eq!(
        named.records().await,
        [srv(0, 0, 1688, "kms1.example.test")]
    );
    publisher.withdraw().await.unwrap();
    assert_eq!(named.records().await, []);

    // elsewhere.test's SOA names a primary at 127.0.0.3, where nothing
    // listens: the update goes there, not to the resolver, and fails.
    let elsewhere = SrvPublisher::new(
        PublisherConfig::new("elsewhere.test", 1688)
            .unwrap()
            .with_resolver(resolver)
            .with_target("kms1.elsewhere.test")
            .unwrap()
            .with_tsig_key(named.key())
            .with_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let error = elsewhere.publish().await.unwrap_err();
    let primary = SocketAddr::from(([127, 0, 0, 3], 53));
    assert!(
        matches!(&error, PublishError::Network { server, .. } if *server == primary),
        "{error}"
    );
    assert_eq!(elsewhere.status().failures, 1);
}
