//! The live dashboard: `GET /dashboard` (a page embedded in the binary: HTML, CSS and plain
//! JS, no build step, no external assets) and `GET /admin/dashboard.json` (every figure the
//! page and `weir status` show, polled once a second).
//!
//! The page's assets hold no data: every figure comes from the JSON route, behind the admin
//! guard, and the page's actions (reset a breaker, clear the cache) use the admin routes. So
//! with an admin key the page itself is served to anyone and asks for the key, which it keeps
//! in the tab's `sessionStorage`; without one it answers loopback clients only, like the
//! admin routes (see [`crate::layers::AdminAccess`]).
//!
//! Traffic figures come from [`Live`], a usage sink of fixed atomic rings; the rest is read
//! from the client (deployments, key pools, cache) and the ledger (spend, budgets, savings).
//! Ledger figures are kept for [`LEDGER_EVERY`] so a page left open costs the store a few
//! queries every few seconds, not every second.

pub mod live;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_store::{Dimension, UsageQuery};

pub use live::Live;

use crate::error::ApiError;
use crate::routes::json_response;
use crate::state::AppState;

/// How long ledger figures (spend, budgets, savings) are reused.
pub const LEDGER_EVERY: Duration = Duration::from_secs(5);
/// Seconds of traffic in the answer unless `seconds=` asks otherwise.
const DEFAULT_SECONDS: usize = 120;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The dashboard's state: the live rings and the ledger figures last read.
#[derive(Debug, Default)]
pub struct Dashboard {
    pub live: Arc<Live>,
    /// Held only to copy or replace the figures, never across a query.
    ledger: Mutex<Option<(Instant, Value)>>,
}

impl Dashboard {
    pub fn new() -> Self {
        Self::default()
    }
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /dashboard/app.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard/style.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /admin/dashboard.json`: traffic (series, totals, recent calls), deployments, key pools,
/// cache, spend today and this month by model, and budgets.
pub async fn data(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let seconds = seconds_of(&params)?;
    let status = state.client.status();
    let (traffic, recent) = match &state.dashboard {
        Some(d) => (json!(d.live.snapshot(seconds)), json!(d.live.recent())),
        None => (Value::Null, json!([])),
    };
    let cache = match state.client.cache_stats().await {
        Some(stats) => serde_json::to_value(&stats).unwrap_or_else(|_| json!({})),
        None => json!({ "enabled": false }),
    };
    let ledger = ledger_figures(&state).await;
    Ok(json_response(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": crate::ledger::now_ms(),
        "uptime_seconds": status.uptime_seconds,
        "traffic": traffic,
        "recent": recent,
        "deployments": status.deployments,
        "keys": status.keys,
        "cache": cache,
        "spend": ledger["spend"],
        "savings": ledger["savings"],
        "budgets": ledger["budgets"],
    })))
}

/// The query's `seconds` (1 to [`live::SECONDS`]); any other parameter is refused, so a typo
/// is not silently ignored.
fn seconds_of(params: &BTreeMap<String, String>) -> Result<usize, ApiError> {
    if let Some(name) = params.keys().find(|k| k.as_str() != "seconds") {
        return Err(ApiError::bad_request(format!(
            "`{name}` is not a parameter of /admin/dashboard.json: it takes only `seconds` (1 to {})",
            live::SECONDS
        ))
        .with_param(name));
    }
    let Some(text) = params.get("seconds") else {
        return Ok(DEFAULT_SECONDS);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=live::SECONDS).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "`seconds={text}` is out of range: give a whole number of seconds from 1 to {} (the traffic history kept)",
            live::SECONDS
        ))
        .with_param("seconds")),
    }
}

/// Spend, savings and budgets, read again once [`LEDGER_EVERY`] has passed.
async fn ledger_figures(state: &AppState) -> Value {
    let Some(dashboard) = &state.dashboard else {
        return read_ledger(state).await;
    };
    if let Ok(held) = dashboard.ledger.lock()
        && let Some((at, value)) = held.as_ref()
        && at.elapsed() < LEDGER_EVERY
    {
        return value.clone();
    }
    let value = read_ledger(state).await;
    if let Ok(mut held) = dashboard.ledger.lock() {
        *held = Some((Instant::now(), value.clone()));
    }
    value
}

async fn read_ledger(state: &AppState) -> Value {
    let budgets = match crate::routes::budgets::statuses(state).await {
        Ok(list) => json!(list),
        Err(_) => json!([]),
    };
    let Some(ledger) = &state.ledger_store else {
        return json!({ "spend": null, "savings": null, "budgets": budgets });
    };
    if let Some(writer) = &state.ledger {
        // Calls still in the spool belong in the figures.
        let _ = writer.flush().await;
    }
    let now = jiff::Timestamp::now();
    let utc = jiff::tz::TimeZone::UTC;
    let day = now.to_zoned_datetime(utc.clone()).date();
    let start = |d: jiff::civil::Date| {
        d.to_zoned_datetime(utc.clone())
            .map_or(0, |z| z.timestamp().as_millisecond())
    };
    let (today, month) = (start(day), start(day.first_of_month()));
    let to = now.as_millisecond().saturating_add(1);
    let mut spend = serde_json::Map::new();
    for (name, from) in [("today", today), ("month", month)] {
        let query = UsageQuery {
            from_ms: from,
            to_ms: to,
            group_by: vec![Dimension::Model],
            filters: Vec::new(),
        };
        let value = match ledger.usage(&query).await {
            Ok(rows) => json!({
                "from_ms": from,
                "data": rows.iter().map(crate::routes::usage::row_json).collect::<Vec<_>>(),
            }),
            Err(e) => {
                json!({ "error": format!("the usage ledger could not answer: {e}; check the store (GET /status, ledger)") })
            }
        };
        spend.insert(name.to_owned(), value);
    }
    let savings = match ledger.savings(0, i64::MAX).await {
        Ok(s) => json!({
            "calls": s.calls(),
            "saved_usd": s.saved_usd().normalize().to_string(),
            "cache_hits": s.cache_hits,
            "coalesced": s.coalesced,
        }),
        Err(e) => json!({ "error": format!("the usage ledger could not total the savings: {e}") }),
    };
    json!({ "spend": spend, "savings": savings, "budgets": budgets })
}

#[cfg(test)]
mod tests;
