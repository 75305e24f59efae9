#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{Value, json};
use weir_types::anthropic::StreamEvent;
use weir_types::chat::{ChatChunk, FinishReason, Role};

use super::*;
use crate::error::ErrorKind;
use crate::messages::testutil::{anthropic_events, assemble_chunks};

fn translate(events: Vec<StreamEvent>) -> Vec<ChatChunk> {
    let mut tr = ChunkTranslator::new("hint");
    let mut chunks = Vec::new();
    for ev in events {
        chunks.extend(tr.on_event(ev).unwrap());
    }
    assert!(tr.is_complete());
    chunks.extend(tr.finish());
    chunks
}

fn event(v: Value) -> StreamEvent {
    serde_json::from_value(v).unwrap()
}

#[test]
fn text_stream_becomes_openai_chunks() {
    let chunks = translate(anthropic_events("stream_text.sse"));
    let deltas: Vec<Value> = chunks
        .iter()
        .map(|c| {
            assert_eq!(c.id, "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
            assert_eq!(c.model, "claude-sonnet-4-5-20250929");
            assert_eq!(c.object, "chat.completion.chunk");
            let mut v = serde_json::to_value(c).unwrap();
            let v = v.as_object_mut().unwrap();
            json!({"choices": v.remove("choices"), "usage": v.remove("usage")})
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}], "usage": null}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}], "usage": null}),
            json!({"choices": [{"index": 0, "delta": {"content": "! How can I"}, "finish_reason": null}], "usage": null}),
            json!({"choices": [{"index": 0, "delta": {"content": " help you today?"}, "finish_reason": null}], "usage": null}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null}),
            json!({"choices": [], "usage": {
                "prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0}
            }}),
        ]
    );
}

#[test]
fn tool_use_blocks_get_running_tool_call_indexes() {
    let chunks = translate(anthropic_events("stream_tool_use.sse"));
    // The first fragment of each call carries id, type, name and empty arguments.
    let firsts: Vec<&ToolCallDelta> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .filter(|t| t.id.is_some())
        .collect();
    assert_eq!(firsts.len(), 2);
    assert_eq!(firsts[0].index, 0);
    assert_eq!(firsts[0].kind.as_deref(), Some("function"));
    let f = firsts[0].function.as_ref().unwrap();
    assert_eq!(
        (f.name.as_deref(), f.arguments.as_deref()),
        (Some("get_weather"), Some(""))
    );
    assert_eq!(firsts[1].index, 1);

    let got = assemble_chunks(&chunks);
    assert!(got.role_first);
    assert_eq!(
        got.content,
        "Okay, let's check the weather and the time in San Francisco, CA:"
    );
    let (id, name, args) = &got.tool_calls[&0];
    assert_eq!(
        (id.as_str(), name.as_str()),
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    );
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let (id, name, args) = &got.tool_calls[&1];
    assert_eq!(
        (id.as_str(), name.as_str()),
        ("toolu_01VeZ9LMbVpXqhmPFKF2bQwN", "get_time")
    );
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"timezone": "America/Los_Angeles"})
    );
    assert_eq!(got.finish_reason, Some(FinishReason::ToolCalls));
    let usage = got.usage.unwrap();
    assert_eq!(usage.prompt_tokens, 472 + 2048);
    assert_eq!(usage.cached_tokens(), 2048);
    assert_eq!(usage.completion_tokens, 89);
}

#[test]
fn thinking_becomes_reasoning_with_its_signature() {
    let chunks = translate(anthropic_events("stream_thinking.sse"));
    let got = assemble_chunks(&chunks);
    assert!(got.reasoning.starts_with("I need to find the GCD"));
    assert!(got.reasoning.ends_with("So GCD(1071, 462) = 21"));
    assert!(
        got.signature
            .as_deref()
            .unwrap()
            .starts_with("EqQBCgIYAhIM")
    );
    assert_eq!(
        got.content,
        "The greatest common divisor of 1071 and 462 is **21**."
    );
    assert_eq!(got.finish_reason, Some(FinishReason::Stop));
    assert_eq!(got.usage.unwrap().completion_tokens, 118);
}

fn start() -> StreamEvent {
    event(json!({"type": "message_start", "message": {
        "id": "msg_x", "type": "message", "role": "assistant", "content": [], "model": "claude-haiku-4-5",
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}
    }}))
}

#[test]
fn error_events_are_classified_until_content_flows() {
    let overloaded = || {
        event(
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )
    };
    let mut tr = ChunkTranslator::new("m").with_provider("anthropic-eu");
    tr.on_event(start()).unwrap();
    let err = tr.on_event(overloaded()).unwrap_err();
    assert_eq!(err.http_status(), 529);
    assert!(err.is_retryable());
    assert!(err.to_string().contains("anthropic-eu"));

    let mut tr = ChunkTranslator::new("m");
    tr.on_event(start()).unwrap();
    tr.on_event(event(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
        .unwrap();
    tr.on_event(event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})))
        .unwrap();
    let err = tr.on_event(overloaded()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
    assert!(err.to_string().contains("overloaded_error: Overloaded"));

    let mut tr = ChunkTranslator::new("m");
    let err = tr
        .on_event(event(
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    let err = tr
        .on_event(event(
            json!({"type": "error", "error": {"type": "brand_new_error", "message": "?"}}),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StreamInterrupted);
}

#[test]
fn pings_unknown_events_and_server_tool_blocks_are_skipped() {
    let mut tr = ChunkTranslator::new("m");
    assert_eq!(tr.on_event(start()).unwrap().len(), 1);
    assert!(tr.on_event(StreamEvent::Ping).unwrap().is_empty());
    assert!(
        tr.on_event(event(json!({"type": "future_event", "x": 1})))
            .unwrap()
            .is_empty()
    );
    let server = json!({"type": "content_block_start", "index": 0, "content_block":
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}});
    assert!(tr.on_event(event(server)).unwrap().is_empty());
    let server_args = json!({"type": "content_block_delta", "index": 0, "delta":
        {"type": "input_json_delta", "partial_json": "{\"query\": \"rust\"}"}});
    assert!(tr.on_event(event(server_args)).unwrap().is_empty());
    let cite = json!({"type": "content_block_delta", "index": 0, "delta":
        {"type": "citations_delta", "citation": {"type": "char_location"}}});
    assert!(tr.on_event(event(cite)).unwrap().is_empty());
    // A later client tool call is still tool call 0.
    let tool = json!({"type": "content_block_start", "index": 1, "content_block":
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}});
    let chunks = tr.on_event(event(tool)).unwrap();
    assert_eq!(
        chunks[0].choices[0].delta.tool_calls.as_ref().unwrap()[0].index,
        0
    );
}

#[test]
fn malformed_known_events_are_errors() {
    let mut tr = ChunkTranslator::new("m");
    tr.on_event(start()).unwrap();
    for bad in [
        json!({"type": "content_block_delta", "index": 0}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}),
    ] {
        let err = tr.on_event(event(bad.clone())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidResponse, "{bad}");
    }
}

#[test]
fn cut_short_stream_still_reports_usage_once() {
    let mut tr = ChunkTranslator::new("m");
    tr.on_event(start()).unwrap();
    assert!(!tr.is_complete());
    let tail = tr.finish();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].usage.as_ref().unwrap().prompt_tokens, 10);
    assert_eq!(tail[0].usage.as_ref().unwrap().completion_tokens, 1);
    assert!(tr.finish().is_empty());

    // Nothing at all: nothing to report.
    assert!(ChunkTranslator::new("m").finish().is_empty());
}

#[test]
fn message_delta_usage_updates_the_input_side() {
    let mut tr = ChunkTranslator::new("m");
    tr.on_event(start()).unwrap();
    let chunks = tr
        .on_event(event(json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 100, "output_tokens": 64}})))
        .unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks[0].choices[0].finish_reason,
        Some(FinishReason::Length)
    );
    let usage = chunks[1].usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens(),
            usage.completion_tokens
        ),
        (112, 100, 64)
    );
    // message_stop does not repeat the usage.
    assert!(tr.on_event(StreamEvent::MessageStop).unwrap().is_empty());
    assert!(tr.is_complete());
}

#[test]
fn redacted_thinking_and_whole_inputs_are_carried() {
    let mut tr = ChunkTranslator::new("m");
    tr.on_event(start()).unwrap();
    let chunks = tr
        .on_event(event(
            json!({"type": "content_block_start", "index": 0, "content_block":
            {"type": "redacted_thinking", "data": "EmwKAhgB"}}),
        ))
        .unwrap();
    assert_eq!(
        chunks[0].choices[0].delta.extra.get(REDACTED_THINKING),
        Some(&json!("EmwKAhgB"))
    );
    let chunks = tr
        .on_event(event(
            json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"a": [1]}}}),
        ))
        .unwrap();
    let call = &chunks[0].choices[0].delta.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        call.function.as_ref().unwrap().arguments.as_deref(),
        Some(r#"{"a":[1]}"#)
    );
    assert_eq!(chunks[0].choices[0].delta.role, None::<Role>);
}
