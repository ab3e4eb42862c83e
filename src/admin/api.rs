//! The JSON routes: status, clients, activations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{AdminState, MAX_PAGE, json, log_query, now};
use crate::host::ActivationRecord;
use crate::host::store::{ClientEntry, CountStore, LogEntry, LogQuery, Page};
use crate::metrics::STATUS_NAMES;
use crate::{FileTime, HResult, product};

/// A page's default size.
const DEFAULT_PAGE: usize = 100;

/// What a request came to: `activated`, `below threshold` or
/// `refused 0x…`.
pub(crate) fn outcome(record: &ActivationRecord) -> String {
    if record.activates() {
        "activated".to_owned()
    } else if record.result == HResult::S_OK {
        "below threshold".to_owned()
    } else {
        format!("refused {:#}", record.result)
    }
}

/// RFC 3339 to the second, UTC.
pub(crate) fn time(t: FileTime) -> String {
    t.to_string()
}

/// The client's IP address, if known.
pub(crate) fn address(record: &ActivationRecord) -> Option<String> {
    record.peer.map(|p| p.ip().to_canonical().to_string())
}

pub(crate) fn product_name(record: &ActivationRecord) -> &'static str {
    record.sku_name().unwrap_or("unknown product")
}

pub(crate) fn application_name(id: crate::Uuid) -> &'static str {
    product::application(id).map_or("unknown application", product::Application::name)
}

pub(crate) fn client_json(entry: &ClientEntry) -> Value {
    let last = &entry.last;
    json!({
        "cmid": last.cmid.to_string(),
        "workstation": last.workstation,
        "product": {"sku_id": last.sku_id.to_string(), "name": last.sku_name()},
        "application": {
            "id": last.application_id.to_string(),
            "name": product::application(last.application_id).map(product::Application::name),
        },
        "address": address(last),
        "first_seen": time(entry.first_seen),
        "last_seen": time(last.time),
        "license_status": {
            "code": u32::from(last.license_status),
            "name": last.license_status.to_string(),
        },
        "remaining_minutes": last.minutes_to_expiry,
        "requests": entry.requests,
        "last_outcome": outcome(last),
        "last_result": format!("{:#}", last.result),
        "last_count": last.count,
        "cursor": entry.seq,
    })
}

pub(crate) fn activation_json(entry: &LogEntry) -> Value {
    let r = &entry.record;
    json!({
        "seq": entry.seq,
        "time": time(r.time),
        "address": address(r),
        "peer": r.peer.map(|p| p.to_string()),
        "connection_id": r.connection_id,
        "protocol": r.protocol.to_string(),
        "application": {
            "id": r.application_id.to_string(),
            "name": product::application(r.application_id).map(product::Application::name),
        },
        "product": {"sku_id": r.sku_id.to_string(), "name": r.sku_name()},
        "kms_id": r.kms_id.to_string(),
        "cmid": r.cmid.to_string(),
        "previous_cmid": r.previous_cmid.to_string(),
        "workstation": r.workstation,
        "n_policy": r.n_policy,
        "client_time": time(r.client_time),
        "virtual_machine": r.virtual_machine,
        "license_status": {
            "code": u32::from(r.license_status),
            "name": r.license_status.to_string(),
        },
        "remaining_minutes": r.minutes_to_expiry,
        "count": r.count,
        "result": format!("{:#}", r.result),
        "outcome": outcome(r),
    })
}

fn bad_request(message: &str) -> Response {
    json(StatusCode::BAD_REQUEST, &json!({"error": message}))
}

fn unavailable(message: &str) -> Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"error": format!("store: {message}")}),
    )
}

pub(crate) async fn clients<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    page_route(
        &params,
        |query| state.within(state.host.store().clients(query)),
        client_json,
    )
    .await
}

pub(crate) async fn activations<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    page_route(
        &params,
        |query| state.within(state.host.store().activations(query)),
        activation_json,
    )
    .await
}

/// A JSON page of a store query: the query from the request's parameters
/// (400 when they are bad), its rows through `to_json`, 503 when the store
/// fails or is late.
async fn page_route<T, F>(
    params: &HashMap<String, String>,
    fetch: impl FnOnce(LogQuery) -> F,
    to_json: fn(&T) -> Value,
) -> Response
where
    F: Future<Output = Result<Page<T>, String>>,
{
    let query = match log_query(params, DEFAULT_PAGE, MAX_PAGE) {
        Ok(query) => query,
        Err(e) => return bad_request(&e),
    };
    match fetch(query).await {
        Ok(page) => json(
            StatusCode::OK,
            &json!({
                "items": page.items.iter().map(to_json).collect::<Vec<_>>(),
                "next": page.next,
            }),
        ),
        Err(e) => unavailable(&e),
    }
}

/// One application's line of the status.
pub(crate) struct ApplicationStatus {
    pub(crate) id: crate::Uuid,
    pub(crate) clients: u64,
    pub(crate) current_count: u32,
    /// The largest N policy among the counted clients: the count they need.
    pub(crate) threshold: Option<u32>,
}

/// The counts with their thresholds; an error when the store does not
/// answer in time.
pub(crate) async fn application_status<S: CountStore + 'static>(
    state: &AdminState<S>,
) -> Result<(crate::host::Statistics, Vec<ApplicationStatus>), String> {
    let now = now();
    let statistics = state.within(state.host.statistics(now)).await?;
    let window_start =
        FileTime::from_ticks(now.ticks().saturating_sub(state.host.count_window_ticks()));
    let mut applications = Vec::new();
    for count in &statistics.counts {
        let tally = state
            .within(state.host.store().tally(count.application_id, window_start))
            .await
            .ok();
        applications.push(ApplicationStatus {
            id: count.application_id,
            clients: count.clients,
            current_count: count.current_count,
            threshold: tally.map(|t| t.max_n_policy).filter(|&n| n > 0),
        });
    }
    Ok((statistics, applications))
}

pub(crate) async fn status<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
) -> Response {
    let (statistics, applications) = match application_status(&state).await {
        Ok(status) => status,
        Err(e) => return unavailable(&e),
    };
    let (activation_interval, renewal_interval) = state.host.intervals();
    let tallies = statistics
        .requests_by_license_status
        .into_iter()
        .chain([statistics.requests_other_status]);
    let by_status: serde_json::Map<String, Value> = STATUS_NAMES
        .into_iter()
        .zip(tallies)
        .map(|(name, n)| (name.to_owned(), json!(n)))
        .collect();
    let outcomes = state.outcomes.as_ref().map(|o| {
        let counts = o.counts();
        let refused: serde_json::Map<String, Value> = counts
            .refused
            .iter()
            .map(|(code, n)| (format!("{code:#}"), json!(n)))
            .collect();
        json!({
            "activated": counts.activated,
            "below_threshold": counts.below_threshold,
            "refused": refused,
            "refused_other": counts.refused_other,
        })
    });
    let body = json!({
        "host": state.host_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "store": {"kind": state.store_kind(), "location": state.store},
        "listening": state.listening(),
        "applications": applications.iter().map(|a| json!({
            "id": a.id.to_string(),
            "name": product::application(a.id).map(product::Application::name),
            "clients": a.clients,
            "current_count": a.current_count,
            "threshold": a.threshold,
        })).collect::<Vec<_>>(),
        "epids": state.host.epids().map(|(csvlk, epid)| json!({
            "csvlk": csvlk.name(),
            "csvlk_id": csvlk.id().map(|id| id.to_string()),
            "epid": epid,
        })).collect::<Vec<_>>(),
        "activation_interval_minutes": activation_interval,
        "renewal_interval_minutes": renewal_interval,
        "requests": {
            "total": statistics.total_requests,
            "failed": statistics.failed_requests,
            "by_outcome": outcomes,
            "by_license_status": by_status,
        },
        "store_errors": statistics.store_errors,
        "dropped_records": statistics.dropped_records,
        "dns": state.dns_status(),
    });
    json(StatusCode::OK, &body)
}
