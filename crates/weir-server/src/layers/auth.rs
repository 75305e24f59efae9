//! Authentication: who is calling, decided by an [`Authenticator`] before any route runs.
//!
//! The authenticator sees the request's head and answers with a [`Caller`] (put on the
//! request for the handlers' call context) or a refusal (a 401 in the route's error shape).
//! It may answer at once ([`AuthDecision::Ready`], as the configured static keys do, at no
//! allocation) or later ([`AuthDecision::Pending`], for a key seen for the first time, looked
//! up in the store). Health probes (`/health`, `/ready`) are never asked for a key, so
//! orchestrators can check liveness without secrets.
//!
//! Admin routes (`/admin/*`, `GET /metrics` and `DELETE /cache`) are not for API keys: [`AdminAccess`] guards
//! them with the admin key (`server.admin_key`), or, without one, lets in loopback clients
//! only. The dashboard page (`/dashboard`) is guarded like them, except that with an admin key
//! its assets are served without one: they hold no data, and a browser cannot send a bearer
//! key when it opens a page (the page asks for the key and sends it with every figure it reads).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tower::{Layer, Service};
use weir::Principal;

use crate::error::{ApiError, Flavor};

/// Why a request was refused: said to the client, so never a secret.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// 401 for a key that is missing or not valid; 403 for admin routes refused to a client;
    /// 503 when the key store cannot answer.
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    pub fn missing() -> Self {
        Self::unauthorized(
            "missing gateway API key: send Authorization: Bearer <key> or x-api-key: <key>",
        )
    }
}

/// Who a request comes from, as authentication established it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub principal: Principal,
    /// Whether the request may name its own end user (OpenAI's `user` field, or the
    /// `x-weir-user` header), for attribution and per-user limits. Stored keys allow it only
    /// when set to; an open gateway and the configured static keys trust their callers.
    pub may_name_user: bool,
}

impl Caller {
    /// A caller of a gateway without keys.
    pub fn open() -> Self {
        Self {
            principal: Principal::default(),
            may_name_user: true,
        }
    }

    /// A caller presenting one of the configured static keys.
    pub fn static_key(tenant: &Arc<str>) -> Self {
        Self {
            principal: Principal {
                tenant: Some(Arc::clone(tenant)),
                ..Principal::default()
            },
            may_name_user: true,
        }
    }
}

/// The client's address, as the listener saw it (put on each request by the server).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// An authenticator's answer.
pub enum AuthDecision {
    /// Decided now: the caller, or why not.
    Ready(Result<Caller, Refusal>),
    /// Decided later (a store lookup).
    Pending(BoxFuture<'static, Result<Caller, Refusal>>),
}

/// Decides who a request comes from. See the module docs.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, request: &Parts) -> AuthDecision;
}

/// The key a request presents: `Authorization: Bearer <key>`, else `x-api-key: <key>`.
pub fn presented_key(request: &Parts) -> Option<&str> {
    let headers = &request.headers;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    bearer.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    })
}

/// The configured gateway keys (`server.api_keys`). No keys: everyone is let in (and the
/// server listens on loopback only).
pub struct StaticKeys {
    keys: Vec<(SecretString, Arc<str>)>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticKeys([{} redacted])", self.keys.len())
    }
}

impl StaticKeys {
    pub fn new(keys: &[SecretString]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|secret| {
                    let tenant =
                        weir::cache::key::namespace_for_gateway_key(secret.expose_secret());
                    (secret.clone(), Arc::from(tenant))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The tenant whose key `presented` is, if it is one. Every key is compared in constant
    /// time, and all of them are always compared, so timing reveals neither which key nor
    /// how much of it matched.
    pub fn tenant_of(&self, presented: &str) -> Option<&Arc<str>> {
        let presented = presented.as_bytes();
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u64;
        for (i, (secret, _)) in self.keys.iter().enumerate() {
            let matches = secret.expose_secret().as_bytes().ct_eq(presented);
            index.conditional_assign(&(i as u64), matches);
            found |= matches;
        }
        let index = usize::try_from(index).ok()?;
        let (_, tenant) = self.keys.get(index)?;
        bool::from(found).then_some(tenant)
    }
}

impl Authenticator for StaticKeys {
    fn authenticate(&self, request: &Parts) -> AuthDecision {
        if self.keys.is_empty() {
            return AuthDecision::Ready(Ok(Caller::open()));
        }
        AuthDecision::Ready(match presented_key(request).map(|k| self.tenant_of(k)) {
            Some(Some(tenant)) => Ok(Caller::static_key(tenant)),
            Some(None) => Err(Refusal::unauthorized(
                "invalid gateway API key: check the key your client sends (Authorization: Bearer ... or x-api-key)",
            )),
            None => Err(Refusal::missing()),
        })
    }
}

/// Who may use the admin routes: holders of the admin key, or, when none is configured,
/// clients on loopback only.
#[derive(Clone, Default)]
pub struct AdminAccess {
    key: Option<SecretString>,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = if self.key.is_some() {
            "configured"
        } else {
            "none: loopback only"
        };
        f.debug_struct("AdminAccess").field("key", &key).finish()
    }
}

impl AdminAccess {
    pub fn new(key: Option<SecretString>) -> Self {
        Self { key }
    }

    /// Whether a route is an admin route.
    pub fn guards(method: &Method, path: &str) -> bool {
        path == "/admin"
            || path.starts_with("/admin/")
            || path == "/metrics"
            || (path == "/cache" && method == Method::DELETE)
            || Self::is_page(path)
    }

    /// The dashboard page's assets (no data: that comes from `/admin/dashboard.json`).
    fn is_page(path: &str) -> bool {
        path == "/dashboard" || path.starts_with("/dashboard/")
    }

    /// Let the request in, or say why not. A request with no peer address came from inside the
    /// process (a test, or a program embedding the router), not from the network.
    pub fn check(&self, request: &Parts) -> Result<(), Refusal> {
        match &self.key {
            Some(_) if Self::is_page(request.uri.path()) => Ok(()),
            Some(key) => match presented_key(request) {
                Some(presented)
                    if bool::from(key.expose_secret().as_bytes().ct_eq(presented.as_bytes())) =>
                {
                    Ok(())
                }
                Some(_) => Err(Refusal::unauthorized(
                    "invalid admin key: admin routes need the key set in server.admin_key                      (WEIR_ADMIN_KEY), sent as Authorization: Bearer <key>",
                )),
                None => Err(Refusal::unauthorized(
                    "missing admin key: send the key set in server.admin_key (WEIR_ADMIN_KEY) as                      Authorization: Bearer <key>",
                )),
            },
            None => {
                let loopback = request
                    .extensions
                    .get::<PeerAddr>()
                    .is_none_or(|peer| peer.0.ip().is_loopback());
                if loopback {
                    Ok(())
                } else {
                    Err(Refusal {
                        status: StatusCode::FORBIDDEN,
                        message: "admin routes answer only to clients on this machine unless an                                   admin key is set: set server.admin_key (WEIR_ADMIN_KEY) and send                                   it as Authorization: Bearer <key>"
                            .into(),
                    })
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<dyn Authenticator>,
    admin: AdminAccess,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<dyn Authenticator>, admin: AdminAccess) -> Self {
        Self {
            authenticator,
            admin,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            authenticator: Arc::clone(&self.authenticator),
            admin: self.admin.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    authenticator: Arc<dyn Authenticator>,
    admin: AdminAccess,
}

impl<S> std::fmt::Debug for Authenticate<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

fn refused(refusal: Refusal, path: &str) -> Response {
    let (kind, code) = match refusal.status {
        StatusCode::UNAUTHORIZED => ("authentication_error", Some("invalid_api_key")),
        StatusCode::FORBIDDEN => ("permission_error", None),
        _ => ("api_error", None),
    };
    let mut error = ApiError::new(refusal.status, kind, refusal.message)
        .flavor(Flavor::for_path(path))
        .closing();
    error.code = code;
    error.into_response()
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response> + Clone + Send + Unpin + 'static,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AuthFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        if path == "/health" || path == "/ready" {
            return AuthFuture::Inner(self.inner.call(req));
        }
        let (mut parts, body) = req.into_parts();
        if AdminAccess::guards(&parts.method, parts.uri.path()) {
            return match self.admin.check(&parts) {
                Ok(()) => AuthFuture::Inner(self.inner.call(Request::from_parts(parts, body))),
                Err(refusal) => AuthFuture::Refused(Some(refused(refusal, parts.uri.path()))),
            };
        }
        match self.authenticator.authenticate(&parts) {
            AuthDecision::Ready(Ok(caller)) => {
                parts.extensions.insert(caller);
                AuthFuture::Inner(self.inner.call(Request::from_parts(parts, body)))
            }
            AuthDecision::Ready(Err(refusal)) => {
                AuthFuture::Refused(Some(refused(refusal, parts.uri.path())))
            }
            AuthDecision::Pending(decision) => AuthFuture::Deciding(Box::new(Deciding {
                decision,
                decided: None,
                request: Some((parts, body)),
                // The future outlives this call: it takes a clone, polled ready before use.
                inner: self.inner.clone(),
            })),
        }
    }
}

pub enum AuthFuture<S, F> {
    Inner(F),
    Refused(Option<Response>),
    /// Boxed: only a store-backed authenticator gets here, and every request's future would
    /// otherwise be sized for it.
    Deciding(Box<Deciding<S>>),
}

pub struct Deciding<S> {
    decision: BoxFuture<'static, Result<Caller, Refusal>>,
    decided: Option<Result<Caller, Refusal>>,
    request: Option<(Parts, axum::body::Body)>,
    inner: S,
}

impl<S, F, E> Future for AuthFuture<S, F>
where
    S: Service<Request, Response = Response, Error = E, Future = F> + Unpin,
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = &mut *self;
            let next = match this {
                Self::Inner(f) => return Pin::new(f).poll(cx),
                Self::Refused(res) => return Poll::Ready(Ok(res.take().unwrap_or_default())),
                Self::Deciding(deciding) => {
                    let Deciding {
                        decision,
                        decided,
                        request,
                        inner,
                    } = &mut **deciding;
                    if decided.is_none() {
                        *decided = Some(ready!(decision.as_mut().poll(cx)));
                    }
                    ready!(inner.poll_ready(cx))?;
                    let Some(decided) = decided.take() else {
                        return Poll::Ready(Ok(Response::default()));
                    };
                    let Some((mut parts, body)) = request.take() else {
                        return Poll::Ready(Ok(Response::default()));
                    };
                    match decided {
                        Ok(caller) => {
                            parts.extensions.insert(caller);
                            Self::Inner(inner.call(Request::from_parts(parts, body)))
                        }
                        Err(refusal) => Self::Refused(Some(refused(refusal, parts.uri.path()))),
                    }
                }
            };
            *this = next;
        }
    }
}
