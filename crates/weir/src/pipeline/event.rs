//! [`UsageEvent`]: what one call did and cost, emitted exactly once per call, whatever the
//! operation and however it ended (answered, failed, served from the cache, shared with an
//! identical call in flight, or cut off by a client that went away mid-stream).

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use weir_types::chat::Usage;

use super::CallContext;
use crate::error::ErrorKind;

/// The kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
    ChatStream,
    Embeddings,
    Messages,
    MessagesStream,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::ChatStream => "chat_stream",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::MessagesStream => "messages_stream",
        }
    }

    pub fn is_stream(self) -> bool {
        matches!(self, Self::ChatStream | Self::MessagesStream)
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered in full.
    Success,
    /// Failed: refused, or every attempt failed, or the stream broke.
    Failure,
    /// The caller went away before the end (a dropped stream): what was used is still
    /// counted, estimated when the upstream never reported it.
    Disconnected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Disconnected => "disconnected",
        }
    }
}

/// What the response cache did for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheOutcome {
    /// The cache did not apply.
    #[default]
    Bypass,
    /// Served from the cache: no upstream call.
    Hit,
    /// Looked up, not found: this call went upstream.
    Miss,
    /// Looked up, not found, and answered by an identical call already in flight: no
    /// upstream call of its own.
    Coalesced,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bypass => "bypass",
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }

    /// Whether the call spent nothing upstream (a hit or a shared answer).
    pub fn is_free(self) -> bool {
        matches!(self, Self::Hit | Self::Coalesced)
    }
}

/// Token counts of one call, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Every input token, cached ones included.
    pub input: u64,
    pub output: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write: u64,
    /// Output tokens spent on reasoning (included in `output`).
    pub reasoning: u64,
}

impl Tokens {
    pub fn from_usage(usage: &Usage) -> Self {
        Self {
            input: usage.prompt_tokens,
            output: usage.completion_tokens,
            cached_input: usage.cached_tokens(),
            cache_write: usage.cache_creation_tokens(),
            reasoning: usage.reasoning_tokens(),
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    /// From the call's start to its end (for a stream: its last event, or the drop).
    pub total: Duration,
    /// From the first attempt to the upstream's answer (retries included; for a stream: its
    /// first event). Zero when nothing was sent.
    pub upstream: Duration,
    /// From the call's start to its first streamed token, for streams that produced one.
    pub first_token: Option<Duration>,
}

/// The deployment that answered (or failed last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTaken {
    pub provider: String,
    pub upstream_model: String,
    /// The label of the upstream key used (never the key itself).
    pub key_label: Option<String>,
}

impl RouteTaken {
    /// `provider/upstream_model`.
    pub fn deployment(&self) -> String {
        crate::client::route::join_qualified(&self.provider, &self.upstream_model)
    }
}

/// One call's record, for every [`UsageSink`](super::UsageSink).
#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub context: Arc<CallContext>,
    pub operation: Operation,
    pub outcome: Outcome,
    /// The HTTP status the call maps to: 200, or the error's status.
    pub status: u16,
    pub error: Option<ErrorKind>,
    /// `None` when no deployment was chosen (refused before routing, unknown model).
    pub route: Option<RouteTaken>,
    /// Upstream attempts made (retries, failovers and hedges included); 0 for a cache hit
    /// or a shared answer.
    pub attempts: u32,
    pub tokens: Tokens,
    /// `true` when the tokens are weir's estimate: a stream cut before its usage arrived.
    pub tokens_estimated: bool,
    /// Dollars spent upstream: zero for hits, shared answers and failures that reported no
    /// usage; `None` (never zero) when the model has no known price or a successful call's
    /// usage is unknown.
    pub cost_usd: Option<Decimal>,
    pub cache: CacheOutcome,
    pub latency: Latencies,
    /// For a chat call, when any usage sink is registered: the digest the cache keys a
    /// request by (over the requested model and what decides the answer; never the prompt
    /// itself), so a sink can tell a prompt sent again, cached or not. `None` otherwise.
    pub prompt_fingerprint: Option<String>,
}
