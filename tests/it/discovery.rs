//! SRV discovery against a real DNS server on loopback: an in-process
//! `hickory-server` authority for `example.test`, serving the records
//! `srv_zone_line` prints, and loopback KMS hosts behind them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use kms_activation::client::discovery::{
    AttemptFailure, BlockingSrvResolver, DiscoveryError, DnsSettings, SrvResolver,
    activate_through, activate_through_async,
};
use kms_activation::client::{
    KmsHostName, KmsLocator, LocatorConfig, SrvRecord, SrvSelection, order_srv_records,
    srv_zone_line,
};
use kms_activation::host::KmsHostConfig;
use kms_activation::{HResult, ScriptedRandom, Uuid};
use serde_json::Value;

use crate::loopback::{Behaviour, kms_client, spawn_host};

/// Serves `records` (zone-file lines) for `example.test.` on a free UDP
/// port of 127.0.0.1; the server thread lives until the process ends.
fn start_dns(records: &[String]) -> SocketAddr {
    let zone = format!(
        "$ORIGIN example.test.\n\
         @ 3600 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\n\
         @ 3600 IN NS ns.example.test.\n\
         ns 3600 IN A 127.0.0.1\n\
         kms1 3600 IN A 127.0.0.1\n\
         kms2 3600 IN A 127.0.0.1\n\
         kms3 3600 IN A 127.0.0.1\n\
         {}\n",
        records.join("\n")
    );
    let origin = Name::from_ascii("example.test.").unwrap();
    let (_, parsed) = Parser::new(zone, None, Some(origin.clone()))
        .parse()
        .unwrap();
    let handler = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::new(
        origin.clone(),
        parsed,
        ZoneType::Primary,
        AxfrPolicy::Deny,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut catalog = Catalog::new();
            let handlers: Vec<Arc<dyn ZoneHandler>> = vec![Arc::new(handler)];
            catalog.upsert(LowerName::new(&origin), handlers);
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            tx.send(socket.local_addr().unwrap()).unwrap();
            let mut server = Server::new(catalog);
            server.register_socket(socket);
            let _ = server.block_until_done().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn settings(dns: SocketAddr) -> DnsSettings {
    DnsSettings::system()
        .with_name_servers([dns])
        .with_timeout(Duration::from_secs(2), 2)
}

fn resolver(dns: SocketAddr) -> BlockingSrvResolver {
    BlockingSrvResolver::new(&settings(dns)).unwrap()
}

fn srv(priority: u16, weight: u16, target: &str, port: u16) -> String {
    srv_zone_line(
        "example.test",
        &format!("{target}.example.test"),
        port,
        priority,
        weight,
        60,
    )
}

#[test]
fn priority_weight_and_nxdomain() {
    let dns = start_dns(&[
        srv(0, 60, "kms1", 1688),
        srv(0, 40, "kms2", 1700),
        srv(10, 0, "kms3", 1688),
    ]);
    let resolver = resolver(dns);
    let mut records = resolver.lookup_srv("example.test").unwrap();
    records.sort_by_key(|r| (r.priority, r.target.clone()));
    assert_eq!(
        records,
        [
            SrvRecord::new(0, 60, 1688, "kms1.example.test"),
            SrvRecord::new(0, 40, 1700, "kms2.example.test"),
            SrvRecord::new(10, 0, 1688, "kms3.example.test"),
        ]
    );
    // The priority-10 host is always last; kms1 first in about 60 % of draws.
    let mut rng = ScriptedRandom::new((0..=255u8).cycle().take(16 * 4096).collect::<Vec<_>>());
    let mut kms1_first = 0;
    for _ in 0..1000 {
        let order = order_srv_records(records.clone(), SrvSelection::PriorityWeight, &mut rng);
        assert_eq!(order[2].target, "kms3.example.test");
        kms1_first += usize::from(order[0].target == "kms1.example.test");
    }
    assert!((450..=750).contains(&kms1_first), "{kms1_first}");
    assert_eq!(
        resolver
            .lookup_host(&KmsHostName::new("kms2.example.test", 1700))
            .unwrap(),
        ["127.0.0.1:1700".parse::<SocketAddr>().unwrap()]
    );

    let missing = resolver.lookup_srv("missing.example.test").unwrap_err();
    assert!(
        matches!(missing, DiscoveryError::NameDoesNotExist { .. }),
        "{missing:?}"
    );
    assert_eq!(missing.hresult(), HResult::new(0x8007_232B));
    // kms1 exists but has no SRV records of its own.
    let none = resolver.lookup_srv("kms1.example.test").unwrap_err();
    assert!(
        matches!(
            none,
            DiscoveryError::NameDoesNotExist { .. } | DiscoveryError::NoRecords { .. }
        ),
        "{none:?}"
    );
}

#[test]
fn failover_past_a_refused_connection_and_host_caching() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live_port = live.local_addr().unwrap().port();
    let dns = start_dns(&[srv(0, 0, "kms1", dead), srv(5, 0, "kms2", live_port)]);
    let resolver = resolver(dns);
    let mut rng = ScriptedRandom::new([0u8; 4096]);
    let connect = |_: &KmsHostName, addrs: &[SocketAddr]| {
        std::net::TcpStream::connect_timeout(&addrs[0], Duration::from_secs(2))
            .map(|_| ())
            .map_err(|e| e.kind())
    };
    let mut locator = KmsLocator::new(LocatorConfig::discover("example.test"));
    let (host, (), failures) = activate_through(
        &mut locator,
        &resolver,
        &mut rng,
        |_| std::io::ErrorKind::NotFound,
        connect,
    )
    .unwrap();
    assert_eq!(host, KmsHostName::new("kms2.example.test", live_port));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].host.host, "kms1.example.test");
    assert_eq!(failures[0].error, std::io::ErrorKind::ConnectionRefused);
    // Cached: straight to kms2 without trying kms1.
    let (_, (), failures) = activate_through(
        &mut locator,
        &resolver,
        &mut rng,
        |_| std::io::ErrorKind::NotFound,
        connect,
    )
    .unwrap();
    assert!(failures.is_empty());
    // Caching off: kms1 is tried (and fails) every time.
    let mut locator = KmsLocator::new(LocatorConfig::discover("example.test").with_caching(false));
    for _ in 0..2 {
        let (_, (), failures) = activate_through(
            &mut locator,
            &resolver,
            &mut rng,
            |_| std::io::ErrorKind::NotFound,
            connect,
        )
        .unwrap();
        assert_eq!(failures.len(), 1);
    }
    // NXDOMAIN: discovery fails with the DNS error.
    let mut locator = KmsLocator::new(LocatorConfig::discover("missing.example.test"));
    let failure = activate_through(
        &mut locator,
        &resolver,
        &mut rng,
        |_| std::io::ErrorKind::NotFound,
        connect,
    )
    .unwrap_err();
    assert!(matches!(
        failure,
        AttemptFailure::Discovery(DiscoveryError::NameDoesNotExist { .. })
    ));
}

#[test]
fn kms_client_fails_over_from_a_refusing_host() {
    // kms1 holds only the Office LTSC 2021 CSVLK and refuses Windows
    // (0xC004F042); kms2 activates everything.
    let mut office_only = KmsHostConfig::default();
    office_only.set_csvlks([Uuid::from_u128(0x47f3b983_7c53_4d45_abc6_bcd91e2dd90a)]);
    let refusing = spawn_host(office_only, Behaviour::KeepOpen);
    let genuine = spawn_host(KmsHostConfig::default(), Behaviour::KeepOpen);
    let dns = start_dns(&[
        srv(0, 0, "kms1", refusing.port()),
        srv(1, 0, "kms2", genuine.port()),
    ]);
    let out = kms_client(&[
        ".example.test",
        "--dns-server",
        &dns.to_string(),
        "--json",
        "-n",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let kms2 = format!("kms2.example.test:{}", genuine.port());
    assert_eq!(lines[0]["host"], kms2.as_str());
    assert_eq!(lines[0]["hresult"], "0xC004F038", "{stderr}");
    assert!(stderr.contains("0xC004F042"), "{stderr}");
    // Host caching: the second request goes straight to kms2.
    assert_eq!(lines[1]["host"], kms2.as_str());
    assert_eq!(stderr.matches("0xC004F042").count(), 1, "{stderr}");

    let out = kms_client(&[
        ".missing.example.test",
        "--dns-server",
        &dns.to_string(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0x8007232B"), "{stderr}");
}

#[tokio::test]
async fn the_async_resolver_works_inside_a_runtime_and_drops_there() {
    let dns = start_dns(&[srv(0, 0, "kms1", 1688), srv(5, 0, "kms2", 1700)]);
    let resolver = SrvResolver::new(&settings(dns)).unwrap();
    let mut records = resolver.lookup_srv("example.test").await.unwrap();
    records.sort_by_key(|r| r.priority);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].target, "kms1.example.test");
    assert_eq!(
        resolver
            .lookup_host(&KmsHostName::new("kms2.example.test", 1700))
            .await
            .unwrap(),
        ["127.0.0.1:1700".parse::<SocketAddr>().unwrap()]
    );
    let missing = resolver
        .lookup_srv("missing.example.test")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, DiscoveryError::NameDoesNotExist { .. }),
        "{missing:?}"
    );
    drop(resolver);
}

#[tokio::test]
async fn async_failover_past_a_refused_connection() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live_port = live.local_addr().unwrap().port();
    let dns = start_dns(&[srv(0, 0, "kms1", dead), srv(5, 0, "kms2", live_port)]);
    let resolver = SrvResolver::new(&settings(dns)).unwrap();
    let mut rng = ScriptedRandom::new([0u8; 4096]);
    let mut locator = KmsLocator::new(LocatorConfig::discover("example.test"));
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
    assert_eq!(host, KmsHostName::new("kms2.example.test", live_port));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].error, std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn the_blocking_resolver_refuses_to_block_a_runtime_and_drops_there() {
    let dns = start_dns(&[srv(0, 0, "kms1", 1688)]);
    let resolver = resolver(dns);
    let err = resolver.lookup_srv("example.test").unwrap_err();
    assert!(matches!(err, DiscoveryError::Resolver(_)), "{err:?}");
    // The async resolver inside still works here.
    assert_eq!(
        resolver
            .resolver()
            .lookup_srv("example.test")
            .await
            .unwrap()
            .len(),
        1
    );
    drop(resolver);
}
