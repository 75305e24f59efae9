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
use weir_types::chat::{ChatChunk, StreamOptions, Usage};

use super::stream::StreamSummary;
use super::{CallOptions, Client, ResponseMeta, Route, bound_by_deadline, with_first_item};
use crate::error::Result;
use crate::messages::{EventTranslator, to_chat_request, to_messages_response};
use crate::provider::anthropic::convert::usage_to_canonical;
use crate::provider::{Upstream, UpstreamStream};

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
        let requested_model = req.model.clone();
        req.stream = None;
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        // Translated once, used by every deployment that does not speak Anthropic natively.
        let mut chat = translated(&req)?;
        chat.stream = None;
        chat.stream_options = None;
        let started = Instant::now();
        let job = self.job(&requested_model, self.bounded_demand(&chat), opts, started);
        let (req, chat, model) = (&req, &chat, requested_model.as_str());
        let served = self
            .execute(&job, |p, ctx| async move {
                if p.speaks_anthropic_messages() {
                    return p.messages(req, &ctx).await;
                }
                let up = p.chat(chat, &ctx).await?;
                Ok(Upstream {
                    body: to_messages_response(&up.body, model),
                    meta: up.meta,
                })
            })
            .await
            .inspect_err(|_| self.inner.stats.record_error(job.model))?;
        let up = served.value;
        let usage = usage_to_canonical(&up.body.usage);
        if let Some(lease) = served.lease {
            lease.settle(usage.prompt_tokens, usage.completion_tokens);
        }
        let meta = self.meta(
            requested_model.clone(),
            &served.route,
            opts,
            started,
            served.attempts,
            Some(usage),
            served.key_id,
            up.meta.rate_limit,
        );
        self.inner.stats.record_success(
            &served.route.qualified(),
            meta.usage.as_ref(),
            meta.cost_usd,
        );
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
        let requested_model = req.model.clone();
        req.stream = Some(true);
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        let mut chat = translated(&req)?;
        chat.stream = Some(true);
        // The translator needs the usage chunk for message_delta's usage.
        chat.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra: Default::default(),
        });
        let started = Instant::now();
        let job = self.job(&requested_model, self.bounded_demand(&chat), opts, started);
        let message_id = match opts.request_id.as_deref() {
            Some(id) if !id.is_empty() => format!("msg_{}", id.trim_start_matches("req_")),
            _ => format!("msg_{:016x}", fastrand::u64(..)),
        };
        let (req, chat, model, message_id) =
            (&req, &chat, requested_model.as_str(), message_id.as_str());
        let served = self
            .execute(&job, |p, ctx| async move {
                if p.speaks_anthropic_messages() {
                    let up = p.messages_stream(req, &ctx).await?;
                    return with_first_item(up, p.name()).await;
                }
                let up = with_first_item(p.chat_stream(chat, &ctx).await?, p.name()).await?;
                Ok(UpstreamStream {
                    stream: translate_stream(
                        up.stream,
                        EventTranslator::new(model, message_id.to_owned()),
                    ),
                    meta: up.meta,
                })
            })
            .await
            .inspect_err(|_| self.inner.stats.record_error(job.model))?;
        let up = served.value;
        let meta = self.meta(
            requested_model.clone(),
            &served.route,
            opts,
            started,
            served.attempts,
            None,
            served.key_id,
            up.meta.rate_limit.clone(),
        );
        Ok(MessagesStream {
            inner: bound_by_deadline(up.stream, &served.route, started, job.deadline),
            meta,
            tally: Some(Tally {
                client: self.clone(),
                route: served.route,
                usage: None,
                settled: false,
                lease: served.lease,
            }),
            summary: Arc::new(OnceLock::new()),
        })
    }
}

/// Canonical chunks in, Anthropic events out; the translator closes the message when the
/// chunks end. An error ends the stream (the server renders it as an `error` event).
fn translate_stream(
    chunks: BoxStream<'static, Result<ChatChunk>>,
    translator: EventTranslator,
) -> BoxStream<'static, Result<StreamEvent>> {
    futures::stream::unfold(Some((chunks, translator)), |state| async move {
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
    .boxed()
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
    lease: Option<crate::pool::Lease>,
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
        if let (Some(lease), Some(u)) = (t.lease.take(), usage.as_ref()) {
            lease.settle(u.prompt_tokens, u.completion_tokens);
        }
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
                            // message_delta's usage is cumulative; newer API versions (and
                            // weir's translator) repeat the input counts there too.
                            let u = t.usage.get_or_insert_with(Usage::default);
                            if let Some(input) = usage.input_tokens {
                                let full = weir_types::anthropic::Usage {
                                    input_tokens: input,
                                    output_tokens: usage.output_tokens,
                                    cache_creation_input_tokens: usage.cache_creation_input_tokens,
                                    cache_read_input_tokens: usage.cache_read_input_tokens,
                                    extra: Default::default(),
                                };
                                *u = usage_to_canonical(&full);
                            }
                            u.completion_tokens = usage.output_tokens;
                            u.total_tokens = u.prompt_tokens + usage.output_tokens;
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
