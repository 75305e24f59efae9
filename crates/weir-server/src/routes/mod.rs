//! The HTTP routes, one module per API surface.

pub mod admin;
pub mod chat;
pub mod embeddings;
pub mod messages;
pub mod models;
pub mod ops;

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

use weir::CallOptions;
use weir::client::CacheDirectives;

use crate::error::ApiError;
use crate::middleware::Tenant;
use weir::ResponseMeta;

/// A 200 JSON response serialised in one go.
pub fn json_response<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut res = (StatusCode::OK, bytes).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => crate::error::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            format!("could not encode the response: {e}"),
        )
        .into_response(),
    }
}

/// Which provider and upstream model served the request, and where the time went:
/// `x-weir-upstream-ms` inside the upstream call (retries included), `x-weir-processing-ms`
/// weir's own time on top of it.
pub fn meta_headers(h: &mut HeaderMap, meta: &ResponseMeta, started: Instant) {
    let total = started.elapsed();
    let own = total.saturating_sub(meta.latency);
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("x-weir-provider", meta.provider.clone());
    put("x-weir-upstream-model", meta.upstream_model.clone());
    put("x-weir-attempts", meta.attempts.to_string());
    put(
        "x-weir-upstream-ms",
        format!("{:.3}", meta.latency.as_secs_f64() * 1000.0),
    );
    put(
        "x-weir-processing-ms",
        format!("{:.3}", own.as_secs_f64() * 1000.0),
    );
    put("x-weir-cache", meta.cache.as_str().to_owned());
    if meta.coalesced {
        put("x-weir-coalesced", "true".to_owned());
    }
    if let Some(cost) = meta.cost_usd {
        put("x-weir-cost-usd", cost.normalize().to_string());
    }
}

/// Per-call options from the request: its id, `x-weir-priority` (0-255, higher first) for
/// queueing when upstream keys are out of capacity, the cache directives (`Cache-Control:
/// no-cache` skips the lookup, `no-store` the write; `x-weir-cache-ttl` sets the entry's time
/// to live in seconds or as `10m`, and asks for caching even of a sampled request), and the
/// tenant's cache namespace set by the auth layer.
///
/// An `x-weir-cache-ttl` that is not a duration is the caller's mistake: a 400 that says so.
pub fn call_options(
    request_id: &str,
    headers: &HeaderMap,
    tenant: Option<&Tenant>,
) -> Result<CallOptions, ApiError> {
    let priority = headers
        .get("x-weir-priority")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let mut cache = CacheDirectives::default();
    for directive in headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        match directive.trim().to_ascii_lowercase().as_str() {
            "no-cache" => cache.no_read = true,
            "no-store" => cache.no_store = true,
            _ => {}
        }
    }
    if let Some(ttl) = headers.get("x-weir-cache-ttl") {
        let text = ttl.to_str().unwrap_or_default().trim();
        // Bare seconds, or a duration as the config writes them (`10m`, `1h 30m`).
        let parsed = text
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(text));
        match parsed {
            Ok(d) => {
                cache.ttl = Some(d);
                cache.force = true;
            }
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "x-weir-cache-ttl `{text}` is not a duration: send seconds (`600`) or e.g. `10m`"
                ))
                .with_param("x-weir-cache-ttl"));
            }
        }
    }
    Ok(CallOptions {
        request_id: Some(request_id.to_owned()),
        timeout: None,
        priority,
        cache,
        tenant: tenant.map(|t| t.0.clone()),
    })
}
