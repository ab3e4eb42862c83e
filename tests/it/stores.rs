//! Count stores: one conformance suite run against every backend, then what
//! only a persistent backend must do (durability, concurrency, failures).
//!
//! PostgreSQL tests need `KMS_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it they print that
//! they were skipped and pass. Each uses a schema of its own and drops it.

use kms_activation::host::ActivationRecord;
use kms_activation::host::store::{CountStore, MemoryStore, Tally, Visit};
use kms_activation::message::RequestBody;
use kms_activation::{FileTime, HResult, LicenseStatus, Uuid, Version};

const SECOND: u64 = 10_000_000;
const MINUTE: u64 = 60 * SECOND;
const DAY: u64 = 86_400 * SECOND;
const WINDOW: u64 = 30 * DAY;
const T0: u64 = 134_397_882_570_000_000;

fn app(n: u128) -> Uuid {
    Uuid::from_u128(0xa000_0000_0000_0000_0000_0000_0000_0000 | n)
}

fn cmid(n: u128) -> Uuid {
    Uuid::from_u128(0xc000_0000_0000_0000_0000_0000_0000_0000 | n)
}

fn visit(application: u128, client: u128, n_policy: u32, at: u64) -> Visit {
    Visit::new(
        app(application),
        cmid(client),
        n_policy,
        FileTime::from_ticks(at),
        FileTime::from_ticks(at - WINDOW),
    )
}

fn capped(v: Visit, capacity: u64) -> Visit {
    let mut v = v;
    v.capacity = Some(capacity);
    v
}

fn record(time: u64, client: u128, peer: bool, count: Option<u32>) -> ActivationRecord {
    let request = RequestBody {
        version: Version::V6,
        vm_info: u32::from(peer),
        license_status: LicenseStatus::OobGrace,
        binding_expiration: 43_200,
        application_id: app(1),
        sku_id: Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300),
        kms_id: Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148),
        cmid: cmid(client),
        previous_cmid: Uuid::nil(),
        n_policy: 25,
        client_time: FileTime::from_ticks(time - SECOND),
        workstation: format!("client{client:02}.example.org"),
    };
    let peer = peer.then(|| "192.0.2.7:50123".parse().unwrap());
    let result = if count.is_some() {
        HResult::S_OK
    } else {
        HResult::NOT_ENOUGH_COUNT
    };
    ActivationRecord::new(
        FileTime::from_ticks(time),
        peer,
        u64::MAX - 1,
        &request,
        count,
        result,
    )
}

async fn clients<S: CountStore>(store: &S, v: Visit) -> u64 {
    store.record_visit(v).await.unwrap().clients
}

/// The counting rule and the log, the same for every backend. `store` must
/// be empty.
async fn conformance<S: CountStore>(store: &S) {
    counting(store).await;
    aging(store).await;
    max_n_policy(store).await;
    capacity(store).await;
    activation_log(store).await;
    epids(store).await;
    store.flush().await.unwrap();
}

async fn counting<S: CountStore>(store: &S) {
    // Distinct CMIDs count once each, per application.
    for n in 1..=5 {
        assert_eq!(clients(store, visit(1, n, 25, T0)).await, n as u64);
    }
    assert_eq!(
        clients(store, visit(1, 3, 25, T0 + MINUTE)).await,
        5,
        "repeat CMID"
    );
    assert_eq!(
        clients(store, visit(2, 3, 5, T0)).await,
        1,
        "other application"
    );
    let tally = store.tally(app(1), FileTime::from_ticks(T0 - WINDOW)).await;
    assert_eq!(tally.unwrap(), Tally::new(5, 25, true));
    let unknown = store.tally(app(99), FileTime::from_ticks(0)).await.unwrap();
    assert_eq!((unknown.clients, unknown.max_n_policy), (0, 0));
}

async fn aging<S: CountStore>(store: &S) {
    // Aging: a row seen at or before the window start no longer counts.
    store.record_visit(visit(3, 1, 25, T0)).await.unwrap();
    assert_eq!(
        clients(store, visit(3, 2, 25, T0 + WINDOW - MINUTE)).await,
        2,
        "one minute before 30 days"
    );
    assert_eq!(
        clients(store, visit(3, 3, 25, T0 + WINDOW)).await,
        2,
        "exactly 30 days: the first client is at the window start"
    );
    assert_eq!(
        clients(store, visit(3, 4, 25, T0 + WINDOW + MINUTE)).await,
        3,
        "30 days and a minute"
    );
    let tally = store
        .tally(app(3), FileTime::from_ticks(T0 + WINDOW - MINUTE))
        .await
        .unwrap();
    assert_eq!(tally.clients, 2, "tally at a later window start");

    // last_seen only moves forward: an out-of-order visit keeps the later one.
    store
        .record_visit(visit(4, 1, 25, T0 + 10 * DAY))
        .await
        .unwrap();
    store.record_visit(visit(4, 1, 25, T0)).await.unwrap();
    assert_eq!(
        clients(store, visit(4, 2, 25, T0 + 10 * DAY + WINDOW - MINUTE)).await,
        2
    );
}

async fn max_n_policy<S: CountStore>(store: &S) {
    // The largest N policy among the clients counted, as last reported.
    let max_n = async |v: Visit| store.record_visit(v).await.unwrap().max_n_policy;
    assert_eq!(max_n(visit(5, 1, 25, T0)).await, 25);
    assert_eq!(max_n(visit(5, 2, 50, T0)).await, 50);
    assert_eq!(max_n(visit(5, 3, 5, T0)).await, 50);
    assert_eq!(
        max_n(visit(5, 2, 5, T0 + MINUTE)).await,
        25,
        "reported less"
    );
    assert_eq!(max_n(visit(5, 4, 5, T0 + 31 * DAY)).await, 5, "others aged");
    assert_eq!(max_n(visit(5, 4, 25, T0 + 31 * DAY)).await, 25);
}

async fn capacity<S: CountStore>(store: &S) {
    // Capacity keeps new clients out, never known ones.
    for n in 1..=2 {
        let tally = store
            .record_visit(capped(visit(6, n, 25, T0), 2))
            .await
            .unwrap();
        assert!(tally.admitted);
    }
    let refused = store
        .record_visit(capped(visit(6, 3, 50, T0), 2))
        .await
        .unwrap();
    assert!(!refused.admitted);
    assert_eq!((refused.clients, refused.max_n_policy), (2, 25));
    let tally = store
        .tally(app(6), FileTime::from_ticks(T0 - WINDOW))
        .await
        .unwrap();
    assert_eq!(tally.clients, 2, "a refused client is not recorded");
    let known = store
        .record_visit(capped(visit(6, 1, 25, T0 + MINUTE), 2))
        .await
        .unwrap();
    assert!(known.admitted);
    assert_eq!(known.clients, 2);
    let later = store
        .record_visit(capped(visit(6, 3, 25, T0 + 31 * DAY), 2))
        .await
        .unwrap();
    assert!(later.admitted, "room again once the others aged");
    assert_eq!(later.clients, 1);
    let zero = store
        .record_visit(capped(visit(7, 1, 25, T0), 0))
        .await
        .unwrap();
    assert!(!zero.admitted);
    assert_eq!(zero.clients, 0);
}

async fn activation_log<S: CountStore>(store: &S) {
    // The activation log: appended, newest first, pruned by time.
    assert!(store.recent_activations(10).await.unwrap().is_empty());
    let records: Vec<_> = (1..=5u32)
        .map(|i| {
            record(
                T0 + u64::from(i) * MINUTE,
                u128::from(i),
                i % 2 == 0,
                (i != 3).then_some(i),
            )
        })
        .collect();
    for r in &records {
        store
            .append_activation(r, FileTime::from_ticks(0))
            .await
            .unwrap();
    }
    let recent = store.recent_activations(3).await.unwrap();
    assert_eq!(
        recent,
        vec![records[4].clone(), records[3].clone(), records[2].clone()]
    );
    assert_eq!(store.recent_activations(10).await.unwrap().len(), 5);
    assert!(store.recent_activations(0).await.unwrap().is_empty());
    let sixth = record(T0 + 6 * MINUTE, 6, true, Some(6));
    store
        .append_activation(&sixth, records[2].time)
        .await
        .unwrap();
    let kept = store.recent_activations(10).await.unwrap();
    assert_eq!(
        kept,
        vec![
            sixth,
            records[4].clone(),
            records[3].clone(),
            records[2].clone()
        ]
    );
}

async fn epids<S: CountStore>(store: &S) {
    // One ePID per CSVLK: the first candidate wins.
    let csvlk = Uuid::from_u128(0xe1);
    assert_eq!(store.host_epid(csvlk, "first").await.unwrap(), "first");
    assert_eq!(store.host_epid(csvlk, "second").await.unwrap(), "first");
    assert_eq!(
        store
            .host_epid(Uuid::from_u128(0xe2), "other")
            .await
            .unwrap(),
        "other"
    );
}

#[test]
fn memory_store_conformance() {
    pollster::block_on(conformance(&MemoryStore::default()));
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use kms_activation::host::store::{SqliteStore, StoreError};

    use super::*;

    fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("host.sqlite")).unwrap();
        (dir, store)
    }

    #[test]
    fn sqlite_store_conformance() {
        let (_dir, store) = temp_store();
        pollster::block_on(conformance(&store));
    }

    #[test]
    fn sqlite_survives_a_dropped_handle() {
        let (dir, store) = temp_store();
        let path = store.path().to_path_buf();
        for n in 1..=20 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
        }
        pollster::block_on(
            store.append_activation(&record(T0, 1, true, Some(20)), FileTime::from_ticks(0)),
        )
        .unwrap();
        pollster::block_on(store.host_epid(Uuid::from_u128(1), "epid")).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 5, 25, T0 + MINUTE))),
            20
        );
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 21, 25, T0 + MINUTE))),
            21
        );
        assert_eq!(
            pollster::block_on(store.recent_activations(5))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            pollster::block_on(store.host_epid(Uuid::from_u128(1), "other")).unwrap(),
            "epid"
        );
        drop(dir);
    }

    /// The child half of `sqlite_survives_sigkill`: records visits, says so
    /// after each one completed, then waits to be killed. Does nothing
    /// unless the parent set the variable.
    #[test]
    fn sqlite_sigkill_child() {
        let Ok(path) = std::env::var("KMS_SQLITE_SIGKILL_CHILD") else {
            return;
        };
        let store = SqliteStore::open(&path).unwrap();
        for n in 1..=50 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
            println!("committed {n}");
        }
        // Never reached in the parent's test: it kills us first.
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn sqlite_survives_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sqlite");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "stores::sqlite::sqlite_sigkill_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KMS_SQLITE_SIGKILL_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut committed = 0;
        for line in BufReader::new(stdout).lines() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                committed = n.trim().parse().unwrap();
                if committed == 50 {
                    break;
                }
            }
        }
        assert_eq!(committed, 50, "the child died before committing");
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        let store = SqliteStore::open(&path).unwrap();
        let tally = pollster::block_on(store.tally(app(1), FileTime::from_ticks(T0 - WINDOW)));
        assert_eq!(tally.unwrap().clients, 50);
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 1, 25, T0 + MINUTE))),
            50
        );
    }

    #[test]
    fn sqlite_concurrent_visits_count_once() {
        let (_dir, store) = temp_store();
        let store = Arc::new(store);
        let threads: Vec<_> = (0..16u128)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    // Every thread visits 40 clients, half of them shared.
                    for i in 0..40u128 {
                        let client = if i % 2 == 0 { i } else { 1000 + t * 100 + i };
                        pollster::block_on(store.record_visit(visit(1, client, 25, T0 + 1)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tally = pollster::block_on(store.tally(app(1), FileTime::from_ticks(T0 - WINDOW)));
        assert_eq!(tally.unwrap().clients, 20 + 16 * 20);
        assert_eq!(
            pollster::block_on(clients(&*store, visit(1, 0, 25, T0 + 2))),
            340
        );
    }

    #[test]
    fn sqlite_capacity_holds_under_concurrency() {
        let (_dir, store) = temp_store();
        let store = Arc::new(store);
        let threads: Vec<_> = (0..8u128)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    (0..10u128)
                        .filter(|i| {
                            let v = capped(visit(1, t * 10 + i, 25, T0), 25);
                            pollster::block_on(store.record_visit(v)).unwrap().admitted
                        })
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 25);
        let tally = pollster::block_on(store.tally(app(1), FileTime::from_ticks(0)));
        assert_eq!(tally.unwrap().clients, 25);
    }

    #[test]
    fn sqlite_bad_rows_are_backend_errors() {
        let (_dir, store) = temp_store();
        pollster::block_on(
            store.append_activation(&record(T0, 1, true, Some(1)), FileTime::from_ticks(0)),
        )
        .unwrap();
        pollster::block_on(store.flush()).unwrap();
        let raw = rusqlite::Connection::open(store.path()).unwrap();
        raw.execute("UPDATE activations SET license_status = -1", [])
            .unwrap();
        let err = pollster::block_on(store.recent_activations(1)).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        raw.execute(
            "UPDATE activations SET license_status = 2, peer = 'nowhere'",
            [],
        )
        .unwrap();
        let err = pollster::block_on(store.recent_activations(1)).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        raw.execute("UPDATE activations SET peer = NULL, cmid = x'00'", [])
            .unwrap();
        let err = pollster::block_on(store.recent_activations(1)).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        // The store still works for everything else.
        assert_eq!(pollster::block_on(clients(&store, visit(1, 1, 25, T0))), 1);
    }

    #[test]
    fn sqlite_counters_are_rebuilt_on_open() {
        let (dir, store) = temp_store();
        for n in 1..=3 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
        }
        drop(store);
        let path = dir.path().join("host.sqlite");
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE applications SET clients = 1000", [])
            .unwrap();
        drop(raw);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 1, 25, T0 + 1))),
            3
        );
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use kms_activation::host::store::{PostgresOptions, PostgresStore, StoreError};
    use tokio::runtime::Runtime;

    use super::*;

    /// The test database, or `None` (and a note) when it is not configured.
    fn database(test: &str) -> Option<String> {
        match std::env::var("KMS_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                eprintln!("{test}: skipped, KMS_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn unique_schema() -> String {
        format!(
            "kms_test_{}_{:x}",
            std::process::id(),
            getrandom::u64().unwrap()
        )
    }

    /// `url` with an application name, so an admin can find the sessions.
    fn named(url: &str, name: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={name}")
    }

    async fn admin(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    async fn drop_schema(url: &str, schema: &str) {
        admin(url)
            .await
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }

    async fn store(url: &str, schema: &str) -> PostgresStore {
        PostgresStore::connect_with(url, PostgresOptions::default().with_schema(schema))
            .await
            .unwrap()
    }

    #[test]
    fn postgres_store_conformance() {
        let Some(url) = database("postgres_store_conformance") else {
            return;
        };
        let schema = unique_schema();
        runtime().block_on(async {
            let store = store(&url, &schema).await;
            conformance(&store).await;
            drop(store);
            drop_schema(&url, &schema).await;
        });
    }

    #[test]
    fn postgres_futures_work_under_another_executor() {
        let Some(url) = database("postgres_futures_work_under_another_executor") else {
            return;
        };
        let schema = unique_schema();
        let rt = runtime();
        let store = rt.block_on(store(&url, &schema));
        // Awaited outside Tokio: the work runs on the store's runtime.
        assert_eq!(pollster::block_on(clients(&store, visit(1, 1, 25, T0))), 1);
        pollster::block_on(store.flush()).unwrap();
        drop(store);
        rt.block_on(drop_schema(&url, &schema));
    }

    #[test]
    fn postgres_two_hosts_share_one_count() {
        let Some(url) = database("postgres_two_hosts_share_one_count") else {
            return;
        };
        let schema = unique_schema();
        runtime().block_on(async {
            // Both start at once: schema creation must not race.
            let (a, b) = tokio::join!(store(&url, &schema), store(&url, &schema));
            assert_eq!(clients(&a, visit(1, 1, 25, T0)).await, 1);
            assert_eq!(clients(&b, visit(1, 2, 25, T0)).await, 2);
            assert_eq!(clients(&b, visit(1, 1, 25, T0 + MINUTE)).await, 2);
            assert_eq!(clients(&a, visit(1, 3, 25, T0 + MINUTE)).await, 3);
            assert_eq!(b.host_epid(Uuid::from_u128(1), "b").await.unwrap(), "b");
            assert_eq!(a.host_epid(Uuid::from_u128(1), "a").await.unwrap(), "b");
            a.append_activation(&record(T0, 1, true, Some(3)), FileTime::from_ticks(0))
                .await
                .unwrap();
            assert_eq!(b.recent_activations(10).await.unwrap().len(), 1);

            // Concurrent visits from both hosts, many shared CMIDs: each
            // counted once, and a capacity holds exactly.
            let (a, b) = (Arc::new(a), Arc::new(b));
            let mut tasks = Vec::new();
            for t in 0..64u128 {
                let host = if t % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                tasks.push(tokio::spawn(async move {
                    let mut admitted = Vec::new();
                    for i in 0..8u128 {
                        let shared = capped(visit(2, i, 25, T0), 30);
                        let own = capped(visit(2, 100 + t * 8 + i, 25, T0), 30);
                        for v in [shared, own] {
                            if host.record_visit(v).await.unwrap().admitted {
                                admitted.push(v.cmid);
                            }
                        }
                    }
                    admitted
                }));
            }
            let mut admitted = std::collections::BTreeSet::new();
            for task in tasks {
                admitted.extend(task.await.unwrap());
            }
            assert_eq!(admitted.len(), 30);
            let tally = a.tally(app(2), FileTime::from_ticks(0)).await.unwrap();
            assert_eq!(tally.clients, 30);
            assert_eq!(clients(&*b, visit(2, 0, 25, T0 + 1)).await, 30);

            // Uncapped: every CMID once.
            let mut tasks = Vec::new();
            for t in 0..64u128 {
                let host = if t % 2 == 0 {
                    Arc::clone(&a)
                } else {
                    Arc::clone(&b)
                };
                tasks.push(tokio::spawn(async move {
                    for i in 0..8u128 {
                        host.record_visit(visit(3, (t * 8 + i) % 100, 25, T0))
                            .await
                            .unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(clients(&*a, visit(3, 0, 25, T0 + 1)).await, 100);
            drop((a, b));
            drop_schema(&url, &schema).await;
        });
    }

    #[test]
    fn postgres_recovers_from_a_killed_connection() {
        let Some(url) = database("postgres_recovers_from_a_killed_connection") else {
            return;
        };
        let schema = unique_schema();
        let name = format!("kms_kill_{}", getrandom::u32().unwrap());
        runtime().block_on(async {
            let store = store(&named(&url, &name), &schema).await;
            for n in 1..=3 {
                store.record_visit(visit(1, n, 25, T0)).await.unwrap();
            }
            let admin = admin(&url).await;
            let killed = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1",
                    &[&name],
                )
                .await
                .unwrap();
            assert!(!killed.is_empty(), "no session to kill");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;

            // The operation on the lost connection fails as unavailable or
            // succeeds on a new one; never a wrong count.
            match store.record_visit(visit(1, 4, 25, T0)).await {
                Ok(tally) => assert_eq!(tally.clients, 4),
                Err(StoreError::Unavailable(e)) => eprintln!("after the kill: unavailable ({e})"),
                Err(other) => panic!("expected Unavailable, got {other:?}"),
            }
            let tally = store.record_visit(visit(1, 4, 25, T0)).await.unwrap();
            assert_eq!(tally.clients, 4);
            assert_eq!(clients(&store, visit(1, 1, 25, T0 + 1)).await, 4);

            // Killed in the middle of a statement, too.
            let busy = {
                let admin = self::admin(&url).await;
                let name = name.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    admin
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE application_name = $1",
                            &[&name],
                        )
                        .await
                        .unwrap();
                })
            };
            // Visits of CMIDs 5..=40 over and over until the kill is done.
            let mut outcomes = Vec::new();
            for n in (5..=40).cycle().take(20_000) {
                outcomes.push(store.record_visit(visit(1, n, 25, T0)).await);
                if busy.is_finished() && outcomes.len() >= 36 {
                    break;
                }
            }
            busy.await.unwrap();
            let lost = outcomes.iter().filter(|o| o.is_err()).count();
            eprintln!(
                "killed mid-run: {lost} of {} visits unavailable",
                outcomes.len()
            );
            for outcome in &outcomes {
                assert!(
                    matches!(outcome, Ok(_) | Err(StoreError::Unavailable(_))),
                    "{outcome:?}"
                );
            }
            for n in 5..=40 {
                store.record_visit(visit(1, n, 25, T0)).await.unwrap();
            }
            assert_eq!(clients(&store, visit(1, 1, 25, T0 + 2)).await, 40);
            drop(store);
            drop_schema(&url, &schema).await;
        });
    }

    #[test]
    fn postgres_unreachable_is_unavailable() {
        let rt = runtime();
        let err = rt
            .block_on(PostgresStore::connect_with(
                "postgres://nobody@127.0.0.1:1/none",
                PostgresOptions::default(),
            ))
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = rt
            .block_on(PostgresStore::connect_with(
                "postgres://nobody@127.0.0.1:1/none",
                PostgresOptions::default().with_schema("Robert'); DROP TABLE x;--"),
            ))
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        // Outside a runtime: an error, not a panic.
        let err = pollster::block_on(PostgresStore::connect("postgres://nobody@127.0.0.1:1/none"))
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    }

    #[test]
    fn postgres_bad_rows_are_backend_errors() {
        let Some(url) = database("postgres_bad_rows_are_backend_errors") else {
            return;
        };
        let schema = unique_schema();
        runtime().block_on(async {
            let store = store(&url, &schema).await;
            store
                .append_activation(&record(T0, 1, true, Some(1)), FileTime::from_ticks(0))
                .await
                .unwrap();
            let admin = admin(&url).await;
            admin
                .batch_execute(&format!(
                    "UPDATE {schema}.activations SET license_status = 4294967296"
                ))
                .await
                .unwrap();
            let err = store.recent_activations(1).await.unwrap_err();
            assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
            admin
                .batch_execute(&format!(
                    "UPDATE {schema}.activations SET license_status = 1, time = -5"
                ))
                .await
                .unwrap();
            let err = store.recent_activations(1).await.unwrap_err();
            assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
            drop(store);
            drop_schema(&url, &schema).await;
        });
    }
}
