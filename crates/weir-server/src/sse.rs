//! Server-sent event bodies for both APIs, with bookkeeping when they end.
//!
//! Each upstream item is written as soon as it arrives, as one `Bytes` frame, so nothing is
//! buffered. When the stream ends, fails or is dropped because the client went away, the
//! access-log line is written once, with the usage the stream reported. Dropping the body
//! drops the upstream stream, which cancels the upstream request.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use weir::client::StreamSummary;

/// Turns one item into SSE bytes; `Err` items end the stream after their frame.
pub trait Framer: Send + 'static {
    type Item;
    /// The frame for an item, and whether it was an error (which ends the stream).
    fn frame(&mut self, item: Self::Item) -> (Bytes, bool);
    /// The frame after the last item of a stream that ended normally (`data: [DONE]`).
    fn done(&mut self) -> Option<Bytes>;
    /// Tokens seen so far (prompt, completion), for the log line.
    fn tokens(&self) -> (u64, u64);
}

/// What the log line says besides tokens.
#[derive(Debug, Clone)]
pub struct LogContext {
    pub request_id: String,
    pub route: &'static str,
    pub model: String,
    pub provider: String,
    /// The cache's verdict (`hit`, `miss`, `bypass`), or empty.
    pub cache: &'static str,
    pub started: Instant,
    /// The library's summary of the stream, filled when it ends; its usage beats the framer's.
    pub summary: Option<Arc<OnceLock<StreamSummary>>>,
}

pub struct SseBody<S, F> {
    inner: S,
    framer: F,
    log: LogContext,
    state: State,
    /// Counts the stream in `weir_streams_open` while the body lives.
    _open: Option<weir::metrics::OwnedStreamGuard>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    Finished,
    Failed,
    Done,
}

impl<S, F> SseBody<S, F> {
    pub fn new(inner: S, framer: F, log: LogContext) -> Self {
        Self {
            inner,
            framer,
            log,
            state: State::Streaming,
            _open: None,
        }
    }

    /// Count the stream as open (in `weir_streams_open`) until the body drops.
    pub fn counted(mut self, metrics: Option<&Arc<weir::metrics::Metrics>>) -> Self {
        self._open = metrics.map(weir::metrics::Metrics::stream_opened_owned);
        self
    }
}

impl<S, F> SseBody<S, F>
where
    F: Framer,
{
    fn log_end(&self, outcome: &str) {
        let (prompt, completion) = self
            .log
            .summary
            .as_ref()
            .and_then(|s| s.get())
            .and_then(|s| s.usage.as_ref())
            .map_or_else(
                || self.framer.tokens(),
                |u| (u.prompt_tokens, u.completion_tokens),
            );
        tracing::info!(
            request_id = %self.log.request_id,
            method = "POST",
            route = self.log.route,
            model = %self.log.model,
            provider = %self.log.provider,
            status = 200u16,
            stream = outcome,
            latency_ms = self.log.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = prompt,
            completion_tokens = completion,
            cache = self.log.cache,
            "request"
        );
    }
}

impl<S, F> Stream for SseBody<S, F>
where
    S: Stream + Unpin,
    F: Framer<Item = S::Item> + Unpin,
{
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.state {
            State::Done => Poll::Ready(None),
            State::Finished | State::Failed => {
                let outcome = if this.state == State::Failed {
                    "failed"
                } else {
                    "completed"
                };
                let tail = if this.state == State::Finished {
                    this.framer.done()
                } else {
                    None
                };
                this.state = State::Done;
                this.log_end(outcome);
                Poll::Ready(tail.map(Ok))
            }
            State::Streaming => match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    this.state = State::Finished;
                    let tail = this.framer.done();
                    this.state = State::Done;
                    this.log_end("completed");
                    Poll::Ready(tail.map(Ok))
                }
                Poll::Ready(Some(item)) => {
                    let (bytes, failed) = this.framer.frame(item);
                    if failed {
                        this.state = State::Failed;
                    }
                    Poll::Ready(Some(Ok(bytes)))
                }
            },
        }
    }
}

impl<S, F> Drop for SseBody<S, F> {
    fn drop(&mut self) {
        if self.state == State::Streaming {
            // The client went away mid-stream; say so once. (Accounting is the library's
            // job and happens when the inner stream drops.)
            tracing::info!(
                request_id = %self.log.request_id,
                route = self.log.route,
                model = %self.log.model,
                latency_ms = self.log.started.elapsed().as_secs_f64() * 1000.0,
                "client disconnected mid-stream; upstream request cancelled"
            );
        }
    }
}

/// An SSE response from a boxed byte stream.
pub fn response(body: BoxStream<'static, Result<Bytes, std::convert::Infallible>>) -> Response {
    let mut res = Response::new(Body::from_stream(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// `data: <json>\n\n` in one allocation.
pub fn data_frame(json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 8);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// `data: <value as JSON>\n\n`, serialised straight into the frame (one allocation, no
/// intermediate buffer). A value that cannot be serialised gives `data: {}`.
pub fn json_data_frame<T: serde::Serialize>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(384);
    buf.extend_from_slice(b"data: ");
    if weir::json::extend(&mut buf, value).is_err() {
        buf.truncate(6);
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// `event: <name>\ndata: <json>\n\n` in one allocation.
pub fn event_frame(name: &str, json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + name.len() + 16);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}
