//! Pre-serialised responses: every byte the fake upstream sends is built once at start-up.
//!
//! OpenAI chat completions (JSON, SSE with and without the final usage chunk) and Anthropic
//! Messages (JSON, SSE in Anthropic's event order: `message_start`, `content_block_start`,
//! `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`, `message_stop`).
//! Streams are kept as frames: the first goes out at time-to-first-token, then one per interval.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::{STAMP_DIGITS, STAMP_MARK, find};

const OPENAI_MODEL: &str = "gpt-4o-mini-2024-07-18";
const ANTHROPIC_MODEL: &str = "claude-sonnet-4-5-20250929";
const WORDS: [&str; 8] = [
    " The", " quick", " brown", " fox", " jumps", " over", " the", " dog",
];

/// One stream frame and where its timestamps go.
#[derive(Clone, Debug)]
pub struct StreamFrame {
    pub bytes: Bytes,
    /// Offsets of the stamp digits to fill in with the send time (paced mode only).
    pub stamps: Vec<usize>,
}

/// Every response body, ready to send.
#[derive(Debug)]
pub struct Bodies {
    pub openai_json: Bytes,
    pub openai_sse: Vec<StreamFrame>,
    pub openai_sse_usage: Vec<StreamFrame>,
    pub anthropic_json: Bytes,
    pub anthropic_sse: Vec<StreamFrame>,
    /// The same streams as one buffer each (instant mode: one write).
    pub openai_sse_all: Bytes,
    pub openai_sse_usage_all: Bytes,
    pub anthropic_sse_all: Bytes,
}

/// Shape of the answers.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub chunks: usize,
    pub prompt_tokens: u64,
    /// Put a stamp in every content chunk (paced mode).
    pub stamped: bool,
}

impl Shape {
    fn token(&self, i: usize) -> String {
        let word = WORDS[i % WORDS.len()];
        if self.stamped {
            let mark = String::from_utf8_lossy(STAMP_MARK);
            format!("{word}{mark}{}", "0".repeat(STAMP_DIGITS))
        } else {
            word.to_string()
        }
    }

    fn text(&self) -> String {
        (0..self.chunks).map(|i| WORDS[i % WORDS.len()]).collect()
    }

    fn completion_tokens(&self) -> u64 {
        self.chunks as u64
    }
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn event(name: &str, v: &Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

fn frame(text: String) -> StreamFrame {
    let mut stamps = Vec::new();
    let bytes = text.into_bytes();
    let mut from = 0;
    while let Some(at) = find(&bytes[from..], STAMP_MARK) {
        let start = from + at + STAMP_MARK.len();
        if bytes.len() >= start + STAMP_DIGITS
            && bytes[start..start + STAMP_DIGITS]
                .iter()
                .all(u8::is_ascii_digit)
        {
            stamps.push(start);
        }
        from = start;
    }
    StreamFrame {
        bytes: Bytes::from(bytes),
        stamps,
    }
}

fn concat(frames: &[StreamFrame]) -> Bytes {
    let mut all = Vec::new();
    for f in frames {
        all.extend_from_slice(&f.bytes);
    }
    Bytes::from(all)
}

fn openai_usage(s: &Shape) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens(),
        "total_tokens": s.prompt_tokens + s.completion_tokens(),
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn openai_json(s: &Shape) -> Bytes {
    let v = json!({
        "id": "chatcmpl-bench0000000000000000000001",
        "object": "chat.completion",
        "created": 1_767_225_600,
        "model": OPENAI_MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": s.text(), "refusal": null,
                "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": openai_usage(s),
        "service_tier": "default",
        "system_fingerprint": "fp_bench"
    });
    Bytes::from(v.to_string())
}

fn openai_chunk(choices: Value, usage: Option<Value>) -> Value {
    let mut v = json!({
        "id": "chatcmpl-bench0000000000000000000001",
        "object": "chat.completion.chunk",
        "created": 1_767_225_600,
        "model": OPENAI_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
        "choices": choices,
    });
    if let (Some(u), Some(map)) = (usage, v.as_object_mut()) {
        map.insert("usage".into(), u);
    }
    v
}

fn openai_sse(s: &Shape, with_usage: bool) -> Vec<StreamFrame> {
    let null_usage = with_usage.then_some(Value::Null);
    let delta = |d: Value, finish: Value| json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]);
    let mut frames = Vec::with_capacity(s.chunks + 1);
    for i in 0..s.chunks {
        let mut text = String::new();
        if i == 0 {
            let role = json!({"role": "assistant", "content": "", "refusal": null});
            text += &data(&openai_chunk(delta(role, Value::Null), null_usage.clone()));
        }
        let d = json!({"content": s.token(i)});
        text += &data(&openai_chunk(delta(d, Value::Null), null_usage.clone()));
        frames.push(frame(text));
    }
    let mut last = data(&openai_chunk(delta(json!({}), json!("stop")), null_usage));
    if with_usage {
        last += &data(&openai_chunk(json!([]), Some(openai_usage(s))));
    }
    last += "data: [DONE]\n\n";
    frames.push(frame(last));
    frames
}

fn anthropic_usage(s: &Shape, output: u64) -> Value {
    json!({"input_tokens": s.prompt_tokens, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0, "output_tokens": output, "service_tier": "standard"})
}

fn anthropic_json(s: &Shape) -> Bytes {
    let v = json!({
        "id": "msg_bench00000000000000000001",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [{"type": "text", "text": s.text()}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": anthropic_usage(s, s.completion_tokens())
    });
    Bytes::from(v.to_string())
}

fn anthropic_sse(s: &Shape) -> Vec<StreamFrame> {
    let mut frames = Vec::with_capacity(s.chunks + 1);
    for i in 0..s.chunks {
        let mut text = String::new();
        if i == 0 {
            let start = json!({"type": "message_start", "message": {
                "id": "msg_bench00000000000000000001", "type": "message", "role": "assistant",
                "model": ANTHROPIC_MODEL, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": anthropic_usage(s, 1)}});
            text += &event("message_start", &start);
            let block = json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}});
            text += &event("content_block_start", &block);
            text += &event("ping", &json!({"type": "ping"}));
        }
        let d = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": s.token(i)}});
        text += &event("content_block_delta", &d);
        frames.push(frame(text));
    }
    let mut last = event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    let delta = json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": s.completion_tokens()}});
    last += &event("message_delta", &delta);
    last += &event("message_stop", &json!({"type": "message_stop"}));
    frames.push(frame(last));
    frames
}

/// Which stream an answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    OpenAi,
    OpenAiUsage,
    Anthropic,
}

impl Bodies {
    /// A stream's frames.
    pub fn frames(&self, kind: StreamKind) -> &[StreamFrame] {
        match kind {
            StreamKind::OpenAi => &self.openai_sse,
            StreamKind::OpenAiUsage => &self.openai_sse_usage,
            StreamKind::Anthropic => &self.anthropic_sse,
        }
    }

    /// A whole stream in one buffer.
    pub fn all(&self, kind: StreamKind) -> &Bytes {
        match kind {
            StreamKind::OpenAi => &self.openai_sse_all,
            StreamKind::OpenAiUsage => &self.openai_sse_usage_all,
            StreamKind::Anthropic => &self.anthropic_sse_all,
        }
    }

    pub fn new(shape: Shape) -> Self {
        let plain = openai_sse(&shape, false);
        let usage = openai_sse(&shape, true);
        let anthropic = anthropic_sse(&shape);
        Self {
            openai_json: openai_json(&shape),
            openai_sse_all: concat(&plain),
            openai_sse_usage_all: concat(&usage),
            anthropic_sse_all: concat(&anthropic),
            openai_sse: plain,
            openai_sse_usage: usage,
            anthropic_json: anthropic_json(&shape),
            anthropic_sse: anthropic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_stamps_are_found() {
        let b = Bodies::new(Shape {
            chunks: 3,
            prompt_tokens: 24,
            stamped: true,
        });
        let j: Value = serde_json::from_slice(&b.openai_json).unwrap_or_default();
        assert_eq!(j["usage"]["completion_tokens"], 3);
        assert_eq!(b.openai_sse.len(), 4);
        assert_eq!(b.openai_sse[1].stamps.len(), 1);
        let all = String::from_utf8_lossy(&b.openai_sse_usage_all).to_string();
        assert!(all.contains("\"choices\":[]") && all.ends_with("data: [DONE]\n\n"));
        let a = String::from_utf8_lossy(&b.anthropic_sse_all).to_string();
        let order: Vec<&str> = a
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(order[..3], ["message_start", "content_block_start", "ping"]);
        assert_eq!(
            order[order.len() - 3..],
            ["content_block_stop", "message_delta", "message_stop"]
        );
    }
}
