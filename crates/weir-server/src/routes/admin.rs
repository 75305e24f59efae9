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
