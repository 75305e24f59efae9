//! `GET /admin/usage`: totals of requests, errors, cache hits, tokens, cost and savings from
//! the usage ledger, grouped by any of key, user, team, project, model, provider, day or hour,
//! over a time range, as JSON or (`format=csv`) CSV. Behind the admin guard.
//!
//! Query: `group_by=model,day` (comma-separated; none: one total row), `from` and `to` (Unix
//! seconds, or RFC 3339; default: the last 30 days up to now), and filters on any dimension
//! (`team=search`, `model=gpt-4o`).
//!
//! Calls to models without a price are never counted as free: each row counts them in
//! `unpriced_calls` (its `cost_usd` is `null` when all its calls are unpriced), and the JSON
//! answer lists the models behind them under `unpriced`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weir_store::{Dimension, UsageQuery, UsageRow};

use super::json_response;
use crate::error::ApiError;
use crate::state::AppState;

const DAY_SECS: i64 = 24 * 3600;

/// A time given as Unix seconds or RFC 3339, in milliseconds.
fn time_ms(name: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = text.trim().parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}={text}` is not a time: send Unix seconds or RFC 3339 (2026-12-01T00:00:00Z)"
            ))
            .with_param(name)
        })
}

fn query_of(params: &BTreeMap<String, String>) -> Result<UsageQuery, ApiError> {
    let now_ms = crate::ledger::now_ms();
    let to_ms = match params.get("to") {
        Some(t) => time_ms("to", t)?,
        None => now_ms.saturating_add(1),
    };
    let from_ms = match params.get("from") {
        Some(t) => time_ms("from", t)?,
        None => to_ms.saturating_sub(30 * DAY_SECS * 1000),
    };
    if from_ms >= to_ms {
        return Err(ApiError::bad_request("`from` must be before `to`").with_param("from"));
    }
    let dimension = |text: &str| {
        Dimension::from_str(text.trim()).map_err(|_| {
            ApiError::bad_request(format!(
                "`{text}` is not something usage groups by: use key, user, team, project, model, provider, day or hour"
            ))
            .with_param("group_by")
        })
    };
    let group_by = match params.get("group_by") {
        Some(list) => list
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(dimension)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let mut filters = Vec::new();
    for (name, value) in params {
        if matches!(name.as_str(), "group_by" | "from" | "to" | "format") {
            continue;
        }
        filters.push((dimension(name)?, value.clone()));
    }
    Ok(UsageQuery {
        from_ms,
        to_ms,
        group_by,
        filters,
    })
}

/// `GET /admin/usage`.
pub async fn usage(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(ledger) = &state.ledger_store else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this gateway keeps no usage ledger: it needs a store (store.sqlite.path or \
             store.postgres.url; weir serve keeps one unless WEIR_DATA_DIR=off)",
        ));
    };
    let query = query_of(&params)?;
    if let Some(writer) = &state.ledger {
        // What is still in the spool belongs in the answer.
        let _ = writer.flush().await;
    }
    let rows = ledger.usage(&query).await.map_err(unavailable)?;
    if params.get("format").map(String::as_str) == Some("csv") {
        let mut res = csv(&query, &rows).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(res);
    }
    let unpriced = unpriced_models(ledger.as_ref(), &query, &rows).await?;
    let data: Vec<serde_json::Value> = rows.iter().map(row_json).collect();
    Ok(json_response(&serde_json::json!({
        "object": "list",
        "from_ms": query.from_ms,
        "to_ms": query.to_ms,
        "group_by": query.group_by,
        "data": data,
        "unpriced": unpriced,
    })))
}

/// The models behind the unpriced calls of `rows` (same range and filters), most calls
/// first: what needs a `pricing:` entry. Asks the ledger again only when there are some.
async fn unpriced_models(
    ledger: &dyn weir_store::LedgerStore,
    query: &UsageQuery,
    rows: &[UsageRow],
) -> Result<Vec<serde_json::Value>, ApiError> {
    if rows.iter().all(|r| r.unpriced_calls == 0) {
        return Ok(Vec::new());
    }
    let by_model = UsageQuery {
        group_by: vec![Dimension::Model],
        ..query.clone()
    };
    let mut models: Vec<(String, u64)> = ledger
        .usage(&by_model)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|r| r.unpriced_calls > 0)
        .map(|r| {
            let model = r.group.into_iter().find_map(|(_, v)| v).unwrap_or_default();
            (model, r.unpriced_calls)
        })
        .collect();
    models.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(models
        .into_iter()
        .map(|(model, calls)| serde_json::json!({ "model": model, "calls": calls }))
        .collect())
}

fn unavailable(e: weir_store::StoreError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!(
            "the usage ledger could not answer: {e}; check the store (GET /status, ledger) and retry"
        ),
    )
}

/// A row's cost: `null` when none of its calls had a price (its cost is unknown, not zero).
fn row_cost(row: &UsageRow) -> Option<String> {
    let all_unpriced = row.requests > 0 && row.unpriced_calls == row.requests;
    (!all_unpriced).then(|| row.cost_usd.normalize().to_string())
}

pub(crate) fn row_json(row: &UsageRow) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (dimension, value) in &row.group {
        out.insert(dimension.as_str().to_owned(), serde_json::json!(value));
    }
    let totals = serde_json::json!({
        "requests": row.requests,
        "errors": row.errors,
        "cache_hits": row.cache_hits,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cached_input_tokens": row.cached_input_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "cost_usd": row_cost(row),
        "saved_usd": row.saved_usd.normalize().to_string(),
        "unpriced_calls": row.unpriced_calls,
    });
    if let serde_json::Value::Object(totals) = totals {
        out.extend(totals);
    }
    serde_json::Value::Object(out)
}

/// One header line, then a line per row; fields with a comma or quote are quoted.
fn csv(query: &UsageQuery, rows: &[UsageRow]) -> String {
    fn field(out: &mut String, text: &str) {
        if text.contains([',', '"', '\n']) {
            let _ = write!(out, "\"{}\"", text.replace('"', "\"\""));
        } else {
            out.push_str(text);
        }
    }
    let mut out = String::new();
    for d in &query.group_by {
        out.push_str(d.as_str());
        out.push(',');
    }
    out.push_str("requests,errors,cache_hits,input_tokens,output_tokens,cached_input_tokens,reasoning_tokens,cost_usd,saved_usd,unpriced_calls\n");
    for row in rows {
        for (_, value) in &row.group {
            field(&mut out, value.as_deref().unwrap_or(""));
            out.push(',');
        }
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            row.requests,
            row.errors,
            row.cache_hits,
            row.input_tokens,
            row.output_tokens,
            row.cached_input_tokens,
            row.reasoning_tokens,
            row_cost(row).unwrap_or_default(),
            row.saved_usd.normalize(),
            row.unpriced_calls
        );
    }
    out
}
