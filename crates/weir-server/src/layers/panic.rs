//! Panic containment: a panicking handler (or layer inside this one) becomes a 500 that
//! says so, and the server carries on.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(f) => CatchPanicFuture::Running(f),
            Err(_) => CatchPanicFuture::Panicked,
        }
    }
}

pub enum CatchPanicFuture<F> {
    Running(F),
    /// The call itself panicked; answered at the first poll.
    Panicked,
}

impl<F, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Self::Running(f) => match catch_unwind(AssertUnwindSafe(|| Pin::new(f).poll(cx))) {
                Ok(poll) => poll,
                Err(_) => Poll::Ready(Ok(panicked())),
            },
            Self::Panicked => Poll::Ready(Ok(panicked())),
        }
    }
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
