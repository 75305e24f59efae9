//! Admin routes: `POST /admin/circuits/reset`.
//!
//! They sit behind the same gateway keys as the API (when keys are configured; without keys
//! weir listens on loopback only).

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::json_response;
use crate::error::{ApiError, Flavor};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    /// A deployment id (`provider/model`) or a group name; all breakers when absent.
    #[serde(default)]
    deployment: Option<String>,
}

/// Close circuit breakers by hand. The body is optional.
pub async fn reset_circuits(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetRequest::default()
    } else {
        crate::extract::parse(&body, Flavor::OpenAi)?
    };
    let n = state.client.reset_circuits(req.deployment.as_deref());
    Ok(json_response(&json!({ "reset": n })))
}

/// `GET /cache/stats`: hits, misses, hit rate, coalesced requests, entries and bytes per
/// tier, and the tokens and estimated dollars the hits saved.
pub async fn cache_stats(State(state): State<AppState>) -> Response {
    match state.client.cache_stats().await {
        Some(stats) => json_response(&stats),
        None => json_response(&json!({ "enabled": false })),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ClearQuery {
    /// Only this model's entries (a named model or `provider/model`).
    #[serde(default)]
    model: Option<String>,
}

/// `DELETE /cache[?model=...]`: clear every tier, or one model's entries.
pub async fn clear_cache(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ClearQuery>,
) -> Response {
    let removed = state.client.clear_cache(q.model.as_deref()).await;
    json_response(&json!({ "removed": removed, "model": q.model }))
}
