//! Admin routes: `POST /admin/circuits/reset`, `GET /cache/stats` and `DELETE /cache`.
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
/// tier, and the tokens and estimated dollars the hits saved, all since this process started;
/// with a ledger, also `ledger`: the calls the cache and single-flight answered and the dollars
/// they saved, all time, summed from the ledger (so a restart forgets nothing, and replicas
/// sharing a store report the same figure).
pub async fn cache_stats(State(state): State<AppState>) -> Response {
    let mut body = match state.client.cache_stats().await {
        Some(stats) => serde_json::to_value(&stats).unwrap_or_else(|_| json!({})),
        None => json!({ "enabled": false }),
    };
    if let Some(ledger) = &state.ledger_store {
        if let Some(writer) = &state.ledger {
            // Hits still in the spool belong in the figure.
            let _ = writer.flush().await;
        }
        body["ledger"] = match ledger.savings(0, i64::MAX).await {
            Ok(s) => json!({
                "calls": s.calls(),
                "saved_usd": s.saved_usd().normalize().to_string(),
                "cache_hits": s.cache_hits,
                "cache_hit_saved_usd": s.cache_hit_saved_usd.normalize().to_string(),
                "coalesced": s.coalesced,
                "coalesced_saved_usd": s.coalesced_saved_usd.normalize().to_string(),
                "rolled_up": s.rolled_up,
                "rolled_up_saved_usd": s.rolled_up_saved_usd.normalize().to_string(),
            }),
            // The in-process figures still answer; the ledger's absence is said, not hidden.
            Err(e) => json!({
                "error": format!("the usage ledger could not total the savings: {e}; check the store (GET /status, ledger)")
            }),
        };
    }
    json_response(&body)
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
