//! Cross-cutting request handling ([`Gateway`]): request ids, gateway auth, panic containment
//! and the access log.
//!
//! Order: the request id is settled first, so a refused request still carries one and is
//! logged; auth runs before any route; a panicking handler becomes a 500 that is logged too.

use std::convert::Infallible;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use tower::Service;

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

/// The gateway around its routes: the one service every request passes through, for what
/// every request gets: its id, gateway auth, panic containment and the access log.
///
/// Hand-written rather than axum `from_fn` middleware: `Router::layer` wraps every route, and
/// each `from_fn` layer cloned and boxed the service beneath it, and boxed its own future, on
/// every request. Here a request costs one plain future and one small allocation: the copy of
/// its id handed to handlers (the id itself becomes the response header without a copy).
#[derive(Clone)]
pub struct Gateway {
    routes: Router,
    state: AppState,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// `routes` behind the gateway's per-request handling, with `state`'s gateway keys.
    pub fn new(routes: Router, state: AppState) -> Self {
        Self { routes, state }
    }
}

impl Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = GatewayFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> GatewayFuture {
        let id = request_id(&req);
        req.extensions_mut().insert(RequestId(id.clone()));
        let log = AccessLog {
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
        };
        let routing = match authenticate(&self.state, &mut req) {
            None => match catch_unwind(AssertUnwindSafe(|| self.routes.call(req))) {
                Ok(route) => Routing::Pending(route),
                Err(_) => Routing::Ready(panicked()),
            },
            Some(refusal) => Routing::Ready(refusal),
        };
        GatewayFuture { routing, id, log }
    }
}

/// A request on its way through [`Gateway`].
pub struct GatewayFuture {
    routing: Routing,
    id: String,
    log: AccessLog,
}

enum Routing {
    Pending(RouteFuture<Infallible>),
    /// Answered without a route (auth refused it, or a panic); taken once.
    Ready(Response),
}

impl std::future::Future for GatewayFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut res = match &mut this.routing {
            Routing::Pending(route) => {
                match catch_unwind(AssertUnwindSafe(|| Pin::new(route).poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(res))) => res,
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(_) => panicked(),
                }
            }
            Routing::Ready(res) => std::mem::take(res),
        };
        this.log.write(&this.id, &res);
        // The id's own bytes become the header value: no copy.
        let id = Bytes::from(std::mem::take(&mut this.id));
        if let Ok(v) = HeaderValue::from_maybe_shared(id) {
            res.headers_mut().insert(X_REQUEST_ID.clone(), v);
        }
        Poll::Ready(Ok(res))
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's `x-request-id` if it is short and printable; otherwise a fresh one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(fresh_id, str::to_owned)
}

/// A handler panicked: the server carries on, and the client gets a 500 that says so.
fn panicked() -> Response {
    tracing::error!("a request handler panicked; the server carries on");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "internal error in weir; the request was not completed. Please report it with the x-request-id",
    )
    .into_response()
}

/// What the access log needs from the request, taken before the request moves on.
struct AccessLog {
    started: Instant,
    method: Method,
    uri: Uri,
}

impl AccessLog {
    /// One line per request at info: id, route, model, status, latency, tokens. Never bodies.
    /// A streamed response logs itself when its stream ends.
    fn write(&self, id: &str, res: &Response) {
        let unknown = Served::default();
        let served = res.extensions().get::<Served>().unwrap_or(&unknown);
        if served.logs_itself {
            return;
        }
        tracing::info!(
            request_id = %id,
            method = %self.method,
            route = %self.uri.path(),
            model = %served.model,
            provider = %served.provider,
            status = res.status().as_u16(),
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = served.prompt_tokens,
            completion_tokens = served.completion_tokens,
            cache = served.cache,
            "request"
        );
    }
}

/// Require a gateway key (Bearer or x-api-key) when keys are configured, and tag the request
/// with the key's tenant. Health probes stay open so orchestrators can check liveness without
/// secrets. Returns the refusal, if the request is refused.
fn authenticate(state: &AppState, req: &mut Request) -> Option<Response> {
    let path = req.uri().path();
    if !state.auth_required() || path == "/health" || path == "/ready" {
        return None;
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
    let refusal = match presented.map(|k| state.tenant_of(k)) {
        Some(Some(namespace)) => {
            let tenant = Tenant(namespace.to_owned());
            req.extensions_mut().insert(tenant);
            return None;
        }
        Some(None) => {
            "invalid gateway API key: check the key your client sends (Authorization: Bearer ... or x-api-key)"
        }
        None => "missing gateway API key: send Authorization: Bearer <key> or x-api-key: <key>",
    };
    Some(
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", refusal)
            .with_code("invalid_api_key")
            .flavor(flavor)
            .closing()
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn gateway(keys: &str) -> Gateway {
        let yaml = format!("server:\n  api_keys: [{keys}]\n");
        let config = weir::Config::from_yaml(&yaml, &|_: &str| None::<String>).unwrap();
        let state = AppState::new(weir::Client::new(config).unwrap());
        let routes = Router::new()
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/id",
                get(|axum::Extension(RequestId(id)): axum::Extension<RequestId>| async move { id }),
            )
            .route("/boom", get(boom));
        Gateway::new(routes, state)
    }

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    fn get_with(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Body::empty()).unwrap()
    }

    async fn text(res: Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_request_keeps_the_clients_id_and_handlers_see_the_same_one() {
        let res = gateway("")
            .oneshot(get_with("/id", &[("x-request-id", "trace-42")]))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-request-id"], "trace-42");
        assert_eq!(text(res).await, "trace-42");
    }

    #[tokio::test]
    async fn an_unusable_client_id_is_replaced_by_a_fresh_one() {
        let long = "x".repeat(129);
        for bad in ["has space", long.as_str()] {
            let res = gateway("")
                .oneshot(get_with("/id", &[("x-request-id", bad)]))
                .await
                .unwrap();
            let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            assert!(header.starts_with("req_"), "{header}");
            assert_eq!(text(res).await, header);
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_with_an_id_and_the_gateway_carries_on() {
        let gw = gateway("");
        let res = gw.clone().oneshot(get_with("/boom", &[])).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key("x-request-id"));
        let body = text(res).await;
        assert!(body.contains("internal error in weir"), "{body}");
        let res = gw.oneshot(get_with("/ok", &[])).await.unwrap();
        assert_eq!(text(res).await, "fine");
    }

    #[tokio::test]
    async fn gateway_keys_are_required_except_on_health_probes() {
        let gw = gateway("gw-key");
        let refused = gw.clone().oneshot(get_with("/ok", &[])).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(refused.headers().contains_key("x-request-id"));
        assert!(text(refused).await.contains("missing gateway API key"));
        let wrong = gw
            .clone()
            .oneshot(get_with("/ok", &[("authorization", "Bearer nope")]))
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let body = text(wrong).await;
        assert!(
            body.contains("invalid gateway API key") && !body.contains("nope"),
            "{body}"
        );
        for auth in [("authorization", "Bearer gw-key"), ("x-api-key", "gw-key")] {
            let res = gw.clone().oneshot(get_with("/ok", &[auth])).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{auth:?}");
        }
        // No route named /health here: it is let through to the router's 404, not refused.
        let probe = gw.oneshot(get_with("/health", &[])).await.unwrap();
        assert_eq!(probe.status(), StatusCode::NOT_FOUND);
    }

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
