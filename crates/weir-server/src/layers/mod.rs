//! The gateway's layers, composed once around the finished router.
//!
//! ```text
//! access log -> request id -> panic containment -> authentication -> router -> handler
//! ```
//!
//! Order: the access log sees every answer, refusals and panics included, with the id the
//! request id layer put on it (so a refused or failed request still carries one and is
//! logged with it); a panic in authentication or a handler becomes a 500; authentication runs
//! before any route.
//!
//! Each layer is a small tower service with its own future, in the same shape (`layer`,
//! service, future), and none boxes or clones per request on its fast path: `Router::layer`
//! wraps every route and boxes per request, so they wrap the finished router instead.

pub mod access_log;
pub mod auth;
pub mod panic;
pub mod request_id;

use axum::Router;
use tower::Layer;

pub use access_log::{AccessLog, AccessLogLayer, LogFields};
pub use auth::{AuthDecision, AuthLayer, Authenticate, Authenticator, StaticKeys};
pub use panic::{CatchPanic, CatchPanicLayer};
pub use request_id::{RequestId, RequestIdLayer, WithRequestId};

/// The whole gateway service: `routes` inside every layer, in the documented order.
pub type Gateway = AccessLog<WithRequestId<CatchPanic<Authenticate<Router>>>>;

/// Wrap the finished router in the gateway's layers.
pub fn gateway(routes: Router, authenticator: std::sync::Arc<dyn Authenticator>) -> Gateway {
    let service = AuthLayer::new(authenticator).layer(routes);
    let service = CatchPanicLayer.layer(service);
    let service = RequestIdLayer.layer(service);
    AccessLogLayer.layer(service)
}

#[cfg(test)]
mod tests;
