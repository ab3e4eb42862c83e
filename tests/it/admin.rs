//! The admin endpoint against a running host, with a real HTTP client:
//! every route on every store, filters and paging, CSV parsed back, the
//! token, readiness with a failing store, scrapes while clients activate,
//! and the dashboard in headless Chromium.
//!
//! "Non-loopback" binds: tests only listen on loopback, so the refusal of a
//! non-loopback address without a token is tested through
//! `admin::check_bind` and `kms-host --admin 0.0.0.0:0` (which exits before
//! binding), and the token itself on a loopback bind configured with one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kms_activation::admin::{self, AdminState, AdminToken, Outcomes};
use kms_activation::client::ClientConfig;
use kms_activation::host::store::{CountStore, MemoryStore};
use kms_activation::host::{HostConfig, KmsHost, KmsHostConfig};
use kms_activation::message::Version;
use kms_activation::metrics::HostMetrics;
use kms_activation::transport::tokio::{Client, Server};
use kms_activation::transport::{Outcome, ServerConfig, ServerLimits, bind};
use kms_activation::{OsRandom, Uuid};
use serde_json::Value;
use tokio::sync::watch;

use crate::fault_store::{Fault, FaultStore};
use crate::transport_support::{WIN10_ENT, request, wall_now};

/// A host serving KMS and the admin endpoint on loopback.
struct Running<S> {
    host: Arc<KmsHost<S>>,
    kms: SocketAddr,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
}

impl<S> Running<S> {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn running<S: CountStore + 'static>(
    store: S,
    token: Option<&str>,
    store_name: &str,
) -> Running<S> {
    let host = Arc::new(
        KmsHost::start(KmsHostConfig::default(), store, wall_now(), &mut OsRandom)
            .await
            .unwrap(),
    );
    let metrics = Arc::new(HostMetrics::new());
    let outcomes = Arc::new(Outcomes::default());
    let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let kms = listeners[0].local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut limits = ServerLimits::default();
    limits.max_connections = 256;
    let server = Server::new(
        Arc::clone(&host),
        ServerConfig::new(HostConfig::default(), limits),
    )
    .with_observer(Arc::new((Arc::clone(&metrics), Arc::clone(&outcomes))));
    tokio::spawn(server.serve(listeners, wait(stopped.clone())));

    let mut state = AdminState::new(Arc::clone(&host), store_name)
        .with_metrics(metrics)
        .with_outcomes(outcomes)
        .with_host_name("test-host")
        .with_store_deadline(Duration::from_millis(500));
    if let Some(token) = token {
        state = state.with_token(AdminToken::new(token).unwrap());
    }
    state.set_listening(vec![kms]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(listener, Arc::new(state), wait(stopped)));
    Running {
        host,
        kms,
        admin,
        stop,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get_text(url: &str) -> (u16, String, String) {
    let response = http().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

fn cmid(n: u128) -> Uuid {
    Uuid::from_u128(0x00ad_0000_0000_4000_8000_0000_0000_0000 | n)
}

/// One client activating `cmid` on its own connection; true when the host
/// answered.
async fn activate(kms: SocketAddr, id: Uuid, kms_id: Option<Uuid>) -> bool {
    let mut client = Client::connect(kms, &ClientConfig::default(), Duration::from_secs(10))
        .await
        .unwrap();
    let mut body = request(Version::V6, 0);
    body.cmid = id;
    body.workstation = format!("ws-{}.example", id.as_u128() & 0xffff);
    if let Some(kms_id) = kms_id {
        body.kms_id = kms_id;
    }
    matches!(client.activate(body).await.unwrap(), Outcome::Answered(_))
}

fn cmids(items: &Value) -> Vec<String> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["cmid"].as_str().unwrap().to_owned())
        .collect()
}

/// Every route on a host whose clients are 1, 2, 3, 1 again, then 5 with a
/// KMS ID no CSVLK covers (refused with 0xC004F042).
#[allow(clippy::too_many_lines, reason = "one route after another")]
async fn every_route<S: CountStore + 'static>(store: S, store_name: &str, kind: &str) {
    let host = running(store, None, store_name).await;
    for n in [1, 2, 3, 1] {
        assert!(activate(host.kms, cmid(n), None).await);
    }
    assert!(!activate(host.kms, cmid(5), Some(Uuid::from_u128(42))).await);
    host.host.store().flush().await.unwrap();

    let (status, body) = get_json(&host.url("/livez")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("live")));
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );

    let (status, content_type, metrics) = get_text(&host.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(
        metrics.contains("kms_current_count{application=\"Windows\"} 3"),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"));

    // The status: 3 distinct Windows clients, who need 25 (their N policy).
    let (status, body) = get_json(&host.url("/api/v1/status")).await;
    assert_eq!(status, 200, "{body}");
    let windows = &body["applications"][0];
    assert_eq!(windows["name"], "Windows");
    assert_eq!(windows["current_count"], 3);
    assert_eq!(windows["threshold"], 25);
    assert_eq!(body["listening"][0], host.kms.to_string());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["store"]["kind"], kind);
    assert!(
        !body["store"]["location"]
            .as_str()
            .unwrap()
            .contains("s3cret")
    );
    assert_eq!(body["activation_interval_minutes"], 120);
    assert_eq!(body["renewal_interval_minutes"], 10_080);
    assert!(!body["epids"].as_array().unwrap().is_empty());
    assert_eq!(body["requests"]["total"], 5);
    assert_eq!(body["requests"]["by_outcome"]["below_threshold"], 4);
    assert_eq!(body["requests"]["by_outcome"]["activated"], 0);
    assert_eq!(body["requests"]["by_outcome"]["refused"]["0xC004F042"], 1);
    assert_eq!(body["requests"]["by_license_status"]["initial_grace"], 5);

    // Clients, heard from last first: 5 (refused), 1 (twice), 3, 2.
    let order: Vec<String> = [5, 1, 3, 2].iter().map(|&n| cmid(n).to_string()).collect();
    let (status, body) = get_json(&host.url("/api/v1/clients")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cmids(&body), order);
    let one = &body["items"][1];
    assert_eq!(one["requests"], 2);
    assert_eq!(one["address"], "127.0.0.1");
    assert_eq!(one["product"]["sku_id"], WIN10_ENT.to_string());
    assert_eq!(one["application"]["name"], "Windows");
    assert_eq!(one["license_status"]["code"], 2);
    assert_eq!(one["remaining_minutes"], 43_200);
    assert_eq!(one["last_outcome"], "below threshold");
    assert_eq!(body["items"][0]["last_outcome"], "refused 0xC004F042");
    assert!(body["next"].is_null());
    // Filters.
    let (_, body) = get_json(&host.url("/api/v1/clients?address=127.0.0.0/8")).await;
    assert_eq!(cmids(&body).len(), 4);
    let (_, body) = get_json(&host.url("/api/v1/clients?address=10.0.0.0/8")).await;
    assert!(cmids(&body).is_empty());
    let (_, body) = get_json(&host.url(&format!("/api/v1/clients?product={WIN10_ENT}"))).await;
    assert_eq!(cmids(&body), order);
    let (_, body) = get_json(&host.url(&format!(
        "/api/v1/clients?application={}",
        Uuid::from_u128(7)
    )))
    .await;
    assert!(cmids(&body).is_empty());
    let (_, body) = get_json(&host.url("/api/v1/clients?since=2999-01-01T00:00:00Z")).await;
    assert!(cmids(&body).is_empty());
    let (_, body) = get_json(&host.url("/api/v1/clients?since=2000-01-01T00:00:00Z")).await;
    assert_eq!(cmids(&body).len(), 4);
    // Paging.
    let (_, first) = get_json(&host.url("/api/v1/clients?limit=2")).await;
    assert_eq!(cmids(&first), order[..2]);
    let cursor = first["next"].as_u64().unwrap();
    let (_, second) =
        get_json(&host.url(&format!("/api/v1/clients?limit=2&cursor={cursor}"))).await;
    assert_eq!(cmids(&second), order[2..]);
    let cursor = second["next"].as_u64().unwrap();
    let (_, third) = get_json(&host.url(&format!("/api/v1/clients?limit=2&cursor={cursor}"))).await;
    assert!(cmids(&third).is_empty());
    assert!(third["next"].is_null());
    // Bad parameters are refused, not ignored.
    let (status, body) = get_json(&host.url("/api/v1/clients?since=yesterday")).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get_json(&host.url("/api/v1/activations?address=not-an-ip")).await;
    assert_eq!(status, 400);

    // The log, newest first.
    let log_order: Vec<String> = [5, 1, 3, 2, 1]
        .iter()
        .map(|&n| cmid(n).to_string())
        .collect();
    let (status, body) = get_json(&host.url("/api/v1/activations")).await;
    assert_eq!(status, 200);
    assert_eq!(cmids(&body), log_order);
    assert_eq!(body["items"][0]["result"], "0xC004F042");
    assert_eq!(body["items"][1]["count"], 3);
    assert_eq!(body["items"][4]["count"], 1);
    let (_, page) = get_json(&host.url("/api/v1/activations?limit=3")).await;
    assert_eq!(cmids(&page), log_order[..3]);
    let cursor = page["next"].as_u64().unwrap();
    let (_, page) =
        get_json(&host.url(&format!("/api/v1/activations?limit=3&cursor={cursor}"))).await;
    assert_eq!(cmids(&page), log_order[3..]);
    assert!(page["next"].is_null());

    // CSV, parsed back.
    let (status, content_type, text) = get_text(&host.url("/api/v1/clients.csv")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "cmid");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let csv_cmids: Vec<&str> = rows.iter().map(|r| &r[column("cmid")]).collect();
    assert_eq!(csv_cmids, order);
    assert_eq!(&rows[1][column("requests")], "2");
    assert_eq!(&rows[1][column("workstation")], "ws-1.example");
    let (_, _, text) = get_text(&host.url("/api/v1/activations.csv?limit=2")).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let column = header.iter().position(|h| h == "cmid").unwrap();
    let csv_cmids: Vec<&str> = rows.iter().map(|r| &r[column]).collect();
    assert_eq!(csv_cmids, log_order[..2]);
    let (_, _, text) =
        get_text(&host.url("/api/v1/activations.csv?product=00000000-0000-0000-0000-000000000007"))
            .await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.records().count(), 0, "header only");

    // The dashboard names every client and the count.
    let (status, content_type, page) = get_text(&host.url("/")).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"));
    for id in &order {
        assert!(page.contains(id.as_str()), "{id} missing");
    }
    assert!(page.contains("<span class=\"n count\">3</span>"));
    assert!(page.contains("test-host"));
    let (_, _, searched) = get_text(&host.url(&format!("/?q={}", cmid(3)))).await;
    assert!(searched.contains(&cmid(3).to_string()));
    assert!(!searched.contains(&cmid(2).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_the_memory_store() {
    every_route(MemoryStore::default(), "memory", "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sqlite");
    let store = kms_activation::host::store::SqliteStore::open(&path).unwrap();
    every_route(store, &format!("sqlite:{}", path.display()), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_the_postgres_store() {
    use kms_activation::host::store::{PostgresOptions, PostgresStore};
    let url = match std::env::var("KMS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "every_route_on_the_postgres_store: skipped, KMS_TEST_POSTGRES_URL is not set"
            );
            return;
        }
    };
    let schema = format!("kms_admin_it_{}", std::process::id());
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema))
        .await
        .unwrap();
    // The URL as an operator would give it, with a password to redact.
    let shown = url.replacen("postgres://postgres@", "postgres://postgres:s3cret@", 1);
    every_route(store, &shown, "postgres").await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_but_health_need_the_token() {
    let host = running(MemoryStore::default(), Some("s3cret-token\n"), "memory").await;
    for open in ["/livez", "/readyz"] {
        let response = http().get(host.url(open)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{open}");
    }
    for path in [
        "/",
        "/metrics",
        "/api/v1/status",
        "/api/v1/clients",
        "/api/v1/activations",
        "/api/v1/clients.csv",
        "/api/v1/activations.csv",
    ] {
        let response = http().get(host.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} without a token");
        assert!(response.headers().contains_key("www-authenticate"));
        let response = http()
            .get(host.url(path))
            .bearer_auth("s3cret-tokeN")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path} with a wrong token");
        let response = http()
            .get(host.url(path))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path} with the token");
    }
    // The scheme's case does not matter; the token's does.
    let response = http()
        .get(host.url("/api/v1/status"))
        .header("authorization", "bearer s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn a_non_loopback_admin_address_needs_a_token() {
    assert!(admin::check_bind("0.0.0.0:9688".parse().unwrap(), false).is_err());
    assert!(admin::check_bind("[::]:9688".parse().unwrap(), false).is_err());
    assert!(admin::check_bind("192.0.2.1:9688".parse().unwrap(), false).is_err());
    assert!(admin::check_bind("0.0.0.0:9688".parse().unwrap(), true).is_ok());
    assert!(admin::check_bind("127.0.0.2:9688".parse().unwrap(), false).is_ok());
    // kms-host refuses to start, and says why, before binding anything.
    let (_, stderr) =
        crate::support::kms_host_refused(["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_store_is_down() {
    let store = Arc::new(FaultStore::default());
    let host = running(Arc::clone(&store), None, "memory").await;
    let (status, _) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 200);

    store.set(Fault::Fail);
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 503);
    assert!(
        body["reason"].as_str().unwrap().contains("injected fault"),
        "{body}"
    );
    // Liveness does not depend on the store.
    let (status, _) = get_json(&host.url("/livez")).await;
    assert_eq!(status, 200);

    store.set(Fault::Hang);
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 503);
    assert!(
        body["reason"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    let (status, _) = get_json(&host.url("/api/v1/status")).await;
    assert_eq!(status, 503);

    store.set(Fault::None);
    let (status, _) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_while_64_clients_activate() {
    scrapes_during_activations(MemoryStore::default(), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_while_64_clients_activate_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.sqlite");
    let store = kms_activation::host::store::SqliteStore::open(&path).unwrap();
    scrapes_during_activations(store, "sqlite:load.sqlite").await;
}

/// 64 clients activate at once, each on its own connection, while the
/// metrics, status, dashboard and CSV export are fetched in a loop.
async fn scrapes_during_activations<S: CountStore + 'static>(store: S, name: &str) {
    let host = running(store, None, name).await;
    let (done_tx, done) = watch::channel(false);
    let mut scrapers = Vec::new();
    for path in ["/metrics", "/api/v1/status", "/", "/api/v1/clients.csv"] {
        let url = host.url(path);
        let mut done = done.clone();
        scrapers.push(tokio::spawn(async move {
            let client = http();
            let mut scrapes = 0u32;
            loop {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200, "{url}");
                response.bytes().await.unwrap();
                scrapes += 1;
                if *done.borrow_and_update() || scrapes >= 500 {
                    break scrapes;
                }
            }
        }));
    }
    let clients: Vec<_> = (1..=64)
        .map(|n| tokio::spawn(activate(host.kms, cmid(1000 + n), None)))
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    done_tx.send(true).unwrap();
    for scraper in scrapers {
        assert!(scraper.await.unwrap() >= 1);
    }
    // 64 distinct clients: the count is capped at twice their N policy.
    let (_, body) = get_json(&host.url("/api/v1/status")).await;
    assert_eq!(body["applications"][0]["clients"], 64);
    assert_eq!(body["applications"][0]["current_count"], 50);
    assert_eq!(body["requests"]["total"], 64);
    host.host.store().flush().await.unwrap();
    let (_, body) = get_json(&host.url("/api/v1/clients?limit=1000")).await;
    assert_eq!(cmids(&body).len(), 64);
}

/// Runs headless Chromium on `url` with `args`; its stdout. `None` when
/// Chromium is not installed (a failure under CI, where `.ci/run` installs
/// it).
fn chromium(url: &str, args: &[&str]) -> Option<String> {
    let binary = ["chromium", "chromium-browser"].into_iter().find(|name| {
        std::process::Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(binary) = binary else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing: .ci/run installs Debian's chromium package"
        );
        eprintln!("dashboard_in_headless_chromium: skipped, chromium is not installed");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: a browser that hangs is killed and the test fails.
    let deadline = crate::transport_support::instant() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if crate::transport_support::instant() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let host = running(MemoryStore::default(), None, "memory").await;
    // 30 Windows clients: the count (30) passes their threshold (25).
    for n in 1..=30 {
        assert!(activate(host.kms, cmid(n), None).await);
    }
    assert!(!activate(host.kms, cmid(99), Some(Uuid::from_u128(42))).await);
    let url = host.url("/");
    let dom_url = url.clone();
    let Some(dom) = tokio::task::spawn_blocking(move || chromium(&dom_url, &["--dump-dom"]))
        .await
        .unwrap()
    else {
        return;
    };
    // The DOM Chromium rendered: every client's CMID, the count and the
    // threshold.
    assert!(dom.contains("<table id=\"clients\">"), "{dom}");
    for n in (1..=30).chain([99]) {
        assert!(dom.contains(&cmid(n).to_string()), "CMID {n} missing");
    }
    assert!(dom.contains("<span class=\"n count\">30</span>"), "{dom}");
    assert!(dom.contains("of 25 needed"));
    assert!(dom.contains("refused 0xC004F042"));
    // A screenshot for the README, on request.
    if let Ok(path) = std::env::var("KMS_ADMIN_SCREENSHOT") {
        let shot = format!("--screenshot={path}");
        tokio::task::spawn_blocking(move || chromium(&url, &[&shot, "--window-size=1200,900"]))
            .await
            .unwrap();
        assert!(std::path::Path::new(&std::env::var("KMS_ADMIN_SCREENSHOT").unwrap()).exists());
    }
}

/// `/readyz` on PostgreSQL behind the fault tests' TCP proxy: 200, then 503
/// while the proxy is paused (a hung database), then 200 again.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_postgres_hangs() {
    use kms_activation::host::store::{PostgresOptions, PostgresStore};

    use crate::postgres_pause::Proxy;

    let url = match std::env::var("KMS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "KMS_TEST_POSTGRES_URL is not set"
            );
            eprintln!(
                "readyz_is_503_while_postgres_hangs: skipped, KMS_TEST_POSTGRES_URL is not set"
            );
            return;
        }
    };
    let config: tokio_postgres::Config = url.parse().unwrap();
    let server = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = tokio::net::lookup_host((server.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = Proxy::start(upstream).await;
    let proxied = format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or("postgres"),
        proxy.addr,
        config.get_dbname().unwrap_or("test")
    );
    let schema = format!("kms_admin_ready_{}", std::process::id());
    let store =
        PostgresStore::connect_with(&proxied, PostgresOptions::default().with_schema(&schema))
            .await
            .unwrap();
    let host = running(store, None, &proxied).await;
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");

    proxy.pause();
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"].as_str().unwrap().starts_with("store:"),
        "{body}"
    );
    let (status, _) = get_json(&host.url("/livez")).await;
    assert_eq!(status, 200);

    proxy.resume();
    let mut ready = false;
    for _ in 0..40 {
        if get_json(&host.url("/readyz")).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        ready,
        "/readyz did not recover once the database answered again"
    );
    drop(host);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// Reads until the server closes; what it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// The server's bounds: a client that sends no request head is closed
/// (freeing its slot), an oversized head is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_is_bounded() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let host = Arc::new(
        KmsHost::start(
            KmsHostConfig::default(),
            MemoryStore::default(),
            wall_now(),
            &mut OsRandom,
        )
        .await
        .unwrap(),
    );
    let mut limits = admin::AdminLimits::default();
    limits.max_connections = 2;
    limits.header_timeout = Duration::from_millis(500);
    limits.max_header_bytes = 8192;
    let state = AdminState::new(host, "memory").with_limits(limits);
    state.set_listening(vec!["127.0.0.1:1688".parse().unwrap()]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(admin::serve(listener, Arc::new(state), async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    // Two silent connections hold both slots...
    let mut idle_a = TcpStream::connect(addr).await.unwrap();
    let mut idle_b = TcpStream::connect(addr).await.unwrap();
    // ...until the header timeout closes them, unanswered (hyper may send
    // a 408 first; no 200 in any case).
    let closed = until_closed(&mut idle_a).await;
    assert!(!closed.contains("200 OK"), "{closed}");
    let closed = until_closed(&mut idle_b).await;
    assert!(!closed.contains("200 OK"), "{closed}");
    // Then the slots are free again.
    let (status, _) = get_json(&format!("http://{addr}/livez")).await;
    assert_eq!(status, 200);

    // An oversized request head is refused.
    let mut big = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /livez HTTP/1.1\r\nHost: t\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let answer = until_closed(&mut big).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let _ = stop.send(true);
}

/// Connections over the cap are closed without an answer while the cap is
/// held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let host = Arc::new(
        KmsHost::start(
            KmsHostConfig::default(),
            MemoryStore::default(),
            wall_now(),
            &mut OsRandom,
        )
        .await
        .unwrap(),
    );
    let mut limits = admin::AdminLimits::default();
    limits.max_connections = 1;
    limits.header_timeout = Duration::from_secs(60);
    let state = AdminState::new(host, "memory").with_limits(limits);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(admin::serve(listener, Arc::new(state), async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    // The one slot: a kept-alive connection that has been answered once
    // (so the server has surely accepted it).
    let mut held = TcpStream::connect(addr).await.unwrap();
    held.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A second connection is closed unanswered.
    let mut over = TcpStream::connect(addr).await.unwrap();
    let _ = over
        .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), over.read_to_end(&mut out))
        .await
        .expect("the server kept a connection over the cap")
        .ok();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    drop(held);
    let _ = stop.send(true);
}
