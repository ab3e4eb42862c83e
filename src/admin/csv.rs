//! The CSV routes: RFC 4180 (CRLF line ends, fields quoted when they hold
//! a comma, a quote or a line end), a header row, streamed page by page.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api::{address, application_name, outcome, product_name, time};
use super::{AdminState, json, log_query};
use crate::host::store::{ClientEntry, CountStore, LogEntry, LogQuery, Page};

/// Rows fetched from the store per chunk of the answer.
const CHUNK: usize = 500;

const CLIENT_HEADER: [&str; 15] = [
    "cmid",
    "workstation",
    "application_id",
    "application",
    "sku_id",
    "product",
    "address",
    "first_seen",
    "last_seen",
    "license_status",
    "remaining_minutes",
    "requests",
    "last_outcome",
    "last_result",
    "last_count",
];

const ACTIVATION_HEADER: [&str; 20] = [
    "seq",
    "time",
    "address",
    "application_id",
    "application",
    "sku_id",
    "product",
    "kms_id",
    "cmid",
    "previous_cmid",
    "workstation",
    "protocol",
    "n_policy",
    "client_time",
    "virtual_machine",
    "license_status",
    "remaining_minutes",
    "count",
    "result",
    "outcome",
];

/// Appends one record (fields quoted as needed) and its CRLF.
fn line<I, T>(out: &mut String, fields: I)
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = field.as_ref();
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push_str("\r\n");
}

fn client_line(out: &mut String, entry: &ClientEntry) {
    let last = &entry.last;
    line(
        out,
        [
            last.cmid.to_string(),
            last.workstation.clone(),
            last.application_id.to_string(),
            application_name(last.application_id).to_owned(),
            last.sku_id.to_string(),
            product_name(last).to_owned(),
            address(last).unwrap_or_default(),
            time(entry.first_seen),
            time(last.time),
            last.license_status.to_string(),
            last.minutes_to_expiry.to_string(),
            entry.requests.to_string(),
            outcome(last),
            format!("{:#}", last.result),
            last.count.map(|c| c.to_string()).unwrap_or_default(),
        ],
    );
}

fn activation_line(out: &mut String, entry: &LogEntry) {
    let r = &entry.record;
    line(
        out,
        [
            entry.seq.to_string(),
            time(r.time),
            address(r).unwrap_or_default(),
            r.application_id.to_string(),
            application_name(r.application_id).to_owned(),
            r.sku_id.to_string(),
            product_name(r).to_owned(),
            r.kms_id.to_string(),
            r.cmid.to_string(),
            r.previous_cmid.to_string(),
            r.workstation.clone(),
            r.protocol.to_string(),
            r.n_policy.to_string(),
            time(r.client_time),
            r.virtual_machine.to_string(),
            r.license_status.to_string(),
            r.minutes_to_expiry.to_string(),
            r.count.map(|c| c.to_string()).unwrap_or_default(),
            format!("{:#}", r.result),
            outcome(r),
        ],
    );
}

/// Which table a CSV answer lists.
#[derive(Clone, Copy)]
enum Table {
    Clients,
    Activations,
}

/// One chunk: the next page as CSV lines, and its cursor.
async fn chunk<S: CountStore + 'static>(
    state: &AdminState<S>,
    table: Table,
    query: LogQuery,
) -> Result<(String, usize, Option<u64>), String> {
    let mut out = String::new();
    let (rows, next) = match table {
        Table::Clients => {
            let Page { items, next, .. } = state.within(state.host.store().clients(query)).await?;
            for entry in &items {
                client_line(&mut out, entry);
            }
            (items.len(), next)
        }
        Table::Activations => {
            let Page { items, next, .. } =
                state.within(state.host.store().activations(query)).await?;
            for entry in &items {
                activation_line(&mut out, entry);
            }
            (items.len(), next)
        }
    };
    Ok((out, rows, next))
}

async fn answer<S: CountStore + 'static>(
    state: Arc<AdminState<S>>,
    params: &HashMap<String, String>,
    table: Table,
) -> Response {
    // No limit by default: the whole (filtered) table.
    let query = match log_query(params, usize::MAX, usize::MAX) {
        Ok(query) => query,
        Err(e) => return json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": e})),
    };
    let mut remaining = query.limit;
    let mut first_query = query;
    first_query.limit = remaining.min(CHUNK);
    // The first chunk before the status line: a store that does not
    // answer is a 503, not a truncated file.
    let (first, rows, next) = match chunk(&state, table, first_query).await {
        Ok(chunk) => chunk,
        Err(e) => {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": format!("store: {e}")}),
            );
        }
    };
    let mut head = String::new();
    match table {
        Table::Clients => line(&mut head, CLIENT_HEADER),
        Table::Activations => line(&mut head, ACTIVATION_HEADER),
    }
    let _ = write!(head, "{first}");
    remaining = remaining.saturating_sub(rows);
    let cursor = if remaining == 0 { None } else { next };
    let rest = futures_util::stream::unfold(
        (state, cursor, remaining),
        move |(state, cursor, remaining)| async move {
            let before = cursor?;
            let mut query = query;
            query.before = Some(before);
            query.limit = remaining.min(CHUNK);
            match chunk(&state, table, query).await {
                Ok((text, rows, next)) => {
                    let remaining = remaining.saturating_sub(rows);
                    let next = if remaining == 0 { None } else { next };
                    Some((Ok(Bytes::from(text)), (state, next, remaining)))
                }
                // The answer is cut short: the client sees the connection
                // end before the last chunk.
                Err(e) => Some((Err(std::io::Error::other(e)), (state, None, 0))),
            }
        },
    );
    let head = futures_util::stream::once(async move { Ok(Bytes::from(head)) });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, rest));
    let name = match table {
        Table::Clients => "attachment; filename=\"clients.csv\"",
        Table::Activations => "attachment; filename=\"activations.csv\"",
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
            ),
            (header::CONTENT_DISPOSITION, HeaderValue::from_static(name)),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn clients<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    answer(state, &params, Table::Clients).await
}

pub(crate) async fn activations<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    answer(state, &params, Table::Activations).await
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        let mut out = String::new();
        line(&mut out, ["plain", "a,b", "say \"hi\"", "two\r\nlines", ""]);
        assert_eq!(
            out,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\",\r\n"
        );
    }
}
