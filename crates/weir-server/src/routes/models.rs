//! `GET /v1/models` and `GET /v1/models/{id}`: the configured models and aliases.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_types::models::ModelList;

use super::json_response;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn list(State(state): State<AppState>) -> Response {
    json_response(&ModelList::new(state.client.models()))
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
