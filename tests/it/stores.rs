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

/// Queues more activation records than one pruning statement deletes
/// (1000) into a store that keeps 10, flushes, and checks that the newest
/// 10 are what is left.
async fn a_burst_leaves_the_newest_10_records<S: CountStore>(store: &S) {
    for i in 1..=2600u32 {
        store
            .queue_activation(
                record(T0 + u64::from(i), u128::from(i), true, Some(i)),
                FileTime::from_ticks(0),
            )
            .unwrap();
    }
    store.flush().await.unwrap();
    let kept = store.recent_activations(5000).await.unwrap();
    assert_eq!(
        kept.len(),
        10,
        "the newest kept: {:?}",
        kept.first().map(|r| r.count)
    );
    let counts: Vec<_> = kept.iter().map(|r| r.count).collect();
    assert_eq!(counts, (2591..=2600).rev().map(Some).collect::<Vec<_>>());
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
    queued_activation_log(store).await;
    epids(store).await;
    store.flush().await.unwrap();
}

/// Records `clients` (client `i` at `i` minutes past `T0`, count `i`),
/// queued without waiting, then flushed; returns them in that order.
async fn queue_and_flush<S: CountStore>(
    store: &S,
    clients: std::ops::RangeInclusive<u32>,
) -> Vec<ActivationRecord> {
    let queued: Vec<_> = clients
        .map(|i| record(T0 + u64::from(i) * MINUTE, u128::from(i), true, Some(i)))
        .collect();
    for r in &queued {
        store
            .queue_activation(r.clone(), FileTime::from_ticks(0))
            .unwrap();
    }
    store.flush().await.unwrap();
    queued
}

async fn queued_activation_log<S: CountStore>(store: &S) {
    // Records queued without waiting are stored by the time `flush`
    // completes, newest first.
    let queued = queue_and_flush(store, 7..=9).await;
    let recent = store.recent_activations(3).await.unwrap();
    assert_eq!(
        recent,
        vec![queued[2].clone(), queued[1].clone(), queued[0].clone()]
    );
    assert_eq!(store.health().dropped_records, 0);
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

    use kms_activation::host::store::{SqliteOptions, SqliteStore, StoreError};

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
        let mut options = SqliteOptions::default();
        if std::env::var("KMS_SQLITE_SIGKILL_SYNC").as_deref() == Ok("normal") {
            options.synchronous = kms_activation::host::store::SqliteSync::Normal;
        }
        let store = SqliteStore::open_with(&path, options).unwrap();
        for n in 1..=50 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
            println!("committed {n}");
        }
        // Never reached in the parent's test: it kills us first.
        std::thread::sleep(std::time::Duration::from_secs(60));
    }

    #[test]
    fn sqlite_survives_sigkill() {
        survives_sigkill("full");
    }

    /// `synchronous=NORMAL` skips the `fsync` of each commit, but a commit
    /// is in the operating system's hands: a killed process loses none.
    #[test]
    fn sqlite_sync_normal_survives_sigkill() {
        survives_sigkill("normal");
    }

    /// Runs `sqlite_sigkill_child` with `sync`, kills it once it said all
    /// 50 visits committed, and counts them in the file.
    fn survives_sigkill(sync: &str) {
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
            .env("KMS_SQLITE_SIGKILL_SYNC", sync)
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

    /// kms-host takes `sqlite:FILE?sync=normal`, says so when ready, and
    /// refuses a durability it does not know before touching the file.
    #[test]
    fn kms_host_takes_the_sqlite_sync_option() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sqlite");
        for bad in ["fast", "", "FULL"] {
            let (_, stderr) = crate::support::kms_host_refused([
                "--store",
                &format!("sqlite:{}?sync={bad}", path.display()),
                "--listen",
                "127.0.0.1:0",
            ]);
            assert!(stderr.contains("sync=full or sync=normal"), "{stderr}");
            assert!(!path.exists());
        }
        let (mut host, ready) = crate::support::kms_host_until_ready([
            "--store",
            &format!("sqlite:{}?sync=normal", path.display()),
            "--listen",
            "127.0.0.1:0",
        ]);
        host.kill().unwrap();
        host.wait().unwrap();
        let ready = ready.expect("kms-host never got ready");
        assert!(ready.contains("Normal"), "{ready}");
        assert!(path.exists());
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

    /// `(last_seen, n_policy)` of `client` as the file holds it.
    fn stored(path: &std::path::Path, client: u128) -> (u64, u32) {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT last_seen, n_policy FROM clients WHERE application_id = ?1 AND cmid = ?2",
                (
                    app(1).as_bytes().as_slice(),
                    cmid(client).as_bytes().as_slice(),
                ),
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, u32>(1)?)),
            )
            .map(|(seen, n)| (u64::try_from(seen).unwrap(), n))
            .unwrap()
    }

    /// A counted client renewing within the granularity (60 s by default)
    /// with the same N policy writes nothing; its count is the same after
    /// a reopen. Past the granularity, or with another N policy, the
    /// renewal is written.
    #[test]
    fn sqlite_a_renewal_within_the_granularity_writes_nothing() {
        let (dir, store) = temp_store();
        let path = dir.path().join("host.sqlite");
        for n in 1..=2 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
        }
        let renewed = pollster::block_on(store.record_visit(visit(1, 1, 25, T0 + 30 * SECOND)));
        assert_eq!(renewed.map(|t| (t.clients, t.max_n_policy)), Ok((2, 25)));
        store.close().unwrap();
        assert_eq!(stored(&path, 1), (T0, 25), "the renewal was written");

        let store = SqliteStore::open(&path).unwrap();
        let tally = pollster::block_on(store.tally(app(1), FileTime::from_ticks(T0 - WINDOW)));
        assert_eq!(tally.unwrap().clients, 2);
        // Past the granularity: written.
        let later = T0 + 2 * MINUTE;
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 1, 25, later))),
            2
        );
        // Within it, but another N policy: written, and counted.
        let tally = pollster::block_on(store.record_visit(visit(1, 2, 50, T0 + SECOND)));
        assert_eq!(tally.map(|t| (t.clients, t.max_n_policy)), Ok((2, 50)));
        store.close().unwrap();
        assert_eq!(stored(&path, 1), (later, 25));
        assert_eq!(stored(&path, 2), (T0 + SECOND, 50));
    }

    /// `renewal_granularity` zero: every renewal is written.
    #[test]
    fn sqlite_renewal_granularity_zero_writes_every_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sqlite");
        let mut options = SqliteOptions::default();
        options.renewal_granularity = std::time::Duration::ZERO;
        let store = SqliteStore::open_with(&path, options).unwrap();
        pollster::block_on(store.record_visit(visit(1, 1, 25, T0))).unwrap();
        pollster::block_on(store.record_visit(visit(1, 1, 25, T0 + SECOND))).unwrap();
        // Even a visit at the stored instant is written (as before the
        // granularity existed): the file changes.
        let version = |raw: &rusqlite::Connection| -> i64 {
            raw.pragma_query_value(None, "data_version", |row| row.get(0))
                .unwrap()
        };
        let raw = rusqlite::Connection::open(&path).unwrap();
        let before = version(&raw);
        pollster::block_on(store.record_visit(visit(1, 1, 25, T0 + SECOND))).unwrap();
        assert_ne!(version(&raw), before);
        store.close().unwrap();
        assert_eq!(stored(&path, 1), (T0 + SECOND, 25));
    }

    /// The check reads the file inside the writer's transaction, not a copy
    /// kept in memory: a row another process deleted is admitted again and
    /// counted once.
    #[test]
    fn sqlite_a_renewal_sees_what_another_process_wrote() {
        let (dir, store) = temp_store();
        let path = dir.path().join("host.sqlite");
        for n in 1..=2 {
            pollster::block_on(store.record_visit(visit(1, n, 25, T0))).unwrap();
        }
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch("BEGIN IMMEDIATE").unwrap();
        raw.execute(
            "DELETE FROM clients WHERE cmid = ?1",
            [cmid(1).as_bytes().as_slice()],
        )
        .unwrap();
        raw.execute("UPDATE applications SET clients = clients - 1", [])
            .unwrap();
        raw.execute_batch("COMMIT").unwrap();
        let renewed = pollster::block_on(store.record_visit(visit(1, 1, 25, T0 + SECOND)));
        assert_eq!(renewed.map(|t| t.clients), Ok(2));
        store.close().unwrap();
        assert_eq!(stored(&path, 1), (T0 + SECOND, 25));
    }

    /// A client whose row aged out of the window comes back as a new one:
    /// the capacity applies to it.
    #[test]
    fn sqlite_a_client_aged_out_meets_the_capacity_again() {
        let (_dir, store) = temp_store();
        pollster::block_on(store.record_visit(visit(1, 1, 25, T0))).unwrap();
        let later = T0 + WINDOW + DAY;
        let tally = pollster::block_on(store.record_visit(capped(visit(1, 2, 25, later), 1)));
        assert_eq!(tally.map(|t| (t.clients, t.admitted)), Ok((1, true)));
        let tally = pollster::block_on(store.record_visit(capped(visit(1, 1, 25, later), 1)));
        assert_eq!(tally.map(|t| (t.clients, t.admitted)), Ok((1, false)));
        let tally = pollster::block_on(store.record_visit(visit(1, 1, 25, later)));
        assert_eq!(tally.map(|t| (t.clients, t.admitted)), Ok((2, true)));
    }

    /// The schema of the first release (version 0, no `user_version`), as
    /// it created its file.
    const SQLITE_V0: &str = "
        CREATE TABLE clients (application_id BLOB NOT NULL, cmid BLOB NOT NULL,
            last_seen INTEGER NOT NULL, n_policy INTEGER NOT NULL,
            PRIMARY KEY (application_id, cmid)) WITHOUT ROWID;
        CREATE INDEX clients_by_last_seen ON clients (application_id, last_seen);
        CREATE INDEX clients_by_n_policy ON clients (application_id, n_policy);
        CREATE TABLE applications (application_id BLOB PRIMARY KEY,
            clients INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE activations (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, peer TEXT,
            connection_id INTEGER NOT NULL, protocol INTEGER NOT NULL,
            application_id BLOB NOT NULL, sku_id BLOB NOT NULL, kms_id BLOB NOT NULL,
            cmid BLOB NOT NULL, previous_cmid BLOB NOT NULL, workstation TEXT NOT NULL,
            n_policy INTEGER NOT NULL, client_time INTEGER NOT NULL,
            virtual_machine INTEGER NOT NULL, license_status INTEGER NOT NULL,
            minutes_to_expiry INTEGER NOT NULL, count INTEGER, result INTEGER NOT NULL);
        CREATE INDEX activations_by_time ON activations (time);
        CREATE TABLE epids (csvlk_id BLOB PRIMARY KEY, epid TEXT NOT NULL) WITHOUT ROWID;";

    fn user_version(path: &std::path::Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn sqlite_migrates_a_database_of_the_first_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(SQLITE_V0).unwrap();
        for (n, policy) in [(1u128, 5i64), (2, 25), (3, 5)] {
            raw.execute(
                "INSERT INTO clients VALUES (?1, ?2, ?3, ?4)",
                (
                    app(1).as_bytes().as_slice(),
                    cmid(n).as_bytes().as_slice(),
                    i64::try_from(T0).unwrap(),
                    policy,
                ),
            )
            .unwrap();
        }
        raw.execute(
            "INSERT INTO applications VALUES (?1, 3)",
            [app(1).as_bytes().as_slice()],
        )
        .unwrap();
        raw.execute(
            "INSERT INTO epids VALUES (?1, 'kept')",
            [Uuid::from_u128(1).as_bytes().as_slice()],
        )
        .unwrap();
        drop(raw);
        assert_eq!(user_version(&path), 0);

        let store = SqliteStore::open(&path).unwrap();
        let tally = pollster::block_on(store.record_visit(visit(1, 4, 5, T0 + MINUTE))).unwrap();
        assert_eq!((tally.clients, tally.max_n_policy), (4, 25));
        assert_eq!(
            pollster::block_on(store.host_epid(Uuid::from_u128(1), "new")).unwrap(),
            "kept"
        );
        store.close().unwrap();
        assert_eq!(user_version(&path), 2);
        // Opening again leaves a current file as it is.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 1, 5, T0 + MINUTE))),
            4
        );
    }

    #[test]
    fn sqlite_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        SqliteStore::open(&path).unwrap().close().unwrap();
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 7, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("version 7"), "{err}");
        // Untouched.
        assert_eq!(user_version(&path), 7);
    }

    #[test]
    fn sqlite_keeps_at_most_the_configured_clients_per_application() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::default();
        options.max_clients_per_application = 2;
        let store = SqliteStore::open_with(dir.path().join("cap.sqlite"), options).unwrap();
        // Client 1 is the oldest contact although it is not the first row.
        pollster::block_on(store.record_visit(visit(1, 2, 25, T0 + MINUTE))).unwrap();
        pollster::block_on(store.record_visit(visit(1, 1, 25, T0))).unwrap();
        pollster::block_on(store.record_visit(visit(2, 9, 5, T0))).unwrap();
        let tally = pollster::block_on(store.record_visit(visit(1, 3, 25, T0 + 2 * MINUTE)));
        assert_eq!(tally.unwrap().clients, 2);
        pollster::block_on(store.flush()).unwrap();
        let raw = rusqlite::Connection::open(store.path()).unwrap();
        let mut kept: Vec<Vec<u8>> = raw
            .prepare("SELECT cmid FROM clients WHERE application_id = ?1 ORDER BY cmid")
            .unwrap()
            .query_map([app(1).as_bytes().as_slice()], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![cmid(2).as_bytes().to_vec(), cmid(3).as_bytes().to_vec()]
        );
        // Another application is not touched.
        assert_eq!(pollster::block_on(clients(&store, visit(2, 9, 5, T0))), 1);
    }

    #[test]
    fn sqlite_activation_log_is_capped_in_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::default();
        options.max_log_records = 3;
        let store = SqliteStore::open_with(dir.path().join("log.sqlite"), options).unwrap();
        let records = pollster::block_on(queue_and_flush(&store, 1..=5));
        let kept = pollster::block_on(store.recent_activations(10)).unwrap();
        assert_eq!(
            kept,
            vec![records[4].clone(), records[3].clone(), records[2].clone()]
        );
    }

    #[test]
    fn sqlite_activation_log_stays_capped_after_a_burst_larger_than_a_prune_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::default();
        options.max_log_records = 10;
        let store = SqliteStore::open_with(dir.path().join("burst.sqlite"), options).unwrap();
        pollster::block_on(a_burst_leaves_the_newest_10_records(&store));
    }

    #[test]
    fn sqlite_operations_fail_at_their_deadline_when_the_file_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.sqlite");
        let mut options = SqliteOptions::default();
        options.operation_timeout = std::time::Duration::from_millis(300);
        options.busy_timeout = std::time::Duration::from_secs(3600);
        options.max_queue = 2;
        let store = SqliteStore::open_with(&path, options).unwrap();
        // Another process holds the write lock.
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let pending: Vec<_> = (1..=6u128)
            .map(|n| store.record_visit(visit(1, n, 25, T0)))
            .collect();
        let results: Vec<_> = pending.into_iter().map(pollster::block_on).collect();
        // Each fails within its deadline: timed out, or the lock wait
        // (bounded by the deadline) gave up.
        for result in &results {
            assert!(
                matches!(
                    result,
                    Err(StoreError::TimedOut(_) | StoreError::Unavailable(_))
                ),
                "{results:?}"
            );
        }
        // The queue held two; the writer had one: the rest were refused at
        // once for a full queue.
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::TimedOut(t)) if t.contains("queue is full"))),
            "{results:?}"
        );
        raw.execute_batch("ROLLBACK").unwrap();
        drop(raw);
        // The store recovers once the lock is gone.
        let mut tally = None;
        for _ in 0..100 {
            if let Ok(t) = pollster::block_on(store.record_visit(visit(1, 9, 25, T0))) {
                tally = Some(t);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(tally.unwrap().clients, 1);
    }

    #[test]
    fn sqlite_prunes_aged_clients_in_bounded_batches_behind_the_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aged.sqlite");
        let mut options = SqliteOptions::default();
        options.prune_interval = std::time::Duration::from_secs(3600);
        SqliteStore::open_with(&path, options)
            .unwrap()
            .close()
            .unwrap();
        // 2 500 clients last seen at T0, written straight into the file.
        let mut raw = rusqlite::Connection::open(&path).unwrap();
        let tx = raw.transaction().unwrap();
        for n in 0..2500u128 {
            tx.execute(
                "INSERT INTO clients VALUES (?1, ?2, ?3, 25)",
                (
                    app(1).as_bytes().as_slice(),
                    cmid(n).as_bytes().as_slice(),
                    i64::try_from(T0).unwrap(),
                ),
            )
            .unwrap();
        }
        tx.commit().unwrap();
        let rows = |raw: &rusqlite::Connection| -> i64 {
            raw.query_row("SELECT count(*) FROM clients", [], |row| row.get(0))
                .unwrap()
        };

        // 31 days later they have all aged out: the count says so at once,
        // while the visit deleted only one bounded batch.
        let later = T0 + 31 * DAY;
        let store = SqliteStore::open_with(&path, options).unwrap();
        let tally = pollster::block_on(store.record_visit(visit(1, 9999, 5, later))).unwrap();
        assert_eq!((tally.clients, tally.max_n_policy), (1, 5));
        let statistics =
            pollster::block_on(store.tally(app(1), FileTime::from_ticks(later - WINDOW)));
        assert_eq!(statistics.unwrap().clients, 1);
        assert_eq!(rows(&raw), 2500 - 1000 + 1);
        store.close().unwrap();

        // The rest goes in the background.
        options.prune_interval = std::time::Duration::from_millis(20);
        let store = SqliteStore::open_with(&path, options).unwrap();
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 9998, 5, later))),
            2
        );
        let mut left = rows(&raw);
        for _ in 0..500 {
            if left == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            left = rows(&raw);
        }
        assert_eq!(left, 2);
        assert_eq!(
            pollster::block_on(clients(&store, visit(1, 9997, 5, later))),
            3
        );
    }

    #[test]
    fn a_full_log_queue_drops_records_counted_once_and_still_answers() {
        use kms_activation::host::{KmsHost, KmsHostConfig};

        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::default();
        options.max_log_queue = 0;
        let store = SqliteStore::open_with(dir.path().join("full.sqlite"), options).unwrap();
        let host = pollster::block_on(KmsHost::start(
            KmsHostConfig::default(),
            store,
            FileTime::from_ticks(T0),
            &mut super::host::rng(),
        ))
        .unwrap();
        for client in 1..=2 {
            let event = super::host::request_event(super::host::windows_request(client, T0));
            let decision = pollster::block_on(host.decide(&event));
            assert_eq!(
                decision.reply.unwrap().count,
                u32::try_from(client).unwrap()
            );
        }
        pollster::block_on(host.store().flush()).unwrap();
        assert!(
            pollster::block_on(host.store().recent_activations(10))
                .unwrap()
                .is_empty()
        );
        let statistics = pollster::block_on(host.statistics(FileTime::from_ticks(T0))).unwrap();
        assert_eq!(statistics.dropped_records, 2);
        assert_eq!(statistics.store_errors, 0);
    }

    #[test]
    fn sqlite_an_unbounded_deadline_does_not_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SqliteOptions::default();
        options.operation_timeout = std::time::Duration::MAX;
        options.busy_timeout = std::time::Duration::MAX;
        options.prune_interval = std::time::Duration::MAX;
        let store = SqliteStore::open_with(dir.path().join("max.sqlite"), options).unwrap();
        assert_eq!(pollster::block_on(clients(&store, visit(1, 1, 25, T0))), 1);
        store.close().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_store_can_be_dropped_on_a_runtime() {
        let (_dir, store) = temp_store();
        store.record_visit(visit(1, 1, 25, T0)).await.unwrap();
        store
            .queue_activation(record(T0, 1, true, Some(1)), FileTime::from_ticks(0))
            .unwrap();
        drop(store);
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use std::sync::Arc;

    use kms_activation::host::store::{PostgresOptions, PostgresStore, StoreError};
    use tokio::runtime::Runtime;

    use super::*;

    /// The test database, or `None` (and a note) when it is not configured
    /// outside CI; under `CI` a missing database fails the test.
    pub(crate) fn database(test: &str) -> Option<String> {
        match std::env::var("KMS_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ => {
                // In CI a missing database is a failure, never a silent skip.
                assert!(
                    std::env::var("CI").is_err(),
                    "{test}: KMS_TEST_POSTGRES_URL must be set in CI"
                );
                eprintln!("{test}: skipped, KMS_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }

    pub(crate) fn runtime() -> Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    pub(crate) fn unique_schema() -> String {
        format!(
            "kms_test_{}_{:x}",
            std::process::id(),
            getrandom::u64().unwrap()
        )
    }

    /// Runs `test` with the test database's URL and a schema of its own,
    /// then drops the schema; outside CI, nothing when no database is
    /// configured ([`database`]).
    pub(crate) fn in_fresh_schema(name: &str, test: impl AsyncFnOnce(&str, &str)) {
        let Some(url) = database(name) else {
            return;
        };
        let schema = unique_schema();
        runtime().block_on(async {
            test(&url, &schema).await;
            drop_schema(&url, &schema).await;
        });
    }

    /// `url` with an application name, so an admin can find the sessions.
    pub(crate) fn named(url: &str, name: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}application_name={name}")
    }

    pub(crate) async fn admin(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    pub(crate) async fn drop_schema(url: &str, schema: &str) {
        admin(url)
            .await
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }

    /// Application `application`'s client rows in `schema`, as read from
    /// the table, and its maintained counter.
    async fn rows_and_counter(
        admin: &tokio_postgres::Client,
        schema: &str,
        application: u128,
    ) -> (i64, i64) {
        let row = admin
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {schema}.clients WHERE application_id = $1),
                            (SELECT clients FROM {schema}.applications WHERE application_id = $1)"
                ),
                &[&app(application)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// The version in `schema`'s `kms_schema_version`.
    async fn schema_version(admin: &tokio_postgres::Client, schema: &str) -> i64 {
        admin
            .query_one(
                &format!("SELECT version FROM {schema}.kms_schema_version"),
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn store(url: &str, schema: &str) -> PostgresStore {
        PostgresStore::connect_with(url, PostgresOptions::default().with_schema(schema))
            .await
            .unwrap()
    }

    #[test]
    fn postgres_store_conformance() {
        in_fresh_schema("postgres_store_conformance", async |url, schema| {
            let store = store(url, schema).await;
            conformance(&store).await;
            drop(store);
        });
    }

    /// A renewal within `renewal_granularity` of its stored visit, same N
    /// policy, leaves the row as it was (no write); past it, or with another
    /// N policy, it is written; with granularity zero every renewal is.
    #[test]
    fn postgres_a_renewal_within_the_granularity_writes_nothing() {
        in_fresh_schema(
            "postgres_a_renewal_within_the_granularity_writes_nothing",
            async |url, schema| {
                let raw = admin(url).await;
                let stored = async |client: u128| -> (i64, i64, i64) {
                    let row = raw
                        .query_one(
                            &format!(
                            "SELECT last_seen, n_policy, xmin::text::bigint FROM {schema}.clients
                             WHERE cmid = $1"
                        ),
                            &[&super::cmid(client)],
                        )
                        .await
                        .unwrap();
                    (row.get(0), row.get(1), row.get(2))
                };
                let t0 = i64::try_from(T0).unwrap();
                let store = store(url, schema).await;
                for n in 1..=2 {
                    store.record_visit(visit(1, n, 25, T0)).await.unwrap();
                }
                let (seen, n_policy, version) = stored(1).await;
                assert_eq!((seen, n_policy), (t0, 25));
                let renewed = store.record_visit(visit(1, 1, 25, T0 + 30 * SECOND)).await;
                assert_eq!(renewed.map(|t| (t.clients, t.max_n_policy)), Ok((2, 25)));
                assert_eq!(
                    stored(1).await,
                    (t0, 25, version),
                    "the renewal was written"
                );
                // Past the granularity: written.
                let later = T0 + 2 * MINUTE;
                store.record_visit(visit(1, 1, 25, later)).await.unwrap();
                assert_eq!(stored(1).await.0, i64::try_from(later).unwrap());
                // Within it, but another N policy: written, and counted.
                let tally = store.record_visit(visit(1, 2, 50, T0 + SECOND)).await;
                assert_eq!(tally.map(|t| (t.clients, t.max_n_policy)), Ok((2, 50)));
                assert_eq!(stored(2).await.1, 50);
                drop(store);

                // Granularity zero: even a visit at the stored instant writes.
                let mut options = PostgresOptions::default().with_schema(schema);
                options.renewal_granularity = std::time::Duration::ZERO;
                let store = PostgresStore::connect_with(url, options).await.unwrap();
                let (seen, _, version) = stored(2).await;
                store
                    .record_visit(visit(1, 2, 50, T0 + SECOND))
                    .await
                    .unwrap();
                let (seen_after, _, version_after) = stored(2).await;
                assert_eq!(seen_after, seen);
                assert_ne!(
                    version_after, version,
                    "granularity zero writes every renewal"
                );
                drop(store);
            },
        );
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
        in_fresh_schema("postgres_two_hosts_share_one_count", async |url, schema| {
            // Both start at once: schema creation must not race.
            let (a, b) = tokio::join!(store(url, schema), store(url, schema));
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

    /// The child half of `postgres_successes_survive_a_killed_host`: 64
    /// tasks record visits of distinct clients without end, each printing
    /// `committed N` once `record_visit` succeeded. Does nothing unless the
    /// parent set the variables.
    #[test]
    fn postgres_sigkill_child() {
        let (Ok(url), Ok(schema)) = (
            std::env::var("KMS_PG_SIGKILL_URL"),
            std::env::var("KMS_PG_SIGKILL_SCHEMA"),
        ) else {
            return;
        };
        runtime().block_on(async {
            let store = Arc::new(store(&url, &schema).await);
            let tasks: Vec<_> = (0..64u128)
                .map(|task| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        for i in 0.. {
                            let n = task * 1_000_000 + i;
                            if store.record_visit(visit(1, n, 25, T0)).await.is_ok() {
                                println!("committed {n}");
                            }
                        }
                    })
                })
                .collect();
            // Never reached in the parent's test: it kills us first.
            for task in tasks {
                task.await.unwrap();
            }
        });
    }

    /// A host killed (`SIGKILL`) with batches in flight loses no visit it
    /// reported as recorded, and the count is the client rows, each once.
    #[test]
    fn postgres_successes_survive_a_killed_host() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let Some(url) = database("postgres_successes_survive_a_killed_host") else {
            return;
        };
        let schema = unique_schema();
        let name = format!("kms_sigkill_{}", getrandom::u32().unwrap());
        // The schema exists before the child starts.
        drop(runtime().block_on(store(&url, &schema)));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "stores::postgres::postgres_sigkill_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("KMS_PG_SIGKILL_URL", named(&url, &name))
            .env("KMS_PG_SIGKILL_SCHEMA", &schema)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut committed = std::collections::BTreeSet::new();
        for line in lines.by_ref() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                committed.insert(n.trim().parse::<u128>().unwrap());
                if committed.len() >= 2_000 {
                    break;
                }
            }
        }
        assert!(committed.len() >= 2_000, "the child died first");
        child.kill().unwrap(); // SIGKILL, with visits in flight
        assert!(!child.wait().unwrap().success());
        // What it said before dying, still in the pipe.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("committed ") {
                committed.insert(n.trim().parse::<u128>().unwrap());
            }
        }
        runtime().block_on(async {
            let admin = admin(&url).await;
            // The server finishes the statements the host sent before it
            // died (and commits them): wait for its sessions to end.
            for _ in 0..100 {
                let sessions: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[&name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if sessions == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // The rows and the counter as the killed host left them (opening
            // a store would rebuild the counter), in one snapshot.
            let rows = admin
                .query(
                    &format!(
                        "SELECT c.cmid, a.clients FROM {schema}.clients c
                         JOIN {schema}.applications a USING (application_id)
                         WHERE c.application_id = $1"
                    ),
                    &[&app(1)],
                )
                .await
                .unwrap();
            let stored: std::collections::BTreeSet<Uuid> =
                rows.iter().map(|row| row.get(0)).collect();
            let counter: i64 = rows[0].get(1);
            let lost: Vec<u128> = committed
                .iter()
                .copied()
                .filter(|&n| !stored.contains(&cmid(n)))
                .collect();
            assert!(lost.is_empty(), "reported recorded, then lost: {lost:?}");
            // Batches in flight at the kill may have committed unreported.
            assert!(stored.len() >= committed.len());
            assert_eq!(counter, i64::try_from(stored.len()).unwrap());
            eprintln!(
                "killed with visits in flight: {} reported, {} stored",
                committed.len(),
                stored.len()
            );
            drop_schema(&url, &schema).await;
        });
    }

    /// Host, port, user and database of the test URL.
    pub(crate) fn parts(url: &str) -> (String, u16, String, String) {
        let config: tokio_postgres::Config = url.parse().unwrap();
        #[allow(irrefutable_let_patterns, reason = "Unix sockets exist on Unix only")]
        let tokio_postgres::config::Host::Tcp(host) = config.get_hosts()[0].clone() else {
            panic!("the test database must be reached over TCP");
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let db = config.get_dbname().unwrap_or(&user).to_owned();
        (host, port, user, db)
    }

    #[test]
    fn postgres_errors_name_their_cause_and_hide_the_password() {
        let Some(url) = database("postgres_errors_name_their_cause_and_hide_the_password") else {
            return;
        };
        let (host, port, user, _) = parts(&url);
        let rt = runtime();
        let missing = format!(
            "postgres://{user}:hunter2-secret@{host}:{port}/kms_no_such_db_{}",
            std::process::id()
        );
        let err = rt.block_on(PostgresStore::connect(&missing)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("database does not exist"), "{text}");
        assert!(text.contains("kms_no_such_db_"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(":***@"), "{text}");

        // A port nobody listens on (bound, then released).
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = format!("postgres://kms:hunter2-secret@127.0.0.1:{closed_port}/kms");
        let err = rt.block_on(PostgresStore::connect(&refused)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("connection refused"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// The schema of the first release (version 0, no version table).
    fn postgres_v0(s: &str) -> String {
        format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.clients (application_id uuid NOT NULL, cmid uuid NOT NULL,
                 last_seen bigint NOT NULL, n_policy bigint NOT NULL,
                 PRIMARY KEY (application_id, cmid));
             CREATE INDEX clients_by_last_seen ON {s}.clients (application_id, last_seen);
             CREATE INDEX clients_by_n_policy ON {s}.clients (application_id, n_policy);
             CREATE TABLE {s}.applications (application_id uuid PRIMARY KEY,
                 clients bigint NOT NULL CHECK (clients >= 0));
             CREATE TABLE {s}.activations (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 time bigint NOT NULL, peer text, connection_id bigint NOT NULL,
                 protocol bigint NOT NULL, application_id uuid NOT NULL, sku_id uuid NOT NULL,
                 kms_id uuid NOT NULL, cmid uuid NOT NULL, previous_cmid uuid NOT NULL,
                 workstation text NOT NULL, n_policy bigint NOT NULL,
                 client_time bigint NOT NULL, virtual_machine boolean NOT NULL,
                 license_status bigint NOT NULL, minutes_to_expiry bigint NOT NULL,
                 count bigint, result bigint NOT NULL);
             CREATE INDEX activations_by_time ON {s}.activations (time);
             CREATE TABLE {s}.epids (csvlk_id uuid PRIMARY KEY, epid text NOT NULL);"
        )
    }

    #[test]
    fn postgres_migrates_a_schema_of_the_first_release_and_refuses_a_newer_one() {
        in_fresh_schema(
            "postgres_migrates_a_schema_of_the_first_release",
            async |url, schema| {
                let admin = admin(url).await;
                admin.batch_execute(&postgres_v0(schema)).await.unwrap();
                for (n, policy) in [(1u128, 5i64), (2, 25), (3, 5)] {
                    admin
                        .execute(
                            &format!("INSERT INTO {schema}.clients VALUES ($1, $2, $3, $4)"),
                            &[&app(1), &cmid(n), &i64::try_from(T0).unwrap(), &policy],
                        )
                        .await
                        .unwrap();
                }
                admin
                    .execute(
                        &format!("INSERT INTO {schema}.applications VALUES ($1, 3)"),
                        &[&app(1)],
                    )
                    .await
                    .unwrap();
                let store = store(url, schema).await;
                assert_eq!(schema_version(&admin, schema).await, 3);
                let tally = store
                    .record_visit(visit(1, 4, 5, T0 + MINUTE))
                    .await
                    .unwrap();
                assert_eq!((tally.clients, tally.max_n_policy), (4, 25));
                drop(store);

                admin
                    .execute(
                        &format!("UPDATE {schema}.kms_schema_version SET version = 9"),
                        &[],
                    )
                    .await
                    .unwrap();
                let err = PostgresStore::connect_with(
                    url,
                    PostgresOptions::default().with_schema(schema),
                )
                .await
                .unwrap_err();
                assert!(
                    matches!(err, StoreError::SchemaTooNew { found: 9, .. }),
                    "{err:?}"
                );
            },
        );
    }

    /// Schema version 2 as the previous release wrote it, in `schema`.
    fn postgres_v2(schema: &str) -> String {
        include_str!("../data/postgres-schema-v2.sql").replace("kms_schema_v2", schema)
    }

    #[test]
    fn postgres_migrates_schema_v2_keeping_the_counts() {
        in_fresh_schema(
            "postgres_migrates_schema_v2_keeping_the_counts",
            async |url, schema| {
                let admin = admin(url).await;
                admin.batch_execute(&postgres_v2(schema)).await.unwrap();
                // Application 1: clients 1..=3 (N policies 5, 25, 5); application
                // 2: client 9; client 8 of application 1 aged out of the window.
                let rows = [
                    (1u128, 1u128, 5i64, T0),
                    (1, 2, 25, T0),
                    (1, 3, 5, T0),
                    (1, 8, 50, T0 - 2 * WINDOW),
                    (2, 9, 5, T0),
                ];
                for (application, client, policy, seen) in rows {
                    admin
                        .execute(
                            &format!("INSERT INTO {schema}.clients VALUES ($1, $2, $3, $4)"),
                            &[
                                &app(application),
                                &cmid(client),
                                &i64::try_from(seen).unwrap(),
                                &policy,
                            ],
                        )
                        .await
                        .unwrap();
                }
                for (application, counted) in [(1u128, 4i64), (2, 1)] {
                    admin
                        .execute(
                            &format!("INSERT INTO {schema}.applications VALUES ($1, $2)"),
                            &[&app(application), &counted],
                        )
                        .await
                        .unwrap();
                }

                let store = store(url, schema).await;
                assert_eq!(schema_version(&admin, schema).await, 3);
                // The counts as the previous release left them.
                let window_start = FileTime::from_ticks(T0 + MINUTE - WINDOW);
                let tally = store.tally(app(1), window_start).await.unwrap();
                assert_eq!((tally.clients, tally.max_n_policy), (3, 25));
                assert_eq!(store.tally(app(2), window_start).await.unwrap().clients, 1);
                // New visits count right: a repeat, a new client, the aged one
                // back (counted again), each once.
                assert_eq!(clients(&store, visit(1, 2, 25, T0 + MINUTE)).await, 3);
                assert_eq!(clients(&store, visit(1, 4, 25, T0 + MINUTE)).await, 4);
                assert_eq!(clients(&store, visit(1, 8, 25, T0 + MINUTE)).await, 5);
                assert_eq!(clients(&store, visit(2, 10, 25, T0 + MINUTE)).await, 2);
                let stored: i64 = admin
                    .query_one(
                        &format!("SELECT count(*) FROM {schema}.clients WHERE application_id = $1"),
                        &[&app(1)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(stored, 5);
                drop(store);

                // A second host opening the migrated schema finds it current.
                let again = self::store(url, schema).await;
                assert_eq!(clients(&again, visit(1, 1, 5, T0 + 2 * MINUTE)).await, 5);
                drop(again);
            },
        );
    }

    #[test]
    fn postgres_two_hosts_count_64_clients_visiting_both_at_once() {
        in_fresh_schema(
            "postgres_two_hosts_count_64_clients_visiting_both_at_once",
            async |url, schema| {
                let (a, b) = tokio::join!(store(url, schema), store(url, schema));
                let (a, b) = (Arc::new(a), Arc::new(b));
                // Client k reports N policy k: each visits host A and host B at
                // the same time, all 64 clients at once.
                let mut tasks = Vec::new();
                for k in 1..=64u128 {
                    let (a, b) = (Arc::clone(&a), Arc::clone(&b));
                    tasks.push(tokio::spawn(async move {
                        let n_policy = u32::try_from(k).unwrap();
                        let (on_a, on_b) = tokio::join!(
                            a.record_visit(visit(4, k, n_policy, T0)),
                            b.record_visit(visit(4, k, n_policy, T0)),
                        );
                        (n_policy, on_a.unwrap(), on_b.unwrap())
                    }));
                }
                let mut first_counts = Vec::new();
                for task in tasks {
                    let (n_policy, on_a, on_b) = task.await.unwrap();
                    for tally in [on_a, on_b] {
                        assert!(tally.admitted, "{tally:?}");
                        assert!((1..=64).contains(&tally.clients), "{tally:?}");
                        // Its own policy is counted when its tally is taken.
                        assert!(tally.max_n_policy >= n_policy, "{n_policy}: {tally:?}");
                        assert!(tally.max_n_policy <= 64, "{tally:?}");
                    }
                    // The first of its two visits admitted it, the second
                    // found it: admissions are serialized, so the first
                    // visits' counts are 1, 2, …, 64, each once.
                    first_counts.push(on_a.clients.min(on_b.clients));
                }
                first_counts.sort_unstable();
                assert_eq!(first_counts, (1..=64).collect::<Vec<u64>>());
                for host in [&a, &b] {
                    let tally = host.tally(app(4), FileTime::from_ticks(0)).await.unwrap();
                    assert_eq!((tally.clients, tally.max_n_policy), (64, 64));
                }
                assert_eq!(
                    rows_and_counter(&admin(url).await, schema, 4).await,
                    (64, 64)
                );
                drop((a, b));
            },
        );
    }

    /// Visits sent at once share batches, so one batch holds a client's
    /// repeated visits, clients beyond a capacity and evictions: counted
    /// exactly as if they had come one after the other.
    #[test]
    fn postgres_a_burst_with_repeats_a_capacity_and_evictions_counts_exactly() {
        in_fresh_schema(
            "postgres_a_burst_with_repeats_a_capacity_and_evictions",
            async |url, schema| {
                let mut options = PostgresOptions::default().with_schema(schema);
                options.max_clients_per_application = 10;
                let store = Arc::new(PostgresStore::connect_with(url, options).await.unwrap());
                // Application 5: 40 clients, each three times at once, at most
                // 8 counted. Application 6: 30 clients, at most 10 kept.
                let mut tasks = Vec::new();
                for round in 0..3u64 {
                    for k in 1..=40u128 {
                        let store = Arc::clone(&store);
                        tasks.push(tokio::spawn(async move {
                            let n_policy = u32::try_from(k).unwrap();
                            let at = T0 + round * SECOND;
                            let tally = store
                                .record_visit(capped(visit(5, k, n_policy, at), 8))
                                .await
                                .unwrap();
                            (5, k, tally)
                        }));
                    }
                    for k in 1..=30u128 {
                        let store = Arc::clone(&store);
                        tasks.push(tokio::spawn(async move {
                            let at = T0 + round * SECOND;
                            (6, k, store.record_visit(visit(6, k, 5, at)).await.unwrap())
                        }));
                    }
                }
                let mut admitted = std::collections::BTreeMap::<u128, Vec<bool>>::new();
                for task in tasks {
                    let (application, k, tally) = task.await.unwrap();
                    if application == 5 {
                        assert!(tally.clients <= 8, "{tally:?}");
                        admitted.entry(k).or_default().push(tally.admitted);
                    } else {
                        assert!(tally.admitted, "{tally:?}");
                        assert!((1..=10).contains(&tally.clients), "{tally:?}");
                        assert_eq!(tally.max_n_policy, 5);
                    }
                }
                // A client is admitted on every visit or on none.
                let counted: Vec<u128> = admitted
                    .iter()
                    .filter(|(_, visits)| {
                        assert_eq!(visits.len(), 3);
                        assert!(visits.iter().all(|&a| a == visits[0]), "{visits:?}");
                        visits[0]
                    })
                    .map(|(k, _)| *k)
                    .collect();
                assert_eq!(counted.len(), 8, "{counted:?}");
                let largest = u32::try_from(*counted.iter().max().unwrap()).unwrap();
                let tally = store.tally(app(5), FileTime::from_ticks(0)).await.unwrap();
                assert_eq!((tally.clients, tally.max_n_policy), (8, largest));
                let tally = store.tally(app(6), FileTime::from_ticks(0)).await.unwrap();
                assert_eq!(tally.clients, 10);
                let db = admin(url).await;
                for (application, expected) in [(5, 8), (6, 10)] {
                    assert_eq!(
                        rows_and_counter(&db, schema, application).await,
                        (expected, expected),
                        "application {application}"
                    );
                }
                drop(store);
            },
        );
    }

    #[test]
    fn postgres_counters_are_checked_and_rebuilt_on_connect() {
        in_fresh_schema(
            "postgres_counters_are_checked_and_rebuilt_on_connect",
            async |url, schema| {
                let first = store(url, schema).await;
                for n in 1..=3 {
                    first.record_visit(visit(1, n, 25, T0)).await.unwrap();
                }
                drop(first);
                let admin = admin(url).await;
                admin
                    .execute(
                        &format!("UPDATE {schema}.applications SET clients = 40"),
                        &[],
                    )
                    .await
                    .unwrap();
                let store = store(url, schema).await;
                let counter: i64 = admin
                    .query_one(&format!("SELECT clients FROM {schema}.applications"), &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(counter, 3);
                assert_eq!(clients(&store, visit(1, 4, 25, T0 + MINUTE)).await, 4);
                drop(store);
            },
        );
    }

    #[test]
    fn postgres_activation_log_stays_capped_after_a_burst_larger_than_a_prune_batch() {
        in_fresh_schema("postgres_log_burst", async |url, schema| {
            let mut options = PostgresOptions::default().with_schema(schema);
            options.max_log_records = 10;
            let store = PostgresStore::connect_with(url, options).await.unwrap();
            a_burst_leaves_the_newest_10_records(&store).await;
            drop(store);
        });
    }

    #[test]
    fn postgres_bounds_clients_per_application_and_log_rows() {
        in_fresh_schema(
            "postgres_bounds_clients_per_application_and_log_rows",
            async |url, schema| {
                let mut options = PostgresOptions::default().with_schema(schema);
                options.max_clients_per_application = 2;
                options.max_log_records = 3;
                let store = PostgresStore::connect_with(url, options).await.unwrap();
                // Client 1 is the oldest contact although it came second.
                store
                    .record_visit(visit(1, 2, 25, T0 + MINUTE))
                    .await
                    .unwrap();
                store.record_visit(visit(1, 1, 25, T0)).await.unwrap();
                store.record_visit(visit(2, 9, 5, T0)).await.unwrap();
                let tally = store
                    .record_visit(visit(1, 3, 25, T0 + 2 * MINUTE))
                    .await
                    .unwrap();
                assert_eq!(tally.clients, 2);
                let admin = admin(url).await;
                let kept: Vec<Uuid> = admin
                .query(
                    &format!(
                        "SELECT cmid FROM {schema}.clients WHERE application_id = $1 ORDER BY cmid"
                    ),
                    &[&app(1)],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
                assert_eq!(kept, vec![cmid(2), cmid(3)]);
                assert_eq!(clients(&store, visit(2, 9, 5, T0)).await, 1);

                let records = queue_and_flush(&store, 1..=5).await;
                assert_eq!(
                    store.recent_activations(10).await.unwrap(),
                    vec![records[4].clone(), records[3].clone(), records[2].clone()]
                );
                drop(store);
            },
        );
    }

    /// A TCP proxy to `target` that stops forwarding while paused.
    async fn pausable_proxy(
        target: String,
    ) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        async fn pump(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            paused: Arc<AtomicBool>,
        ) {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                while paused.load(Ordering::SeqCst) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&paused);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, Arc::clone(&flag)));
                tokio::spawn(pump(server_read, client_write, Arc::clone(&flag)));
            }
        });
        (addr, paused)
    }

    #[test]
    fn postgres_hung_behind_a_paused_proxy_fails_at_the_deadline_and_the_host_refuses() {
        use std::sync::atomic::Ordering;

        use kms_activation::host::{KmsHost, KmsHostConfig};

        let Some(url) = database("postgres_hung_behind_a_paused_proxy") else {
            return;
        };
        let (host, port, user, db) = parts(&url);
        let schema = unique_schema();
        runtime().block_on(async {
            let (proxy, paused) = pausable_proxy(format!("{host}:{port}")).await;
            let proxied = format!("postgres://{user}@{proxy}/{db}");
            let options = PostgresOptions::default()
                .with_schema(&schema)
                .with_operation_timeout(std::time::Duration::from_millis(800));
            let store = Arc::new(
                PostgresStore::connect_with(&proxied, options)
                    .await
                    .unwrap(),
            );
            let kms = KmsHost::start(
                KmsHostConfig::default(),
                Arc::clone(&store),
                FileTime::from_ticks(T0),
                &mut super::host::rng(),
            )
            .await
            .unwrap();
            assert_eq!(clients(&*store, visit(1, 1, 25, T0)).await, 1);

            paused.store(true, Ordering::SeqCst);
            // Generous outer bound: only a hang trips it.
            let guard = std::time::Duration::from_secs(30);
            let result = tokio::time::timeout(guard, store.record_visit(visit(1, 2, 25, T0)))
                .await
                .expect("the store operation hung past its deadline");
            assert!(matches!(result, Err(StoreError::TimedOut(_))), "{result:?}");
            let event = super::host::request_event(super::host::windows_request(7, T0));
            let decision = tokio::time::timeout(guard, kms.decide(&event))
                .await
                .expect("the host hung on the store");
            assert_eq!(decision.reply, Err(HResult::BINDING_SERVICE_NOT_ENABLED));
            let statistics = kms.statistics(FileTime::from_ticks(T0)).await;
            assert!(statistics.is_err());

            paused.store(false, Ordering::SeqCst);
            // Once the database answers again, so does the store.
            let mut tally = None;
            for _ in 0..50 {
                if let Ok(t) = store.record_visit(visit(1, 3, 25, T0)).await {
                    tally = Some(t);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            // Client 2's batch is one statement that commits by itself: if
            // its bytes were in the proxy's buffer, it ran on resuming, after
            // the store had given up, and may commit at any time after. Refused,
            // maybe counted, never twice: once nothing is left in flight the
            // store's tally, the counter and the client rows agree (the rows
            // and the counter read in one snapshot).
            let db = admin(&url).await;
            let snapshot = format!(
                "SELECT coalesce(array_agg(cmid), '{{}}'),
                        (SELECT clients FROM {schema}.applications WHERE application_id = $1)
                 FROM {schema}.clients WHERE application_id = $1"
            );
            let mut settled = None;
            for _ in 0..50 {
                let row = db.query_one(&snapshot, &[&app(1)]).await.unwrap();
                let rows: Vec<Uuid> = row.get(0);
                let counter = u64::try_from(row.get::<_, i64>(1)).unwrap();
                let now = store
                    .tally(app(1), FileTime::from_ticks(T0 - WINDOW))
                    .await
                    .unwrap();
                settled = Some((rows, counter, now.clients));
                if matches!(&settled, Some((rows, counter, now))
                    if rows.len() as u64 == *now && *counter == *now)
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let (rows, counter, now) = settled.unwrap();
            assert_eq!((rows.len() as u64, counter), (now, now), "{rows:?}");
            assert!(
                rows.contains(&cmid(1)) && rows.contains(&cmid(3)),
                "{rows:?}"
            );
            assert!(
                rows.iter().all(|c| [cmid(1), cmid(2), cmid(3)].contains(c)),
                "{rows:?}"
            );
            // Client 3's tally counts what was committed before its batch
            // (client 2's may come after).
            let tally = tally.unwrap().clients;
            assert!(tally == 2 || tally == 3, "{tally}");
            let statistics = kms.statistics(FileTime::from_ticks(T0)).await.unwrap();
            assert!(statistics.store_errors >= 2, "{statistics:?}");
            drop(kms);
            drop(store);
            drop_schema(&url, &schema).await;
        });
    }

    #[test]
    fn postgres_unbounded_timeouts_do_not_overflow() {
        in_fresh_schema(
            "postgres_unbounded_timeouts_do_not_overflow",
            async |url, schema| {
                let mut options = PostgresOptions::default()
                    .with_schema(schema)
                    .with_operation_timeout(std::time::Duration::MAX);
                options.startup_timeout = std::time::Duration::MAX;
                options.prune_interval = std::time::Duration::MAX;
                let store = PostgresStore::connect_with(url, options).await.unwrap();
                assert_eq!(clients(&store, visit(1, 1, 25, T0)).await, 1);
                store.flush().await.unwrap();
                drop(store);
            },
        );
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
        in_fresh_schema(
            "postgres_bad_rows_are_backend_errors",
            async |url, schema| {
                let store = store(url, schema).await;
                store
                    .append_activation(&record(T0, 1, true, Some(1)), FileTime::from_ticks(0))
                    .await
                    .unwrap();
                let admin = admin(url).await;
                // A license status past u32, then a negative time.
                for corruption in [
                    "license_status = 4294967296",
                    "license_status = 1, time = -5",
                ] {
                    admin
                        .batch_execute(&format!("UPDATE {schema}.activations SET {corruption}"))
                        .await
                        .unwrap();
                    let err = store.recent_activations(1).await.unwrap_err();
                    assert!(
                        matches!(err, StoreError::Backend(_)),
                        "{corruption}: {err:?}"
                    );
                }
                drop(store);
            },
        );
    }
}

/// The host on top of a store: the log behind the answer, store failures
/// counted.
mod host {
    use std::future::Future;
    use std::sync::mpsc;

    use kms_activation::client::{ClientConfig, ClientConnection};
    use kms_activation::host::store::StoreError;
    use kms_activation::host::{
        HostConfig, HostConnection, HostEvent, KmsHost, KmsHostConfig, RequestEvent,
    };
    use kms_activation::{ScriptedRandom, product};

    use super::*;

    pub(super) fn rng() -> ScriptedRandom {
        ScriptedRandom::new((0..=255u8).cycle().take(8192).collect::<Vec<_>>())
    }

    /// A Windows 10 Enterprise request (client KMS ID, N policy 25).
    pub(super) fn windows_request(client: u128, at: u64) -> RequestBody {
        let windows = product::applications()
            .iter()
            .find(|a| a.name() == "Windows")
            .unwrap()
            .id();
        RequestBody {
            version: Version::V6,
            vm_info: 0,
            license_status: LicenseStatus::OobGrace,
            binding_expiration: 43_200,
            application_id: windows,
            sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
            kms_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
            cmid: cmid(client),
            previous_cmid: Uuid::nil(),
            n_policy: 25,
            client_time: FileTime::from_ticks(at),
            workstation: format!("pc{client}.example.org"),
        }
    }

    /// The request event a host engine reports for `body` sent by a real
    /// client engine.
    pub(super) fn request_event(body: RequestBody) -> RequestEvent {
        let mut rng = rng();
        let mut client = ClientConnection::new(&ClientConfig::default());
        client.send_request(body, &mut rng).unwrap();
        let mut conn = HostConnection::new(&HostConfig::default());
        for _ in 0..4 {
            let bytes = client.transmit().to_vec();
            client.advance_transmit(bytes.len());
            conn.handle_input(FileTime::from_ticks(T0), &bytes, &mut rng)
                .unwrap();
            if let Some(event) = conn.poll_event() {
                let HostEvent::Request(request) = event else {
                    panic!("not a request: {event:?}");
                };
                return request;
            }
            let back = conn.transmit().to_vec();
            conn.advance_transmit(back.len());
            client.handle_input(&back, &mut rng).unwrap();
        }
        panic!("no event");
    }

    /// Counts in memory; the log never completes an append, or visits fail
    /// with the given cause.
    struct FaultyStore {
        counts: MemoryStore,
        fail_visits: Option<&'static str>,
    }

    /// The cause of the rate-limit test's failures (its own, to find its
    /// lines among other tests').
    const RATE_LIMITED_CAUSE: &str = "database on fire (rate-limit test)";

    impl CountStore for FaultyStore {
        fn record_visit(
            &self,
            visit: Visit,
        ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
            let result = if let Some(cause) = self.fail_visits {
                Err(StoreError::Unavailable(cause.into()))
            } else {
                pollster::block_on(self.counts.record_visit(visit))
            };
            std::future::ready(result)
        }

        fn tally(
            &self,
            application_id: Uuid,
            window_start: FileTime,
        ) -> impl Future<Output = Result<Tally, StoreError>> + Send {
            self.counts.tally(application_id, window_start)
        }

        fn append_activation(
            &self,
            _: &ActivationRecord,
            _: FileTime,
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            std::future::pending()
        }

        fn recent_activations(
            &self,
            limit: usize,
        ) -> impl Future<Output = Result<Vec<ActivationRecord>, StoreError>> + Send {
            self.counts.recent_activations(limit)
        }

        fn host_epid(
            &self,
            csvlk_id: Uuid,
            candidate: &str,
        ) -> impl Future<Output = Result<String, StoreError>> + Send {
            self.counts.host_epid(csvlk_id, candidate)
        }

        fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
            std::future::ready(Ok(()))
        }
    }

    fn faulty_host(fail_visits: Option<&'static str>) -> KmsHost<FaultyStore> {
        let store = FaultyStore {
            counts: MemoryStore::default(),
            fail_visits,
        };
        pollster::block_on(KmsHost::start(
            KmsHostConfig::default(),
            store,
            FileTime::from_ticks(T0),
            &mut rng(),
        ))
        .unwrap()
    }

    #[test]
    fn the_answer_does_not_wait_for_the_activation_log() {
        let host = faulty_host(None);
        let event = request_event(windows_request(1, T0));
        let (done, decided) = mpsc::channel();
        std::thread::spawn(move || {
            let decision = pollster::block_on(host.decide(&event));
            let statistics = pollster::block_on(host.statistics(FileTime::from_ticks(T0)));
            let _ = done.send((decision, statistics));
        });
        // Generous: only a host that waits on the never-ending append
        // misses it.
        let (decision, statistics) = decided
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the host waited for the activation log");
        assert_eq!(decision.reply.unwrap().count, 1);
        let statistics = statistics.unwrap();
        // The record could not be stored at once: dropped and counted.
        assert_eq!(statistics.dropped_records, 1);
        assert_eq!(statistics.store_errors, 0);
    }

    #[test]
    fn store_failures_are_refused_and_counted() {
        let host = faulty_host(Some("database on fire"));
        for client in 1..=3 {
            let event = request_event(windows_request(client, T0));
            let decision = pollster::block_on(host.decide(&event));
            assert_eq!(decision.reply, Err(HResult::BINDING_SERVICE_NOT_ENABLED));
        }
        let statistics = pollster::block_on(host.statistics(FileTime::from_ticks(T0))).unwrap();
        assert_eq!(statistics.store_errors, 3);
    }

    #[test]
    fn store_failures_are_logged_at_warn_with_their_cause_and_rate_limited() {
        let log = crate::support::traced();
        let host = faulty_host(Some(RATE_LIMITED_CAUSE));
        for client in 1..=200 {
            let event = request_event(windows_request(client, T0));
            let decision = pollster::block_on(host.decide(&event));
            assert_eq!(decision.reply, Err(HResult::BINDING_SERVICE_NOT_ENABLED));
        }
        let warnings = log.events(|event| {
            event.level == tracing::Level::WARN && event.mentions(RATE_LIMITED_CAUSE)
        });
        // Every failure is counted, but a burst writes a bounded number of
        // lines (200 failures in well under a minute).
        assert!(!warnings.is_empty());
        assert!(
            warnings.len() <= 20,
            "{} lines: {warnings:?}",
            warnings.len()
        );
        assert!(warnings[0].mentions("recording a visit"), "{warnings:?}");
        let statistics = pollster::block_on(host.statistics(FileTime::from_ticks(T0))).unwrap();
        assert_eq!(statistics.store_errors, 200);
    }
}
