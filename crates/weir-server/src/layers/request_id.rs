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

/// The request's id, as inner layers and handlers see it: a header value, so handing it on
/// (to the access log, to the response) shares its bytes instead of copying them.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text (it is always printable ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

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
            id: Some(id),
        }
    }
}

pub struct RequestIdFuture<F> {
    inner: F,
    id: Option<HeaderValue>,
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
        if let Some(id) = this.id.take() {
            res.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        Poll::Ready(Ok(res))
    }
}

/// The client's `x-request-id` if it is short and printable (shared, not copied); otherwise
/// a fresh one, whose bytes become the header value without a copy.
fn request_id(req: &Request) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
    };
    match req.headers().get(&X_REQUEST_ID).filter(sane) {
        Some(v) => v.clone(),
        None => HeaderValue::from_maybe_shared(Bytes::from(fresh_id()))
            .unwrap_or_else(|_| HeaderValue::from_static("req_unknown")),
    }
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
