//! Realistic Anthropic Messages wire data: bodies, named-event streams, errors, headers.
//!
//! Streams follow what api.anthropic.com sends: `message_start` (with input usage),
//! `content_block_start`, a `ping`, deltas, `content_block_stop`, `message_delta` (stop reason
//! and output usage), `message_stop`.

use serde_json::{Value, json};

use crate::sse;

/// The id every canned Anthropic message carries.
pub const ID: &str = "msg_fake123";
/// Usage of canned messages: input, output.
pub const USAGE: (u64, u64) = (12, 6);

/// A complete message answering `text`.
pub fn message(model: &str, text: &str) -> Value {
    message_with(
        model,
        vec![json!({"type": "text", "text": text})],
        "end_turn",
    )
}

/// A complete message that calls one tool.
pub fn tool_use_message(model: &str, tool_id: &str, name: &str, input: Value) -> Value {
    message_with(
        model,
        vec![
            json!({"type": "text", "text": "Let me check."}),
            json!({"type": "tool_use", "id": tool_id, "name": name, "input": input}),
        ],
        "tool_use",
    )
}

/// A complete message with a thinking block before the answer.
pub fn thinking_message(model: &str, thinking: &str, text: &str) -> Value {
    message_with(
        model,
        vec![
            json!({"type": "thinking", "thinking": thinking, "signature": "sig_fake"}),
            json!({"type": "text", "text": text}),
        ],
        "end_turn",
    )
}

/// A complete message with these content blocks and stop reason.
pub fn message_with(model: &str, content: Vec<Value>, stop_reason: &str) -> Value {
    json!({
        "id": ID, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    })
}

fn start(model: &str) -> String {
    let mut s = sse::named(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": ID, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": USAGE.0, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    s.push_str(&sse::named("ping", &json!({"type": "ping"})));
    s
}

fn end(stop_reason: &str) -> String {
    let mut s = sse::named(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": USAGE.1}}),
    );
    s.push_str(&sse::named(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    s
}

fn block_start(index: u32, block: Value) -> String {
    sse::named(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    )
}

fn delta(index: u32, delta: Value) -> String {
    sse::named(
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index, "delta": delta}),
    )
}

fn block_stop(index: u32) -> String {
    sse::named(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    )
}

fn text_block(index: u32, pieces: &[&str]) -> String {
    let mut s = block_start(index, json!({"type": "text", "text": ""}));
    for p in pieces {
        s.push_str(&delta(index, json!({"type": "text_delta", "text": p})));
    }
    s.push_str(&block_stop(index));
    s
}

/// A text answer streamed in these pieces.
pub fn text_stream(model: &str, pieces: &[&str]) -> String {
    let mut s = start(model);
    s.push_str(&text_block(0, pieces));
    s.push_str(&end("end_turn"));
    s
}

/// A tool call streamed as Anthropic does: a `tool_use` block, then `input_json_delta` pieces.
pub fn tool_use_stream(model: &str, tool_id: &str, name: &str, json_pieces: &[&str]) -> String {
    let mut s = start(model);
    s.push_str(&block_start(
        0,
        json!({"type": "tool_use", "id": tool_id, "name": name, "input": {}}),
    ));
    for p in json_pieces {
        s.push_str(&delta(
            0,
            json!({"type": "input_json_delta", "partial_json": p}),
        ));
    }
    s.push_str(&block_stop(0));
    s.push_str(&end("tool_use"));
    s
}

/// Extended thinking (with its signature), then the answer.
pub fn thinking_stream(model: &str, thinking: &[&str], answer: &[&str]) -> String {
    let mut s = start(model);
    s.push_str(&block_start(
        0,
        json!({"type": "thinking", "thinking": "", "signature": ""}),
    ));
    for t in thinking {
        s.push_str(&delta(0, json!({"type": "thinking_delta", "thinking": t})));
    }
    s.push_str(&delta(
        0,
        json!({"type": "signature_delta", "signature": "sig_fake"}),
    ));
    s.push_str(&block_stop(0));
    s.push_str(&text_block(1, answer));
    s.push_str(&end("end_turn"));
    s
}

/// An error body: `{"type":"error","error":{"type","message"}}`.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"})
}

/// A mid-stream `error` event.
pub fn error_event(kind: &str, message: &str) -> String {
    sse::named(
        "error",
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// A typical set of rate-limit headers (resets one minute after 2030-01-01, far ahead).
pub fn rate_limit_headers() -> Vec<(String, String)> {
    [
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "49"),
        ("anthropic-ratelimit-requests-reset", "2030-01-01T00:01:00Z"),
        ("anthropic-ratelimit-tokens-limit", "100000"),
        ("anthropic-ratelimit-tokens-remaining", "99000"),
        ("anthropic-ratelimit-tokens-reset", "2030-01-01T00:01:00Z"),
        ("anthropic-ratelimit-input-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-remaining", "79000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2030-01-01T00:01:00Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "20000"),
        ("anthropic-ratelimit-output-tokens-remaining", "20000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2030-01-01T00:01:00Z",
        ),
        ("request-id", "req_fake_anthropic"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `GET /models`.
pub fn models(ids: &[&str]) -> Value {
    json!({
        "data": ids.iter().map(|id| json!({"type": "model", "id": id, "display_name": id,
                                            "created_at": "2025-02-19T00:00:00Z"}))
            .collect::<Vec<_>>(),
        "has_more": false,
        "first_id": ids.first(),
        "last_id": ids.last(),
    })
}
