//! Test helpers shared by the Anthropic translation tests: fixture loading, SSE parsing, and
//! two accumulators, one per wire format, that assemble a stream into its final message the
//! way the official SDKs do, while checking the event order Anthropic guarantees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use weir_types::anthropic::{BlockDelta, ContentBlock, MessagesResponse, StreamEvent};
use weir_types::chat::{ChatChunk, FinishReason, Usage};

use crate::provider::anthropic::convert::REASONING_SIGNATURE;

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A file of `crates/weir/tests/fixtures/anthropic/`.
pub fn anthropic_fixture(name: &str) -> String {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/anthropic")
            .join(name),
    )
}

/// A file of `crates/weir-types/tests/fixtures/` (the OpenAI payloads).
pub fn openai_fixture(name: &str) -> String {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../weir-types/tests/fixtures")
            .join(name),
    )
}

/// The `data:` payloads of an SSE transcript, `[DONE]` excluded, with their `event:` names.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (event, data)
        })
        .filter(|(_, data)| data != "[DONE]")
        .collect()
}

/// The events of an Anthropic SSE fixture.
pub fn anthropic_events(name: &str) -> Vec<StreamEvent> {
    sse(&anthropic_fixture(name))
        .into_iter()
        .map(|(event, data)| {
            let ev: StreamEvent = serde_json::from_str(&data).unwrap();
            assert_eq!(event.as_deref(), Some(ev.event_name()));
            ev
        })
        .collect()
}

/// The chunks of an OpenAI SSE fixture.
pub fn openai_chunks(name: &str) -> Vec<ChatChunk> {
    sse(&openai_fixture(name))
        .into_iter()
        .map(|(_, data)| serde_json::from_str(&data).unwrap())
        .collect()
}

/// Assemble Anthropic events into the final message, as the SDKs' accumulators do, and panic
/// on any departure from Anthropic's order: one `message_start` first; blocks numbered
/// 0, 1, 2...; each block's deltas between its start and stop, one block open at a time;
/// `message_delta` then `message_stop` last. Pings may appear anywhere.
pub fn assemble(events: &[StreamEvent]) -> MessagesResponse {
    let events: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| !matches!(e, StreamEvent::Ping))
        .collect();
    let Some(StreamEvent::MessageStart { message }) = events.first() else {
        panic!("the stream must open with message_start: {events:?}");
    };
    assert!(
        matches!(events.last(), Some(StreamEvent::MessageStop)),
        "must end with message_stop"
    );
    let n = events.len();
    assert!(
        n >= 3 && matches!(events[n - 2], StreamEvent::MessageDelta { .. }),
        "message_delta before message_stop"
    );
    let mut msg = message.clone();
    let mut open: Option<u32> = None;
    let mut json_buf = String::new();
    for ev in &events[1..n - 2] {
        match ev {
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                assert_eq!(open, None, "block {index} started while another is open");
                assert_eq!(
                    *index as usize,
                    msg.content.len(),
                    "blocks are numbered in order"
                );
                msg.content.push(content_block.clone());
                open = Some(*index);
                json_buf.clear();
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                assert_eq!(open, Some(*index), "delta outside its block");
                let block = &mut msg.content[*index as usize];
                match (block, delta) {
                    (ContentBlock::Text(t), BlockDelta::TextDelta { text }) => {
                        t.text.push_str(text)
                    }
                    (ContentBlock::Thinking(t), BlockDelta::ThinkingDelta { thinking }) => {
                        t.thinking.push_str(thinking);
                    }
                    (ContentBlock::Thinking(t), BlockDelta::SignatureDelta { signature }) => {
                        t.signature = Some(signature.clone());
                    }
                    (ContentBlock::ToolUse(_), BlockDelta::InputJsonDelta { partial_json }) => {
                        json_buf.push_str(partial_json);
                    }
                    (b, d) => panic!("delta {d:?} does not fit block {b:?}"),
                }
            }
            StreamEvent::ContentBlockStop { index } => {
                assert_eq!(open, Some(*index), "stop of a block that is not open");
                if let ContentBlock::ToolUse(t) = &mut msg.content[*index as usize]
                    && !json_buf.is_empty()
                {
                    t.input = serde_json::from_str(&json_buf).unwrap();
                }
                open = None;
            }
            other => panic!("unexpected event inside the message: {other:?}"),
        }
    }
    assert_eq!(open, None, "a block was left open");
    let StreamEvent::MessageDelta { delta, usage } = events[n - 2] else {
        unreachable!()
    };
    msg.stop_reason = delta.stop_reason.clone();
    msg.stop_sequence = delta.stop_sequence.clone();
    msg.usage.output_tokens = usage.output_tokens;
    if let Some(v) = usage.input_tokens {
        msg.usage.input_tokens = v;
    }
    if usage.cache_read_input_tokens.is_some() {
        msg.usage.cache_read_input_tokens = usage.cache_read_input_tokens;
    }
    if usage.cache_creation_input_tokens.is_some() {
        msg.usage.cache_creation_input_tokens = usage.cache_creation_input_tokens;
    }
    msg
}

/// A canonical stream assembled: what an OpenAI SDK accumulator would end with.
#[derive(Debug, Default, PartialEq)]
pub struct Assembled {
    pub content: String,
    pub reasoning: String,
    pub signature: Option<String>,
    /// `(id, name, arguments)` by tool-call index.
    pub tool_calls: BTreeMap<u32, (String, String, String)>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// Whether the first chunk carried the assistant role.
    pub role_first: bool,
}

pub fn assemble_chunks(chunks: &[ChatChunk]) -> Assembled {
    let mut out = Assembled {
        role_first: chunks
            .first()
            .and_then(|c| c.choices.first())
            .is_some_and(|c| c.delta.role.is_some()),
        ..Assembled::default()
    };
    for chunk in chunks {
        if chunk.usage.is_some() {
            out.usage = chunk.usage.clone();
        }
        for choice in &chunk.choices {
            let d = &choice.delta;
            out.content.push_str(d.content.as_deref().unwrap_or(""));
            out.reasoning
                .push_str(d.reasoning_content.as_deref().unwrap_or(""));
            if let Some(sig) = d.extra.get(REASONING_SIGNATURE).and_then(Value::as_str) {
                out.signature = Some(sig.to_owned());
            }
            for call in d.tool_calls.iter().flatten() {
                let entry = out.tool_calls.entry(call.index).or_default();
                if let Some(id) = &call.id {
                    entry.0 = id.clone();
                }
                if let Some(f) = &call.function {
                    if let Some(name) = &f.name {
                        entry.1 = name.clone();
                    }
                    entry.2.push_str(f.arguments.as_deref().unwrap_or(""));
                }
            }
            if choice.finish_reason.is_some() {
                out.finish_reason = choice.finish_reason.clone();
            }
        }
    }
    out
}
