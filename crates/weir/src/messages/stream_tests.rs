//! The stream translation of the Messages ingress: event order, held `message_delta`, and
//! round trips through both translators.
#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};
use weir_types::anthropic::{ContentBlock, StopReason, StreamEvent};
use weir_types::chat::{
    ChatChunk, Delta, FinishReason, FunctionCallDelta, Role, ToolCallDelta, Usage,
};

use super::*;
use crate::error::Error;
use crate::messages::testutil::{anthropic_events, assemble, assemble_chunks, openai_chunks};
use crate::provider::anthropic::stream::ChunkTranslator;

fn run(chunks: &[ChatChunk]) -> Vec<StreamEvent> {
    let mut tr = EventTranslator::new("claude-via-gpt", "msg_test".into());
    let mut events: Vec<StreamEvent> = chunks.iter().flat_map(|c| tr.on_chunk(c)).collect();
    events.extend(tr.finish());
    events
}

fn chunk(delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
    ChatChunk::new("chatcmpl-1", 1, "gpt").with_delta(delta, finish)
}

fn text(s: &str) -> Delta {
    Delta {
        content: Some(s.into()),
        ..Delta::default()
    }
}

fn usage_chunk(prompt: u64, completion: u64) -> ChatChunk {
    let mut c = ChatChunk::new("chatcmpl-1", 1, "gpt");
    c.usage = Some(Usage::new(prompt, completion));
    c
}

fn tool_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Delta {
    Delta {
        tool_calls: Some(vec![ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            kind: id.map(|_| "function".to_owned()),
            function: Some(FunctionCallDelta {
                name: name.map(str::to_owned),
                arguments: Some(args.into()),
            }),
        }]),
        ..Delta::default()
    }
}

#[test]
fn openai_tool_call_stream_becomes_anthropic_events_exactly() {
    let events = run(&openai_chunks("openai_chunks_tool_calls.sse"));
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let start = |i: u32, id: &str| {
        json!({"type": "content_block_start", "index": i, "content_block":
            {"type": "tool_use", "id": id, "name": "get_weather", "input": {}}})
    };
    let args = |i: u32, s: &str| json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": s}});
    assert_eq!(
        events,
        vec![
            json!({"type": "message_start", "message": {"id": "msg_test", "type": "message", "role": "assistant",
                "content": [], "model": "claude-via-gpt", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            start(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA"),
            args(0, "{\"lo"),
            args(0, "cation\": \"Paris, France\"}"),
            json!({"type": "content_block_stop", "index": 0}),
            start(1, "call_Qa9PGoK0GD2QC1DpNBrZ2W2z"),
            args(1, "{\"location\": \"Bogot"),
            args(1, "á, Colombia\"}"),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 48, "input_tokens": 84, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0}}),
            json!({"type": "message_stop"}),
        ]
    );
}

#[test]
fn message_delta_waits_for_the_usage_chunk() {
    let mut tr = EventTranslator::new("m", "msg_1".into());
    let first = tr.on_chunk(&chunk(text("Hi"), None));
    let names: Vec<&str> = first.iter().map(StreamEvent::event_name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    // The finish reason alone does not end the message: the usage follows.
    assert!(
        tr.on_chunk(&chunk(Delta::default(), Some(FinishReason::Stop)))
            .is_empty()
    );
    let end = tr.on_chunk(&usage_chunk(7, 3));
    let names: Vec<&str> = end.iter().map(StreamEvent::event_name).collect();
    assert_eq!(
        names,
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let StreamEvent::MessageDelta { delta, usage } = &end[1] else {
        panic!("message_delta expected");
    };
    assert_eq!(delta.stop_reason, Some(StopReason::EndTurn));
    assert_eq!((usage.output_tokens, usage.input_tokens), (3, Some(7)));
    // After message_stop, nothing more.
    assert!(tr.on_chunk(&chunk(text("late"), None)).is_empty());
    assert!(tr.finish().is_empty());
}

#[test]
fn running_usage_before_the_finish_is_not_final() {
    let mut tr = EventTranslator::new("m", "msg_1".into());
    let mut c = chunk(text("a"), None);
    c.usage = Some(Usage::new(7, 1));
    tr.on_chunk(&c);
    assert!(
        tr.on_chunk(&chunk(text("b"), Some(FinishReason::Stop)))
            .iter()
            .all(|e| !matches!(e, StreamEvent::MessageDelta { .. }))
    );
    let end = tr.on_chunk(&usage_chunk(7, 2));
    let Some(StreamEvent::MessageDelta { usage, .. }) = end
        .iter()
        .find(|e| matches!(e, StreamEvent::MessageDelta { .. }))
    else {
        panic!("message_delta expected: {end:?}");
    };
    assert_eq!(usage.output_tokens, 2);
}

#[test]
fn finish_closes_a_stream_without_usage_or_chunks() {
    let mut tr = EventTranslator::new("m", "msg_1".into()).with_input_tokens(42);
    let mut events = tr.on_chunk(&chunk(text("partial"), Some(FinishReason::Length)));
    events.extend(tr.finish());
    let msg = assemble(&events);
    assert_eq!(msg.text(), "partial");
    assert_eq!(msg.stop_reason, Some(StopReason::MaxTokens));
    assert_eq!(msg.usage.input_tokens, 42);

    let events = EventTranslator::new("m", "msg_2".into()).finish();
    let msg = assemble(&events);
    assert!(msg.content.is_empty());
    assert_eq!(msg.stop_reason, Some(StopReason::EndTurn));
}

#[test]
fn one_chunk_with_everything_opens_blocks_in_order() {
    let mut delta = tool_delta(0, Some("call_1"), Some("f"), "{}");
    delta.role = Some(Role::Assistant);
    delta.reasoning_content = Some("think".into());
    delta.content = Some("say".into());
    let mut c = chunk(delta, Some(FinishReason::ToolCalls));
    c.usage = Some(Usage::new(5, 6));
    let events = run(&[c]);
    let msg = assemble(&events);
    let kinds: Vec<&str> = msg.content.iter().map(ContentBlock::kind).collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use"]);
    assert_eq!(msg.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(msg.usage.output_tokens, 6);
}

#[test]
fn interleaved_tool_fragments_still_reach_their_block() {
    let chunks = [
        chunk(tool_delta(0, Some("call_a"), Some("a"), "{\"x\""), None),
        chunk(tool_delta(1, Some("call_b"), Some("b"), "{}"), None),
        chunk(tool_delta(0, None, None, ": 1}"), None),
    ];
    let events = run(&chunks);
    let late = events.iter().rev().find_map(|e| match e {
        StreamEvent::ContentBlockDelta { index, .. } => Some(*index),
        _ => None,
    });
    assert_eq!(late, Some(0));
    // Reassembled through the provider side, the arguments are whole again.
    let back = through_chunk_translator(&events);
    assert_eq!(back.tool_calls[&0].2, "{\"x\": 1}");
    assert_eq!(back.tool_calls[&1].2, "{}");
}

#[test]
fn error_event_carries_the_anthropic_type() {
    let err = Error::from_upstream("openai", 529, Some("busy".into()), b"", None);
    let v = serde_json::to_value(error_event(&err)).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
    let v = serde_json::to_value(error_event(&Error::invalid_request("bad"))).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

/// Anthropic events → canonical chunks, assembled.
fn through_chunk_translator(events: &[StreamEvent]) -> crate::messages::testutil::Assembled {
    let mut tr = ChunkTranslator::new("m");
    let mut chunks: Vec<ChatChunk> = events
        .iter()
        .flat_map(|e| tr.on_event(e.clone()).unwrap())
        .collect();
    chunks.extend(tr.finish());
    assemble_chunks(&chunks)
}

/// The round trip the gateway relies on: Anthropic's stream → canonical chunks (provider
/// side) → Anthropic events (ingress side) assembles to the same message.
#[test]
fn anthropic_stream_survives_both_translators() {
    for name in [
        "stream_text.sse",
        "stream_tool_use.sse",
        "stream_thinking.sse",
    ] {
        let original = anthropic_events(name);
        let mut provider = ChunkTranslator::new("m");
        let mut chunks: Vec<ChatChunk> = original
            .iter()
            .flat_map(|e| provider.on_event(e.clone()).unwrap())
            .collect();
        chunks.extend(provider.finish());
        let back = run(&chunks);
        let (want, got) = (assemble(&original), assemble(&back));
        assert_eq!(got.content, want.content, "{name}");
        assert_eq!(got.stop_reason, want.stop_reason, "{name}");
        assert_eq!(got.usage.input_tokens, want.usage.input_tokens, "{name}");
        assert_eq!(got.usage.output_tokens, want.usage.output_tokens, "{name}");
        assert_eq!(
            got.usage.cache_read_input_tokens, want.usage.cache_read_input_tokens,
            "{name}"
        );
        assert_eq!(
            got.usage.cache_creation_input_tokens.unwrap_or(0),
            want.usage.cache_creation_input_tokens.unwrap_or(0),
            "{name}"
        );
    }
}

#[derive(Debug, Clone)]
enum Segment {
    Reasoning(String),
    Text(String),
    Tool { name: String, args: String },
}

/// `s` cut at these (arbitrary) char positions.
fn split(s: &str, cuts: &[prop::sample::Index]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(chars.len() + 1)).collect();
    at.push(0);
    at.push(chars.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| chars[w[0]..w[1]].iter().collect())
        .collect()
}

fn segment() -> impl Strategy<Value = Segment> {
    prop_oneof![
        "\\PC{1,12}".prop_map(Segment::Reasoning),
        "\\PC{1,12}".prop_map(Segment::Text),
        (
            "[a-z_]{1,8}",
            prop::collection::btree_map("[a-z]{1,5}", "\\PC{0,6}", 0..3)
        )
            .prop_map(|(name, args)| Segment::Tool {
                name,
                args: serde_json::to_string(&args).unwrap_or_default(),
            }),
    ]
}

proptest! {
    /// Any canonical stream, however fragmented, comes out in Anthropic's order (checked by
    /// `assemble`), with one block per run of reasoning or text and one per tool call, and
    /// goes back through the provider side to the same content.
    #[test]
    fn any_chunk_stream_translates_in_order_and_back(
        segments in prop::collection::vec((segment(), prop::collection::vec(any::<prop::sample::Index>(), 0..4)), 0..6),
        finish in prop_oneof![Just(FinishReason::Stop), Just(FinishReason::Length), Just(FinishReason::ToolCalls)],
        finish_with_last in any::<bool>(),
        usage_with_finish in any::<bool>(),
    ) {
        let mut chunks = vec![chunk(Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None)];
        let mut expected: Vec<(String, String)> = Vec::new(); // (kind, text or args)
        let mut tool_index = 0;
        for (seg, cuts) in &segments {
            match seg {
                Segment::Reasoning(s) | Segment::Text(s) => {
                    let kind = if matches!(seg, Segment::Reasoning(_)) { "thinking" } else { "text" };
                    match expected.last_mut() {
                        Some((k, acc)) if k == kind => acc.push_str(s),
                        _ => expected.push((kind.to_owned(), s.clone())),
                    }
                    for piece in split(s, cuts) {
                        let d = if kind == "thinking" {
                            Delta { reasoning_content: Some(piece), ..Delta::default() }
                        } else {
                            text(&piece)
                        };
                        chunks.push(chunk(d, None));
                    }
                }
                Segment::Tool { name, args } => {
                    expected.push((format!("tool:{name}"), args.clone()));
                    let id = format!("call_{tool_index}");
                    chunks.push(chunk(tool_delta(tool_index, Some(&id), Some(name), ""), None));
                    for piece in split(args, cuts) {
                        chunks.push(chunk(tool_delta(tool_index, None, None, &piece), None));
                    }
                    tool_index += 1;
                }
            }
        }
        if finish_with_last && chunks.len() > 1 {
            if let Some(last) = chunks.last_mut() { last.choices[0].finish_reason = Some(finish.clone()); }
        } else {
            chunks.push(chunk(Delta::default(), Some(finish.clone())));
        }
        if usage_with_finish {
            if let Some(last) = chunks.last_mut() { last.usage = Some(Usage::new(11, 22)); }
        } else {
            chunks.push(usage_chunk(11, 22));
        }

        let events = run(&chunks);
        let msg = assemble(&events);
        let got: Vec<(String, String)> = msg.content.iter().map(|b| match b {
            ContentBlock::Thinking(t) => ("thinking".to_owned(), t.thinking.clone()),
            ContentBlock::Text(t) => ("text".to_owned(), t.text.clone()),
            ContentBlock::ToolUse(t) => (format!("tool:{}", t.name), serde_json::to_string(&t.input).unwrap_or_default()),
            other => panic!("unexpected block {other:?}"),
        }).collect();
        prop_assert_eq!(got, expected);
        let want_stop = match finish {
            FinishReason::Length => StopReason::MaxTokens,
            _ if tool_index > 0 => StopReason::ToolUse,
            FinishReason::ToolCalls => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        };
        prop_assert_eq!(msg.stop_reason, Some(want_stop));
        prop_assert_eq!((msg.usage.input_tokens, msg.usage.output_tokens), (11, 22));

        // And back to canonical: the same content as the chunks we started from.
        let mut want = assemble_chunks(&chunks);
        let mut back = through_chunk_translator(&events);
        // The provider side names the finish by Anthropic's stop reason, a coarser set.
        want.finish_reason = None;
        back.finish_reason = None;
        prop_assert_eq!(back.usage.as_ref().map(|u| (u.prompt_tokens, u.completion_tokens)), Some((11, 22)));
        want.usage = None;
        back.usage = None;
        prop_assert_eq!(back, want);
    }
}
