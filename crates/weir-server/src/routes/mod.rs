//! The HTTP routes, one module per API surface.

pub mod admin;
pub mod budgets;
pub mod chat;
pub mod embeddings;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod recommendations;
pub mod usage;

use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;

use weir::client::CacheDirectives;
use weir::{CallContext, Principal, ResponseMeta};

use crate::error::{ApiError, Flavor};
use crate::layers::LogFields;

/// A 200 JSON response serialised in one go.
pub fn json_response<T: Serialize>(body: &T) -> Response {
    match weir::json::to_vec(body) {
        Ok(bytes) => json_bytes_response(bytes.into()),
        Err(e) => crate::error::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            format!("could not encode the response: {e}"),
        )
        .into_response(),
    }
}

/// A 200 response of JSON that is already encoded.
pub fn json_bytes_response(body: bytes::Bytes) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Which provider and upstream model served the request, and where the time went:
/// `x-weir-upstream-ms` inside the upstream call (retries included; absent on a cache hit,
/// which made none), `x-weir-processing-ms` weir's own time on top of it.
pub fn meta_headers(h: &mut HeaderMap, meta: &ResponseMeta, started: Instant) {
    const PROVIDER: HeaderName = HeaderName::from_static("x-weir-provider");
    const UPSTREAM_MODEL: HeaderName = HeaderName::from_static("x-weir-upstream-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-weir-attempts");
    const UPSTREAM_MS: HeaderName = HeaderName::from_static("x-weir-upstream-ms");
    const PROCESSING_MS: HeaderName = HeaderName::from_static("x-weir-processing-ms");
    const CACHE: HeaderName = HeaderName::from_static("x-weir-cache");
    const COALESCED: HeaderName = HeaderName::from_static("x-weir-coalesced");
    const COST_USD: HeaderName = HeaderName::from_static("x-weir-cost-usd");

    let total = started.elapsed();
    // A cache hit made no upstream call: it has no upstream time, and all of it is weir's.
    let hit = meta.cache == weir::client::CacheStatus::Hit;
    let own = if hit {
        total
    } else {
        total.saturating_sub(meta.latency)
    };
    // Room for all eight (and the three rate-limit ones, and the request id added after) up
    // front: growing the map mid-way rehashes what is already there.
    h.reserve(if meta.quota.is_some() { 16 } else { 8 });
    if let Ok(v) = HeaderValue::from_str(&meta.provider) {
        h.insert(PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&meta.upstream_model) {
        h.insert(UPSTREAM_MODEL, v);
    }
    h.insert(ATTEMPTS, HeaderValue::from(meta.attempts));
    if !hit {
        h.insert(UPSTREAM_MS, millis_value(meta.latency));
    }
    h.insert(PROCESSING_MS, millis_value(own));
    h.insert(CACHE, HeaderValue::from_static(meta.cache.as_str()));
    if meta.coalesced {
        h.insert(COALESCED, HeaderValue::from_static("true"));
    }
    if let Some(cost) = meta.cost_usd {
        h.insert(COST_USD, decimal_value(cost));
    }
    if let Some(quota) = &meta.quota {
        quota_headers(h, quota);
    }
    for warning in &meta.budget_warnings {
        static WARNING: HeaderName = HeaderName::from_static("x-weir-budget-warning");
        if let Ok(v) = HeaderValue::from_str(warning) {
            h.append(WARNING.clone(), v);
        }
    }
}

/// The caller's tightest inbound limit, as web backends' rate limiters send it:
/// `X-RateLimit-Limit` (the limit's value), `X-RateLimit-Remaining` (what is left of it now)
/// and `X-RateLimit-Reset` (the Unix time, in seconds, when it is back to full).
pub fn quota_headers(h: &mut HeaderMap, quota: &weir::pipeline::Quota) {
    static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    let reset_at = std::time::SystemTime::now() + quota.reset;
    let reset_secs = reset_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    h.insert(LIMIT.clone(), HeaderValue::from(quota.limit));
    h.insert(REMAINING.clone(), HeaderValue::from(quota.remaining));
    h.insert(RESET.clone(), HeaderValue::from(reset_secs));
}

/// A decimal as plain text (`0`, `0.00042`), written from its digits: `Decimal`'s `Display`
/// goes through the formatter and showed up on every response.
fn decimal_value(d: rust_decimal::Decimal) -> HeaderValue {
    if d.is_zero() {
        return HeaderValue::from_static("0");
    }
    let d = d.normalize();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(d.mantissa().unsigned_abs());
    let scale = d.scale() as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if d.is_sign_negative() {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(digits);
    } else if digits.len() > scale {
        let (whole, frac) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(digits);
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A duration as milliseconds with three decimals (`12.345`), written without `format!`:
/// these headers go out on every response.
fn millis_value(d: Duration) -> HeaderValue {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut digits = itoa::Buffer::new();
    let whole = digits.format(micros / 1000);
    let frac = micros % 1000;
    let mut out = Vec::with_capacity(whole.len() + 4);
    out.extend_from_slice(whole.as_bytes());
    out.push(b'.');
    // frac < 1000, so each digit is 0..=9.
    out.extend([frac / 100, frac / 10 % 10, frac % 10].map(|digit| b'0' + digit as u8));
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static("0.000"))
}

/// The call context of a request: its id, its principal, `x-weir-priority` (0-255, higher first) for
/// queueing when upstream keys are out of capacity, the cache directives (`Cache-Control:
/// no-cache` skips the lookup, `no-store` the write; `x-weir-cache-ttl` sets the entry's time
/// to live in seconds or as `10m`, and asks for caching even of a sampled request), and the
/// Anthropic API-behaviour headers (`anthropic-version`, `anthropic-beta`) to forward.
///
/// An `x-weir-cache-ttl` that is not a duration is the caller's mistake: a 400 that says so.
pub fn call_context(
    request_id: String,
    principal: Principal,
    headers: &HeaderMap,
    anthropic_route: bool,
) -> Result<CallContext, ApiError> {
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
    // Anthropic clients choose the API's behaviour with these; the upstream must see them.
    // Only the Messages routes look (the chat route pays no lookups).
    let mut upstream_headers = Vec::new();
    if anthropic_route {
        for name in [&ANTHROPIC_VERSION, &ANTHROPIC_BETA] {
            for v in headers.get_all(name) {
                upstream_headers.push((name.clone(), v.clone()));
            }
        }
    }
    Ok(CallContext {
        request_id,
        principal,
        priority,
        cache,
        upstream_headers,
        // Read only when traces are exported: otherwise no call span would adopt it.
        trace_parent: weir::telemetry::installed()
            .and_then(|_| weir::telemetry::TraceParent::from_headers(headers)),
        ..CallContext::default()
    })
}

static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// A complete answer: `body` with the metadata headers, and what the access log says.
pub fn answer(mut res: Response, meta: &ResponseMeta, started: Instant) -> Response {
    meta_headers(res.headers_mut(), meta, started);
    let usage = meta.usage.as_ref();
    res.extensions_mut().insert(LogFields {
        model: meta.requested_model.clone(),
        provider: meta.provider.clone(),
        prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
        completion_tokens: usage.map_or(0, |u| u.completion_tokens),
        logs_itself: false,
        cache: meta.cache.as_str(),
    });
    res
}

/// A streamed answer: its SSE body with the metadata headers; the body logs itself.
pub fn streamed(
    body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::convert::Infallible>>,
    meta: &ResponseMeta,
    started: Instant,
) -> Response {
    let mut res = crate::sse::response(body);
    meta_headers(res.headers_mut(), meta, started);
    res.extensions_mut().insert(LogFields {
        model: meta.requested_model.clone(),
        provider: meta.provider.clone(),
        logs_itself: true,
        ..LogFields::default()
    });
    res
}

/// A failed call, in the route's error shape, logged under the model asked for.
pub fn failed(e: &weir::Error, flavor: Flavor, model: &str) -> Response {
    let mut res = ApiError::from_weir(e, flavor).into_response();
    res.extensions_mut().insert(LogFields {
        model: model.to_owned(),
        ..LogFields::default()
    });
    res
}

/// The access-log context of a stream that starts with `meta`.
pub fn stream_log(
    request_id: String,
    route: &'static str,
    meta: &ResponseMeta,
    started: Instant,
    summary: std::sync::Arc<std::sync::OnceLock<weir::client::StreamSummary>>,
) -> crate::sse::LogContext {
    crate::sse::LogContext {
        request_id,
        route,
        model: meta.requested_model.clone(),
        provider: meta.provider.clone(),
        cache: meta.cache.as_str(),
        started,
        summary: Some(summary),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_like_display() {
        for text in [
            "0",
            "1",
            "12.5",
            "0.00042",
            "-0.5",
            "100",
            "0.000000015",
            "123456.789",
        ] {
            let d: rust_decimal::Decimal = text.parse().unwrap();
            assert_eq!(
                decimal_value(d),
                d.normalize().to_string().as_str(),
                "{text}"
            );
        }
        assert_eq!(decimal_value("1.2300".parse().unwrap()), "1.23");
    }

    #[test]
    fn millis_have_three_decimals() {
        let ms = |micros| millis_value(Duration::from_micros(micros));
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(7), "0.007");
        assert_eq!(ms(12_345), "12.345");
        assert_eq!(ms(1_000_050), "1000.050");
        assert_eq!(
            millis_value(Duration::from_nanos(1_999)),
            "0.001",
            "truncated"
        );
    }
}
