//! The access log: one line per request at info (id, route, model, status, latency, tokens),
//! never bodies. A streamed response logs itself when its stream ends; a request dropped
//! before its answer (the client went away) is logged as cancelled, status 499.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::response::Response;
use tower::{Layer, Service};

use super::RequestId;

/// Put on a response by a handler so the access log can say what was served.
#[derive(Debug, Clone, Default)]
pub struct LogFields {
    pub model: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// A streamed response logs itself when the stream ends.
    pub logs_itself: bool,
    /// `hit`, `miss` or `bypass` for chat answers; empty where the cache does not apply.
    pub cache: &'static str,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let line = Line {
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            id: req.extensions().get::<RequestId>().cloned(),
        };
        AccessLogFuture {
            inner: self.inner.call(req),
            line,
            logged: false,
        }
    }
}

pub struct AccessLogFuture<F> {
    inner: F,
    line: Line,
    logged: bool,
}

impl<F> Drop for AccessLogFuture<F> {
    fn drop(&mut self) {
        // Dropped before an answer: the client went away (or the server is shutting down).
        if !self.logged {
            self.line.cancelled();
        }
    }
}

/// What the line needs from the request, taken before the request moves on.
struct Line {
    started: Instant,
    method: Method,
    uri: Uri,
    /// Shared with the request id layer, not copied.
    id: Option<RequestId>,
}

impl<F, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let res = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r?,
        };
        this.logged = true;
        this.line.write(&res);
        Poll::Ready(Ok(res))
    }
}

impl Line {
    fn write(&self, res: &Response) {
        let unknown = LogFields::default();
        let fields = res.extensions().get::<LogFields>().unwrap_or(&unknown);
        if fields.logs_itself {
            return;
        }
        tracing::info!(
            request_id = %self.id(),
            method = %self.method,
            route = %self.uri.path(),
            model = %fields.model,
            provider = %fields.provider,
            status = res.status().as_u16(),
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = fields.prompt_tokens,
            completion_tokens = fields.completion_tokens,
            cache = fields.cache,
            "request"
        );
    }

    fn id(&self) -> &str {
        self.id.as_ref().map_or("", RequestId::as_str)
    }

    /// The line of a request dropped before its answer: 499, as proxies log a client that
    /// closed the connection first.
    fn cancelled(&self) {
        tracing::info!(
            request_id = %self.id(),
            method = %self.method,
            route = %self.uri.path(),
            status = 499u16,
            outcome = "cancelled",
            latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}
