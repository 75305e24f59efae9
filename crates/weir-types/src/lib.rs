//! Canonical wire types for weir.
//!
//! weir speaks OpenAI Chat Completions internally: it is the format every SDK speaks, so the
//! canonical request, response and streaming chunk are modelled on it ([`chat`]). The Anthropic
//! Messages API types live in [`anthropic`]; the library translates between the two.
//!
//! This crate is serde only, with no I/O, so that anything can depend on it cheaply.
//!
//! Two rules hold for every type here:
//! - fields that are `None` are absent from the output, never `null` (the one exception is the
//!   OpenAI error body, whose `param` and `code` are always present, as OpenAI sends them);
//! - unknown fields on requests are kept in an `extra` map and serialised back out, so that an
//!   OpenAI-compatible upstream receives everything the client sent.
//!
//! ```
//! use weir_types::chat::ChatRequest;
//! let req: ChatRequest = serde_json::from_str(
//!     r#"{"model":"mock/echo","messages":[{"role":"user","content":"hi"}],"logprobs":true}"#,
//! ).unwrap();
//! assert_eq!(req.messages[0].text(), "hi");
//! // the unknown field survives the round trip
//! assert!(serde_json::to_string(&req).unwrap().contains("\"logprobs\":true"));
//! ```

pub mod anthropic;
pub mod chat;
mod content;
pub mod embeddings;
pub mod error;
mod extra;
pub mod models;

/// A JSON object of fields this crate does not model, kept for pass-through.
pub type Extra = serde_json::Map<String, serde_json::Value>;
