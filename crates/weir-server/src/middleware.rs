//! Cross-cutting request handling: request ids, gateway auth and the access log.
//!
//! Order (outer -> inner): panic catch -> request id -> access log -> auth -> handler.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Flavor};
use crate::state::AppState;

/// The request's id: the client's `x-request-id` when sane, else a fresh one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The caller's cache namespace: derived from the gateway key it presented (a hash, never the
/// key), so tenants never read each other's cache entries.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// Put on a response by a handler so the access log can say what was served.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub model: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// A streamed response logs itself when the stream ends.
    pub logs_itself: bool,
    /// `hit`, `miss` or `bypass` for chat answers; empty where the cache does not apply.
    pub cache: &'static str,
}

/// `req_` and 24 random hex digits, written directly: `format!` was a measurable part of a
/// proxied request.
fn fresh_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for shift in (0..96).step_by(4).rev() {
        id.push(char::from(HEX[(bits >> shift) as usize & 0xf]));
    }
    id
}

/// Keep a client's id if it is short and printable; otherwise make one.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(fresh_id, str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-request-id", v);
    }
    res
}

/// One line per request at info: id, route, model, status, latency, tokens. Never bodies.
pub async fn access_log(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let res = next.run(req).await;
    let served = res
        .extensions()
        .get::<Served>()
        .cloned()
        .unwrap_or_default();
    if !served.logs_itself {
        tracing::info!(
            request_id = %id,
            %method,
            route = %path,
            model = %served.model,
            provider = %served.provider,
            status = res.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = served.prompt_tokens,
            completion_tokens = served.completion_tokens,
            cache = served.cache,
            "request"
        );
    }
    res
}

/// Require a gateway key (Bearer or x-api-key) when keys are configured.
/// Health probes stay open so orchestrators can check liveness without secrets.
pub async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !state.auth_required() || path == "/health" || path == "/ready" {
        return next.run(req).await;
    }
    let flavor = Flavor::for_path(path);
    let headers = req.headers();
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let presented = bearer.or(api_key);
    match presented.map(|k| state.tenant_of(k)) {
        Some(Some(namespace)) => {
            let tenant = Tenant(namespace.to_owned());
            let mut req = req;
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid gateway API key: check the key your client sends (Authorization: Bearer ... or x-api-key)",
        )
        .with_code("invalid_api_key")
        .flavor(flavor)
        .closing()
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing gateway API key: send Authorization: Bearer <key> or x-api-key: <key>",
        )
        .with_code("invalid_api_key")
        .flavor(flavor)
        .closing()
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fresh_ids_are_req_and_24_hex_digits_and_differ() {
        let (a, b) = (super::fresh_id(), super::fresh_id());
        for id in [&a, &b] {
            let hex = id.strip_prefix("req_").unwrap_or_default();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }
}
