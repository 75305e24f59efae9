//! The gateway's layers, composed once around the finished router.
//!
//! ```text
//! request id -> access log -> panic containment -> authentication -> router -> handler
//! ```
//!
//! Order: the request id is settled first, so a refused or failed request still carries one
//! and is logged with it; the access log sees every answer, refusals and panics included, and
//! requests dropped before their answer; a panic in authentication or a handler becomes a
//! 500; authentication runs before any route.
//!
//! Each layer is a small tower service with its own future, in the same shape (`layer`,
//! service, future), and none boxes or clones per request on its fast path: `Router::layer`
//! wraps every route and boxes per request, so they wrap the finished router instead.

pub mod access_log;
pub mod auth;
pub mod panic;
pub mod peer;
pub mod request_id;

use axum::Router;
use tower::Layer;

pub use access_log::{AccessLog, AccessLogLayer, LogFields};
pub use auth::{
    AdminAccess, AuthDecision, AuthLayer, Authenticate, Authenticator, Caller, PeerAddr, Refusal,
    StaticKeys,
};
pub use panic::{CatchPanic, CatchPanicLayer};
pub use peer::{PerConnection, WithPeer};
pub use request_id::{RequestId, RequestIdLayer, WithRequestId};

/// The whole gateway service: `routes` inside every layer, in the documented order.
pub type Gateway = WithRequestId<AccessLog<CatchPanic<Authenticate<Router>>>>;

/// Wrap the finished router in the gateway's layers.
pub fn gateway(
    routes: Router,
    authenticator: std::sync::Arc<dyn Authenticator>,
    admin: AdminAccess,
) -> Gateway {
    let service = AuthLayer::new(authenticator, admin).layer(routes);
    let service = CatchPanicLayer.layer(service);
    let service = AccessLogLayer.layer(service);
    RequestIdLayer.layer(service)
}

#[cfg(test)]
mod tests;
