//! Operational routes: `/health` (liveness), `/ready` (readiness), `/status` (counters).

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
    match state.client.cache_ready().await {
        Ok(()) => json_response(&json!({"status": "ready", "providers": providers})),
        Err(e) => {
            let mut res =
                json_response(&json!({"status": "not ready", "providers": providers, "cache": e}));
            *res.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
            res
        }
    }
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
