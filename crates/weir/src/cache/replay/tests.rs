#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tokio::time::Instant;
use weir_types::chat::Usage;

use super::*;

fn response(choices: Vec<Choice>) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-42".into(),
        object: "chat.completion".into(),
        created: 1_700_000_000,
        model: "gpt-4o-mini".into(),
        choices,
        usage: Some(Usage::new(12, 34)),
        system_fingerprint: Some("fp_abc".into()),
        service_tier: Some("default".into()),
        extra: Extra::new(),
    }
}

fn message(content: Option<&str>) -> ResponseMessage {
    ResponseMessage {
        role: Role::Assistant,
        content: content.map(str::to_owned),
        tool_calls: None,
        refusal: None,
        reasoning_content: None,
        extra: Extra::new(),
    }
}

fn choice(index: u32, message: ResponseMessage, finish: FinishReason) -> Choice {
    Choice {
        index,
        message,
        finish_reason: Some(finish),
        logprobs: None,
    }
}

fn text_response(text: &str) -> ChatResponse {
    response(vec![choice(0, message(Some(text)), FinishReason::Stop)])
}

fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        kind: "function".into(),
        function: FunctionCall {
            name: name.into(),
            arguments: arguments.into(),
        },
    }
}

/// The content pieces of choice `index`, in stream order.
fn content_pieces(chunks: &[ChatChunk], index: u32) -> Vec<String> {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter(|c| c.index == index)
        .filter_map(|c| c.delta.content.clone())
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn text_streams_like_openai_and_round_trips() {
    let text = "Hello, world! This is   a cached answer,\nover two lines.";
    let resp = text_response(text);
    let chunks = chunks_from_response(&resp, true);

    for c in &chunks {
        assert_eq!(
            (c.id.as_str(), c.created, c.model.as_str()),
            ("chatcmpl-42", 1_700_000_000, "gpt-4o-mini")
        );
        assert_eq!(c.object, "chat.completion.chunk");
        assert_eq!(c.system_fingerprint.as_deref(), Some("fp_abc"));
    }
    let first = &chunks[0].choices[0].delta;
    assert_eq!(first.role, Some(Role::Assistant));
    assert_eq!(first.content.as_deref(), Some(""));

    let pieces = content_pieces(&chunks, 0);
    assert!(pieces.len() > 5, "word-sized pieces, got {pieces:?}");
    assert_eq!(pieces.concat(), text);
    assert_eq!(pieces[0], "Hello, ");

    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(finish.choices[0].delta, Delta::default());
    let usage = chunks.last().unwrap();
    assert!(usage.choices.is_empty());
    assert_eq!(usage.usage, Some(Usage::new(12, 34)));

    assert_eq!(response_from_chunks(&chunks), Some(resp));
}

#[test]
fn unicode_pieces_concatenate_to_the_exact_text() {
    let text = "Grüße aus Köln 👋🏽 — 日本語のテキストはスペースがないので長い文字列になります。\
                e\u{301}te\u{301}\t👨‍👩‍👧‍👦 family\r\n  end  ";
    let chunks = chunks_from_response(&text_response(text), false);
    let pieces = content_pieces(&chunks, 0);
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| p.chars().count() <= MAX_PIECE_CHARS));
    // The run of Japanese without spaces is split by length, not kept whole.
    assert!(
        pieces
            .iter()
            .any(|p| p.starts_with('日') && p.chars().count() == MAX_PIECE_CHARS)
    );
    assert_eq!(response_from_chunks(&chunks).unwrap().text(), text);
}

#[test]
fn tool_calls_stream_as_head_then_argument_fragments() {
    let mut msg = message(None);
    msg.tool_calls = Some(vec![
        tool_call(
            "call_1",
            "get_weather",
            r#"{"city":"Paris","unit":"celsius"}"#,
        ),
        tool_call("call_2", "get_time", r#"{"tz":"Europe/Paris"}"#),
        tool_call("call_3", "ping", ""),
    ]);
    let resp = response(vec![choice(0, msg, FinishReason::ToolCalls)]);
    let chunks = chunks_from_response(&resp, true);

    // Only tools: the opening delta has a role and `content: null`, as OpenAI sends it.
    assert_eq!(chunks[0].choices[0].delta.content, None);
    let deltas: Vec<&ToolCallDelta> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .flat_map(|c| c.delta.tool_calls.iter().flatten())
        .collect();
    let heads: Vec<_> = deltas.iter().filter(|d| d.id.is_some()).collect();
    assert_eq!(heads.len(), 3);
    for (i, head) in heads.iter().enumerate() {
        assert_eq!(head.index, i as u32);
        assert_eq!(head.kind.as_deref(), Some("function"));
        let f = head.function.as_ref().unwrap();
        assert!(f.name.is_some());
        assert_eq!(f.arguments.as_deref(), Some(""));
    }
    for frag in deltas.iter().filter(|d| d.id.is_none()) {
        assert_eq!(frag.kind, None);
        let f = frag.function.as_ref().unwrap();
        assert_eq!(f.name, None);
        assert!(!f.arguments.as_deref().unwrap().is_empty());
    }
    let args_0: String = deltas
        .iter()
        .filter(|d| d.index == 0)
        .filter_map(|d| d.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(args_0, r#"{"city":"Paris","unit":"celsius"}"#);
    assert!(deltas.iter().filter(|d| d.index == 0).count() > 2);

    assert_eq!(response_from_chunks(&chunks), Some(resp));
}

#[test]
fn reasoning_streams_before_content_and_round_trips() {
    let mut msg = message(Some("The answer is 42."));
    msg.reasoning_content = Some("Let me think step by step about this question.".into());
    let resp = response(vec![choice(0, msg, FinishReason::Stop)]);
    let chunks = chunks_from_response(&resp, true);

    let kinds: Vec<&str> = chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| {
            if c.delta.reasoning_content.is_some() {
                Some("r")
            } else if c.delta.content.as_deref().is_some_and(|t| !t.is_empty()) {
                Some("c")
            } else {
                None
            }
        })
        .collect();
    let first_content = kinds.iter().position(|k| *k == "c").unwrap();
    assert!(first_content > 3);
    assert!(kinds[..first_content].iter().all(|k| *k == "r"));
    assert!(kinds[first_content..].iter().all(|k| *k == "c"));

    assert_eq!(response_from_chunks(&chunks), Some(resp));
}

#[test]
fn several_choices_interleave_with_their_indexes_and_round_trip() {
    let mut tools = message(Some("Checking."));
    tools.tool_calls = Some(vec![tool_call("call_9", "lookup", r#"{"q":"weir"}"#)]);
    let resp = response(vec![
        choice(
            0,
            message(Some("First answer, rather short.")),
            FinishReason::Stop,
        ),
        choice(1, tools, FinishReason::ToolCalls),
    ]);
    let chunks = chunks_from_response(&resp, true);

    let indexes: Vec<u32> = chunks
        .iter()
        .filter(|c| c.usage.is_none())
        .map(|c| {
            assert_eq!(c.choices.len(), 1);
            c.choices[0].index
        })
        .collect();
    assert_eq!(&indexes[..4], &[0, 1, 0, 1]);
    assert_eq!(
        content_pieces(&chunks, 0).concat(),
        "First answer, rather short."
    );
    assert_eq!(content_pieces(&chunks, 1).concat(), "Checking.");

    assert_eq!(response_from_chunks(&chunks), Some(resp));
}

#[test]
fn refusal_empty_fields_and_logprobs_round_trip() {
    let mut refused = message(Some(""));
    refused.refusal = Some("I can't help with that request.".into());
    refused.reasoning_content = Some(String::new());
    let mut c = choice(0, refused, FinishReason::ContentFilter);
    c.logprobs = Some(json!({"content": [{"token": "I", "logprob": -0.1}], "refusal": null}));
    let mut resp = response(vec![c]);
    resp.service_tier = None;
    resp.system_fingerprint = None;
    let chunks = chunks_from_response(&resp, true);
    assert_eq!(response_from_chunks(&chunks), Some(resp));
}

#[test]
fn usage_chunk_only_when_asked() {
    let resp = text_response("short");
    let chunks = chunks_from_response(&resp, false);
    assert!(
        chunks
            .iter()
            .all(|c| c.usage.is_none() && c.choices.len() == 1)
    );
    let back = response_from_chunks(&chunks).unwrap();
    assert_eq!(back.usage, None);
    assert_eq!(back.choices, resp.choices);
}

#[test]
fn unfinished_or_empty_streams_are_not_assembled() {
    assert_eq!(response_from_chunks(&[]), None);
    let chunks = chunks_from_response(&text_response("cut short"), true);
    // Only the usage chunk: no choice at all.
    assert_eq!(response_from_chunks(&chunks[chunks.len() - 1..]), None);
    // The finish chunk never came: the answer may be truncated.
    let cut: Vec<ChatChunk> = chunks[..chunks.len() - 2].to_vec();
    assert_eq!(response_from_chunks(&cut), None);
}

/// A stream as OpenAI sends it on the wire: `usage: null` on every chunk, `content: null` next
/// to tool calls, logprobs per chunk, and the name sent once.
#[test]
fn assembles_an_openai_wire_stream() {
    let raw = json!([
        {"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-4o","service_tier":"default","system_fingerprint":"fp_1","usage":null,
         "choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]},
        {"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-4o","usage":null,
         "choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"logprobs":{"content":[{"token":"{\"","logprob":0.0}]},"finish_reason":null}]},
        {"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-4o","usage":null,
         "choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"logprobs":{"content":[{"token":"1}","logprob":-0.5}]},"finish_reason":null}]},
        {"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-4o","usage":null,
         "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]},
        {"id":"c1","object":"chat.completion.chunk","created":5,"model":"gpt-4o","choices":[],
         "usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}
    ]);
    let chunks: Vec<ChatChunk> = serde_json::from_value(raw).unwrap();
    let resp = response_from_chunks(&chunks).unwrap();
    assert_eq!((resp.id.as_str(), resp.created), ("c1", 5));
    assert_eq!(resp.service_tier.as_deref(), Some("default"));
    assert_eq!(resp.system_fingerprint.as_deref(), Some("fp_1"));
    assert_eq!(resp.usage, Some(Usage::new(9, 4)));
    let c = &resp.choices[0];
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(c.message.content, None);
    assert_eq!(
        c.message.tool_calls,
        Some(vec![tool_call("call_a", "f", r#"{"a":1}"#)])
    );
    assert_eq!(
        c.logprobs,
        Some(json!({"content":[{"token":"{\"","logprob":0.0},{"token":"1}","logprob":-0.5}]}))
    );
}

#[tokio::test(start_paused = true)]
async fn replay_paces_chunks_on_tokio_time() {
    let chunks = chunks_from_response(&text_response("one two three four"), true);
    let n = chunks.len();
    let pace = Duration::from_millis(30);
    let t0 = Instant::now();
    let mut s = replay(chunks.clone(), Some(pace));
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        // Chunk i is served exactly i paces after the start: none early, no drift.
        assert_eq!(t0.elapsed(), pace * got.len() as u32);
        got.push(c.unwrap());
    }
    assert_eq!(got, chunks);
    assert_eq!(t0.elapsed(), pace * (n as u32 - 1));

    let t1 = Instant::now();
    let unpaced: Vec<_> = replay(chunks.clone(), None).collect().await;
    assert_eq!(unpaced.len(), n);
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_paced_replay_holds_back_the_next_chunk() {
    let chunks = chunks_from_response(&text_response("a b"), false);
    let mut s = replay(chunks, Some(Duration::from_secs(1)));
    assert!(s.next().await.is_some());
    let early = tokio::time::timeout(Duration::from_millis(999), s.next()).await;
    assert!(early.is_err(), "the second chunk came before its pace");
    assert!(s.next().await.is_some());
}

proptest! {
    #[test]
    fn any_text_round_trips(text in any::<String>(), reasoning in proptest::option::of(any::<String>())) {
        let mut msg = message(Some(&text));
        msg.reasoning_content = reasoning;
        let resp = response(vec![choice(0, msg, FinishReason::Length)]);
        let chunks = chunks_from_response(&resp, true);
        prop_assert_eq!(content_pieces(&chunks, 0).concat(), text);
        prop_assert_eq!(response_from_chunks(&chunks), Some(resp));
    }
}
