//! The metrics endpoint: scraped over HTTP after real activations, parsed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kms_activation::client::ClientConfig;
use kms_activation::host::HostConfig;
use kms_activation::message::Version;
use kms_activation::metrics::{CONTENT_TYPE, HostMetrics, serve_http};
use kms_activation::transport::tokio::{Client, Server};
use kms_activation::transport::{Outcome, ServerConfig, ServerLimits, bind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transport_support::{kms_host, request, wall_now};

/// Fetches `path` with a bare HTTP/1.1 GET; returns (status line, headers, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// Every sample line as "name{labels}" → value (as written: the integers
/// of counters and gauges compare exactly).
fn samples(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_is_scraped_and_parsed() {
    let host = Arc::new(kms_host().await);
    let metrics = Arc::new(HostMetrics::new());
    let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = Server::new(
        Arc::clone(&host),
        ServerConfig::new(HostConfig::default(), ServerLimits::default()),
    )
    .with_observer(Arc::clone(&metrics));
    let served = tokio::spawn(server.serve(listeners, wait(stopped.clone())));

    let metrics_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let (for_refresh, host_for_refresh) = (Arc::clone(&metrics), Arc::clone(&host));
    let endpoint = tokio::spawn(serve_http(
        metrics_listener,
        Arc::clone(&metrics),
        move || {
            let (metrics, host) = (Arc::clone(&for_refresh), Arc::clone(&host_for_refresh));
            async move {
                metrics.set_statistics(&host.statistics(wall_now()).await.unwrap());
            }
        },
        wait(stopped),
    ));

    let mut client = Client::connect(addr, &ClientConfig::default(), Duration::from_secs(5))
        .await
        .unwrap();
    for cmid in 1..=3 {
        let outcome = client.activate(request(Version::V6, cmid)).await.unwrap();
        assert!(matches!(outcome, Outcome::Answered(_)));
    }
    // The fourth client asks for a threshold of 4: its count reaches it.
    let mut reaching = request(Version::V4, 4);
    reaching.n_policy = 4;
    let outcome = client.activate(reaching).await.unwrap();
    assert!(matches!(outcome, Outcome::Answered(_)));
    let mut unknown = request(Version::V6, 5);
    unknown.kms_id = kms_activation::Uuid::from_u128(42);
    assert!(matches!(
        client.activate(unknown).await.unwrap(),
        Outcome::Refused(_)
    ));

    let (status, headers, body) = get(metrics_addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains(CONTENT_TYPE), "{headers}");
    assert!(body.ends_with("# EOF\n"));
    let s = samples(&body);
    assert_eq!(
        s[r#"kms_requests_total{protocol="6.0",result="below_threshold"}"#], "3",
        "answered with counts 1 to 3, below Windows' 25: not activations"
    );
    assert!(!s.contains_key(r#"kms_requests_total{protocol="6.0",result="activated"}"#));
    assert_eq!(
        s[r#"kms_requests_total{protocol="4.0",result="activated"}"#],
        "1"
    );
    assert_eq!(
        s[r#"kms_requests_total{protocol="6.0",result="0xC004F042"}"#],
        "1"
    );
    assert_eq!(s["kms_request_duration_seconds_count"], "5");
    assert_eq!(s[r#"kms_request_duration_seconds_bucket{le="+Inf"}"#], "5");
    assert_eq!(s["kms_connections_open"], "1");
    assert_eq!(s[r#"kms_clients{application="Windows"}"#], "4");
    assert_eq!(s[r#"kms_current_count{application="Windows"}"#], "4");
    assert_eq!(
        s[r#"kms_requests_by_license_status_total{status="initial_grace"}"#],
        "5"
    );

    drop(client);
    let (status, _, _) = get(metrics_addr, "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = samples(&get(metrics_addr, "/metrics").await.2);
    assert_eq!(s["kms_connections_open"], "0");
    assert_eq!(
        s[r#"kms_connections_closed_total{reason="peer_closed"}"#],
        "1"
    );

    stop.send(true).unwrap();
    served.await.unwrap().unwrap();
    endpoint.await.unwrap().unwrap();
}

/// A host with `n` Windows clients activated through a server, and the
/// host's metrics endpoint; stopped by the returned sender.
struct Scraped {
    host: Arc<kms_activation::host::KmsHost<kms_activation::host::store::MemoryStore>>,
    metrics: Arc<HostMetrics>,
    addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    endpoint: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn scraped() -> Scraped {
    let host = Arc::new(kms_host().await);
    let metrics = Arc::new(HostMetrics::new());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let endpoint = tokio::spawn(serve_http(
        listener,
        Arc::clone(&metrics),
        || async {},
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    Scraped {
        host,
        metrics,
        addr,
        stop,
        endpoint,
    }
}

/// Activates `cmids` as Windows clients through a server on `host`.
async fn activate_at(
    host: &Arc<kms_activation::host::KmsHost<kms_activation::host::store::MemoryStore>>,
    cmids: std::ops::RangeInclusive<u128>,
) {
    let listeners = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::new(
        Arc::clone(host),
        ServerConfig::new(HostConfig::default(), ServerLimits::default()),
    );
    let served = tokio::spawn(server.serve(listeners, async {
        let _ = stopped.await;
    }));
    let mut client = Client::connect(addr, &ClientConfig::default(), Duration::from_secs(5))
        .await
        .unwrap();
    for cmid in cmids {
        let outcome = client.activate(request(Version::V6, cmid)).await.unwrap();
        assert!(matches!(outcome, Outcome::Answered(_)), "{outcome:?}");
    }
    drop(client);
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauges_fall_to_zero_when_the_last_client_leaves_the_window() {
    let scraped = scraped().await;
    activate_at(&scraped.host, 1..=3).await;
    scraped
        .metrics
        .set_statistics(&scraped.host.statistics(wall_now()).await.unwrap());
    let s = samples(&get(scraped.addr, "/metrics").await.2);
    assert_eq!(s[r#"kms_clients{application="Windows"}"#], "3");
    assert_eq!(s[r#"kms_current_count{application="Windows"}"#], "3");
    // 31 days on, past the 30-day counting window: no client is left.
    let later =
        kms_activation::FileTime::from_ticks(wall_now().ticks() + 31 * 24 * 3600 * 10_000_000);
    let statistics = scraped.host.statistics(later).await.unwrap();
    assert!(statistics.counts.is_empty(), "{statistics:?}");
    scraped.metrics.set_statistics(&statistics);
    let s = samples(&get(scraped.addr, "/metrics").await.2);
    assert_eq!(s[r#"kms_clients{application="Windows"}"#], "0");
    assert_eq!(s[r#"kms_current_count{application="Windows"}"#], "0");
    scraped.stop.send(true).unwrap();
    scraped.endpoint.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_totals_are_counters_and_store_errors_are_counted() {
    let scraped = scraped().await;
    activate_at(&scraped.host, 1..=2).await;
    let statistics = scraped.host.statistics(wall_now()).await.unwrap();
    scraped.metrics.set_statistics(&statistics);
    // Set twice with the same totals: a counter does not double.
    scraped.metrics.set_statistics(&statistics);
    scraped.metrics.record_store_error("record_visit");
    scraped.metrics.record_store_error("record_visit");
    scraped.metrics.record_store_error("flush");
    let body = get(scraped.addr, "/metrics").await.2;
    // Types as OpenMetrics declares them, whatever this crate calls them.
    let types: HashMap<&str, &str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_once(' '))
        .collect();
    assert_eq!(types["kms_requests_by_license_status"], "counter");
    assert_eq!(types["kms_store_errors"], "counter");
    assert_eq!(types["kms_clients"], "gauge");
    let s = samples(&body);
    // The requests' license state: initial grace (OobGrace) for both.
    assert_eq!(
        s[r#"kms_requests_by_license_status_total{status="initial_grace"}"#],
        "2"
    );
    assert_eq!(
        s[r#"kms_store_errors_total{operation="record_visit"}"#],
        "2"
    );
    assert_eq!(s[r#"kms_store_errors_total{operation="flush"}"#], "1");
    scraped.stop.send(true).unwrap();
    scraped.endpoint.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_hold_up_a_scrape() {
    let scraped = scraped().await;
    // Six connections that never send a request (each would hold a
    // one-at-a-time endpoint for its whole timeout).
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(scraped.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `get` gives up after 5 s, the endpoint's own timeout for one scraper.
    let (status, _, body) = get(scraped.addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"));
    drop(idle);
    scraped.stop.send(true).unwrap();
    scraped.endpoint.await.unwrap().unwrap();
}
