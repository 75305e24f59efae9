//! How each adapter's wire looks, for the conformance scenarios in `providers.rs`, and the
//! helpers they share.

use std::time::Duration;

use futures::StreamExt;
use secrecy::SecretString;
use serde_json::Value;
use url::Url;
use weir::config::{ProviderConfig, ProviderKind, Timeouts};
use weir::error::Error;
use weir::provider::anthropic::AnthropicProvider;
use weir::provider::openai::OpenAiProvider;
use weir::provider::{SharedProvider, UpstreamContext};
use weir_test_support::{FakeUpstream, Recorded, anthropic, openai, sse};
use weir_types::chat::{ChatChunk, ChatRequest, Message};

pub const KEY: &str = "sk-test-0123456789abcdef";
pub const MODEL: &str = "test-model-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    pub fn config(self, base_url: &str, timeouts: Timeouts) -> ProviderConfig {
        ProviderConfig {
            name: match self {
                Dialect::OpenAi => "openai".into(),
                Dialect::Anthropic => "anthropic".into(),
            },
            kind: match self {
                Dialect::OpenAi => ProviderKind::OpenAi,
                Dialect::Anthropic => ProviderKind::Anthropic,
            },
            base_url: Url::parse(base_url).unwrap(),
            keys: vec![],
            headers: vec![("X-Title".into(), "weir-tests".into())],
            organization: Some("org-test".into()),
            project: Some("proj-test".into()),
            anthropic_version: "2023-06-01".into(),
            timeouts,
            models: vec![],
            pool: Default::default(),
        }
    }

    pub fn provider_with(self, fake: &FakeUpstream, timeouts: Timeouts) -> SharedProvider {
        let cfg = self.config(&fake.v1(), timeouts);
        match self {
            Dialect::OpenAi => std::sync::Arc::new(OpenAiProvider::new(&cfg).unwrap()),
            Dialect::Anthropic => std::sync::Arc::new(AnthropicProvider::new(&cfg, 1024).unwrap()),
        }
    }

    pub fn provider(self, fake: &FakeUpstream) -> SharedProvider {
        self.provider_with(fake, quick_timeouts())
    }

    /// The path a chat call must reach.
    pub fn chat_path(self) -> &'static str {
        match self {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Anthropic => "/v1/messages",
        }
    }

    pub fn chat_body(self, text: &str) -> Value {
        match self {
            Dialect::OpenAi => openai::chat_completion(MODEL, text),
            Dialect::Anthropic => anthropic::message(MODEL, text),
        }
    }

    pub fn text_stream(self, pieces: &[&str]) -> String {
        match self {
            Dialect::OpenAi => openai::text_stream(MODEL, pieces),
            Dialect::Anthropic => anthropic::text_stream(MODEL, pieces),
        }
    }

    pub fn tool_stream(self, id: &str, name: &str, pieces: &[&str]) -> String {
        match self {
            Dialect::OpenAi => openai::tool_call_stream(MODEL, id, name, pieces),
            Dialect::Anthropic => anthropic::tool_use_stream(MODEL, id, name, pieces),
        }
    }

    pub fn error_body(self, status: u16, message: &str) -> Value {
        match self {
            Dialect::OpenAi => {
                let kind = if status == 429 {
                    "rate_limit_error"
                } else {
                    "server_error"
                };
                openai::error(message, kind, None)
            }
            Dialect::Anthropic => {
                let kind = match status {
                    401 => "authentication_error",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                anthropic::error(kind, message)
            }
        }
    }

    /// The first events of a stream (some content already sent), without its end.
    pub fn stream_prefix(self) -> String {
        let full = self.text_stream(&["Hello", " there"]);
        // Everything up to and including the second content delta.
        let marker = match self {
            Dialect::OpenAi => "\"content\":\" there\"",
            Dialect::Anthropic => "\"text\":\" there\"",
        };
        let at = full.find(marker).unwrap();
        let end = at + full[at..].find("\n\n").unwrap() + 2;
        full[..end].to_owned()
    }

    /// A mid-stream error event as this upstream sends it.
    pub fn error_event(self, message: &str) -> String {
        match self {
            Dialect::OpenAi => sse::data(&openai::error(message, "server_error", None)),
            Dialect::Anthropic => anthropic::error_event("overloaded_error", message),
        }
    }

    pub fn rate_limit_headers(self) -> Vec<(String, String)> {
        match self {
            Dialect::OpenAi => openai::rate_limit_headers(),
            Dialect::Anthropic => anthropic::rate_limit_headers(),
        }
    }

    pub fn request_id(self) -> &'static str {
        match self {
            Dialect::OpenAi => "req_fake_openai",
            Dialect::Anthropic => "req_fake_anthropic",
        }
    }

    /// Where the key must be, and in what form.
    pub fn assert_auth(self, r: &Recorded) {
        match self {
            Dialect::OpenAi => {
                assert_eq!(
                    r.header("authorization"),
                    Some(format!("Bearer {KEY}").as_str())
                );
                assert_eq!(r.header("x-api-key"), None);
                assert_eq!(r.header("openai-organization"), Some("org-test"));
                assert_eq!(r.header("openai-project"), Some("proj-test"));
            }
            Dialect::Anthropic => {
                assert_eq!(r.header("x-api-key"), Some(KEY));
                assert_eq!(r.header("authorization"), None);
                assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
            }
        }
        assert_eq!(r.header("x-title"), Some("weir-tests"));
    }
}

pub fn quick_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        total: Duration::from_secs(10),
    }
}

pub fn ctx() -> UpstreamContext {
    let mut c = UpstreamContext::new(MODEL);
    c.api_key = Some(SecretString::from(KEY));
    c.request_id = "weir-req-42".into();
    c
}

pub fn request(text: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        format!("someprovider/{MODEL}-alias"),
        vec![Message::user(text)],
    );
    r.max_tokens = Some(100);
    r
}

/// Collect a stream: every chunk until the first error (returned separately).
pub async fn collect(
    stream: futures::stream::BoxStream<'static, weir::Result<ChatChunk>>,
) -> (Vec<ChatChunk>, Option<Error>) {
    let mut chunks = Vec::new();
    let mut stream = stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(c) => chunks.push(c),
            Err(e) => {
                // After an error the stream must end.
                assert!(
                    stream.next().await.is_none(),
                    "stream went on after an error"
                );
                return (chunks, Some(e));
            }
        }
    }
    (chunks, None)
}

pub fn text_of(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

pub fn assert_no_key(text: &str) {
    assert!(!text.contains(KEY), "the API key leaked: {text}");
}
