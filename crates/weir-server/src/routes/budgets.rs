//! `/admin/budgets`: spend budgets' status (limit, spent, reserved, remaining, percentage,
//! period, reset and forecast), and budgets set or removed at run time. Behind the admin
//! guard. Budgets from the configuration are listed too; setting one with the same id
//! replaces it until the next start.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use weir::budgets::{BudgetSpec, Budgets};

use super::json_response;
use crate::error::{ApiError, Flavor};
use crate::state::AppState;

fn budgets(state: &AppState) -> Result<&std::sync::Arc<Budgets>, ApiError> {
    state.client.budgets().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this gateway holds no budgets: `weir serve` always does; a gateway built by hand \
             needs ClientBuilder::budgets",
        )
    })
}

fn failed(e: &weir::Error) -> ApiError {
    ApiError::from_weir(e, Flavor::OpenAi)
}

/// `GET /admin/budgets`: every budget's status now.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = budgets(&state)?.status().await.map_err(|e| failed(&e))?;
    Ok(json_response(&json!({ "object": "list", "data": status })))
}

/// `GET /admin/budgets/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = budgets(&state)?.status().await.map_err(|e| failed(&e))?;
    match status.into_iter().find(|s| s.spec.id == id) {
        Some(one) => Ok(json_response(&one)),
        None => Err(no_such_budget(&id)),
    }
}

/// `PUT /admin/budgets/{id}` (or `POST /admin/budgets` with an `id`): set a budget; the spend
/// of a budget that already exists is kept.
pub async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut value: serde_json::Value = crate::extract::parse(&body, Flavor::OpenAi)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), json!(id));
    }
    set(&state, value).await
}

/// `POST /admin/budgets`.
pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let value: serde_json::Value = crate::extract::parse(&body, Flavor::OpenAi)?;
    set(&state, value).await
}

async fn set(state: &AppState, value: serde_json::Value) -> Result<Response, ApiError> {
    let spec: BudgetSpec = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid budget: {e}")))?;
    spec.validate()
        .map_err(|e| ApiError::bad_request(format!("invalid budget `{}`: {e}", spec.id)))?;
    let id = spec.id.clone();
    budgets(state)?.set(spec).map_err(|e| failed(&e))?;
    tracing::info!(budget = %id, "budget set");
    let status = budgets(state)?.status().await.map_err(|e| failed(&e))?;
    let one = status.into_iter().find(|s| s.spec.id == id);
    Ok(json_response(&one))
}

/// `DELETE /admin/budgets/{id}`.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if budgets(&state)?.remove(&id).map_err(|e| failed(&e))? {
        Ok(json_response(&json!({ "id": id, "deleted": true })))
    } else {
        Err(no_such_budget(&id))
    }
}

fn no_such_budget(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("no budget with id `{id}`: GET /admin/budgets lists them"),
    )
    .with_code("budget_not_found")
}
