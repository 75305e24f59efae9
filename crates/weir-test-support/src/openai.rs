//! Realistic OpenAI Chat Completions wire data: bodies, stream transcripts, errors, headers.
//!
//! Streams follow what api.openai.com sends with `stream_options.include_usage`: a role chunk,
//! content (or tool-call) deltas, a chunk with `finish_reason`, a usage chunk with empty
//! `choices`, then `data: [DONE]`.

use serde_json::{Value, json};

use crate::sse;

/// The id every canned OpenAI response and chunk carries.
pub const ID: &str = "chatcmpl-fake123";
/// `created` of every canned response.
pub const CREATED: u64 = 1_700_000_000;
/// Usage of canned responses: prompt, completion.
pub const USAGE: (u64, u64) = (11, 7);

pub fn usage() -> Value {
    json!({"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1, "total_tokens": USAGE.0 + USAGE.1})
}

/// A complete chat completion answering `text`.
pub fn chat_completion(model: &str, text: &str) -> Value {
    json!({
        "id": ID, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": usage(),
        "system_fingerprint": "fp_fake",
    })
}

/// A complete chat completion that calls one tool.
pub fn chat_completion_tool_call(model: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "id": ID, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": name, "arguments": arguments}}]},
            "finish_reason": "tool_calls"}],
        "usage": usage(),
    })
}

/// One streamed chunk with this delta.
pub fn chunk(model: &str, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    })
}

/// The final usage chunk.
pub fn usage_chunk(model: &str) -> Value {
    json!({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
           "choices": [], "usage": usage()})
}

/// A text answer streamed in these pieces, with usage and `[DONE]`.
pub fn text_stream(model: &str, pieces: &[&str]) -> String {
    let mut s = sse::data(&chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for p in pieces {
        s.push_str(&sse::data(&chunk(model, json!({"content": p}), None)));
    }
    s.push_str(&sse::data(&chunk(model, json!({}), Some("stop"))));
    s.push_str(&sse::data(&usage_chunk(model)));
    s.push_str("data: [DONE]\n\n");
    s
}

/// A reasoning model's stream (DeepSeek's `reasoning_content`), then the answer.
pub fn reasoning_stream(model: &str, thinking: &[&str], answer: &[&str]) -> String {
    let mut s = sse::data(&chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for t in thinking {
        s.push_str(&sse::data(&chunk(
            model,
            json!({"reasoning_content": t}),
            None,
        )));
    }
    for p in answer {
        s.push_str(&sse::data(&chunk(model, json!({"content": p}), None)));
    }
    s.push_str(&sse::data(&chunk(model, json!({}), Some("stop"))));
    s.push_str(&sse::data(&usage_chunk(model)));
    s.push_str("data: [DONE]\n\n");
    s
}

/// One tool call streamed as OpenAI does: id and name first, then argument fragments.
pub fn tool_call_stream(
    model: &str,
    call_id: &str,
    name: &str,
    argument_pieces: &[&str],
) -> String {
    let mut s = sse::data(&chunk(
        model,
        json!({"role": "assistant", "content": null}),
        None,
    ));
    s.push_str(&sse::data(&chunk(
        model,
        json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                               "function": {"name": name, "arguments": ""}}]}),
        None,
    )));
    for p in argument_pieces {
        s.push_str(&sse::data(&chunk(
            model,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
            None,
        )));
    }
    s.push_str(&sse::data(&chunk(model, json!({}), Some("tool_calls"))));
    s.push_str(&sse::data(&usage_chunk(model)));
    s.push_str("data: [DONE]\n\n");
    s
}

/// An error body: `{"error":{"message","type","param","code"}}`.
pub fn error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A typical set of rate-limit headers.
pub fn rate_limit_headers() -> Vec<(String, String)> {
    [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-tokens", "1999980"),
        ("x-ratelimit-reset-tokens", "1m0s"),
        ("x-request-id", "req_fake_openai"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `GET /models`.
pub fn models(ids: &[&str]) -> Value {
    json!({"object": "list", "data": ids.iter()
        .map(|id| json!({"id": id, "object": "model", "created": CREATED, "owned_by": "openai"}))
        .collect::<Vec<_>>()})
}

/// `POST /embeddings` with `n` vectors of `dims` floats.
pub fn embeddings(model: &str, n: usize, dims: usize) -> Value {
    json!({"object": "list", "model": model,
        "data": (0..n).map(|i| json!({"object": "embedding", "index": i,
            "embedding": (0..dims).map(|d| (d as f64) / 10.0).collect::<Vec<_>>()}))
            .collect::<Vec<_>>(),
        "usage": {"prompt_tokens": 4, "total_tokens": 4}})
}
