//! `GET /`: the dashboard, rendered on the server (HTML and CSS, no
//! script, nothing fetched from elsewhere).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api::{address, application_name, application_status, outcome, product_name};
use super::{AdminState, now, parse_network};
use crate::FileTime;
use crate::host::store::{CountStore, LogQuery};

/// Clients listed (and searched).
const CLIENT_ROWS: usize = 200;

/// Recent activations listed.
const RECENT_ROWS: usize = 20;

const STYLE: &str = "
:root{--fg:#1d2430;--muted:#5b6474;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--ok:#1f7a3f;--warn:#a15c00;--bad:#b3261e;--accent:#2957a4}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1d2430;color:#fff;padding:12px 16px}
header h1{margin:0;font-size:1.2rem}
header p{margin:2px 0 0;color:#c9d1de;font-size:.85rem;overflow-wrap:anywhere}
main{padding:12px;max-width:1200px;margin:0 auto}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px;margin:0 0 12px}
h2{font-size:1rem;margin:0 0 8px}
.apps{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:12px}
.app{border:1px solid var(--line);border-radius:8px;padding:10px}
.app .n{font-size:1.8rem;font-weight:600}
.app .of{color:var(--muted)}
.meter{height:8px;background:#e8ebf0;border-radius:4px;overflow:hidden;margin-top:6px}
.meter i{display:block;height:100%;background:var(--accent)}
.meter i.full{background:var(--ok)}
.chart{display:flex;align-items:flex-end;gap:2px;height:120px;border-bottom:1px solid var(--line)}
.chart div{flex:1;background:var(--accent);min-height:1px;border-radius:2px 2px 0 0}
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.75rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{text-align:left;padding:5px 6px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:600}
td.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
.activated{color:var(--ok)}.below{color:var(--warn)}.refused{color:var(--bad)}
form{display:flex;gap:6px;margin:0 0 8px;flex-wrap:wrap}
input[type=search]{flex:1;min-width:180px;padding:6px 8px;border:1px solid var(--line);border-radius:6px;font:inherit}
button{padding:6px 12px;border:0;border-radius:6px;background:var(--accent);color:#fff;font:inherit}
.muted{color:var(--muted)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:.85rem}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
";

/// `text` with the characters HTML gives a meaning escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn outcome_class(outcome: &str) -> &'static str {
    if outcome == "activated" {
        "activated"
    } else if outcome.starts_with("below") {
        "below"
    } else {
        "refused"
    }
}

/// Hours and minutes of a FILETIME, for tables.
fn short_time(t: FileTime) -> String {
    t.to_datetime().map_or_else(
        || t.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

#[allow(clippy::too_many_lines, reason = "one page, section after section")]
pub(crate) async fn page<S: CountStore + 'static>(
    State(state): State<Arc<AdminState<S>>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let search = params.get("q").map_or("", |q| q.trim()).to_owned();
    let mut html = String::with_capacity(32 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"60\">\
         <title>KMS host {host}</title><style>{STYLE}</style></head><body>\
         <header><h1>KMS host {host}</h1><p>kms-activation {version} · store {store} · listening on {listening}</p></header><main>",
        host = escape(&state.host_name),
        version = env!("CARGO_PKG_VERSION"),
        store = if state.store == state.store_kind() {
            escape(&state.store)
        } else {
            format!("{}: {}", state.store_kind(), escape(&state.store))
        },
        listening = escape(
            &state
                .listening()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );

    // Counts against thresholds.
    html.push_str("<section><h2>Counts</h2>");
    let mut status = StatusCode::OK;
    match application_status(&state).await {
        Ok((statistics, applications)) => {
            if applications.is_empty() {
                html.push_str("<p class=\"muted\">No client has been counted yet.</p>");
            }
            html.push_str("<div class=\"apps\">");
            for app in &applications {
                let threshold = app.threshold.unwrap_or(0);
                let percent = if threshold == 0 {
                    0
                } else {
                    (u64::from(app.current_count) * 100 / u64::from(threshold)).min(100)
                };
                let _ = write!(
                    html,
                    "<div class=\"app\" data-application=\"{id}\"><div>{name}</div>\
                     <div><span class=\"n count\">{count}</span> <span class=\"of\">of {threshold} needed</span></div>\
                     <div class=\"meter\"><i class=\"{full}\" style=\"width:{percent}%\"></i></div>\
                     <div class=\"muted\">{clients} clients in the window</div></div>",
                    id = app.id,
                    name = escape(application_name(app.id)),
                    count = app.current_count,
                    threshold = app
                        .threshold
                        .map_or_else(|| "?".to_owned(), |t| t.to_string()),
                    full = if percent >= 100 { "full" } else { "" },
                    clients = app.clients,
                );
            }
            html.push_str("</div>");
            let (activation, renewal) = state.host.intervals();
            let _ = write!(
                html,
                "<dl style=\"margin-top:10px\"><dt>Requests</dt><dd>{total} ({failed} refused)</dd>\
                 <dt>Intervals</dt><dd>activation {activation} min, renewal {renewal} min</dd>\
                 <dt>Uptime</dt><dd>{uptime} s</dd></dl>",
                total = statistics.total_requests,
                failed = statistics.failed_requests,
                uptime = state.started.elapsed().as_secs(),
            );
        }
        Err(e) => {
            status = StatusCode::SERVICE_UNAVAILABLE;
            let _ = write!(
                html,
                "<p class=\"refused\">The store does not answer: {}</p>",
                escape(&e)
            );
        }
    }
    html.push_str("</section>");

    // Requests per hour.
    if let Some(outcomes) = &state.outcomes {
        let hours = outcomes.per_hour(now());
        let most = hours.iter().map(|&(_, n)| n).max().unwrap_or(0);
        let peak = most.max(1);
        html.push_str("<section><h2>Requests per hour, last 24 hours</h2><div class=\"chart\">");
        for (start, n) in &hours {
            let _ = write!(
                html,
                "<div style=\"height:{}%\" title=\"{}: {n}\"></div>",
                n * 100 / peak,
                short_time(*start),
            );
        }
        let _ = write!(
            html,
            "</div><div class=\"axis\"><span>24 h ago</span><span>peak {most}/h</span><span>now</span></div></section>"
        );
    }

    // Recent activations.
    html.push_str("<section><h2>Recent activations</h2><div class=\"scroll\"><table id=\"activations\">\
        <tr><th>Time (UTC)</th><th>Address</th><th>Workstation</th><th>Product</th><th>Status</th><th>Count</th><th>Outcome</th></tr>");
    match state
        .within(state.host.store().activations(LogQuery::new(RECENT_ROWS)))
        .await
    {
        Ok(page) => {
            for entry in &page.items {
                let r = &entry.record;
                let outcome = outcome(r);
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    short_time(r.time),
                    escape(&address(r).unwrap_or_default()),
                    escape(&r.workstation),
                    escape(product_name(r)),
                    escape(&r.license_status.to_string()),
                    r.count.map(|c| c.to_string()).unwrap_or_default(),
                    outcome_class(&outcome),
                    escape(&outcome),
                );
            }
        }
        Err(e) => {
            let _ = write!(
                html,
                "<tr><td colspan=\"7\" class=\"refused\">{}</td></tr>",
                escape(&e)
            );
        }
    }
    html.push_str("</table></div></section>");

    // Clients, with the search box.
    let _ = write!(
        html,
        "<section><h2>Clients</h2><form method=\"get\" action=\"/\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"CMID, workstation, product or address/CIDR\" aria-label=\"Search clients\">\
         <button type=\"submit\">Search</button></form>",
        escape(&search)
    );
    let mut query = LogQuery::new(CLIENT_ROWS);
    let network = parse_network(&search).ok();
    query.address = network;
    let needle = if network.is_some() {
        String::new()
    } else {
        search.to_lowercase()
    };
    html.push_str("<div class=\"scroll\"><table id=\"clients\"><tr><th>CMID</th><th>Workstation</th><th>Product</th><th>Application</th><th>Address</th><th>First seen</th><th>Last seen</th><th>Status</th><th>Left (min)</th><th>Requests</th><th>Last outcome</th></tr>");
    match state.within(state.host.store().clients(query)).await {
        Ok(page) => {
            let mut shown = 0;
            for entry in &page.items {
                let last = &entry.last;
                let cmid = last.cmid.to_string();
                let product = product_name(last);
                if !needle.is_empty()
                    && ![cmid.as_str(), last.workstation.as_str(), product]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&needle))
                {
                    continue;
                }
                shown += 1;
                let outcome = outcome(last);
                let _ = write!(
                    html,
                    "<tr><td class=\"id cmid\">{cmid}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    escape(&last.workstation),
                    escape(product),
                    escape(application_name(last.application_id)),
                    escape(&address(last).unwrap_or_default()),
                    short_time(entry.first_seen),
                    short_time(last.time),
                    escape(&last.license_status.to_string()),
                    last.minutes_to_expiry,
                    entry.requests,
                    outcome_class(&outcome),
                    escape(&outcome),
                );
            }
            html.push_str("</table></div>");
            let _ = write!(
                html,
                "<p class=\"muted\">{shown} shown, of the {CLIENT_ROWS} clients heard from last. \
                 All of them: <a href=\"/api/v1/clients.csv\">clients.csv</a> · \
                 <a href=\"/api/v1/activations.csv\">activations.csv</a></p>"
            );
        }
        Err(e) => {
            let _ = write!(
                html,
                "</table></div><p class=\"refused\">{}</p>",
                escape(&e)
            );
        }
    }
    html.push_str("</section>");
    // The host's ePIDs.
    html.push_str("<section><h2>Host</h2><dl>");
    for (csvlk, epid) in state.host.epids() {
        let _ = write!(
            html,
            "<dt>{}</dt><dd class=\"id\">{}</dd>",
            escape(csvlk.name()),
            escape(epid)
        );
    }
    html.push_str("</dl></section></main></body></html>");
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<b a=\"1\">&'"),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
    }
}
