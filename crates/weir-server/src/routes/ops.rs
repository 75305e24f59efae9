//! Operational routes: `/health` (liveness), `/ready` (readiness), `/status` (counters).

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::json_response;
use crate::state::AppState;

pub async fn health() -> Response {
    json_response(&json!({"status": "ok"}))
}

/// Ready once the config is loaded and the client built, which is before the listener opens;
/// stores (cache, ledger) will report here as they arrive.
pub async fn ready(State(state): State<AppState>) -> Response {
    json_response(&json!({
        "status": "ready",
        "providers": state.client.config().providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
    }))
}

/// Uptime, calls/tokens/cost per model since start, and each upstream key's rate-limit state.
pub async fn status(State(state): State<AppState>) -> Response {
    let status = state.client.status();
    json_response(&json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": status.uptime_seconds,
        "models": status.models,
        "keys": status.keys,
        "deployments": status.deployments,
    }))
}
