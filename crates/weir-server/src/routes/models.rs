//! `GET /v1/models` and `GET /v1/models/{id}`: the configured models and aliases.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_types::models::ModelList;

use super::json_response;
use crate::error::ApiError;
use crate::state::AppState;

/// The models the caller may use: every configured one, or those its key allows.
pub async fn list(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::layers::Caller>>,
) -> Response {
    let mut models = state.client.models();
    if let Some(allowed) = caller.and_then(|c| c.0.principal.allowed_models) {
        let config = state.client.config();
        models.retain(|m| weir::access::may_use(config, &allowed, &m.id));
    }
    json_response(&ModelList::new(models))
}

/// Model ids hold slashes (`openai/gpt-4o`), so the route captures the rest of the path.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.client.model(&id) {
        Some(m) => json_response(&m),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            format!("model `{id}` not found: GET /v1/models lists the available models"),
        )
        .with_code("model_not_found")
        .with_param("model")
        .into_response(),
    }
}
