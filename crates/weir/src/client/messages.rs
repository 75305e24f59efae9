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
use weir_types::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use weir_types::chat::{ChatChunk, StreamOptions, Usage};

use super::stream::StreamSummary;
use super::{Client, ResponseMeta, with_first_item};
use crate::error::Result;
use crate::messages::{EventTranslator, to_chat_request, to_messages_response};
use crate::pipeline::meter::{StreamEnd, StreamMeter};
use crate::pipeline::{CallContext, CallRequest, Operation};
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
        self.messages_with(req, CallContext::default()).await
    }

    pub async fn messages_with(
        &self,
        mut req: MessagesRequest,
        context: CallContext,
    ) -> Result<MessagesOutcome> {
        let call = self.open(
            Operation::Messages,
            CallRequest::Messages(&mut req),
            context,
        )?;
        req.stream = None;
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        // Translated once, used by every deployment that does not speak Anthropic natively.
        let mut chat = match translated(&req) {
            Ok(chat) => chat,
            Err(e) => return Err(call.fail(e)),
        };
        chat.stream = None;
        chat.stream_options = None;
        let call = self.admit_chat(call, &chat).await?;
        let model = call.context.model.clone();
        let (req, chat, model) = (&req, &chat, model.as_str());
        let (up, meta) = self
            .complete(
                call,
                self.chat_demand(chat),
                |p, ctx| async move {
                    if p.speaks_anthropic_messages() {
                        return p.messages(req, &ctx).await;
                    }
                    let up = p.chat(chat, &ctx).await?;
                    Ok(Upstream {
                        body: to_messages_response(&up.body, model),
                        meta: up.meta,
                    })
                },
                |body: &MessagesResponse| Some(usage_to_canonical(&body.usage)),
            )
            .await?;
        Ok(MessagesOutcome {
            response: up.body,
            meta,
        })
    }

    /// A streamed Messages API call, as Anthropic's events in Anthropic's order.
    pub async fn messages_stream(&self, req: MessagesRequest) -> Result<MessagesStream> {
        self.messages_stream_with(req, CallContext::default()).await
    }

    pub async fn messages_stream_with(
        &self,
        mut req: MessagesRequest,
        context: CallContext,
    ) -> Result<MessagesStream> {
        let call = self.open(
            Operation::MessagesStream,
            CallRequest::Messages(&mut req),
            context,
        )?;
        req.stream = Some(true);
        if req.max_tokens.is_none() {
            req.max_tokens = Some(self.inner.config.defaults.max_tokens);
        }
        let mut chat = match translated(&req) {
            Ok(chat) => chat,
            Err(e) => return Err(call.fail(e)),
        };
        chat.stream = Some(true);
        // The translator needs the usage chunk for message_delta's usage.
        chat.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra: Default::default(),
        });
        let call = self.admit_chat(call, &chat).await?;
        let message_id = match call.context.request_id.as_str() {
            "" => format!("msg_{:016x}", fastrand::u64(..)),
            id => format!("msg_{}", id.trim_start_matches("req_")),
        };
        let model = call.context.model.clone();
        let (req_ref, chat_ref, model_ref, message_id) =
            (&req, &chat, model.as_str(), message_id.as_str());
        let (inner, meta, meter) = self
            .open_stream(call, &chat, |p, ctx| async move {
                if p.speaks_anthropic_messages() {
                    let up = p.messages_stream(req_ref, &ctx).await?;
                    return with_first_item(up, p.name()).await;
                }
                let up = with_first_item(p.chat_stream(chat_ref, &ctx).await?, p.name()).await?;
                Ok(UpstreamStream {
                    stream: translate_stream(
                        up.stream,
                        EventTranslator::new(model_ref, message_id.to_owned()),
                    ),
                    meta: up.meta,
                })
            })
            .await?;
        Ok(MessagesStream { inner, meta, meter })
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

/// Anthropic stream events, with accounting that survives an early drop.
pub struct MessagesStream {
    inner: BoxStream<'static, Result<StreamEvent>>,
    meta: ResponseMeta,
    meter: StreamMeter,
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
        self.meter.summary_handle()
    }

    /// Read an event's usage and output into the meter.
    fn observe(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::MessageStart { message } => {
                *self.meter.usage_mut() = Some(usage_to_canonical(&message.usage));
            }
            StreamEvent::ContentBlockDelta { delta, .. } => {
                self.meter.on_output(delta_bytes(delta));
            }
            StreamEvent::MessageDelta { usage, .. } => {
                // message_delta's usage is cumulative; newer API versions (and weir's
                // translator) repeat the input counts there too.
                let u = self.meter.usage_mut().get_or_insert_with(Usage::default);
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
}

impl Stream for MessagesStream {
    type Item = Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.meter.end(StreamEnd::Completed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.meter.end(StreamEnd::Failed(&e));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(ev))) => {
                this.observe(&ev);
                Poll::Ready(Some(Ok(ev)))
            }
        }
    }
}

/// Output text in a content delta, in bytes: what a cut stream's output estimate is made of.
fn delta_bytes(delta: &weir_types::anthropic::BlockDelta) -> usize {
    use weir_types::anthropic::BlockDelta;
    match delta {
        BlockDelta::TextDelta { text } => text.len(),
        BlockDelta::InputJsonDelta { partial_json } => partial_json.len(),
        BlockDelta::ThinkingDelta { thinking } => thinking.len(),
        _ => 0,
    }
}
