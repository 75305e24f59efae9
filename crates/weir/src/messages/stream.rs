//! Canonical chunks → Anthropic stream events, in Anthropic's exact order:
//!
//! ```text
//! message_start
//! (content_block_start, content_block_delta*, content_block_stop)*   one block at a time
//! message_delta                                                      stop_reason + usage
//! message_stop
//! ```
//!
//! OpenAI chunks interleave freely (a chunk may carry reasoning, text and tool-call
//! fragments), so the translator keeps one block open at a time and closes it when a fragment
//! of another kind arrives: reasoning → `thinking`, content and refusals → `text`, and each
//! tool-call index its own `tool_use` block. The finish reason comes before the usage chunk
//! in OpenAI streams, while Anthropic puts both in `message_delta`, so that event waits for
//! the usage (or for [`EventTranslator::finish`]).

use std::collections::HashMap;

use serde_json::{Map, Value};
use weir_types::Extra;
use weir_types::anthropic::{
    BlockDelta, ContentBlock, ErrorDetail, MessageDeltaBody, MessageDeltaUsage, MessagesResponse,
    RedactedThinkingBlock, StreamEvent, ToolUseBlock, Usage as AnthropicUsage,
};
use weir_types::chat::{ChatChunk, FinishReason, ToolCallDelta, Usage};

use super::error_type_for_status;
use super::response::{stop_reason, thinking_block, usage_from_canonical};
use crate::error::Error;
use crate::provider::anthropic::convert::REASONING_SIGNATURE;
use crate::provider::anthropic::stream::REDACTED_THINKING;

/// The kind of the block currently open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
    /// A tool_use block, by canonical tool-call index.
    Tool(u32),
}

/// Turns one stream's canonical chunks into Anthropic events.
#[derive(Debug)]
pub struct EventTranslator {
    model: String,
    message_id: String,
    input_tokens: u64,
    started: bool,
    finished: bool,
    /// The open block and its Anthropic index.
    open: Option<(u32, Open)>,
    next_index: u32,
    /// Anthropic block index of each canonical tool-call index seen.
    tool_blocks: HashMap<u32, u32>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
}

impl EventTranslator {
    /// `model` is the name the client asked for; `message_id` the `msg_...` id to report.
    pub fn new(model: &str, message_id: String) -> Self {
        Self {
            model: model.to_owned(),
            message_id,
            input_tokens: 0,
            started: false,
            finished: false,
            open: None,
            next_index: 0,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// The input tokens to report in `message_start`, when known before the stream (an
    /// estimate); otherwise it says 0 and `message_delta` carries the real count.
    pub fn with_input_tokens(mut self, input_tokens: u64) -> Self {
        self.input_tokens = input_tokens;
        self
    }

    /// The events for one chunk. Chunks after the message is complete are ignored.
    pub fn on_chunk(&mut self, chunk: &ChatChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&mut out);
        // One choice only: the Messages API has no `n`.
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            if let Some(thinking) = d.reasoning_content.as_deref().filter(|s| !s.is_empty()) {
                let index = self.open_thinking(&mut out);
                out.push(delta(
                    index,
                    BlockDelta::ThinkingDelta {
                        thinking: thinking.to_owned(),
                    },
                ));
            }
            if let Some(signature) = extra_str(&d.extra, REASONING_SIGNATURE) {
                let index = self.open_thinking(&mut out);
                out.push(delta(
                    index,
                    BlockDelta::SignatureDelta {
                        signature: signature.to_owned(),
                    },
                ));
            }
            if let Some(data) = extra_str(&d.extra, REDACTED_THINKING) {
                self.redacted_thinking(data, &mut out);
            }
            for text in [&d.content, &d.refusal] {
                if let Some(text) = text.as_deref().filter(|s| !s.is_empty()) {
                    let index = self.open_text(&mut out);
                    out.push(delta(
                        index,
                        BlockDelta::TextDelta {
                            text: text.to_owned(),
                        },
                    ));
                }
            }
            for call in d.tool_calls.iter().flatten() {
                self.tool_call(call, &mut out);
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.clone());
            }
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
            // Only usage at or after the finish reason is final: some servers report running
            // usage on every chunk.
            if self.finish_reason.is_some() {
                self.close(&mut out);
            }
        }
        out
    }

    /// The events still owed when the chunks end: the open block's stop, `message_delta`
    /// and `message_stop` (and `message_start`, for a stream that sent no chunk at all).
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.finished {
            self.start(&mut out);
            self.close(&mut out);
        }
        out
    }

    fn start(&mut self, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = AnthropicUsage {
            input_tokens: self.input_tokens,
            ..AnthropicUsage::default()
        };
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse::empty(self.message_id.clone(), self.model.clone(), usage),
        });
    }

    /// Make a thinking block the open one (closing any other), and return its index.
    fn open_thinking(&mut self, out: &mut Vec<StreamEvent>) -> u32 {
        self.reuse_or_begin(Open::Thinking, || thinking_block("", None), out)
    }

    /// Make a text block the open one (closing any other), and return its index.
    fn open_text(&mut self, out: &mut Vec<StreamEvent>) -> u32 {
        self.reuse_or_begin(Open::Text, || ContentBlock::text(""), out)
    }

    fn reuse_or_begin(
        &mut self,
        kind: Open,
        block: impl FnOnce() -> ContentBlock,
        out: &mut Vec<StreamEvent>,
    ) -> u32 {
        match self.open {
            Some((index, open)) if open == kind => index,
            _ => self.begin(kind, block(), out),
        }
    }

    /// Close the open block and start a new one.
    fn begin(&mut self, kind: Open, block: ContentBlock, out: &mut Vec<StreamEvent>) -> u32 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        self.open = Some((index, kind));
        index
    }

    fn close_block(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    /// A redacted thinking block is complete in its start event.
    fn redacted_thinking(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let block = ContentBlock::RedactedThinking(RedactedThinkingBlock {
            data: data.to_owned(),
            extra: Extra::new(),
        });
        self.begin(Open::Thinking, block, out);
        self.close_block(out);
    }

    fn tool_call(&mut self, call: &ToolCallDelta, out: &mut Vec<StreamEvent>) {
        let function = call.function.as_ref();
        let index = match self.tool_blocks.get(&call.index) {
            Some(&index) => index,
            None => {
                let id = call.id.clone().unwrap_or_else(|| {
                    format!(
                        "toolu_{}_{}",
                        self.message_id.trim_start_matches("msg_"),
                        call.index
                    )
                });
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                let block = ContentBlock::ToolUse(ToolUseBlock {
                    id,
                    name,
                    input: Value::Object(Map::new()),
                    cache_control: None,
                    extra: Extra::new(),
                });
                let index = self.begin(Open::Tool(call.index), block, out);
                self.tool_blocks.insert(call.index, index);
                index
            }
        };
        // A fragment for a tool call whose block is already closed (an upstream interleaving
        // parallel calls) still goes to that call's block: the SDKs accumulate deltas by
        // block index, so the assembled input stays right.
        if let Some(args) = function
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            out.push(delta(
                index,
                BlockDelta::InputJsonDelta {
                    partial_json: args.to_owned(),
                },
            ));
        }
    }

    /// Close the open block and end the message.
    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        self.close_block(out);
        let reason = stop_reason(self.finish_reason.as_ref(), !self.tool_blocks.is_empty());
        let usage = match &self.usage {
            Some(u) => {
                let a = usage_from_canonical(u);
                MessageDeltaUsage {
                    output_tokens: a.output_tokens,
                    input_tokens: Some(a.input_tokens),
                    cache_creation_input_tokens: a.cache_creation_input_tokens,
                    cache_read_input_tokens: a.cache_read_input_tokens,
                    extra: Extra::new(),
                }
            }
            None => MessageDeltaUsage::default(),
        };
        out.push(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(reason),
                stop_sequence: None,
                extra: Extra::new(),
            },
            usage,
        });
        out.push(StreamEvent::MessageStop);
        self.finished = true;
    }
}

fn delta(index: u32, delta: BlockDelta) -> StreamEvent {
    StreamEvent::ContentBlockDelta { index, delta }
}

fn extra_str<'a>(extra: &'a Extra, key: &str) -> Option<&'a str> {
    extra
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The `error` event for a failure after the stream started (the HTTP status is already 200).
pub fn error_event(err: &Error) -> StreamEvent {
    StreamEvent::Error {
        error: ErrorDetail {
            kind: error_type_for_status(err.http_status()).to_owned(),
            message: err.to_string(),
        },
    }
}
