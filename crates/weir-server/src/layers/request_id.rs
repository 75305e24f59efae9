//! The request id layer: the client's `x-request-id` when sane, else a fresh one, put on the
//! request for everything inside and on the response for the client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use tower::{Layer, Service};

/// The request's id, as handlers and inner layers see it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct WithRequestId<S> {
    inner: S,
}

impl<S> Service<Request> for WithRequestId<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = request_id(&req);
        req.extensions_mut().insert(RequestId(id.clone()));
        RequestIdFuture {
            inner: self.inner.call(req),
            id,
        }
    }
}

pub struct RequestIdFuture<F> {
    inner: F,
    id: String,
}

impl<F, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut res = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        // The id's own bytes become the header value: no copy.
        let id = Bytes::from(std::mem::take(&mut this.id));
        if let Ok(v) = HeaderValue::from_maybe_shared(id) {
            res.headers_mut().insert(X_REQUEST_ID.clone(), v);
        }
        Poll::Ready(Ok(res))
    }
}

/// The client's `x-request-id` if it is short and printable; otherwise a fresh one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(fresh_id, str::to_owned)
}

/// `req_` and 24 random hex digits, written directly: `format!` was a measurable part of a
/// proxied request.
pub(crate) fn fresh_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    for shift in (0..96).step_by(4).rev() {
        id.push(char::from(HEX[(bits >> shift) as usize & 0xf]));
    }
    id
}
