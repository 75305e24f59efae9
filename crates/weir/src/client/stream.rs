//! [`ChatStream`]: the chunks of a streamed completion, with bookkeeping that cannot be skipped.
//!
//! Providers always report usage at the end of a stream (weir asks upstreams for it whatever
//! the client wanted), so streamed calls are priced like any other. The usage chunk is passed
//! on only if the client asked for it (`stream_options.include_usage`). The call's accounting
//! is its [`StreamMeter`]'s: once, at the end, at an error, or when the stream is dropped.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use weir_types::chat::{ChatChunk, Usage};

use super::ResponseMeta;
use crate::error::Result;
use crate::pipeline::meter::{StreamEnd, StreamMeter};

/// How a finished stream went.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSummary {
    pub usage: Option<Usage>,
    /// `true` when the usage is weir's estimate, not the upstream's report.
    pub usage_estimated: bool,
    pub cost_usd: Option<Decimal>,
    /// `false` when the stream failed or was dropped before its end.
    pub completed: bool,
}

/// A stream of [`ChatChunk`]s. Ends after the last chunk, or after one `Err` item.
pub struct ChatStream {
    inner: BoxStream<'static, Result<ChatChunk>>,
    meta: ResponseMeta,
    pass_usage: bool,
    meter: StreamMeter,
    finished: bool,
}

impl std::fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    pub(crate) fn new(
        inner: BoxStream<'static, Result<ChatChunk>>,
        meta: ResponseMeta,
        pass_usage: bool,
        meter: StreamMeter,
    ) -> Self {
        Self {
            inner,
            meta,
            pass_usage,
            meter,
            finished: false,
        }
    }

    /// Provider, upstream model, attempts and time to the upstream's answer.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Pass the usage chunk on whatever the request asked (for a stream shared by callers
    /// who each decide for themselves).
    pub(crate) fn set_pass_usage(&mut self, pass: bool) {
        self.pass_usage = pass;
    }

    /// Wrap the chunk source (inside the accounting, which keeps seeing every chunk).
    pub(crate) fn map_inner(
        &mut self,
        f: impl FnOnce(BoxStream<'static, Result<ChatChunk>>) -> BoxStream<'static, Result<ChatChunk>>,
    ) {
        let inner = std::mem::replace(&mut self.inner, futures::stream::empty().boxed());
        self.inner = f(inner);
    }

    /// A handle to the summary, filled in when the stream ends (or is dropped).
    pub fn summary_handle(&self) -> Arc<OnceLock<StreamSummary>> {
        self.meter.summary_handle()
    }

    /// The summary, once the stream has ended.
    pub fn summary(&self) -> Option<StreamSummary> {
        self.meter.summary_handle().get().cloned()
    }
}

/// Output text in a chunk, in bytes: what a cut stream's output estimate is made of.
fn output_bytes(chunk: &ChatChunk) -> usize {
    let mut n = 0;
    for c in &chunk.choices {
        let d = &c.delta;
        n += d.content.as_ref().map_or(0, String::len);
        n += d.reasoning_content.as_ref().map_or(0, String::len);
        for tc in d.tool_calls.iter().flatten() {
            n += tc
                .function
                .as_ref()
                .and_then(|f| f.arguments.as_ref())
                .map_or(0, String::len);
        }
    }
    n
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.finished = true;
                    this.meter.end(StreamEnd::Completed);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    this.meter.end(StreamEnd::Failed(&e));
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    this.meter.on_output(output_bytes(&chunk));
                    if let Some(u) = &chunk.usage {
                        *this.meter.usage_mut() = Some(u.clone());
                        // The usage-only chunk (no choices) is weir's to keep unless asked for.
                        if !this.pass_usage && chunk.choices.is_empty() {
                            continue;
                        }
                        if !this.pass_usage {
                            let mut chunk = chunk;
                            chunk.usage = None;
                            // Changed: the bytes as received no longer match.
                            chunk.received.clear();
                            return Poll::Ready(Some(Ok(chunk)));
                        }
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
            }
        }
    }
}
