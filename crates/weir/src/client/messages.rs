//! The Anthropic Messages API on [`Client`]: native to Anthropic, translated for the rest.
//!
//! When the target provider speaks the Messages API natively, the request passes through with
//! only the model name changed, and its events stream back as they come. Otherwise the
//! request is translated to the canonical chat form, sent to the provider, and the answer (or
//! each chunk, through [`crate::messages::EventTranslator`]) translated back, so Claude SDKs
//! and Claude Code can use any model. Both paths are priced and counted like chat calls,
//! including streams that the client drops early.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use weir_types::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use weir_types::chat::{StreamOptions, Usage};

use super::stream::StreamSummary;
use super::{CallOptions, Client, ResponseMeta, Route, bound_by_deadline};
use crate::error::Result;
use crate::messages::{EventTranslator, to_chat_request, to_messages_response};
use crate::provider::anthropic::convert::usage_to_canonical;

/// A Messages API answer and its metadata.
#[derive(Debug, Clone)]
pub struct MessagesOutcome {
    pub response: MessagesResponse,
    pub meta: ResponseMeta,
}

impl Client {
    /// A complete Messages API call.
    pub async fn messages(&self, req: MessagesRequest) -> Result<MessagesOutcome> {
        self.messages_with(req, &CallOptions::default()).await
    }

    pub async fn messages_with(
        &self,
        mut req: MessagesRequest,
        opts: &CallOptions,
    ) -> Result<MessagesOutcome> {
        let route = self.resolve(&req.model)?;
        let reg = self.registered(&route)?;
        if !reg.provider.speaks_anthropic_messages() {
            let requested = req.model.clone();
            let mut chat = translated(&req)?;
            chat.stream = None;
            let done = self.chat_with(chat, opts).await?;
            let response = to_messages_response(&done.response, &requested);
            return Ok(MessagesOutcome {
                response,
                meta: done.meta,
            });
        }
        let requested_model = std::mem::replace(&mut req.model, route.upstream_model.clone());
        req.stream = None;
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        let started = Instant::now();
        let deadline = self.deadline(opts);
        let req = &req;
        let (up, attempts, key_id) = self
            .with_retries(&route, reg, opts, started, deadline, |ctx| async move {
                reg.provider.messages(req, &ctx).await
            })
            .await?;
        let usage = usage_to_canonical(&up.body.usage);
        let meta = self.meta(
            requested_model,
            &route,
            opts,
            started,
            attempts,
            Some(usage),
            key_id,
            up.meta.rate_limit,
        );
        self.inner
            .stats
            .record_success(&route.qualified(), meta.usage.as_ref(), meta.cost_usd);
        Ok(MessagesOutcome {
            response: up.body,
            meta,
        })
    }

    /// A streamed Messages API call, as Anthropic's events in Anthropic's order.
    pub async fn messages_stream(&self, req: MessagesRequest) -> Result<MessagesStream> {
        self.messages_stream_with(req, &CallOptions::default())
            .await
    }

    pub async fn messages_stream_with(
        &self,
        mut req: MessagesRequest,
        opts: &CallOptions,
    ) -> Result<MessagesStream> {
        let route = self.resolve(&req.model)?;
        let reg = self.registered(&route)?;
        if !reg.provider.speaks_anthropic_messages() {
            let requested = req.model.clone();
            let mut chat = translated(&req)?;
            chat.stream = Some(true);
            // The translator needs the usage chunk for message_delta's usage.
            chat.stream_options = Some(StreamOptions {
                include_usage: Some(true),
                extra: Default::default(),
            });
            let chunks = self.chat_stream_with(chat, opts).await?;
            let meta = chunks.meta().clone();
            let summary = chunks.summary_handle();
            let message_id = if meta.request_id.is_empty() {
                format!("msg_{:016x}", fastrand::u64(..))
            } else {
                format!("msg_{}", meta.request_id.trim_start_matches("req_"))
            };
            let translator = EventTranslator::new(&requested, message_id);
            // Chunks in, events out; the translator closes the message when chunks end. An
            // error ends the stream (the server renders it as an `error` event).
            let events = futures::stream::unfold(Some((chunks, translator)), |state| async move {
                let (mut chunks, mut tr) = state?;
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        let evs: Vec<Result<StreamEvent>> =
                            tr.on_chunk(&chunk).into_iter().map(Ok).collect();
                        Some((evs, Some((chunks, tr))))
                    }
                    Some(Err(e)) => Some((vec![Err(e)], None)),
                    None => Some((tr.finish().into_iter().map(Ok).collect(), None)),
                }
            })
            .flat_map(futures::stream::iter)
            .boxed();
            return Ok(MessagesStream {
                inner: events,
                meta,
                tally: None,
                summary,
            });
        }
        let requested_model = std::mem::replace(&mut req.model, route.upstream_model.clone());
        req.stream = Some(true);
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        let started = Instant::now();
        let deadline = self.deadline(opts);
        let req = &req;
        let (up, attempts, key_id) = self
            .with_retries(&route, reg, opts, started, deadline, |ctx| async move {
                reg.provider.messages_stream(req, &ctx).await
            })
            .await?;
        let meta = self.meta(
            requested_model,
            &route,
            opts,
            started,
            attempts,
            None,
            key_id,
            up.meta.rate_limit.clone(),
        );
        let summary = Arc::new(OnceLock::new());
        Ok(MessagesStream {
            inner: bound_by_deadline(up.stream, &route, started, deadline),
            meta,
            tally: Some(Tally {
                client: self.clone(),
                route,
                usage: None,
                settled: false,
            }),
            summary,
        })
    }
}

/// The canonical form of a Messages request. weir's own `mock` directive travels along, so
/// fault injection works on this route too; other Anthropic-only fields stay behind.
fn translated(req: &MessagesRequest) -> Result<weir_types::chat::ChatRequest> {
    let mut chat = to_chat_request(req)?;
    if let Some(directive) = req.extra.get("mock") {
        chat.extra.insert("mock".into(), directive.clone());
    }
    Ok(chat)
}

/// Usage seen on a native stream, settled once at its end or drop.
struct Tally {
    client: Client,
    route: Route,
    usage: Option<Usage>,
    settled: bool,
}

/// Anthropic stream events, with accounting that survives an early drop.
pub struct MessagesStream {
    inner: BoxStream<'static, Result<StreamEvent>>,
    meta: ResponseMeta,
    tally: Option<Tally>,
    summary: Arc<OnceLock<StreamSummary>>,
}

impl std::fmt::Debug for MessagesStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagesStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl MessagesStream {
    pub fn meta(&self) -> &ResponseMeta {
        &self.meta
    }

    /// Filled in when the stream ends or is dropped.
    pub fn summary_handle(&self) -> Arc<OnceLock<StreamSummary>> {
        Arc::clone(&self.summary)
    }

    fn settle(&mut self, completed: bool) {
        let Some(t) = self.tally.as_mut() else { return };
        if t.settled {
            return;
        }
        t.settled = true;
        let usage = t.usage.take();
        let cost =
            t.client
                .record_stream_end(&t.route, usage.as_ref(), !completed && usage.is_none());
        let _ = self.summary.set(StreamSummary {
            usage,
            usage_estimated: false,
            cost_usd: cost,
            completed,
        });
    }
}

impl Stream for MessagesStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.settle(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.settle(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(ev))) => {
                if let Some(t) = this.tally.as_mut() {
                    match &ev {
                        StreamEvent::MessageStart { message } => {
                            t.usage = Some(usage_to_canonical(&message.usage));
                        }
                        StreamEvent::MessageDelta { usage, .. } => {
                            // message_delta usage is cumulative output; input stays from start.
                            let out = usage.output_tokens;
                            let u = t.usage.get_or_insert_with(Usage::default);
                            u.completion_tokens = out;
                            u.total_tokens = u.prompt_tokens + out;
                        }
                        _ => {}
                    }
                }
                Poll::Ready(Some(Ok(ev)))
            }
        }
    }
}

impl Drop for MessagesStream {
    fn drop(&mut self) {
        self.settle(false);
    }
}
