//! [`ChatStream`]: the chunks of a streamed completion, with bookkeeping that cannot be skipped.
//!
//! Providers always report usage at the end of a stream (weir asks upstreams for it whatever
//! the client wanted), so streamed calls are priced like any other. The usage chunk is passed
//! on only if the client asked for it (`stream_options.include_usage`).
//!
//! Accounting happens exactly once: when the stream ends, fails, or is dropped early (a client
//! disconnect). A stream dropped before the upstream reported usage is counted with an
//! estimate (the prompt estimate, and the output seen so far at ~4 bytes per token) and
//! marked as estimated in its summary.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use weir_types::chat::{ChatChunk, Usage};

use super::{Client, ResponseMeta, Route};
use crate::error::Result;

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

pub(crate) struct Accounting {
    pub(crate) client: Client,
    pub(crate) route: Route,
    pub(crate) prompt_estimate: u64,
    /// The key reservation, settled against the real (or estimated) usage at the end.
    pub(crate) lease: Option<crate::pool::Lease>,
}

/// A stream of [`ChatChunk`]s. Ends after the last chunk, or after one `Err` item.
pub struct ChatStream {
    inner: BoxStream<'static, Result<ChatChunk>>,
    meta: ResponseMeta,
    pass_usage: bool,
    accounting: Option<Accounting>,
    usage: Option<Usage>,
    output_bytes: u64,
    finished: bool,
    summary: Arc<OnceLock<StreamSummary>>,
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
        accounting: Accounting,
    ) -> Self {
        Self {
            inner,
            meta,
            pass_usage,
            accounting: Some(accounting),
            usage: None,
            output_bytes: 0,
            finished: false,
            summary: Arc::new(OnceLock::new()),
        }
    }

    /// Provider, upstream model, attempts and time to the upstream's answer.
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// A stream whose upstream spend is accounted elsewhere (a cache replay, or a subscriber
    /// to a shared in-flight stream). Its summary reports the usage it carried, at the meta's
    /// cost.
    pub(crate) fn without_accounting(
        inner: BoxStream<'static, Result<ChatChunk>>,
        meta: ResponseMeta,
        pass_usage: bool,
    ) -> Self {
        Self {
            inner,
            meta,
            pass_usage,
            accounting: None,
            usage: None,
            output_bytes: 0,
            finished: false,
            summary: Arc::new(OnceLock::new()),
        }
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
        Arc::clone(&self.summary)
    }

    /// The summary, once the stream has ended.
    pub fn summary(&self) -> Option<&StreamSummary> {
        self.summary.get()
    }

    fn settle(&mut self, completed: bool) {
        let Some(acc) = self.accounting.take() else {
            let _ = self.summary.set(StreamSummary {
                usage: self.usage.take(),
                usage_estimated: false,
                cost_usd: self.meta.cost_usd,
                completed,
            });
            return;
        };
        let (usage, estimated) = match self.usage.take() {
            Some(u) => (Some(u), false),
            None if completed => (None, false),
            None => {
                let out = self.output_bytes.div_ceil(4);
                (Some(Usage::new(acc.prompt_estimate, out)), true)
            }
        };
        let failed = !completed;
        if let (Some(lease), Some(u)) = (acc.lease, usage.as_ref()) {
            lease.settle(u.prompt_tokens, u.completion_tokens);
        }
        let cost =
            acc.client
                .record_stream_end(&acc.route, usage.as_ref(), failed && usage.is_none());
        let _ = self.summary.set(StreamSummary {
            usage,
            usage_estimated: estimated,
            cost_usd: cost,
            completed,
        });
    }
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
                    this.settle(true);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    this.settle(false);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    for c in &chunk.choices {
                        let d = &c.delta;
                        let mut n = d.content.as_ref().map_or(0, String::len);
                        n += d.reasoning_content.as_ref().map_or(0, String::len);
                        for tc in d.tool_calls.iter().flatten() {
                            n += tc
                                .function
                                .as_ref()
                                .and_then(|f| f.arguments.as_ref())
                                .map_or(0, String::len);
                        }
                        this.output_bytes += n as u64;
                    }
                    if let Some(u) = &chunk.usage {
                        this.usage = Some(u.clone());
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

impl Drop for ChatStream {
    fn drop(&mut self) {
        // Dropped before the end: a client disconnect. Count what was used anyway.
        if !self.finished {
            self.settle(false);
        }
    }
}
