//! Serde round trips over realistic payloads: each fixture parses, serialises back, and
//! compares equal as JSON to the original, so no field is lost, renamed or turned into `null`.
//!
//! The Anthropic fixtures live with the translation tests in `crates/weir/tests/fixtures/
//! anthropic/` and compare exactly (Anthropic's own `null`s included); the OpenAI fixtures
//! live in `tests/fixtures/` and compare with `null`s removed on both sides, since the canonical
//! types drop `null` optional fields by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weir_types::anthropic::{
    BlockDelta, ContentBlock, CountTokensRequest, CountTokensResponse, ErrorResponse, InputMessage,
    MessageContent, MessagesRequest, MessagesResponse, StopReason, StreamEvent, SystemPrompt,
    ThinkingConfig, ToolChoice, Usage,
};
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse};

fn anthropic_fixture(name: &str) -> String {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../weir/tests/fixtures/anthropic")
            .join(name),
    )
}

fn openai_fixture(name: &str) -> String {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Parse as `T`, serialise, and return (original, re-serialised) as JSON values.
fn reserialize<T: DeserializeOwned + Serialize>(text: &str) -> (Value, Value) {
    let original: Value = serde_json::from_str(text).unwrap();
    let parsed: T = serde_json::from_str(text).unwrap_or_else(|e| panic!("parse: {e}\n{text}"));
    (original, serde_json::to_value(&parsed).unwrap())
}

fn assert_exact_roundtrip<T: DeserializeOwned + Serialize>(text: &str) {
    let (original, back) = reserialize::<T>(text);
    assert_eq!(back, original, "round trip changed the payload");
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn assert_roundtrip_ignoring_nulls<T: DeserializeOwned + Serialize>(text: &str) {
    let (original, back) = reserialize::<T>(text);
    assert_eq!(
        strip_nulls(back),
        strip_nulls(original),
        "round trip changed the payload"
    );
}

/// The `(event, data)` pairs of an SSE transcript.
fn sse_events(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
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
        .collect()
}

fn assert_anthropic_stream_roundtrip(name: &str) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    for (event, data) in sse_events(&anthropic_fixture(name)) {
        assert_exact_roundtrip::<StreamEvent>(&data);
        let ev: StreamEvent = serde_json::from_str(&data).unwrap();
        assert!(
            !matches!(ev, StreamEvent::Unknown(_)),
            "{name}: known event parsed as unknown: {data}"
        );
        assert_eq!(
            event.as_deref(),
            Some(ev.event_name()),
            "{name}: SSE event name"
        );
        events.push(ev);
    }
    events
}

#[test]
fn anthropic_responses_roundtrip_exactly() {
    for name in [
        "response_text.json",
        "response_tool_use.json",
        "response_thinking.json",
    ] {
        assert_exact_roundtrip::<MessagesResponse>(&anthropic_fixture(name));
    }
    let resp: MessagesResponse =
        serde_json::from_str(&anthropic_fixture("response_tool_use.json")).unwrap();
    assert_eq!(resp.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(resp.usage.cache_read_input_tokens, Some(2048));
    assert!(resp.usage.extra.contains_key("cache_creation"));
    let ContentBlock::ToolUse(call) = &resp.content[1] else {
        panic!("expected tool_use, got {:?}", resp.content[1]);
    };
    assert_eq!(call.input["location"], "San Francisco, CA");
    // The tag is not mistaken for an unknown field.
    assert!(call.extra.is_empty());
}

#[test]
fn anthropic_request_roundtrips_with_unknown_fields() {
    let text = anthropic_fixture("request_full.json");
    assert_exact_roundtrip::<MessagesRequest>(&text);
    let req: MessagesRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(req.max_tokens, Some(16000));
    assert_eq!(req.extra.get("service_tier"), Some(&json!("auto")));
    assert_eq!(req.extra.get("container"), Some(&Value::Null));
    assert_eq!(
        req.thinking,
        Some(ThinkingConfig::Enabled {
            budget_tokens: 10000
        })
    );
    assert_eq!(
        req.tool_choice,
        Some(ToolChoice::Auto {
            disable_parallel_tool_use: Some(false)
        })
    );
    let tools = req.tools.as_ref().unwrap();
    assert!(tools[0].is_client_tool());
    assert!(!tools[1].is_client_tool());
    assert_eq!(tools[1].extra.get("max_uses"), Some(&json!(5)));
    let Some(SystemPrompt::Blocks(system)) = &req.system else {
        panic!("system should be blocks");
    };
    let ContentBlock::Text(second) = &system[1] else {
        panic!("system block should be text");
    };
    assert_eq!(second.cache_control.as_ref().unwrap().kind, "ephemeral");
    let MessageContent::Blocks(blocks) = &req.messages[2].content else {
        panic!("blocks expected");
    };
    let ContentBlock::ToolResult(result) = &blocks[0] else {
        panic!("tool_result expected");
    };
    assert_eq!(
        result.cache_control.as_ref().unwrap().ttl.as_deref(),
        Some("1h")
    );
}

#[test]
fn anthropic_streams_roundtrip_exactly() {
    let events = assert_anthropic_stream_roundtrip("stream_text.sse");
    assert!(matches!(
        events.first(),
        Some(StreamEvent::MessageStart { .. })
    ));
    assert!(matches!(events.last(), Some(StreamEvent::MessageStop)));

    let events = assert_anthropic_stream_roundtrip("stream_tool_use.sse");
    let partials: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockDelta {
                index: 1,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } => Some(partial_json.as_str()),
            _ => None,
        })
        .collect();
    let input: Value = serde_json::from_str(&partials).unwrap();
    assert_eq!(
        input,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );

    let events = assert_anthropic_stream_roundtrip("stream_thinking.sse");
    assert!(events.iter().any(|e| matches!(
        e,
        StreamEvent::ContentBlockDelta {
            delta: BlockDelta::SignatureDelta { .. },
            ..
        }
    )));
}

#[test]
fn anthropic_error_and_count_tokens_roundtrip() {
    assert_exact_roundtrip::<ErrorResponse>(&anthropic_fixture("error_overloaded.json"));
    let err: ErrorResponse =
        serde_json::from_str(&anthropic_fixture("error_overloaded.json")).unwrap();
    assert_eq!(err.error.kind, "overloaded_error");
    assert_exact_roundtrip::<CountTokensRequest>(&anthropic_fixture("count_tokens_request.json"));
    assert_exact_roundtrip::<CountTokensResponse>(&anthropic_fixture("count_tokens_response.json"));
}

#[test]
fn openai_fixtures_roundtrip() {
    assert_roundtrip_ignoring_nulls::<ChatResponse>(&openai_fixture("openai_chat_response.json"));
    assert_roundtrip_ignoring_nulls::<ChatResponse>(&openai_fixture(
        "openai_chat_response_tool_calls.json",
    ));
    let text = openai_fixture("openai_request_tools.json");
    assert_roundtrip_ignoring_nulls::<ChatRequest>(&text);
    let req: ChatRequest = serde_json::from_str(&text).unwrap();
    for unknown in ["logprobs", "presence_penalty", "reasoning_effort", "store"] {
        assert!(req.extra.contains_key(unknown), "{unknown} should be kept");
    }
    let mut chunks = 0;
    for (_, data) in sse_events(&openai_fixture("openai_chunks_tool_calls.sse")) {
        if data == "[DONE]" {
            continue;
        }
        assert_roundtrip_ignoring_nulls::<ChatChunk>(&data);
        chunks += 1;
    }
    assert_eq!(chunks, 8);
}

#[test]
fn none_fields_are_absent_but_anthropic_nulls_are_kept() {
    let req = MessagesRequest::new("claude-haiku-4-5", vec![InputMessage::user("hi")]);
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]})
    );
    // message_start's message carries explicit nulls, as Anthropic sends it.
    let start = StreamEvent::MessageStart {
        message: MessagesResponse::empty("msg_1", "claude-haiku-4-5", Usage::default()),
    };
    assert_eq!(
        serde_json::to_value(&start).unwrap(),
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-haiku-4-5", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}
        }})
    );
    assert_eq!(
        serde_json::to_value(StreamEvent::MessageStop).unwrap(),
        json!({"type": "message_stop"})
    );
}

#[test]
fn unknown_types_are_kept_and_malformed_known_types_are_flagged() {
    // A server tool result block: unknown to weir, kept verbatim.
    let block = r#"{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}"#;
    assert_exact_roundtrip::<ContentBlock>(block);
    let parsed: ContentBlock = serde_json::from_str(block).unwrap();
    assert_eq!(parsed.kind(), "web_search_tool_result");
    assert!(!parsed.is_malformed());
    // A text block without text is malformed, not silently something else.
    let bad: ContentBlock = serde_json::from_str(r#"{"type":"text"}"#).unwrap();
    assert!(bad.is_malformed());

    let event = r#"{"type":"message_annotation","data":{"k":1}}"#;
    assert_exact_roundtrip::<StreamEvent>(event);
    let parsed: StreamEvent = serde_json::from_str(event).unwrap();
    assert!(matches!(parsed, StreamEvent::Unknown(_)));
    assert!(!parsed.is_malformed());
    let bad: StreamEvent = serde_json::from_str(r#"{"type":"content_block_stop"}"#).unwrap();
    assert!(bad.is_malformed());

    let delta: BlockDelta = serde_json::from_str(r#"{"type":"future_delta","x":1}"#).unwrap();
    assert!(!delta.is_malformed());
    let bad: BlockDelta = serde_json::from_str(r#"{"type":"text_delta"}"#).unwrap();
    assert!(bad.is_malformed());

    let reason: StopReason = serde_json::from_str(r#""model_context_window_exceeded""#).unwrap();
    assert_eq!(
        reason,
        StopReason::Other("model_context_window_exceeded".into())
    );
    assert_eq!(
        serde_json::to_string(&reason).unwrap(),
        r#""model_context_window_exceeded""#
    );

    let thinking: ThinkingConfig = serde_json::from_str(r#"{"type":"adaptive"}"#).unwrap();
    assert!(matches!(thinking, ThinkingConfig::Other(_)));
    assert_eq!(
        serde_json::to_value(&thinking).unwrap(),
        json!({"type": "adaptive"})
    );
}

#[test]
fn tool_choice_and_thinking_shapes() {
    assert_eq!(
        serde_json::to_value(ToolChoice::None).unwrap(),
        json!({"type": "none"})
    );
    assert_eq!(
        serde_json::to_value(ToolChoice::Tool {
            name: "f".into(),
            disable_parallel_tool_use: Some(true)
        })
        .unwrap(),
        json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        serde_json::to_value(ThinkingConfig::Disabled).unwrap(),
        json!({"type": "disabled"})
    );
}
