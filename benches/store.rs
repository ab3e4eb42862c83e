//! Host decisions per second: `CountStore::record_visit` on the memory,
//! SQLite and PostgreSQL stores, one visit at a time with 10 000 and
//! 1 000 000 known CMIDs, and 64 visits in flight at once (where group
//! commit shows); and whole `KmsHost::decide` calls (key lookup, count,
//! activation log), 64 in flight, on each store; and the activation log
//! alone, 4096 records per flush, of one CMID and of 100 000.
//!
//! Run: `cargo bench --bench store --all-features` (PostgreSQL only with
//! `KMS_TEST_POSTGRES_URL` set). The 1 000 000-client pre-load runs only
//! under `cargo bench` (the binary got `--bench`), never under
//! `cargo test --benches`, which runs every bench once with 10 000 clients.
//! SQLite files live under Cargo's target temporary directory (a real
//! disk, so `fsync` costs what it costs). Figures live in `benches/README.md`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "a benchmark: failures should stop it loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kms_activation::dcerpc::Ndr;
use kms_activation::host::store::{
    CountStore, MemoryStore, PostgresOptions, PostgresStore, SqliteOptions, SqliteStore,
    SqliteSync, Visit,
};
use kms_activation::host::{
    ActivationRecord, KmsHost, KmsHostConfig, RequestContext, RequestEvent,
};
use kms_activation::message::{RequestBody, Version};
use kms_activation::{FileTime, HResult, LicenseStatus, ScriptedRandom, Uuid};
use tokio::runtime::Runtime;

const DAY: u64 = 86_400 * 10_000_000;
const T0: u64 = 134_397_882_570_000_000;
const APP: u128 = 0x55c9_2734_d682_4d71_983e_d6ec_3f16_059f;
const IN_FLIGHT: usize = 64;

fn cmid(n: u64) -> Uuid {
    Uuid::from_u128(0xc000_0000_0000_0000_0000_0000_0000_0000 | u128::from(n))
}

fn visit(client: u64, at: u64) -> Visit {
    Visit::new(
        Uuid::from_u128(APP),
        cmid(client),
        25,
        FileTime::from_ticks(at),
        FileTime::from_ticks(at - 30 * DAY),
    )
}

/// The clients visiting, as a host sees them: nine visits in ten from a
/// known CMID (renewals), one from a new one.
struct Mix {
    known: u64,
    next_new: u64,
    state: u64,
}

impl Mix {
    fn new(known: u64) -> Self {
        Self {
            known,
            next_new: known + 1,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next(&mut self) -> Visit {
        // xorshift64: cheap and deterministic.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let client = if self.state.is_multiple_of(10) {
            self.next_new += 1;
            self.next_new
        } else {
            1 + self.state / 10 % self.known
        };
        visit(client, T0 + 10_000_000)
    }
}

/// 1 000 000 only under `cargo bench`.
fn sizes() -> Vec<u64> {
    if std::env::args().any(|a| a == "--bench") {
        vec![10_000, 1_000_000]
    } else {
        vec![10_000]
    }
}

/// `synchronous=NORMAL`: no `fsync` per commit (WAL, `sqlite:FILE?sync=normal`).
fn sync_normal() -> SqliteOptions {
    with_sync(SqliteOptions::default(), SqliteSync::Normal)
}

fn with_sync(mut options: SqliteOptions, sync: SqliteSync) -> SqliteOptions {
    options.synchronous = sync;
    options
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn memory_store(known: u64) -> MemoryStore {
    let store = MemoryStore::default();
    for n in 1..=known {
        pollster::block_on(store.record_visit(visit(n, T0))).unwrap();
    }
    store
}

/// A store file with `known` clients, written in one transaction (the
/// store rebuilds its counters on open).
///
/// Every renewal is written (`renewal_granularity` zero): real clients
/// renew hours or days apart, far past the default 60 s, while the mix's
/// clock stands still, which would make every renewal one that writes
/// nothing.
fn sqlite_store(dir: &tempfile::TempDir, known: u64, options: SqliteOptions) -> SqliteStore {
    let mut options = options;
    options.renewal_granularity = Duration::ZERO;
    let path = dir.path().join(format!("bench-{known}.sqlite"));
    drop(SqliteStore::open(&path).unwrap());
    let mut raw = rusqlite::Connection::open(&path).unwrap();
    let tx = raw.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT OR IGNORE INTO clients (application_id, cmid, last_seen, n_policy)
                 VALUES (?1, ?2, ?3, 25)",
            )
            .unwrap();
        let app = Uuid::from_u128(APP);
        for n in 1..=known {
            insert
                .execute((
                    app.as_bytes().as_slice(),
                    cmid(n).as_bytes().as_slice(),
                    i64::try_from(T0).unwrap(),
                ))
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(raw);
    SqliteStore::open_with(&path, options).unwrap()
}

struct Postgres {
    url: String,
    schema: String,
}

impl Postgres {
    fn from_env() -> Option<Self> {
        let url = std::env::var("KMS_TEST_POSTGRES_URL").ok()?;
        let schema = format!(
            "kms_bench_{}_{:x}",
            std::process::id(),
            getrandom::u32().unwrap()
        );
        Some(Self { url, schema })
    }

    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// A store whose schema holds `known` clients, loaded in one statement.
    async fn store(&self, known: u64) -> PostgresStore {
        let options = PostgresOptions::default().with_schema(&self.schema);
        let store = PostgresStore::connect_with(&self.url, options)
            .await
            .unwrap();
        let s = &self.schema;
        let app = Uuid::from_u128(APP);
        let known = i64::try_from(known).unwrap();
        let t0 = i64::try_from(T0).unwrap();
        let admin = self.admin().await;
        admin
            .batch_execute(&format!(
                "TRUNCATE {s}.clients, {s}.applications, {s}.activations"
            ))
            .await
            .unwrap();
        admin
            .execute(
                &format!(
                    "INSERT INTO {s}.clients (application_id, cmid, last_seen, n_policy)
                     SELECT $1, ('c0000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))::uuid,
                            $3, 25
                     FROM generate_series(1, $2::bigint) AS i"
                ),
                &[&app, &known, &t0],
            )
            .await
            .unwrap();
        admin
            .execute(
                &format!("INSERT INTO {s}.applications (application_id, clients) VALUES ($1, $2)"),
                &[&app, &known],
            )
            .await
            .unwrap();
        admin
            .batch_execute(&format!("ANALYZE {s}.clients"))
            .await
            .unwrap();
        store
    }

    async fn drop_schema(&self) {
        self.admin()
            .await
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

/// One visit at a time: the latency of one host decision.
fn one_at_a_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/visit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let postgres = Postgres::from_env();
    let rt = runtime();
    for known in sizes() {
        let store = memory_store(known);
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("memory", known), |b| {
            b.iter(|| black_box(pollster::block_on(store.record_visit(mix.next())).unwrap()));
        });
        drop(store);

        let store = sqlite_store(&dir, known, SqliteOptions::default());
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("sqlite", known), |b| {
            b.iter(|| black_box(pollster::block_on(store.record_visit(mix.next())).unwrap()));
        });
        drop(store);

        let store = sqlite_store(&dir, known, sync_normal());
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("sqlite_sync_normal", known), |b| {
            b.iter(|| black_box(pollster::block_on(store.record_visit(mix.next())).unwrap()));
        });
        drop(store);

        if let Some(pg) = &postgres {
            let store = rt.block_on(pg.store(known));
            let mut mix = Mix::new(known);
            group.bench_function(BenchmarkId::new("postgres", known), |b| {
                b.iter(|| black_box(rt.block_on(store.record_visit(mix.next())).unwrap()));
            });
            drop(store);
        }
    }
    group.finish();
    if let Some(pg) = &postgres {
        rt.block_on(pg.drop_schema());
    }
}

/// 64 visits submitted at once, each from its own Tokio task; the time is
/// for all 64 to complete.
fn in_flight<S: CountStore + 'static>(rt: &Runtime, store: &Arc<S>, mix: &mut Mix) {
    let visits: Vec<Visit> = (0..IN_FLIGHT).map(|_| mix.next()).collect();
    rt.block_on(async {
        let tasks: Vec<_> = visits
            .into_iter()
            .map(|v| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.record_visit(v).await.unwrap() })
            })
            .collect();
        for task in tasks {
            black_box(task.await.unwrap());
        }
    });
}

fn concurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/64_in_flight");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    let known = 10_000;
    let rt = runtime();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    let store = Arc::new(memory_store(known));
    let mut mix = Mix::new(known);
    group.bench_function("memory", |b| b.iter(|| in_flight(&rt, &store, &mut mix)));
    drop(store);

    let store = Arc::new(sqlite_store(&dir, known, SqliteOptions::default()));
    let mut mix = Mix::new(known);
    group.bench_function("sqlite", |b| b.iter(|| in_flight(&rt, &store, &mut mix)));
    drop(store);

    let store = Arc::new(sqlite_store(&dir, known, sync_normal()));
    let mut mix = Mix::new(known);
    group.bench_function("sqlite_sync_normal", |b| {
        b.iter(|| in_flight(&rt, &store, &mut mix));
    });
    drop(store);

    // The same without group commit: one transaction, one fsync per visit.
    let options = SqliteOptions {
        max_batch: 1,
        ..SqliteOptions::default()
    };
    let store = Arc::new(sqlite_store(&dir, known, options));
    let mut mix = Mix::new(known);
    group.bench_function("sqlite_one_commit_per_visit", |b| {
        b.iter(|| in_flight(&rt, &store, &mut mix));
    });
    drop(store);

    if let Some(pg) = Postgres::from_env() {
        let store = Arc::new(rt.block_on(pg.store(known)));
        let mut mix = Mix::new(known);
        group.bench_function("postgres", |b| b.iter(|| in_flight(&rt, &store, &mut mix)));
        drop(store);
        rt.block_on(pg.drop_schema());
    }
    group.finish();
}

/// A Windows 10/11 Enterprise request for the visit's client.
fn request_event(visit: &Visit) -> RequestEvent {
    let mut context = RequestContext::new(visit.at);
    context.call_id = 2;
    context.ndr = Ndr::Ndr64;
    RequestEvent::detached(context, request_body(visit))
}

/// The request of [`request_event`].
fn request_body(visit: &Visit) -> RequestBody {
    RequestBody {
        version: Version::V6,
        vm_info: 0,
        license_status: LicenseStatus::Licensed,
        binding_expiration: 250_000,
        application_id: visit.application_id,
        sku_id: Uuid::from_u128(0x7311_1121_5638_40f6_bc11_f1d7_b0d6_4300),
        kms_id: Uuid::from_u128(0x58e2_134f_8e11_4d17_9cb2_9106_9c15_1148),
        cmid: visit.cmid,
        previous_cmid: Uuid::nil(),
        n_policy: visit.n_policy,
        client_time: visit.at,
        workstation: "client.example.org".into(),
    }
}

fn kms_host<S: CountStore>(rt: &Runtime, store: S) -> Arc<KmsHost<S>> {
    let now = FileTime::from_ticks(T0);
    let mut rng = ScriptedRandom::new(vec![7; 8192]);
    Arc::new(
        rt.block_on(KmsHost::start(
            KmsHostConfig::default(),
            store,
            now,
            &mut rng,
        ))
        .unwrap(),
    )
}

/// 64 whole host decisions at once (CSVLK lookup, count, activation log),
/// each from its own Tokio task.
fn decisions_in_flight<S: CountStore + 'static>(
    rt: &Runtime,
    host: &Arc<KmsHost<S>>,
    mix: &mut Mix,
) {
    let events: Vec<RequestEvent> = (0..IN_FLIGHT).map(|_| request_event(&mix.next())).collect();
    rt.block_on(async {
        let tasks: Vec<_> = events
            .into_iter()
            .map(|event| {
                let host = Arc::clone(host);
                tokio::spawn(async move { host.decide(&event).await.reply.unwrap() })
            })
            .collect();
        for task in tasks {
            black_box(task.await.unwrap());
        }
    });
}

fn host_decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("host/64_decisions_in_flight");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    let rt = runtime();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let postgres = Postgres::from_env();
    for known in sizes() {
        let host = kms_host(&rt, memory_store(known));
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("memory", known), |b| {
            b.iter(|| decisions_in_flight(&rt, &host, &mut mix));
        });
        drop(host);

        let host = kms_host(&rt, sqlite_store(&dir, known, SqliteOptions::default()));
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("sqlite", known), |b| {
            b.iter(|| decisions_in_flight(&rt, &host, &mut mix));
        });
        drop(host);

        let host = kms_host(&rt, sqlite_store(&dir, known, sync_normal()));
        let mut mix = Mix::new(known);
        group.bench_function(BenchmarkId::new("sqlite_sync_normal", known), |b| {
            b.iter(|| decisions_in_flight(&rt, &host, &mut mix));
        });
        drop(host);

        if let Some(pg) = &postgres {
            let host = kms_host(&rt, rt.block_on(pg.store(known)));
            let mut mix = Mix::new(known);
            group.bench_function(BenchmarkId::new("postgres", known), |b| {
                b.iter(|| decisions_in_flight(&rt, &host, &mut mix));
            });
            drop(host);
        }
    }
    group.finish();
    if let Some(pg) = &postgres {
        rt.block_on(pg.drop_schema());
    }
}

/// Activation records per flush in [`activation_log`]: the SQLite writer
/// appends up to 4096 in one transaction.
const LOG_RECORDS: u64 = 4096;

/// `LOG_RECORDS` activation records queued, then flushed: records of one
/// CMID (each lands beside the last in the log's index by client), and
/// records of 100 000 CMIDs in turn (each lands on a random page of it).
fn append_log<S: CountStore>(rt: &Runtime, store: &S, next: &mut u64, clients: u64) {
    let peer = "192.0.2.7:50123".parse().ok();
    for _ in 0..LOG_RECORDS {
        *next += 1;
        let at = T0 + *next;
        let client = (*next).wrapping_mul(0x9e37_79b9_7f4a_7c15) % clients;
        let request = request_body(&visit(client, at));
        let record = ActivationRecord::new(
            FileTime::from_ticks(at),
            peer,
            *next,
            &request,
            Some(50),
            HResult::S_OK,
        );
        store
            .queue_activation(record, FileTime::from_ticks(at - 30 * DAY))
            .unwrap();
    }
    rt.block_on(store.flush()).unwrap();
}

/// The activation log alone: what persisting one record costs, by store
/// and by how the CMIDs spread.
fn activation_log(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/activation_log");
    group.throughput(Throughput::Elements(LOG_RECORDS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    let rt = runtime();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let postgres = Postgres::from_env();
    for (name, clients) in [("one_cmid", 1), ("100000_cmids", 100_000)] {
        let store = MemoryStore::default();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("memory", name), |b| {
            b.iter(|| append_log(&rt, &store, &mut next, clients));
        });
        let store = SqliteStore::open(dir.path().join(format!("log-{name}.sqlite"))).unwrap();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("sqlite", name), |b| {
            b.iter(|| append_log(&rt, &store, &mut next, clients));
        });
        if let Some(pg) = &postgres {
            let store = rt.block_on(pg.store(0));
            let mut next = 0;
            group.bench_function(BenchmarkId::new("postgres", name), |b| {
                b.iter(|| append_log(&rt, &store, &mut next, clients));
            });
        }
    }
    group.finish();
    if let Some(pg) = &postgres {
        rt.block_on(pg.drop_schema());
    }
}

criterion_group!(
    benches,
    one_at_a_time,
    concurrent,
    host_decisions,
    activation_log
);
criterion_main!(benches);
