//! The provider abstraction: one object-safe trait, implemented once per upstream API.
//!
//! A provider turns canonical (OpenAI-shaped) requests into calls to its upstream and the
//! answers back into canonical responses and chunks. It is used as `Arc<dyn Provider>` from a
//! registry built from config. Everything call-specific (the upstream model name, the API key,
//! the deadline, the request id) travels in a [`UpstreamContext`], so providers hold no per-call
//! state and need no long argument lists.
//!
//! A streaming call returns only once the upstream has answered with a success status, so an
//! upstream error surfaces as `Err` before any chunk and the caller can still retry or fail over.

pub mod anthropic;
pub mod http;
pub mod mock;
pub mod openai;
pub mod ratelimit;
pub mod sse;
pub mod transport;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use secrecy::SecretString;
use tokio::time::Instant;
use weir_types::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse};
use weir_types::embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use weir_types::models::Model;

use crate::error::{Error, Result};
pub use ratelimit::RateLimitSnapshot;

/// Everything one upstream call needs besides the request body.
#[derive(Clone)]
pub struct UpstreamContext {
    /// The model name as the upstream knows it (`gpt-4o-mini`, not `openai/gpt-4o-mini`).
    pub upstream_model: String,
    /// The API key for this call, chosen by the caller from the provider's key pool.
    pub api_key: Option<SecretString>,
    /// weir's request id, forwarded upstream for correlation.
    pub request_id: String,
    /// When the whole request must be done; providers bound their waits by it.
    pub deadline: Option<Instant>,
    /// The client's API-behaviour headers (see `CallContext::upstream_headers`), for
    /// providers that speak the API they belong to.
    pub forwarded: Vec<(::http::HeaderName, ::http::HeaderValue)>,
}

impl fmt::Debug for UpstreamContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamContext")
            .field("upstream_model", &self.upstream_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("request_id", &self.request_id)
            .field("deadline", &self.deadline)
            .field(
                "forwarded",
                &self.forwarded.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl UpstreamContext {
    pub fn new(upstream_model: impl Into<String>) -> Self {
        Self {
            upstream_model: upstream_model.into(),
            api_key: None,
            request_id: String::new(),
            deadline: None,
            forwarded: Vec::new(),
        }
    }
}

/// What the upstream said about the call besides its body.
#[derive(Debug, Clone, Default)]
pub struct UpstreamMeta {
    /// The upstream's rate-limit headers, as parsed.
    pub rate_limit: Option<RateLimitSnapshot>,
    /// The upstream's own request id (`x-request-id` / `request-id`), for support tickets.
    pub upstream_request_id: Option<String>,
    /// The body exactly as received, when it is already in the shape the caller gets (an
    /// OpenAI-compatible chat answer), so a gateway can forward it without re-encoding.
    pub raw_body: Option<RawBody>,
}

/// A response body as received. Its `Debug` shows the length only: the body is the user's
/// completion.
#[derive(Clone, PartialEq, Eq)]
pub struct RawBody(pub bytes::Bytes);

impl fmt::Debug for RawBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawBody({} bytes)", self.0.len())
    }
}

/// A body plus what the upstream said about it.
#[derive(Debug, Clone)]
pub struct Upstream<T> {
    pub body: T,
    pub meta: UpstreamMeta,
}

/// A stream of items from an upstream that has already answered with a success status.
pub struct UpstreamStream<T> {
    pub stream: BoxStream<'static, Result<T>>,
    pub meta: UpstreamMeta,
}

impl<T> fmt::Debug for UpstreamStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamStream")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

pub type ChunkStream = UpstreamStream<ChatChunk>;

/// One upstream API.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's configured name (`openai`, `anthropic`, `mock`, `local`...).
    fn name(&self) -> &str;

    /// A complete chat completion.
    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>>;

    /// A streamed chat completion as canonical chunks. The stream always ends with a chunk
    /// carrying `usage` when the upstream reports it, whatever the client asked: weir needs it
    /// for accounting, and strips it later if the client did not ask for it.
    async fn chat_stream(&self, req: &ChatRequest, ctx: &UpstreamContext) -> Result<ChunkStream>;

    /// Embeddings.
    async fn embed(
        &self,
        req: &EmbeddingsRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<EmbeddingsResponse>> {
        let _ = (req, ctx);
        Err(self.unsupported("embeddings"))
    }

    /// The models the upstream offers.
    async fn models(&self, ctx: &UpstreamContext) -> Result<Vec<Model>> {
        let _ = ctx;
        Err(self.unsupported("listing models"))
    }

    /// Whether this provider speaks the Anthropic Messages API natively, so `/v1/messages`
    /// can pass through without translation.
    fn speaks_anthropic_messages(&self) -> bool {
        false
    }

    /// A native Anthropic Messages call (only when [`Provider::speaks_anthropic_messages`]).
    async fn messages(
        &self,
        req: &MessagesRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<MessagesResponse>> {
        let _ = (req, ctx);
        Err(self.unsupported("the native Anthropic Messages API"))
    }

    /// A native streamed Anthropic Messages call, as Anthropic's own events.
    async fn messages_stream(
        &self,
        req: &MessagesRequest,
        ctx: &UpstreamContext,
    ) -> Result<UpstreamStream<StreamEvent>> {
        let _ = (req, ctx);
        Err(self.unsupported("the native Anthropic Messages API"))
    }

    /// The error for an operation this provider lacks.
    fn unsupported(&self, operation: &str) -> Error {
        Error::Unsupported {
            provider: self.name().to_owned(),
            operation: operation.to_owned(),
        }
    }
}

pub type SharedProvider = Arc<dyn Provider>;

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
