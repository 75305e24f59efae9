//! `/admin/keys`: create, list, show, update, revoke and rotate stored gateway keys.
//!
//! A key's secret is returned once, when it is created or rotated, and stored only as its
//! keyed hash; every other answer shows its hint (`wk-Ab3x…9fQz`) so people can tell keys
//! apart. Behind the admin guard (see [`crate::layers::AdminAccess`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use weir_store::{KeyLimits, KeyRecord, KeyUpdate, NewKey, StoreError};

use super::json_response;
use crate::error::{ApiError, Flavor};
use crate::keys::{KeyAuthority, now_unix};
use crate::state::AppState;

/// `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    project: Option<String>,
    /// Model patterns the key may use; absent or empty: every model.
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    limits: KeyLimits,
    #[serde(default)]
    allow_user_override: bool,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<i64>,
    /// Or a lifetime from now: `30d`, `12h`.
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
}

fn enabled_by_default() -> bool {
    true
}

/// A key as the admin API shows it; `key` only in the answers that mint one.
#[derive(Debug, Serialize)]
struct KeyView<'a> {
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(flatten)]
    record: &'a KeyRecord,
    status: &'static str,
}

fn status_of(record: &KeyRecord, now: i64) -> &'static str {
    if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else if !record.enabled {
        "disabled"
    } else {
        "active"
    }
}

fn view<'a>(record: &'a KeyRecord, key: Option<&'a str>) -> KeyView<'a> {
    KeyView {
        object: "gateway.key",
        key,
        record,
        status: status_of(record, now_unix()),
    }
}

fn authority(state: &AppState) -> Result<&Arc<KeyAuthority>, ApiError> {
    state.keys.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "this gateway has no key store: stored keys need store.sqlite.path or \
             store.postgres.url (weir serve keeps one in its data directory unless \
             WEIR_DATA_DIR=off)",
        )
    })
}

fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_request_error", e.to_string())
                .with_code("conflict")
        }
        StoreError::InvalidData(_) => ApiError::bad_request(e.to_string()),
        _ => {
            tracing::error!(error = %e, "key store failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                format!("the key store failed: {e}"),
            )
        }
    }
}

fn no_such_key(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("no gateway key with id `{id}`: GET /admin/keys lists them"),
    )
    .with_code("key_not_found")
}

fn check_limits(limits: &KeyLimits) -> Result<(), ApiError> {
    for (name, value) in [("rpm", limits.rpm), ("tpm", limits.tpm)] {
        if value == Some(0) {
            return Err(ApiError::bad_request(format!(
                "limits.{name} must be at least 1 (leave it out for no limit)"
            ))
            .with_param(format!("limits.{name}")));
        }
    }
    Ok(())
}

fn check_models(models: &[String]) -> Result<(), ApiError> {
    if let Some(bad) = models.iter().position(|m| m.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "a model pattern must not be empty; use `*` for every model",
        )
        .with_param(format!("models[{bad}]")));
    }
    Ok(())
}

fn expiry(at: Option<i64>, within: Option<&str>) -> Result<Option<i64>, ApiError> {
    match (at, within) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "send expires_at or expires_in, not both",
        )),
        (Some(at), None) => Ok(Some(at)),
        (None, Some(text)) => {
            let d = humantime::parse_duration(text).map_err(|_| {
                ApiError::bad_request(format!(
                    "expires_in `{text}` is not a duration: write e.g. `30d` or `12h`"
                ))
                .with_param("expires_in")
            })?;
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            Ok(Some(now_unix().saturating_add(secs)))
        }
        (None, None) => Ok(None),
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    crate::extract::parse(bytes, Flavor::OpenAi)
}

/// `POST /admin/keys`: mint a key; its secret is in this answer and nowhere else.
pub async fn create(State(state): State<AppState>, bytes: Bytes) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    let req: CreateKey = body(&bytes)?;
    let name = req.name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("name must not be empty").with_param("name"));
    }
    check_limits(&req.limits)?;
    check_models(&req.models)?;
    let expires_at = expiry(req.expires_at, req.expires_in.as_deref())?;
    let (secret, hint) = weir_store::generate_key().map_err(|e| store_error(&e))?;
    let new = NewKey {
        id: weir_store::generate_key_id().map_err(|e| store_error(&e))?,
        hash: authority.hasher().hash(secret.expose_secret()),
        hint,
        name: name.to_owned(),
        user: req.user,
        team: req.team,
        project: req.project,
        models: req.models,
        limits: req.limits,
        allow_user_override: req.allow_user_override,
        enabled: req.enabled,
        expires_at,
        metadata: req.metadata,
    };
    let record = authority
        .store()
        .create_key(&new)
        .await
        .map_err(|e| store_error(&e))?;
    authority.changed();
    tracing::info!(key_id = %record.id, name = %record.name, "gateway key created");
    let mut res = json_response(&view(&record, Some(secret.expose_secret())));
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

/// `GET /admin/keys`.
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    let keys = authority
        .store()
        .list_keys()
        .await
        .map_err(|e| store_error(&e))?;
    let data: Vec<KeyView<'_>> = keys.iter().map(|k| view(k, None)).collect();
    Ok(json_response(
        &serde_json::json!({ "object": "list", "data": data }),
    ))
}

/// `GET /admin/keys/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    match authority.store().key(&id).await {
        Ok(Some(record)) => Ok(json_response(&view(&record, None))),
        Ok(None) => Err(no_such_key(&id)),
        Err(e) => Err(store_error(&e)),
    }
}

/// `PATCH /admin/keys/{id}`: change some fields; JSON `null` clears a clearable one.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    let update: KeyUpdate = body(&bytes)?;
    if let Some(name) = &update.name
        && name.trim().is_empty()
    {
        return Err(ApiError::bad_request("name must not be empty").with_param("name"));
    }
    if let Some(models) = &update.models {
        check_models(models)?;
    }
    if let Some(limits) = &update.limits {
        check_limits(&KeyLimits {
            rpm: limits.rpm.flatten(),
            tpm: limits.tpm.flatten(),
        })?;
    }
    match authority.store().update_key(&id, &update).await {
        Ok(Some(record)) => {
            authority.changed();
            tracing::info!(key_id = %record.id, "gateway key updated");
            Ok(json_response(&view(&record, None)))
        }
        Ok(None) => Err(no_such_key(&id)),
        Err(e) => Err(store_error(&e)),
    }
}

/// `POST /admin/keys/{id}/revoke` (or `DELETE /admin/keys/{id}`): the key stops working on
/// every replica within a second, and stays listed as revoked.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    match authority.store().revoke_key(&id).await {
        Ok(Some(record)) => {
            authority.changed();
            tracing::info!(key_id = %record.id, "gateway key revoked");
            Ok(json_response(&view(&record, None)))
        }
        Ok(None) => Err(no_such_key(&id)),
        Err(e) => Err(store_error(&e)),
    }
}

/// `POST /admin/keys/{id}/rotate`: a new secret for the same key (id, settings, limits and
/// attribution kept); the old secret stops working at once. The new one is in this answer.
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let authority = authority(&state)?;
    match authority.store().key(&id).await {
        Ok(Some(record)) if record.revoked_at.is_some() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                format!("gateway key `{id}` is revoked; create a new key instead"),
            )
            .with_code("key_revoked"));
        }
        Ok(Some(_)) => {}
        Ok(None) => return Err(no_such_key(&id)),
        Err(e) => return Err(store_error(&e)),
    }
    let (secret, hint) = weir_store::generate_key().map_err(|e| store_error(&e))?;
    let hash = authority.hasher().hash(secret.expose_secret());
    match authority.store().rotate_key(&id, &hash, &hint).await {
        Ok(Some(record)) => {
            authority.changed();
            tracing::info!(key_id = %record.id, "gateway key rotated");
            Ok(json_response(&view(&record, Some(secret.expose_secret()))).into_response())
        }
        Ok(None) => Err(no_such_key(&id)),
        Err(e) => Err(store_error(&e)),
    }
}
