//! The decisions in flight, batched: the visits queued go to the database
//! as arrays in one call of the function `record_visits`, one statement and
//! one transaction per batch (see the parent module's documentation).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::{Fail, Inner, Session, deadline_after, get};
use crate::Uuid;
use crate::host::store::sql;
use crate::host::store::{PRUNE_BATCH, StoreError, Tally, Visit};

/// Visits sent in one statement at most.
pub(super) const MAX_BATCH: usize = 256;

/// Batches of one store running at once, each on its own connection. Two:
/// while one runs (batches of one application wait for each other on its
/// counter row), the next is already on its way, and the visits arriving
/// meanwhile gather into the one after.
pub(super) const BATCHES_IN_FLIGHT: usize = 2;

/// A batch of fewer visits than this, sent while the other batch runs,
/// waits up to [`GATHER_DELAY`] for more.
const GATHER_BELOW: usize = 16;
/// See [`GATHER_BELOW`].
const GATHER_DELAY: Duration = Duration::from_micros(500);

/// The call of `record_visits`, for the statement cache.
pub(super) fn statement(s: &str) -> String {
    format!(
        "SELECT visit, tally_clients, tally_max_n_policy, tally_admitted
         FROM {s}.record_visits($1, $2, $3, $4, $5, $6, $7, {PRUNE_BATCH}, $8)"
    )
}

/// One visit in the database's integers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) application_id: Uuid,
    cmid: Uuid,
    at: i64,
    pub(super) window_start: i64,
    n_policy: i64,
    capacity: Option<i64>,
}

impl Row {
    pub(super) fn new(visit: &Visit) -> Result<Self, StoreError> {
        Ok(Self {
            application_id: visit.application_id,
            cmid: visit.cmid,
            at: sql::ticks(visit.at)?,
            window_start: sql::ticks(visit.window_start)?,
            n_policy: i64::from(visit.n_policy),
            capacity: visit.capacity.map(sql::limit),
        })
    }
}

/// A visit waiting for its batch, and where its tally goes.
pub(super) struct Queued {
    row: Row,
    deadline: Instant,
    reply: oneshot::Sender<Result<Tally, StoreError>>,
}

/// Queues `row` and waits for its batch's commit, within the operation's
/// deadline from now (the wait in the queue included).
pub(super) async fn submit(
    inner: Arc<Inner>,
    queue: mpsc::Sender<Queued>,
    row: Result<Row, StoreError>,
) -> Result<Tally, StoreError> {
    let row = row?;
    let deadline = deadline_after(inner.operation_timeout());
    let (reply, answer) = oneshot::channel();
    let waited = async {
        queue
            .send(Queued {
                row,
                deadline,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    };
    match tokio::time::timeout_at(deadline, waited).await {
        Ok(result) => result,
        Err(_) => Err(inner.timed_out()),
    }
}

/// The batcher task: takes up to [`MAX_BATCH`] queued visits whenever one
/// of the [`BATCHES_IN_FLIGHT`] slots is free, and runs them as one batch,
/// until the store is dropped.
pub(super) async fn batch(inner: Arc<Inner>, mut queue: mpsc::Receiver<Queued>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut items = Vec::with_capacity(MAX_BATCH);
        if queue.recv_many(&mut items, MAX_BATCH).await == 0 {
            return;
        }
        // With the other batch still running, a few visits wait a moment
        // for more to share their statement: a batch costs the database
        // about as much as a dozen visits in it.
        if items.len() < GATHER_BELOW && slots.available_permits() == 0 {
            let deadline = Instant::now() + GATHER_DELAY;
            while items.len() < GATHER_BELOW {
                let room = MAX_BATCH - items.len();
                let more = queue.recv_many(&mut items, room);
                if !matches!(tokio::time::timeout_at(deadline, more).await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        let batch_inner = Arc::clone(&inner);
        inner.runtime.spawn(async move {
            run(&batch_inner, items).await;
            drop(slot);
        });
    }
}

/// Runs one batch and answers each visit: its tally, or the batch's error.
/// Visits already past their deadline are answered without being sent.
async fn run(inner: &Inner, items: Vec<Queued>) {
    let now = Instant::now();
    let (live, late): (Vec<Queued>, Vec<Queued>) =
        items.into_iter().partition(|item| item.deadline > now);
    for item in late {
        let _ = item.reply.send(Err(inner.timed_out()));
    }
    let Some(deadline) = live.iter().map(|item| item.deadline).max() else {
        return;
    };
    let rows: Vec<Row> = live.iter().map(|item| item.row).collect();
    let limits = Limits {
        max_clients: sql::limit(inner.options.max_clients_per_application.max(1)),
        renewal_granularity: sql::duration_ticks(inner.options.renewal_granularity),
    };
    let arrays = Arrays::new(&rows);
    let result = inner
        .run_until(deadline, async move |conn| {
            execute(conn, &arrays, limits).await
        })
        .await;
    match result {
        Ok(tallies) => {
            for (item, tally) in live.into_iter().zip(tallies) {
                let _ = item.reply.send(Ok(tally));
            }
        }
        Err(e) => {
            for item in live {
                let _ = item.reply.send(Err(e.clone()));
            }
        }
    }
}

/// A batch as the function's parameters: one array per field.
struct Arrays {
    applications: Vec<Uuid>,
    cmids: Vec<Uuid>,
    ats: Vec<i64>,
    window_starts: Vec<i64>,
    n_policies: Vec<i64>,
    capacities: Vec<Option<i64>>,
}

impl Arrays {
    fn new(rows: &[Row]) -> Self {
        Self {
            applications: rows.iter().map(|r| r.application_id).collect(),
            cmids: rows.iter().map(|r| r.cmid).collect(),
            ats: rows.iter().map(|r| r.at).collect(),
            window_starts: rows.iter().map(|r| r.window_start).collect(),
            n_policies: rows.iter().map(|r| r.n_policy).collect(),
            capacities: rows.iter().map(|r| r.capacity).collect(),
        }
    }
}

/// The store's options `record_visits` takes, in the database's integers.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Clients counted per application at most.
    max_clients: i64,
    /// `PostgresOptions::renewal_granularity` in ticks.
    renewal_granularity: i64,
}

/// One call of `record_visits`: the tallies in the order of the visits.
async fn execute(
    conn: &mut Session<'_>,
    batch: &Arrays,
    limits: Limits,
) -> Result<Vec<Tally>, Fail> {
    let statement = conn.prepare(&conn.sql.record_visits).await?;
    let rows = conn
        .client
        .query(
            &statement,
            &[
                &batch.applications,
                &batch.cmids,
                &batch.ats,
                &batch.window_starts,
                &batch.n_policies,
                &batch.capacities,
                &limits.max_clients,
                &limits.renewal_granularity,
            ],
        )
        .await?;
    if rows.len() != batch.applications.len() {
        return Err(Fail::Store(StoreError::Backend(format!(
            "record_visits answered {} rows for {} visits",
            rows.len(),
            batch.applications.len()
        ))));
    }
    rows.iter()
        .zip(1..)
        .map(|(row, expected)| {
            let visit: i32 = get(row, 0)?;
            if visit != expected {
                return Err(sql::bad("record_visits.visit", visit).into());
            }
            let clients: i64 = get(row, 1)?;
            let max_n_policy: i64 = get(row, 2)?;
            Ok(Tally::new(
                sql::count_of(clients, "record_visits.tally_clients")?,
                sql::u32_of(max_n_policy, "record_visits.tally_max_n_policy")?,
                get(row, 3)?,
            ))
        })
        .collect()
}
