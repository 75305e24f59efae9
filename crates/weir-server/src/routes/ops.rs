//! Operational routes: `/health` (liveness), `/ready` (readiness), `/status` (counters, and
//! the usage ledger's backlog and upkeep).
//!
//! `/ready` is 503 while a cache tier or the inbound limits' store (Redis) does not answer:
//! requests are still served (as misses; limits per `limits.on_store_error`), but a load
//! balancer can prefer another instance.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::json_response;
use crate::state::AppState;

pub async fn health() -> Response {
    json_response(&json!({"status": "ok"}))
}

/// Ready once the config is loaded and the client built (before the listener opens) and the
/// cache's stores answer. A store that does not answer makes weir not ready (503), so a load
/// balancer can route around the instance; requests would still be served, as misses.
pub async fn ready(State(state): State<AppState>) -> Response {
    let providers: Vec<&str> = state
        .client
        .config()
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let limits = state.client.inbound_limits().map(|l| l.health());
    let limits_down = limits.as_ref().is_some_and(|h| !h.healthy);
    match state.client.cache_ready().await {
        Ok(()) if !limits_down => {
            json_response(&json!({"status": "ready", "providers": providers}))
        }
        cache => {
            let mut body = json!({"status": "not ready", "providers": providers});
            if let Err(e) = cache {
                body["cache"] = json!(e);
            }
            if limits_down {
                body["limits"] = json!(limits);
            }
            let mut res = json_response(&body);
            *res.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            res
        }
    }
}

/// Uptime, calls/tokens/cost per model since start, each upstream key's rate-limit state, the
/// inbound limiter's store health and the gateway key store.
pub async fn status(State(state): State<AppState>) -> Response {
    let status = state.client.status();
    json_response(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": status.uptime_seconds,
        "models": status.models,
        // Called since start without a price: each needs a `pricing:` entry.
        "unpriced_models": state.client.unpriced_models(),
        "keys": status.keys,
        "deployments": status.deployments,
        "limits": state.client.inbound_limits().map(|l| l.health()),
        "budgets": state.client.budgets().map(|b| b.health()),
        "gateway_keys": state.keys.as_ref().map(|k| k.status()),
        "ledger": ledger_status(&state),
        "telemetry": telemetry_status(),
    }))
}

/// The trace exporter's counts (`spans_exported`, `spans_dropped`), when traces are exported.
fn telemetry_status() -> serde_json::Value {
    #[cfg(feature = "otel")]
    if let Some(status) = crate::telemetry::status() {
        return serde_json::to_value(status).unwrap_or(serde_json::Value::Null);
    }
    serde_json::Value::Null
}

/// The ledger writer's health, with the retention settings and the last sweep when the
/// gateway sweeps (`retention`, `roll_up_after`, `sweep_every`, `last_sweep`).
fn ledger_status(state: &AppState) -> serde_json::Value {
    let Some(writer) = &state.ledger else {
        return serde_json::Value::Null;
    };
    let mut out = serde_json::to_value(writer.health()).unwrap_or_else(|_| json!({}));
    if let (Some(upkeep), serde_json::Value::Object(map)) = (&state.upkeep, &mut out)
        && let Ok(serde_json::Value::Object(status)) = serde_json::to_value(upkeep.status())
    {
        map.extend(status);
    }
    out
}
