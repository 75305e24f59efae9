//! The OpenAI adapter: OpenAI itself and every server that speaks its API by base URL
//! (OpenRouter, vLLM, Ollama, llama.cpp, LM Studio, Azure-style URLs with a query...).
//!
//! This module owns the OpenAI wire protocol: endpoints, auth and organisation headers, the
//! outgoing body (canonical request with the upstream model, unknown fields passed through),
//! and the streamed `data:` chunks up to `[DONE]`. The canonical types *are* OpenAI's, so no
//! translation happens here; transport, deadlines and error mapping live in [`super::http`].

use std::fmt;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, Method};
use url::Url;
use weir_types::Extra;
use weir_types::chat::{
    ChatChunk, ChatRequest, ChatResponse, Message, ReceivedJson, ResponseFormat, Stop, Tool,
    ToolChoice,
};
use weir_types::embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use weir_types::models::{Model, ModelList};

use super::http::{self as h, CallDeadlines};
use super::sse::SseEvent;
use super::transport::Endpoint;
use super::{ChunkStream, Provider, RawBody, Upstream, UpstreamContext, UpstreamStream};
use crate::config::{ProviderConfig, Timeouts};
use crate::error::{Error, Result};

/// An OpenAI-compatible upstream.
#[derive(Clone)]
pub struct OpenAiProvider {
    name: String,
    client: h::HttpClient,
    chat_url: Endpoint,
    embeddings_url: Endpoint,
    models_url: Endpoint,
    /// Organisation, project and configured extra headers, parsed once.
    headers: HeaderMap,
    timeouts: Timeouts,
    /// Each configured key's auth header, built once.
    key_headers: h::KeyHeaders,
    /// The configured model list, used when the server has no `/models`.
    models: Vec<String>,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry credentials; names are enough to debug with.
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("chat_url", &redacted_url(self.chat_url.url()))
            .field("headers", &header_names)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(cfg: &ProviderConfig) -> Result<Self> {
        let mut headers = h::header_map(&cfg.name, &cfg.headers)?;
        let mut named = |name: &'static str, value: &Option<String>, key: &str| -> Result<()> {
            if let Some(v) = value {
                let v = HeaderValue::from_str(v)
                    .map_err(|_| config_error(&cfg.name, key, "not a valid HTTP header value"))?;
                headers.insert(name, v);
            }
            Ok(())
        };
        named("openai-organization", &cfg.organization, "organization")?;
        named("openai-project", &cfg.project, "project")?;
        Ok(Self {
            name: cfg.name.clone(),
            client: h::HttpClient::new(&cfg.timeouts)?,
            chat_url: Endpoint::new(&cfg.name, endpoint(cfg, &["chat", "completions"])?)?,
            embeddings_url: Endpoint::new(&cfg.name, endpoint(cfg, &["embeddings"])?)?,
            models_url: Endpoint::new(&cfg.name, endpoint(cfg, &["models"])?)?,
            headers,
            timeouts: cfg.timeouts,
            key_headers: h::KeyHeaders::new(&cfg.name, "Bearer ", &cfg.keys)?,
            models: cfg.models.clone(),
        })
    }

    /// A request with auth, configured headers and weir's request id.
    fn request(
        &self,
        method: Method,
        url: &Endpoint,
        ctx: &UpstreamContext,
    ) -> Result<h::RequestBuilder<'_>> {
        let mut headers = self.headers.clone();
        if let Some(key) = &ctx.api_key {
            headers.insert(
                http::header::AUTHORIZATION,
                self.key_headers.get(&self.name, key)?,
            );
        }
        forward_request_id(&mut headers, ctx);
        Ok(self.client.request(method, url, headers))
    }

    fn post_json<T: serde::Serialize>(
        &self,
        url: &Endpoint,
        body: &T,
        ctx: &UpstreamContext,
    ) -> Result<h::RequestBuilder<'_>> {
        // Serialised here, not by the transport, so a failure is an invalid request, not a
        // connection error, and the body goes out with a Content-Length in one write.
        let bytes = crate::json::to_vec(body)
            .map_err(|e| Error::invalid_request(format!("could not serialise the request: {e}")))?;
        Ok(self
            .request(Method::POST, url, ctx)?
            .header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(bytes))
    }
}

/// `base_url` plus path segments, keeping any query (Azure's `?api-version=`).
pub(crate) fn endpoint(cfg: &ProviderConfig, segments: &[&str]) -> Result<Url> {
    let mut url = cfg.base_url.clone();
    url.path_segments_mut()
        .map_err(|()| config_error(&cfg.name, "base_url", "cannot be a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A URL for Debug output: no query (it may hold a key) and no userinfo.
pub(crate) fn redacted_url(url: &Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

pub(crate) fn config_error(provider: &str, key: &str, reason: &str) -> Error {
    Error::config(format!("providers.{provider}.{key}"), reason)
}

/// `x-request-id: <weir's id>`, when there is one and it is a valid header value.
///
/// With traces exported, also the attempt's trace context (`traceparent`), so the
/// upstream's spans join the caller's trace.
pub(crate) fn forward_request_id(headers: &mut HeaderMap, ctx: &UpstreamContext) {
    crate::telemetry::inject(headers);
    if ctx.request_id.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert("x-request-id", v);
    }
}

/// The outgoing body of a non-streamed chat: the upstream model, `stream: false`, and no
/// `stream_options` (OpenAI rejects them without `stream: true`). Everything else, unknown
/// fields included, goes through untouched.
pub fn chat_body<'a>(req: &'a ChatRequest, upstream_model: &'a str) -> OutgoingChat<'a> {
    OutgoingChat::new(req, upstream_model, None)
}

/// The outgoing body of a streamed chat: `stream: true` and `include_usage: true` whatever
/// the client asked (weir needs usage for accounting; it strips the chunk later if the client
/// did not ask), other stream options kept.
pub fn chat_stream_body<'a>(req: &'a ChatRequest, upstream_model: &'a str) -> OutgoingChat<'a> {
    let extra = req.stream_options.as_ref().map(|o| &o.extra);
    let options = OutgoingStreamOptions {
        include_usage: true,
        extra,
    };
    OutgoingChat::new(req, upstream_model, Some(options))
}

/// A chat request as it goes upstream: the client's request, by reference, with the upstream
/// model and weir's stream settings in place of the client's. It serialises as the request
/// would with those fields changed; borrowing instead of cloning keeps a long conversation
/// from being copied on every attempt.
#[derive(Debug, serde::Serialize)]
pub struct OutgoingChat<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Extra>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutgoingStreamOptions<'a>>,
    #[serde(flatten)]
    extra: &'a Extra,
}

/// `include_usage: true` and the client's other stream options.
#[derive(Debug, serde::Serialize)]
struct OutgoingStreamOptions<'a> {
    include_usage: bool,
    #[serde(flatten)]
    extra: Option<&'a Extra>,
}

impl<'a> OutgoingChat<'a> {
    fn new(
        req: &'a ChatRequest,
        upstream_model: &'a str,
        stream_options: Option<OutgoingStreamOptions<'a>>,
    ) -> Self {
        // Every field by name, so a field added to `ChatRequest` fails to compile here until
        // it is sent upstream too.
        let ChatRequest {
            model: _,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            temperature,
            top_p,
            max_tokens,
            max_completion_tokens,
            stop,
            seed,
            n,
            user,
            metadata,
            stream: _,
            stream_options: _,
            extra,
        } = req;
        Self {
            model: upstream_model,
            messages,
            tools: tools.as_ref(),
            tool_choice: tool_choice.as_ref(),
            parallel_tool_calls: *parallel_tool_calls,
            response_format: response_format.as_ref(),
            temperature: *temperature,
            top_p: *top_p,
            max_tokens: *max_tokens,
            max_completion_tokens: *max_completion_tokens,
            stop: stop.as_ref(),
            seed: *seed,
            n: *n,
            user: user.as_deref(),
            metadata: metadata.as_ref(),
            stream: stream_options.is_some(),
            stream_options,
            extra,
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.post_json(&self.chat_url, &chat_body(req, &ctx.upstream_model), ctx)?;
        let (mut up, body) = h::call_json_keeping_body(
            &self.name,
            rb,
            &deadlines,
            ctx.api_key.as_ref(),
            "a chat completion",
        )
        .await?;
        // The answer is already in the canonical shape: the gateway may forward these bytes.
        up.meta.raw_body = Some(RawBody(body));
        Ok(up)
    }

    async fn chat_stream(&self, req: &ChatRequest, ctx: &UpstreamContext) -> Result<ChunkStream> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.post_json(
            &self.chat_url,
            &chat_stream_body(req, &ctx.upstream_model),
            ctx,
        )?;
        let (events, meta) = h::call_sse(&self.name, rb, &deadlines, ctx.api_key.as_ref()).await?;
        Ok(UpstreamStream {
            stream: chunks(self.name.clone(), events),
            meta,
        })
    }

    async fn embed(
        &self,
        req: &EmbeddingsRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<EmbeddingsResponse>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        // The client already names the upstream model in the request; a copy of what may be a
        // large batch of inputs is made only when a direct caller did not.
        let rb = if req.model == ctx.upstream_model {
            self.post_json(&self.embeddings_url, req, ctx)?
        } else {
            let mut body = req.clone();
            body.model = ctx.upstream_model.clone();
            self.post_json(&self.embeddings_url, &body, ctx)?
        };
        h::call_json(
            &self.name,
            rb,
            &deadlines,
            ctx.api_key.as_ref(),
            "an embeddings response",
        )
        .await
    }

    async fn models(&self, ctx: &UpstreamContext) -> Result<Vec<Model>> {
        let deadlines = CallDeadlines::start(&self.timeouts, ctx.deadline);
        let rb = self.request(Method::GET, &self.models_url, ctx)?;
        let listed: Result<Upstream<ModelList>> = h::call_json(
            &self.name,
            rb,
            &deadlines,
            ctx.api_key.as_ref(),
            "a model list",
        )
        .await;
        match listed {
            Ok(list) => Ok(list.body.data),
            // Servers without `/models` (some proxies and local servers): the configured list.
            Err(e) if !self.models.is_empty() && lacks_endpoint(&e) => Ok(self
                .models
                .iter()
                .map(|m| Model::new(m.clone(), self.name.clone()))
                .collect()),
            Err(e) => Err(e),
        }
    }
}

/// 404, 405 or 501: the server has no such endpoint (as opposed to failing).
pub(crate) fn lacks_endpoint(e: &Error) -> bool {
    matches!(
        e,
        Error::Upstream {
            status: 404 | 405 | 501,
            ..
        }
    )
}

/// Where a chunk stream stands.
struct ChunkState {
    provider: String,
    events: BoxStream<'static, Result<SseEvent>>,
    /// Some choice reported a finish reason: a close without `[DONE]` is then not a cut.
    finished: bool,
    done: bool,
}

/// Turn `data:` events into chunks until `[DONE]`. An error event, a malformed chunk, a
/// broken connection, or a close before any finish reason becomes one error item, after which
/// the stream ends: a gap in a completion must never pass as a shorter completion.
fn chunks(
    provider: String,
    events: BoxStream<'static, Result<SseEvent>>,
) -> BoxStream<'static, Result<ChatChunk>> {
    let st = ChunkState {
        provider,
        events,
        finished: false,
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
                    if st.finished {
                        return None;
                    }
                    let e = interrupted(
                        &st.provider,
                        "the stream ended before the completion finished".into(),
                    );
                    return Some((Err(e), st));
                }
            };
            match parse_chunk(&st.provider, &ev) {
                Parsed::Skip => continue,
                // hyper returns the connection to the pool on its own once the body's end
                // arrives (`pooled_connection_is_reused` holds it to that).
                Parsed::Done => return None,
                Parsed::Chunk(chunk) => {
                    st.finished |= chunk.choices.iter().any(|c| c.finish_reason.is_some());
                    return Some((Ok(*chunk), st));
                }
                Parsed::Error(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

enum Parsed {
    Skip,
    Done,
    Chunk(Box<ChatChunk>),
    Error(Error),
}

fn parse_chunk(provider: &str, ev: &SseEvent) -> Parsed {
    let data = ev.data.trim();
    if data.is_empty() {
        return Parsed::Skip;
    }
    if ev.is_done() {
        return Parsed::Done;
    }
    match serde_json::from_str::<ChatChunk>(data) {
        // OpenRouter reports mid-stream failures as a chunk with an `error` member.
        Ok(chunk) if chunk.extra.get("error").is_some_and(|e| !e.is_null()) => {
            Parsed::Error(stream_error(provider, data))
        }
        Ok(mut chunk) if ev.event != "error" => {
            // Kept so the gateway can forward the upstream's bytes unchanged.
            chunk.received = ReceivedJson::new(data);
            Parsed::Chunk(Box::new(chunk))
        }
        _ => {
            let v = serde_json::from_str::<serde_json::Value>(data).ok();
            if ev.event == "error" || v.as_ref().is_some_and(|v| v.get("error").is_some()) {
                Parsed::Error(stream_error(provider, data))
            } else {
                // Say where it broke, never what the data was (it is the user's completion).
                let why = match serde_json::from_str::<ChatChunk>(data) {
                    Err(e) => e.to_string(),
                    Ok(_) => "unexpected event".to_owned(),
                };
                Parsed::Error(interrupted(provider, format!("malformed chunk: {why}")))
            }
        }
    }
}

/// An error event in the stream: the provider's message, as a stream interruption.
fn stream_error(provider: &str, data: &str) -> Error {
    let message = h::error_message(data.as_bytes())
        .unwrap_or_else(|| "error event without a message".to_owned());
    interrupted(
        provider,
        format!("the upstream reported an error: {message}"),
    )
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
    use weir_types::chat::StreamOptions;

    /// The body as weir built it before it borrowed: a clone of the request with the fields
    /// changed. The borrowed body must serialise to the same bytes.
    fn cloned_body(req: &ChatRequest, model: &str, stream: bool) -> String {
        let mut body = req.clone();
        body.model = model.to_owned();
        body.stream = Some(stream);
        if stream {
            let mut options = body.stream_options.take().unwrap_or(StreamOptions {
                include_usage: None,
                extra: Extra::new(),
            });
            options.include_usage = Some(true);
            body.stream_options = Some(options);
        } else {
            body.stream_options = None;
        }
        serde_json::to_string(&body).unwrap()
    }

    #[test]
    fn borrowed_bodies_serialise_as_the_changed_request_would() {
        let cases = [
            serde_json::json!({"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}),
            serde_json::json!({"model": "a/m", "messages": [
                {"role": "system", "content": "be \"terse\"", "name": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto", "parallel_tool_calls": false,
            "response_format": {"type": "json_object"}, "temperature": 0.7, "top_p": 1.0,
            "max_tokens": 64, "max_completion_tokens": 60, "stop": ["b", "a"], "seed": -3, "n": 1,
            "user": "u", "metadata": {"k": "v"}, "stream": true,
            "stream_options": {"include_usage": false, "vendor_option": 1},
            "logprobs": true, "zeta": null}),
            serde_json::json!({"model": "a/m", "messages": [], "stream": false, "stop": "x",
                "stream_options": {"vendor_option": 2}}),
        ];
        for case in cases {
            let req: ChatRequest = serde_json::from_value(case).unwrap();
            for stream in [false, true] {
                let body = if stream {
                    chat_stream_body(&req, "gpt-4o")
                } else {
                    chat_body(&req, "gpt-4o")
                };
                let sent = crate::json::to_vec(&body).unwrap();
                assert_eq!(
                    String::from_utf8(sent).unwrap(),
                    cloned_body(&req, "gpt-4o", stream)
                );
            }
        }
    }

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: "message".into(),
            data: data.into(),
        }
    }

    #[test]
    fn bodies_replace_model_and_keep_unknown_fields() {
        let mut req = ChatRequest::new("openai/gpt-4o", vec![Message::user("hi")]);
        req.extra.insert("logprobs".into(), serde_json::json!(true));
        req.stream = Some(true);
        req.stream_options = Some(StreamOptions {
            include_usage: Some(false),
            extra: Extra::new(),
        });
        let b = serde_json::to_value(chat_body(&req, "gpt-4o")).unwrap();
        assert_eq!(b["model"], "gpt-4o");
        assert_eq!(b["stream"], false);
        assert_eq!(b["logprobs"], true);
        assert!(b.get("stream_options").is_none());

        let b = serde_json::to_value(chat_stream_body(&req, "gpt-4o")).unwrap();
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["logprobs"], true);
    }

    #[test]
    fn chunk_parsing() {
        let ok = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        assert!(matches!(parse_chunk("p", &ev(ok)), Parsed::Chunk(_)));
        assert!(matches!(parse_chunk("p", &ev("[DONE]")), Parsed::Done));
        assert!(matches!(parse_chunk("p", &ev("  ")), Parsed::Skip));
        let Parsed::Error(e) = parse_chunk("p", &ev(r#"{"error":{"message":"overloaded"}}"#))
        else {
            panic!("expected an error")
        };
        assert!(matches!(e, Error::StreamInterrupted { .. }));
        assert!(e.to_string().contains("overloaded"), "{e}");
        // OpenRouter's shape: a chunk that carries an error.
        let or = r#"{"id":"c","created":1,"model":"m","error":{"code":502,"message":"provider down"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}"#;
        let Parsed::Error(e) = parse_chunk("p", &ev(or)) else {
            panic!("expected an error")
        };
        assert!(e.to_string().contains("provider down"), "{e}");
        let Parsed::Error(e) = parse_chunk("p", &ev(r#"{"id":"c","choices":"secret text"#)) else {
            panic!("expected an error")
        };
        assert!(e.to_string().contains("malformed chunk"), "{e}");
        assert!(!e.to_string().contains("secret text"), "{e}");
    }

    #[test]
    fn endpoints_keep_queries() {
        let cfg = |base: &str| ProviderConfig {
            name: "azure".into(),
            kind: crate::config::ProviderKind::OpenAi,
            base_url: Url::parse(base).unwrap(),
            keys: vec![],
            headers: vec![],
            organization: None,
            project: None,
            anthropic_version: String::new(),
            timeouts: Timeouts::default(),
            models: vec![],
            pool: Default::default(),
        };
        let u = endpoint(
            &cfg("https://x.example/openai/v1?api-version=2024"),
            &["chat", "completions"],
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://x.example/openai/v1/chat/completions?api-version=2024"
        );
        let u = endpoint(&cfg("http://localhost:11434/v1/"), &["models"]).unwrap();
        assert_eq!(u.as_str(), "http://localhost:11434/v1/models");
        assert_eq!(
            redacted_url(&Url::parse("https://u:p@h.example:8443/v1/x?key=s").unwrap()),
            "https://h.example:8443/v1/x"
        );
    }
}
