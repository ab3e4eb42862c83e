//! The clients and activation-log queries (filters, paging, newest first):
//! one set of expectations, written out by hand, run on every store.
//!
//! PostgreSQL needs `KMS_TEST_POSTGRES_URL`; without it that case prints
//! that it was skipped. It uses a schema of its own and drops it.

use std::net::SocketAddr;

use kms_activation::host::ActivationRecord;
use kms_activation::host::store::{CountStore, LogQuery, MemoryStore};
use kms_activation::message::RequestBody;
use kms_activation::{FileTime, HResult, LicenseStatus, Uuid, Version};

const MINUTE: u64 = 600_000_000;
const T0: u64 = 134_397_882_570_000_000;

const APP_A: Uuid = Uuid::from_u128(0x55c9_2734_d682_4d71_983e_d6ec_3f16_059f);
const APP_B: Uuid = Uuid::from_u128(0x0ff1_ce15_a989_479d_af46_f275_c636_4663);
const SKU_1: Uuid = Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300);
const SKU_2: Uuid = Uuid::from_u128(0x2de6_7392_b7a7_462a_b1ca_108d_d189_f588);
const SKU_3: Uuid = Uuid::from_u128(0x8521_2e11_9e0e_4b26_8c77_7d4e_6b5b_6b1f);

fn cmid(n: u128) -> Uuid {
    Uuid::from_u128(0xc1c1_0000_0000_0000_0000_0000_0000_0000 | n)
}

/// (minute, application, client, SKU, peer, answered).
type Row = (u64, Uuid, u128, Uuid, Option<&'static str>, bool);

/// The log written, oldest first.
fn records() -> Vec<ActivationRecord> {
    let rows: [Row; 6] = [
        (1, APP_A, 1, SKU_1, Some("10.0.0.1:50001"), true),
        (2, APP_A, 2, SKU_2, Some("10.0.1.5:50002"), true),
        (3, APP_B, 1, SKU_3, Some("[2001:db8::7]:50003"), true),
        (4, APP_A, 1, SKU_1, Some("[::ffff:10.0.0.9]:50004"), true),
        (5, APP_A, 3, SKU_2, None, false),
        (6, APP_A, 2, SKU_1, Some("192.0.2.1:50006"), true),
    ];
    rows.iter()
        .map(|&(minute, application, client, sku, peer, answered)| {
            let time = T0 + minute * MINUTE;
            let request = RequestBody {
                version: Version::V6,
                vm_info: 0,
                license_status: LicenseStatus::OobGrace,
                binding_expiration: 43_200 - u32::try_from(minute).unwrap(),
                application_id: application,
                sku_id: sku,
                kms_id: Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148),
                cmid: cmid(client),
                previous_cmid: Uuid::nil(),
                n_policy: 25,
                client_time: FileTime::from_ticks(time),
                workstation: format!("pc{client}.example.org"),
            };
            let peer = peer.map(|p| p.parse::<SocketAddr>().unwrap());
            let (count, result) = if answered {
                (Some(50), HResult::S_OK)
            } else {
                (None, HResult::NOT_ENOUGH_COUNT)
            };
            ActivationRecord::new(
                FileTime::from_ticks(time),
                peer,
                minute,
                &request,
                count,
                result,
            )
        })
        .collect()
}

fn query(limit: usize) -> LogQuery {
    LogQuery::new(limit)
}

/// The records' indexes in [`records`], as the log query returned them.
async fn log_indexes<S: CountStore>(store: &S, q: LogQuery) -> (Vec<usize>, Option<u64>) {
    let all = records();
    let page = store.activations(q).await.unwrap();
    let indexes = page
        .items
        .iter()
        .map(|entry| all.iter().position(|r| *r == entry.record).unwrap())
        .collect();
    (indexes, page.next)
}

/// (application, client, first minute, requests, index of the last record).
type ClientRow = (Uuid, u128, u64, u64, usize);

async fn client_rows<S: CountStore>(store: &S, q: LogQuery) -> (Vec<ClientRow>, Option<u64>) {
    let all = records();
    let page = store.clients(q).await.unwrap();
    let rows = page
        .items
        .iter()
        .map(|entry| {
            let client = entry.last.cmid.as_u128() & 0xffff;
            let first = (entry.first_seen.ticks() - T0) / MINUTE;
            let last = all.iter().position(|r| *r == entry.last).unwrap();
            (
                entry.last.application_id,
                client,
                first,
                entry.requests,
                last,
            )
        })
        .collect();
    (rows, page.next)
}

/// The expectations every store meets. `store` must be empty.
async fn queries<S: CountStore>(store: &S) {
    for record in records() {
        store
            .queue_activation(record, FileTime::from_ticks(0))
            .unwrap();
    }
    store.flush().await.unwrap();

    // The log, newest first, and each filter.
    assert_eq!(log_indexes(store, query(10)).await.0, [5, 4, 3, 2, 1, 0]);
    let mut q = query(10);
    q.application = Some(APP_A);
    assert_eq!(log_indexes(store, q).await.0, [5, 4, 3, 1, 0]);
    let mut q = query(10);
    q.product = Some(SKU_1);
    assert_eq!(log_indexes(store, q).await.0, [5, 3, 0]);
    let mut q = query(10);
    q.address = Some("10.0.0.0/16".parse().unwrap());
    assert_eq!(
        log_indexes(store, q).await.0,
        [3, 1, 0],
        "IPv4-mapped included"
    );
    let mut q = query(10);
    q.address = Some("2001:db8::/32".parse().unwrap());
    assert_eq!(log_indexes(store, q).await.0, [2]);
    let mut q = query(10);
    q.address = Some("10.0.0.9/32".parse().unwrap());
    assert_eq!(log_indexes(store, q).await.0, [3]);
    let mut q = query(10);
    q.since = Some(FileTime::from_ticks(T0 + 4 * MINUTE));
    assert_eq!(log_indexes(store, q).await.0, [5, 4, 3], "at or after");
    let mut q = query(10);
    q.application = Some(APP_A);
    q.product = Some(SKU_2);
    assert_eq!(log_indexes(store, q).await.0, [4, 1]);

    // Paging: pages of 2 follow each other without gap or overlap.
    let mut seen = Vec::new();
    let mut q = query(2);
    let mut pages = 0;
    loop {
        let (indexes, next) = log_indexes(store, q).await;
        seen.extend(indexes);
        pages += 1;
        match next {
            Some(cursor) => q.before = Some(cursor),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, [5, 4, 3, 2, 1, 0]);
    // Filters and paging together.
    let mut q = query(1);
    q.product = Some(SKU_1);
    let (first, next) = log_indexes(store, q).await;
    assert_eq!(first, [5]);
    q.before = next;
    let (second, next) = log_indexes(store, q).await;
    assert_eq!(second, [3]);
    q.before = next;
    assert_eq!(log_indexes(store, q).await.0, [0]);

    // The clients: one row per (application, CMID), from its newest record.
    let all = [
        (APP_A, 2, 2, 2, 5),
        (APP_A, 3, 5, 1, 4),
        (APP_A, 1, 1, 2, 3),
        (APP_B, 1, 3, 1, 2),
    ];
    assert_eq!(client_rows(store, query(10)).await.0, all);
    let mut q = query(10);
    q.address = Some("10.0.0.0/16".parse().unwrap());
    assert_eq!(
        client_rows(store, q).await.0,
        [all[2]],
        "by the newest record's address"
    );
    let mut q = query(10);
    q.product = Some(SKU_1);
    assert_eq!(client_rows(store, q).await.0, [all[0], all[2]]);
    let mut q = query(10);
    q.since = Some(FileTime::from_ticks(T0 + 5 * MINUTE));
    assert_eq!(client_rows(store, q).await.0, [all[0], all[1]]);
    let mut q = query(10);
    q.application = Some(APP_B);
    assert_eq!(client_rows(store, q).await.0, [all[3]]);
    let (page, next) = client_rows(store, query(2)).await;
    assert_eq!(page, [all[0], all[1]]);
    let mut q = query(2);
    q.before = next;
    let (page, next) = client_rows(store, q).await;
    assert_eq!(page, [all[2], all[3]]);
    q.before = next;
    let (page, next) = client_rows(store, q).await;
    assert_eq!((page, next), (vec![], None));
}

#[test]
fn memory_store_queries() {
    pollster::block_on(queries(&MemoryStore::default()));
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_store_queries() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        kms_activation::host::store::SqliteStore::open(dir.path().join("q.sqlite")).unwrap();
    pollster::block_on(queries(&store));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_store_queries() {
    use kms_activation::host::store::{PostgresOptions, PostgresStore};
    let url = match std::env::var("KMS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("postgres_store_queries: skipped, KMS_TEST_POSTGRES_URL is not set");
            return;
        }
    };
    let schema = format!("kms_admin_q_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store =
            PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema))
                .await
                .unwrap();
        queries(&store).await;
        drop(store);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    });
}
