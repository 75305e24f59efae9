//! The Anthropic adapter: the Messages API, natively.
//!
//! This module owns the Anthropic transport: endpoints, `x-api-key` and `anthropic-version`
//! headers, streamed named events parsed into [`StreamEvent`]s, and the native pass-through
//! of `/v1/messages` ([`Provider::messages`], [`Provider::messages_stream`]). Translation
//! between canonical (OpenAI-shaped) types and Anthropic's lives in [`convert`] (requests and
//! complete responses) and [`stream`] (events to chunks); transport, deadlines and error
//! mapping in [`super::http`].

mod body;
pub mod convert;
pub mod stream;

use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;
use weir_types::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse};
use weir_types::models::Model;

use super::http::{self as h, CallDeadlines};
use super::openai::{config_error, endpoint, forward_request_id, lacks_endpoint, redacted_url};
use super::sse::SseEvent;
use super::transport::Endpoint;
use super::{ChunkStream, Provider, Upstream, UpstreamContext, UpstreamStream};
use crate::config::{ProviderConfig, Timeouts};
use crate::error::{Error, Result};

static ANTHROPIC_VERSION: http::HeaderName = http::HeaderName::from_static("anthropic-version");
static ANTHROPIC_BETA: http::HeaderName = http::HeaderName::from_static("anthropic-beta");

/// The `anthropic-version` sent when the configuration leaves it empty.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// An Anthropic Messages API upstream.
#[derive(Clone)]
pub struct AnthropicProvider {
    name: String,
    client: h::HttpClient,
    messages_url: Endpoint,
    models_url: Endpoint,
    /// `anthropic-version` and configured extra headers, parsed once.
    headers: HeaderMap,
    timeouts: Timeouts,
    /// Each configured key's auth header, built once.
    key_headers: h::KeyHeaders,
    /// Anthropic requires `max_tokens`; this fills it when a canonical request has none.
    default_max_tokens: u32,
    models: Vec<String>,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("AnthropicProvider")
            .field("name", &self.name)
            .field("messages_url", &redacted_url(self.messages_url.url()))
            .field("headers", &header_names)
            .field("timeouts", &self.timeouts)
            .field("default_max_tokens", &self.default_max_tokens)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    pub fn new(cfg: &ProviderConfig, default_max_tokens: u32) -> Result<Self> {
        let mut headers = h::header_map(&cfg.name, &cfg.headers)?;
        let version = if cfg.anthropic_version.is_empty() {
            DEFAULT_VERSION
        } else {
            cfg.anthropic_version.as_str()
        };
        let version = HeaderValue::from_str(version).map_err(|_| {
            config_error(
                &cfg.name,
                "anthropic_version",
                "not a valid HTTP header value",
            )
        })?;
        headers.insert("anthropic-version", version);
        let mut models_url = endpoint(cfg, &["models"])?;
        // The list is paginated (default 20); one page of the maximum size holds them all.
        models_url.query_pairs_mut().append_pair("limit", "1000");
        Ok(Self {
            name: cfg.name.clone(),
            client: h::HttpClient::new(&cfg.timeouts)?,
            messages_url: Endpoint::new(&cfg.name, endpoint(cfg, &["messages"])?)?,
            models_url: Endpoint::new(&cfg.name, models_url)?,
            headers,
            timeouts: cfg.timeouts,
            key_headers: h::KeyHeaders::new(&cfg.name, "", &cfg.keys)?,
            default_max_tokens,
            models: cfg.models.clone(),
        })
    }

    fn request(
        &self,
        method: Method,
        url: &Endpoint,
        ctx: &UpstreamContext,
    ) -> Result<h::RequestBuilder<'_>> {
        let mut headers = self.headers.clone();
        if let Some(key) = &ctx.api_key {
            headers.insert("x-api-key", self.key_headers.get(&self.name, key)?);
        }
        // The client's `anthropic-version` and `anthropic-beta` choose the API's behaviour
        // (beta features switch off silently without theirs): they win over the configured
        // version, which stays the default.
        if ctx.forwarded.iter().any(|(k, _)| *k == ANTHROPIC_VERSION) {
            headers.remove(&ANTHROPIC_VERSION);
        }
        for (name, value) in &ctx.forwarded {
            if *name == ANTHROPIC_VERSION || *name == ANTHROPIC_BETA {
                headers.append(name.clone(), value.clone());
            }
        }
        forward_request_id(&mut headers, ctx);
        Ok(self.client.request(method, url, headers))
    }

    fn post_messages<B: serde::Serialize + ?Sized>(
        &self,
        body: &B,
        ctx: &UpstreamContext,
    ) -> Result<h::RequestBuilder<'_>> {
        let bytes = crate::json::to_vec(body)
            .map_err(|e| Error::invalid_request(format!("could not serialise the request: {e}")))?;
        Ok(self
            .request(Method::POST, &self.messages_url, ctx)?
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(bytes))
    }

    async fn send_messages<B: serde::Serialize + ?Sized + Sync>(
        &self,
        body: &B,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<MessagesResponse>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.post_messages(body, ctx)?;
        h::call_json(
            &self.name,
            rb,
            &deadlines,
            ctx.api_key.as_ref(),
            "an Anthropic message",
        )
        .await
    }

    async fn send_messages_stream<B: serde::Serialize + ?Sized + Sync>(
        &self,
        body: &B,
        ctx: &UpstreamContext,
    ) -> Result<UpstreamStream<StreamEvent>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.post_messages(body, ctx)?;
        let (events, meta) = h::call_sse(&self.name, rb, &deadlines, ctx.api_key.as_ref()).await?;
        Ok(UpstreamStream {
            stream: parse_events(self.name.clone(), events),
            meta,
        })
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>> {
        let mut body =
            convert::to_anthropic_request(req, &ctx.upstream_model, self.default_max_tokens)?;
        body.stream = None;
        let up = self.send_messages(&body, ctx).await?;
        Ok(Upstream {
            body: convert::from_anthropic_response(up.body),
            meta: up.meta,
        })
    }

    async fn chat_stream(&self, req: &ChatRequest, ctx: &UpstreamContext) -> Result<ChunkStream> {
        let mut body =
            convert::to_anthropic_request(req, &ctx.upstream_model, self.default_max_tokens)?;
        body.stream = Some(true);
        let up = self.send_messages_stream(&body, ctx).await?;
        let translator =
            stream::ChunkTranslator::new(&ctx.upstream_model).with_provider(&self.name);
        Ok(UpstreamStream {
            stream: translate(up.stream, translator),
            meta: up.meta,
        })
    }

    async fn models(&self, ctx: &UpstreamContext) -> Result<Vec<Model>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.request(Method::GET, &self.models_url, ctx)?;
        let listed: Result<Upstream<ModelPage>> = h::call_json(
            &self.name,
            rb,
            &deadlines,
            ctx.api_key.as_ref(),
            "a model list",
        )
        .await;
        match listed {
            Ok(page) => Ok(page
                .body
                .data
                .into_iter()
                .map(|m| {
                    let mut model = Model::new(m.id, self.name.clone());
                    model.created = m
                        .created_at
                        .as_deref()
                        .and_then(super::ratelimit::parse_rfc3339)
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    model
                })
                .collect()),
            Err(e) if !self.models.is_empty() && lacks_endpoint(&e) => Ok(self
                .models
                .iter()
                .map(|m| Model::new(m.clone(), self.name.clone()))
                .collect()),
            Err(e) => Err(e),
        }
    }

    fn speaks_anthropic_messages(&self) -> bool {
        true
    }

    async fn messages(
        &self,
        req: &MessagesRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<MessagesResponse>> {
        // A complete answer was asked for: a `stream: true` left in the body would get events.
        let stream = req.stream.filter(|&s| !s);
        let body = body::OutgoingMessages::new(req, &ctx.upstream_model, stream);
        self.send_messages(&body, ctx).await
    }

    async fn messages_stream(
        &self,
        req: &MessagesRequest,
        ctx: &UpstreamContext,
    ) -> Result<UpstreamStream<StreamEvent>> {
        let body = body::OutgoingMessages::new(req, &ctx.upstream_model, Some(true));
        let up = self.send_messages_stream(&body, ctx).await?;
        Ok(UpstreamStream {
            stream: native_errors(self.name.clone(), up.stream),
            meta: up.meta,
        })
    }
}

/// One page of `GET /v1/models`.
#[derive(Debug, Deserialize)]
struct ModelPage {
    data: Vec<ModelInfo>,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    id: String,
    #[serde(default)]
    created_at: Option<String>,
}

/// SSE events parsed as [`StreamEvent`]s, in order, up to `message_stop`. Data that is not
/// JSON, a broken connection, or a close before `message_stop` becomes one error item, after
/// which the stream ends. `error` events and malformed events of known types are passed on:
/// the chunk translator reports them its way for canonical streams, [`native_errors`] for
/// native ones. Events of unknown types pass through (Anthropic adds event types and asks
/// clients to ignore the ones they do not know).
fn parse_events(
    provider: String,
    events: BoxStream<'static, Result<SseEvent>>,
) -> BoxStream<'static, Result<StreamEvent>> {
    struct St {
        provider: String,
        events: BoxStream<'static, Result<SseEvent>>,
        done: bool,
    }
    let st = St {
        provider,
        events,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let ev = match st.events.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    let e =
                        interrupted(&st.provider, "the stream ended before message_stop".into());
                    return Some((Err(e), st));
                }
            };
            if ev.data.trim().is_empty() {
                continue;
            }
            let item = parse_event(&st.provider, &ev);
            st.done = matches!(item, Ok(StreamEvent::MessageStop) | Err(_));
            return Some((item, st));
        }
    })
    .boxed()
}

fn parse_event(provider: &str, ev: &SseEvent) -> Result<StreamEvent> {
    // serde's message names a position, never the data (it is the user's completion).
    let parsed = serde_json::from_str::<StreamEvent>(&ev.data)
        .map_err(|e| interrupted(provider, format!("malformed `{}` event: {e}", ev.event)))?;
    match parsed {
        // An `error` event in a shape weir does not model (no `type`): still an error.
        StreamEvent::Unknown(_) if ev.event == "error" => {
            let message = h::error_message(ev.data.as_bytes())
                .unwrap_or_else(|| "error event without a message".to_owned());
            Err(interrupted(
                provider,
                format!("the upstream reported an error: {message}"),
            ))
        }
        other => Ok(other),
    }
}

/// The native stream's errors: an `error` event or a malformed event of a known type ends the
/// stream with an error, classified as the chunk translator does for canonical streams.
fn native_errors(
    provider: String,
    events: BoxStream<'static, Result<StreamEvent>>,
) -> BoxStream<'static, Result<StreamEvent>> {
    // (content started, failed)
    events
        .scan((false, false), move |(content, failed), item| {
            if *failed {
                return futures::future::ready(None);
            }
            let out = match item {
                Ok(StreamEvent::Error { error }) => {
                    Err(stream::event_error(&provider, &error, *content))
                }
                Ok(ev) if ev.is_malformed() => Err(Error::InvalidResponse {
                    provider: provider.clone(),
                    message: format!("malformed `{}` event in the stream", unknown_type(&ev)),
                }),
                Ok(ev) => {
                    *content |= matches!(
                        ev,
                        StreamEvent::ContentBlockStart { .. }
                            | StreamEvent::ContentBlockDelta { .. }
                    );
                    Ok(ev)
                }
                Err(e) => Err(e),
            };
            *failed = out.is_err();
            futures::future::ready(Some(out))
        })
        .boxed()
}

fn unknown_type(ev: &StreamEvent) -> &str {
    match ev {
        StreamEvent::Unknown(v) => v.get("type").and_then(|t| t.as_str()).unwrap_or(""),
        other => other.event_name(),
    }
}

/// Anthropic events to canonical chunks, through the translator. When the stream ends, cleanly
/// or not, `finish` flushes what is owed (the usage chunk of a cut stream, so its input
/// tokens are still accounted for) before the error item, if any.
fn translate(
    events: BoxStream<'static, Result<StreamEvent>>,
    translator: stream::ChunkTranslator,
) -> BoxStream<'static, Result<ChatChunk>> {
    struct St {
        events: BoxStream<'static, Result<StreamEvent>>,
        translator: stream::ChunkTranslator,
        done: bool,
    }
    let st = St {
        events,
        translator,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut out: Vec<Result<ChatChunk>> = Vec::new();
        let failure = match st.events.next().await {
            Some(Ok(ev)) => {
                let stop = matches!(ev, StreamEvent::MessageStop);
                match st.translator.on_event(ev) {
                    Ok(chunks) => {
                        out.extend(chunks.into_iter().map(Ok));
                        st.done = stop;
                        None
                    }
                    Err(e) => Some(e),
                }
            }
            Some(Err(e)) => Some(e),
            // `parse_events` always ends with message_stop or an error.
            None => {
                st.done = true;
                None
            }
        };
        if let Some(e) = failure {
            st.done = true;
            out.extend(st.translator.finish().into_iter().map(Ok));
            out.push(Err(e));
        } else if st.done {
            out.extend(st.translator.finish().into_iter().map(Ok));
        }
        Some((futures::stream::iter(out), st))
    })
    .flatten()
    .boxed()
}

fn interrupted(provider: &str, message: String) -> Error {
    Error::StreamInterrupted {
        provider: provider.to_owned(),
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_parse_or_fail_loudly() {
        assert!(matches!(
            parse_event("a", &ev("ping", r#"{"type":"ping"}"#)),
            Ok(StreamEvent::Ping)
        ));
        // A new event type passes through.
        assert!(matches!(
            parse_event("a", &ev("thing", r#"{"type":"future_event","x":1}"#)),
            Ok(StreamEvent::Unknown(_))
        ));
        // Not JSON: an error that names the event, not the data.
        let e = parse_event(
            "a",
            &ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","delta":"secret"#,
            ),
        )
        .unwrap_err();
        assert!(matches!(e, Error::StreamInterrupted { .. }));
        assert!(
            e.to_string().contains("malformed `content_block_delta`"),
            "{e}"
        );
        assert!(!e.to_string().contains("secret"), "{e}");
        // An error event in an unmodelled shape is still an error.
        let e = parse_event("a", &ev("error", r#"{"error":"boom"}"#)).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
    }

    #[tokio::test]
    async fn native_errors_are_classified() {
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let start =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        let malformed =
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#;
        let run = |events: Vec<&str>| {
            let items: Vec<Result<StreamEvent>> = events
                .into_iter()
                .map(|d| Ok(serde_json::from_str(d).unwrap()))
                .collect();
            native_errors("anthropic".into(), futures::stream::iter(items).boxed())
                .collect::<Vec<_>>()
        };
        // Before content: the status Anthropic would have sent, so it can fail over.
        let out = run(vec![overloaded, start]).await;
        assert_eq!(out.len(), 1);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(e.http_status(), 529);
        assert!(e.is_retryable());
        // After content: interrupted.
        let out = run(vec![start, overloaded]).await;
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], Err(Error::StreamInterrupted { .. })));
        // A known event that did not parse is reported, not dropped as "new".
        let out = run(vec![malformed, start]).await;
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Err(Error::InvalidResponse { .. })));
    }
}
