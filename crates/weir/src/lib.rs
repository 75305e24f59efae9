//! weir: one fast, dependable door to LLM providers.
//!
//! The library behind the `weir` gateway and CLI, for Rust programs to embed directly.
//! Main types:
//! - [`Client`]: chat (complete and streamed), batch, embeddings, Anthropic Messages, status;
//!   [`BlockingClient`] for programs that are not async;
//! - [`Config`]: the validated configuration (YAML file, environment, embedded defaults);
//! - [`provider::Provider`]: the trait each upstream API implements (OpenAI and compatible
//!   servers, Anthropic, and the offline mock);
//! - [`Error`]: the one error type, which knows whether a retry could help and its HTTP status;
//! - [`limits::InboundLimits`]: rate limits per gateway key, user, team and client address;
//! - [`budgets::Budgets`]: spend limits in dollars per period, per key, user, team, project,
//!   model or globally.
//!
//! Request and response types are OpenAI-shaped and live in the `weir-types` crate.
//!
//! # Cargo features
//!
//! All on by default; each brings in one heavy dependency.
//!
//! | feature | enables | without it |
//! | --- | --- | --- |
//! | `redis` | the Redis cache tier (`cache.redis`) and inbound rate limits shared through Redis (`redis:`), with the `redis` crate | configuring either fails when the client is built |
//! | `sqlite` | the SQLite cache tier (`cache.sqlite`), with `rusqlite` (SQLite bundled) | configuring `cache.sqlite` fails when the client is built |
//! | `tokenizer` | exact o200k token counts, with `tiktoken-rs` | [`tokens`] counts about 4 bytes per token |
//!
//! ```
//! use futures::StreamExt;
//! use weir::{Client, Config};
//! use weir_types::chat::{ChatRequest, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let client = Client::new(Config::from_yaml("", &|_: &str| None)?)?;
//! let mut stream = client
//!     .chat_stream(ChatRequest::new("mock/echo", vec![Message::user("hello there")]))
//!     .await?;
//! let mut text = String::new();
//! while let Some(chunk) = stream.next().await {
//!     if let Some(piece) = chunk?.choices.first().and_then(|c| c.delta.content.clone()) {
//!         text.push_str(&piece);
//!     }
//! }
//! assert_eq!(text, "hello there");
//! # Ok::<(), weir::Error>(())
//! # })?;
//! # Ok(())
//! # }
//! ```

pub mod access;
pub mod breaker;
pub mod budgets;
pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod json;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod pricing;
pub mod provider;
pub mod retry;
pub mod router;
pub mod telemetry;
pub mod tokens;

pub use client::{
    BlockingClient, ChatStream, Client, ClientBuilder, Completion, EmbeddingsOutcome, ResponseMeta,
    Status,
};
pub use config::{Config, ConfigError};
pub use error::{Error, ErrorKind, Result};
pub use pipeline::{CallContext, LimitKind, LimitScope, Principal, Quota, UsageEvent};
pub use weir_types as types;
