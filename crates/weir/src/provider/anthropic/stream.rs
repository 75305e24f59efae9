//! Anthropic stream events → canonical chat chunks, for the Anthropic provider's streaming
//! calls. Pure state machine, no I/O: the adapter parses SSE into [`StreamEvent`]s and feeds
//! them to a [`ChunkTranslator`].
//!
//! Anthropic streams one content block at a time (`content_block_start`, deltas,
//! `content_block_stop`) and numbers blocks of every kind together; OpenAI chunks carry text,
//! reasoning and tool-call fragments, tool calls numbered on their own. So the translator
//! remembers what each Anthropic block index is, and gives tool-use blocks a running
//! tool-call index (block 1 → tool call 0 when block 0 was text).
//!
//! Thinking signatures and redacted thinking have no OpenAI delta field: they travel in the
//! delta's extra fields (`reasoning_signature`, `redacted_thinking`) so that a client, or
//! weir's own Messages ingress, can send them back.

use std::collections::HashMap;

use serde_json::Value;
use weir_types::Extra;
use weir_types::anthropic::{self as a, BlockDelta, ContentBlock, ErrorDetail, StreamEvent};
use weir_types::chat::{ChatChunk, Delta, FunctionCallDelta, Role, ToolCallDelta, Usage};

use super::convert::{REASONING_SIGNATURE, canonical_usage, finish_reason};
use crate::error::{Error, Result};
use crate::provider::unix_now;

/// Extra field of a chunk delta carrying a redacted thinking block's `data`.
pub const REDACTED_THINKING: &str = "redacted_thinking";

/// What an Anthropic content block index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    ToolUse {
        call_index: u32,
    },
    /// Server tool blocks and other kinds with no canonical equivalent.
    Ignored,
}

/// Turns one stream's Anthropic events into canonical chunks.
#[derive(Debug)]
pub struct ChunkTranslator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    blocks: HashMap<u32, Block>,
    next_call_index: u32,
    /// Input-side usage from `message_start`, updated by `message_delta` when it has them.
    usage: a::Usage,
    started: bool,
    /// Whether any content reached the client: after that an upstream error can only be
    /// reported as an interrupted stream, not retried as a fresh failure.
    emitted_content: bool,
    usage_sent: bool,
    stopped: bool,
}

impl ChunkTranslator {
    /// `model_hint` names the chunks until `message_start` says which model answers.
    pub fn new(model_hint: &str) -> Self {
        Self {
            provider: "anthropic".into(),
            id: String::new(),
            model: model_hint.to_owned(),
            created: unix_now(),
            blocks: HashMap::new(),
            next_call_index: 0,
            usage: a::Usage::default(),
            started: false,
            emitted_content: false,
            usage_sent: false,
            stopped: false,
        }
    }

    /// The provider name errors report (default `anthropic`).
    pub fn with_provider(mut self, provider: &str) -> Self {
        self.provider = provider.to_owned();
        self
    }

    /// Whether `message_stop` arrived: a stream that ends before it was cut short.
    pub fn is_complete(&self) -> bool {
        self.stopped
    }

    /// The chunks for one event. An `error` event, or a malformed event of a known type,
    /// is an `Err`; unknown event types and `ping` produce nothing.
    pub fn on_event(&mut self, ev: StreamEvent) -> Result<Vec<ChatChunk>> {
        let mut out = Vec::new();
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                if !message.model.is_empty() {
                    self.model = message.model;
                }
                self.usage = message.usage;
                self.started = true;
                // OpenAI's first chunk: the role, with empty content.
                out.push(self.chunk(Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                }));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                self.block_start(index, content_block, &mut out)?;
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                self.block_delta(index, delta, &mut out)?
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping => {}
            StreamEvent::MessageDelta { delta, usage } => {
                // Cumulative counts; newer API versions repeat the input side here too.
                self.usage.output_tokens = usage.output_tokens;
                if let Some(n) = usage.input_tokens {
                    self.usage.input_tokens = n;
                }
                if usage.cache_read_input_tokens.is_some() {
                    self.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
                }
                if usage.cache_creation_input_tokens.is_some() {
                    self.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
                }
                if let Some(reason) = &delta.stop_reason {
                    let chunk = ChatChunk::new(&self.id, self.created, &self.model)
                        .with_delta(Delta::default(), Some(finish_reason(reason)));
                    out.push(chunk);
                }
                if !self.usage_sent {
                    out.push(self.usage_chunk());
                }
            }
            StreamEvent::MessageStop => {
                self.stopped = true;
                if !self.usage_sent {
                    out.push(self.usage_chunk());
                }
            }
            StreamEvent::Error { error } => return Err(self.stream_error(&error)),
            ev @ StreamEvent::Unknown(_) => {
                if ev.is_malformed() {
                    return Err(self.malformed(&ev));
                }
            }
        }
        Ok(out)
    }

    /// What is still owed when the upstream stream ends: the usage chunk, if no
    /// `message_delta` or `message_stop` sent it (a cut-short stream), so the input tokens
    /// are still accounted for.
    pub fn finish(&mut self) -> Vec<ChatChunk> {
        if self.started && !self.usage_sent {
            vec![self.usage_chunk()]
        } else {
            Vec::new()
        }
    }

    fn block_start(
        &mut self,
        index: u32,
        block: ContentBlock,
        out: &mut Vec<ChatChunk>,
    ) -> Result<()> {
        let kind = match block {
            ContentBlock::Text(t) => {
                self.push_text(t.text, out);
                Block::Text
            }
            ContentBlock::Thinking(t) => {
                self.push_reasoning(t.thinking, out);
                if let Some(signature) = t.signature {
                    self.push_extra(REASONING_SIGNATURE, signature, out);
                }
                Block::Thinking
            }
            ContentBlock::RedactedThinking(r) => {
                self.push_extra(REDACTED_THINKING, r.data, out);
                Block::Ignored
            }
            ContentBlock::ToolUse(t) => {
                let call_index = self.next_call_index;
                self.next_call_index += 1;
                // The start carries `{}` and the arguments follow as input_json_delta; an
                // upstream that sends the whole input up front gets it passed as one fragment.
                let arguments = match &t.input {
                    Value::Object(m) if m.is_empty() => String::new(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                self.emitted_content = true;
                out.push(self.chunk(Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: call_index,
                        id: Some(t.id),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(t.name),
                            arguments: Some(arguments),
                        }),
                    }]),
                    ..Delta::default()
                }));
                Block::ToolUse { call_index }
            }
            b if b.is_malformed() => {
                return Err(Error::InvalidResponse {
                    provider: self.provider.clone(),
                    message: format!("malformed `{}` content block in the stream", b.kind()),
                });
            }
            _ => Block::Ignored,
        };
        self.blocks.insert(index, kind);
        Ok(())
    }

    fn block_delta(
        &mut self,
        index: u32,
        delta: BlockDelta,
        out: &mut Vec<ChatChunk>,
    ) -> Result<()> {
        match delta {
            BlockDelta::TextDelta { text } => self.push_text(text, out),
            BlockDelta::ThinkingDelta { thinking } => self.push_reasoning(thinking, out),
            BlockDelta::SignatureDelta { signature } => {
                self.push_extra(REASONING_SIGNATURE, signature, out)
            }
            BlockDelta::InputJsonDelta { partial_json } => {
                // Only client tool calls: server tool blocks stream their input too.
                if let Some(Block::ToolUse { call_index }) = self.blocks.get(&index).copied()
                    && !partial_json.is_empty()
                {
                    self.emitted_content = true;
                    out.push(self.chunk(Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: call_index,
                            id: None,
                            kind: None,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            }),
                        }]),
                        ..Delta::default()
                    }));
                }
            }
            // Citations have no OpenAI equivalent; the cited text itself arrives as text.
            BlockDelta::CitationsDelta { .. } => {}
            d @ BlockDelta::Other(_) => {
                if d.is_malformed() {
                    return Err(Error::InvalidResponse {
                        provider: self.provider.clone(),
                        message: format!("malformed content_block_delta for block {index}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn push_text(&mut self, text: String, out: &mut Vec<ChatChunk>) {
        if text.is_empty() {
            return;
        }
        self.emitted_content = true;
        out.push(self.chunk(Delta {
            content: Some(text),
            ..Delta::default()
        }));
    }

    fn push_reasoning(&mut self, thinking: String, out: &mut Vec<ChatChunk>) {
        if thinking.is_empty() {
            return;
        }
        self.emitted_content = true;
        out.push(self.chunk(Delta {
            reasoning_content: Some(thinking),
            ..Delta::default()
        }));
    }

    fn push_extra(&mut self, key: &str, value: String, out: &mut Vec<ChatChunk>) {
        if value.is_empty() {
            return;
        }
        let mut extra = Extra::new();
        extra.insert(key.to_owned(), Value::String(value));
        out.push(self.chunk(Delta {
            extra,
            ..Delta::default()
        }));
    }

    fn chunk(&self, delta: Delta) -> ChatChunk {
        ChatChunk::new(&self.id, self.created, &self.model).with_delta(delta, None)
    }

    fn usage_chunk(&mut self) -> ChatChunk {
        self.usage_sent = true;
        let mut chunk = ChatChunk::new(&self.id, self.created, &self.model);
        chunk.usage = Some(self.canonical_usage());
        chunk
    }

    fn canonical_usage(&self) -> Usage {
        let u = &self.usage;
        canonical_usage(
            u.input_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
            u.output_tokens,
        )
    }

    fn stream_error(&self, e: &ErrorDetail) -> Error {
        event_error(&self.provider, e, self.emitted_content)
    }

    fn malformed(&self, ev: &StreamEvent) -> Error {
        let kind = match ev {
            StreamEvent::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or(""),
            other => other.event_name(),
        };
        Error::InvalidResponse {
            provider: self.provider.clone(),
            message: format!("malformed `{kind}` event in the stream"),
        }
    }
}

/// A stream's `error` event as an error. Before any content reached the client it is
/// classified like the HTTP status Anthropic pairs with its type (so an `overloaded_error`
/// can still fail over); once content has flowed, only "interrupted" is honest.
pub fn event_error(provider: &str, e: &ErrorDetail, content_started: bool) -> Error {
    match crate::messages::status_for_error_type(&e.kind) {
        Some(status) if !content_started => {
            Error::from_upstream(provider, status, Some(e.message.clone()), b"", None)
        }
        _ => Error::StreamInterrupted {
            provider: provider.to_owned(),
            message: format!("{}: {}", e.kind, e.message),
        },
    }
}

#[cfg(test)]
mod tests;
