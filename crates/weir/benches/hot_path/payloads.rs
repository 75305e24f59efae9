//! The payloads the benchmarks run on: shaped like real traffic, built once.

use weir_types::anthropic::MessagesRequest;
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse};

/// A 2 KB chat request (1.9 KB compact): a system prompt, a user turn, an assistant tool call with its
/// result, a follow-up question, one tool with a JSON schema, and the usual options.
pub const CHAT_REQUEST: &str = r#"{
  "model": "gpt-4o",
  "messages": [
    {"role": "system", "content": "You are Weir Assist, the support assistant of an online hardware store. Answer in the customer's language, keep answers under 120 words, and never invent stock levels, prices or delivery dates: call a tool when you need them. If a question is about an order, ask for the order number first. Be friendly but brief; use bullet points for lists of more than two items."},
    {"role": "user", "content": "Hi! I ordered a cordless drill last week (order 58213) and it still says 'processing'. Can you tell me when it will ship, and whether the 2 Ah battery it comes with is compatible with the 5 Ah battery pack I already own from the same brand?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9fK2mQ7vX1", "type": "function", "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"58213\",\"include_items\":true}"}}]},
    {"role": "tool", "tool_call_id": "call_9fK2mQ7vX1", "content": "{\"order_id\":\"58213\",\"status\":\"processing\",\"ships_by\":\"2026-11-14\",\"items\":[{\"sku\":\"DRL-18V-2AH\",\"name\":\"18 V cordless drill, 2 Ah battery\",\"qty\":1}]}"},
    {"role": "assistant", "content": "Your order 58213 is being prepared and is due to ship by 14 November. The drill uses the brand's 18 V platform."},
    {"role": "user", "content": "Great, thanks. And the battery question? Will the 5 Ah pack fit and charge on the included charger?"}
  ],
  "tools": [
    {"type": "function", "function": {"name": "lookup_order", "description": "Look up an order by its number: status, expected ship date and items.", "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "The order number"}, "include_items": {"type": "boolean"}}, "required": ["order_id"], "additionalProperties": false}, "strict": true}}
  ],
  "tool_choice": "auto",
  "temperature": 0,
  "max_tokens": 512,
  "stream": true,
  "stream_options": {"include_usage": true},
  "user": "customer-4471"
}"#;

/// The text of a ~1 KB assistant answer.
pub const ANSWER: &str = "Good news: yes, the 5 Ah pack will work. Both batteries belong to the same 18 V platform, so the pack slides onto the drill and the included charger accepts it. A few things to know:\n\n- Charging takes longer: roughly 90 minutes for the 5 Ah pack instead of about 40 for the 2 Ah one.\n- The drill gets a little heavier and more top-heavy with the bigger pack, which some people notice during long overhead work.\n- Runtime roughly doubles, which makes a real difference for tasks like driving long screws into hardwood or drilling many holes in masonry.\n\nIf you also plan to use the 5 Ah pack on other tools of the range, keep both batteries charged and rotate them, because lithium packs age more slowly when they are not stored completely empty. Your order 58213 is still on track to ship by 14 November; you will get an email with the tracking number as soon as it leaves our warehouse. Is there anything else I can help you with today, for example an extra bit set?";

/// A complete chat response carrying [`ANSWER`].
pub fn chat_response_json() -> String {
    serde_json::json!({
        "id": "chatcmpl-BX3kq9Lz7Yp2WmN8rT4sV6uA1cD",
        "object": "chat.completion",
        "created": 1_762_950_000u64,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 412, "completion_tokens": 221, "total_tokens": 633,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_d28bcae782"
    })
    .to_string()
}

/// An OpenAI streaming transcript of 30 chunks (role, 27 content pieces, finish, usage) and
/// `[DONE]`, as OpenAI formats them (~9 KB).
pub fn openai_sse() -> String {
    const HEAD: &str = r#"{"id":"chatcmpl-BX3kq9Lz7Yp2WmN8rT4sV6uA1cD","object":"chat.completion.chunk","created":1762950000,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_d28bcae782","choices":"#;
    let mut out = String::new();
    let mut event = |choices: &str, usage: &str| {
        out.push_str("data: ");
        out.push_str(HEAD);
        out.push_str(choices);
        out.push_str(",\"usage\":");
        out.push_str(usage);
        out.push_str("}\n\n");
    };
    event(
        r#"[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]"#,
        "null",
    );
    let words: Vec<&str> = ANSWER.split_inclusive(' ').take(27).collect();
    for word in words {
        let content = serde_json::to_string(word).unwrap_or_default();
        event(
            &format!(
                r#"[{{"index":0,"delta":{{"content":{content}}},"logprobs":null,"finish_reason":null}}]"#
            ),
            "null",
        );
    }
    event(
        r#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#,
        "null",
    );
    event(
        "[]",
        r#"{"prompt_tokens":412,"completion_tokens":27,"total_tokens":439,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
    );
    out.push_str("data: [DONE]\n\n");
    out
}

/// Anthropic's streamed answer with text and two tool_use blocks, pings included (~3.3 KB).
pub const ANTHROPIC_SSE: &str = include_str!("../../tests/fixtures/anthropic/stream_tool_use.sse");

/// Anthropic's complete answer with text and a tool_use block.
pub const ANTHROPIC_RESPONSE: &str =
    include_str!("../../tests/fixtures/anthropic/response_tool_use.json");

/// A Messages API request with system, tools, images, tool use and thinking (~3.2 KB).
const ANTHROPIC_REQUEST: &str = include_str!("../../tests/fixtures/anthropic/request_full.json");

/// [`ANTHROPIC_REQUEST`] without its web-search server tool, which only an Anthropic upstream
/// can run (translating it to a canonical request is refused by design).
pub fn messages_request() -> MessagesRequest {
    let mut value: serde_json::Value =
        serde_json::from_str(ANTHROPIC_REQUEST).expect("the fixture parses");
    if let Some(tools) = value.get_mut("tools").and_then(|t| t.as_array_mut()) {
        tools.retain(|tool| tool.get("type").is_none());
    }
    serde_json::from_value(value).expect("a Messages request")
}

/// ~1 KB of English prose for the tokenizer.
pub fn text_1kb() -> String {
    ANSWER.chars().cycle().take(1024).collect()
}

/// Split `bytes` into reads the size a network delivers: from a small TCP segment to a full
/// MSS, cycling so that lines and events straddle reads the way they do in real traffic.
pub fn network_reads(bytes: &[u8]) -> Vec<&[u8]> {
    const SIZES: [usize; 6] = [1460, 117, 536, 64, 1024, 301];
    let mut out = Vec::new();
    let mut rest = bytes;
    for size in SIZES.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at((*size).min(rest.len()));
        out.push(read);
        rest = tail;
    }
    out
}

/// A long conversation, about 40 KB: eight turns of prose and a 20 KB `data:` image, the shape
/// of a real agent's or RAG request. Deterministic, so runs compare.
pub fn long_chat_request_json() -> String {
    const WORDS: [&str; 12] = [
        "the",
        "gateway",
        "routes",
        "tokens",
        "across",
        "providers",
        "while",
        "budgets",
        "hold",
        "under",
        "load",
        "again",
    ];
    let mut n = 0usize;
    let mut prose = |words: usize| {
        let mut out = String::new();
        for _ in 0..words {
            n = (n * 7 + 3) % WORDS.len();
            out.push_str(WORDS[n]);
            out.push(' ');
        }
        out.push_str("\"quoted\"\nnext line");
        out
    };
    let mut messages = vec![serde_json::json!({"role": "system", "content": prose(300)})];
    for _ in 0..4 {
        messages.push(serde_json::json!({"role": "user", "content": prose(400)}));
        messages.push(serde_json::json!({"role": "assistant", "content": prose(300)}));
    }
    messages.push(serde_json::json!({"role": "user", "content": [
        {"type": "text", "text": prose(200)},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(20_000))}},
    ]}));
    serde_json::json!({"model": "gpt-4o", "messages": messages, "temperature": 0.7}).to_string()
}

pub fn chat_request() -> ChatRequest {
    serde_json::from_str(CHAT_REQUEST).expect("the request payload parses")
}

pub fn chat_response() -> ChatResponse {
    serde_json::from_str(&chat_response_json()).expect("the response payload parses")
}

/// The chunks of [`openai_sse`], parsed.
pub fn openai_chunks() -> Vec<ChatChunk> {
    openai_sse()
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).expect("a chunk parses"))
        .collect()
}
