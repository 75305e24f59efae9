//! `/admin/budgets`: spend budgets' status (limit, spent, reserved, remaining, percentage,
//! period, reset and forecast), and budgets set or removed at run time. Behind the admin
//! guard. Budgets from the configuration are listed too. With a store, a change is kept
//! there: it holds across restarts, reaches every replica, and wins over a configured budget
//! with the same id (see [`crate::budgets`]); without one it lasts until the next start.
//!
//! Forecasts read the ledger's daily spend for each budget's scope when the gateway has one
//! (see [`weir::budgets::forecast`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;
use weir::budgets::{BudgetSpec, BudgetStatus, Budgets};

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

/// Every budget's status now, forecast from the ledger's daily spend when there is one (a
/// scope whose history cannot be read keeps its linear forecast, with a warning).
pub async fn statuses(state: &AppState) -> Result<Vec<BudgetStatus>, ApiError> {
    let budgets = budgets(state)?;
    let mut status = budgets.status().await.map_err(|e| failed(&e))?;
    if let Some(ledger) = &state.ledger_store {
        let now = budgets.now();
        for one in &mut status {
            match crate::budgets::daily_history(ledger.as_ref(), &one.spec.scope, now).await {
                Ok(history) => {
                    one.with_history(now, &history);
                }
                Err(e) => {
                    tracing::warn!(budget = %one.spec.id, error = %e, "cannot read the budget's daily spend: its forecast is linear")
                }
            }
        }
    }
    Ok(status)
}

/// `GET /admin/budgets`: every budget's status now.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = statuses(&state).await?;
    Ok(json_response(&json!({ "object": "list", "data": status })))
}

/// `GET /admin/budgets/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let status = statuses(&state).await?;
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
    match &state.budget_sync {
        Some(sync) => sync.put(spec).await.map_err(|e| change_failed(&e))?,
        None => budgets(state)?.set(spec).map_err(|e| failed(&e))?,
    }
    tracing::info!(budget = %id, "budget set");
    let status = statuses(state).await?;
    let one = status.into_iter().find(|s| s.spec.id == id);
    Ok(json_response(&one))
}

/// `DELETE /admin/budgets/{id}`.
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let removed = match &state.budget_sync {
        Some(sync) => sync.remove(&id).await.map_err(|e| change_failed(&e))?,
        None => budgets(&state)?.remove(&id).map_err(|e| failed(&e))?,
    };
    if removed {
        Ok(json_response(&json!({ "id": id, "deleted": true })))
    } else {
        Err(no_such_budget(&id))
    }
}

fn change_failed(e: &crate::budgets::BudgetChangeError) -> ApiError {
    match e {
        crate::budgets::BudgetChangeError::Invalid(e) => failed(e),
        crate::budgets::BudgetChangeError::Store(_) => {
            tracing::error!(error = %e, "budget store failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!("{e}; retry once the store answers"),
            )
        }
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
