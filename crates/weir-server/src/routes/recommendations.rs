//! `GET /admin/recommendations`: what could be cheaper or cleaner, from the ledger, the
//! budgets' forecasts and the stored keys (see [`crate::recommend`] for each kind and its
//! threshold). Behind the admin guard.
//!
//! Query: `days` (the ledger window, 1 to 90, default 7), `min_calls` (calls a deployment
//! needs before it is judged, default 20), `idle_days` (days unused before a key is idle,
//! default 30). Anything else is refused, so a misspelt threshold is not silently ignored.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::json_response;
use crate::error::ApiError;
use crate::recommend::{self, LedgerAnalysis, MAX_DAYS, Thresholds};
use crate::state::AppState;

/// Calls read from the store per query.
const PAGE: usize = 10_000;
/// Calls a report reads at most; past it the report says it is partial.
const MAX_CALLS: u64 = 1_000_000;
const DAY_MS: i64 = 86_400_000;

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    params: &BTreeMap<String, String>,
    name: &str,
    default: T,
    range: (T, T),
) -> Result<T, ApiError> {
    let Some(text) = params.get(name) else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(v) if v >= range.0 && v <= range.1 => Ok(v),
        _ => Err(ApiError::bad_request(format!(
            "`{name}={text}` is not a whole number from {} to {}",
            range.0, range.1
        ))
        .with_param(name)),
    }
}

fn thresholds(params: &BTreeMap<String, String>) -> Result<Thresholds, ApiError> {
    if let Some(unknown) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "days" | "min_calls" | "idle_days"))
    {
        return Err(ApiError::bad_request(format!(
            "`{unknown}` is not a recommendations parameter: use days, min_calls or idle_days"
        ))
        .with_param(unknown.clone()));
    }
    let d = Thresholds::default();
    Ok(Thresholds {
        days: number(params, "days", d.days, (1, MAX_DAYS))?,
        min_calls: number(params, "min_calls", d.min_calls, (1, 1_000_000_000))?,
        idle_days: number(params, "idle_days", d.idle_days, (1, 3650))?,
    })
}

fn store_failed(what: &str, e: &weir_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "recommendations: cannot read {what}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        format!("cannot read {what} for recommendations: {e}"),
    )
}

/// `GET /admin/recommendations`.
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let t = thresholds(&params)?;
    let Some(ledger) = &state.ledger_store else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this gateway keeps no usage ledger to recommend from: run it with a store \
             (store.sqlite or store.postgres; `weir serve` has one unless WEIR_DATA_DIR=off)",
        ));
    };
    let to_ms = crate::ledger::now_ms().saturating_add(1);
    let mut from_ms = to_ms - t.days * DAY_MS;
    let mut analysis = LedgerAnalysis::default();
    let mut truncated = false;
    // Page by time: a full page's last millisecond is read again with the next page (its
    // calls may continue there), unless the whole page is that one millisecond.
    loop {
        let page = ledger
            .records(from_ms, to_ms, PAGE)
            .await
            .map_err(|e| store_failed("the usage ledger", &e))?;
        let full = page.len() == PAGE;
        let last_ms = page.last().map_or(from_ms, |r| r.at_ms);
        let take_all = !full || page.first().is_some_and(|r| r.at_ms == last_ms);
        for call in page.iter().filter(|r| take_all || r.at_ms < last_ms) {
            analysis.add(call);
        }
        if !full {
            break;
        }
        if analysis.calls() >= MAX_CALLS {
            truncated = true;
            break;
        }
        from_ms = if take_all { last_ms + 1 } else { last_ms };
    }
    let calls = analysis.calls();
    let mut items = analysis.finish(&state.client.config().pricing, t);
    if state.client.budgets().is_some() {
        items.extend(recommend::budgets(&super::budgets::statuses(&state).await?));
    }
    if let Some(keys) = &state.keys {
        let stored = keys
            .store()
            .list_keys()
            .await
            .map_err(|e| store_failed("the gateway keys", &e))?;
        items.extend(recommend::keys(&stored, crate::keys::now_unix(), t));
    }
    recommend::sort(&mut items);
    Ok(json_response(&json!({
        "object": "list",
        "days": t.days,
        "min_calls": t.min_calls,
        "idle_days": t.idle_days,
        "calls_analysed": calls,
        "truncated": truncated,
        "data": items,
    })))
}
