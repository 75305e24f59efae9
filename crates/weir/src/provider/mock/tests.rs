#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use serde_json::json;
use weir_types::chat::*;

use super::*;
use crate::config::MockConfig;

fn ctx(model: &str) -> UpstreamContext {
    UpstreamContext::new(model)
}

fn req(text: &str) -> ChatRequest {
    ChatRequest::new(
        "mock/echo",
        vec![Message::system("be brief"), Message::user(text)],
    )
}

#[tokio::test]
async fn echo_replies_with_the_last_user_message() {
    let p = MockProvider::new("mock", MockConfig::default());
    let out = p
        .chat(&req("hello world"), &ctx("echo"))
        .await
        .unwrap()
        .body;
    assert_eq!(out.text(), "hello world");
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Stop));
    let u = out.usage.unwrap();
    assert_eq!(u.completion_tokens, 2);
    assert_eq!(u.prompt_tokens, 2 + 3 + 2 + 3);
}

#[tokio::test]
async fn lorem_honours_max_tokens() {
    let p = MockProvider::new("mock", MockConfig::default());
    let mut r = req("x");
    r.max_tokens = Some(7);
    let out = p.chat(&r, &ctx("lorem")).await.unwrap().body;
    assert_eq!(out.text().split(' ').count(), 7);
    assert_eq!(out.usage.unwrap().completion_tokens, 7);
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Length));
    let out = p.chat(&req("x"), &ctx("lorem")).await.unwrap().body;
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Stop));
}

/// A reply longer than `max_tokens` is cut there and ends with `length`, complete or
/// streamed, as the real APIs report it.
#[tokio::test]
async fn an_answer_cut_by_max_tokens_finishes_with_length() {
    use futures::StreamExt;
    let p = MockProvider::new("mock", MockConfig::default());
    let mut r = req("one two three four");
    r.max_tokens = Some(2);
    let out = p.chat(&r, &ctx("echo")).await.unwrap().body;
    assert_eq!(out.text(), "one two");
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Length));
    let chunks: Vec<_> = p
        .chat_stream(&r, &ctx("echo"))
        .await
        .unwrap()
        .stream
        .collect()
        .await;
    let finish = chunks
        .iter()
        .filter_map(|c| c.as_ref().ok()?.choices.first()?.finish_reason.clone())
        .next_back();
    assert_eq!(finish, Some(FinishReason::Length));
    r.max_tokens = Some(4);
    let out = p.chat(&r, &ctx("echo")).await.unwrap().body;
    assert_eq!(
        out.choices[0].finish_reason,
        Some(FinishReason::Stop),
        "it fit"
    );
}

#[tokio::test]
async fn unknown_mock_model_is_not_found() {
    let p = MockProvider::new("mock", MockConfig::default());
    let err = p.chat(&req("x"), &ctx("nope")).await.unwrap_err();
    assert_eq!(err.http_status(), 404);
}

#[tokio::test]
async fn stream_reassembles_to_the_same_text_and_ends_with_usage() {
    let p = MockProvider::new("mock", MockConfig::default());
    let s = p
        .chat_stream(&req("one two  three"), &ctx("echo"))
        .await
        .unwrap();
    let chunks: Vec<ChatChunk> = s.stream.map(|c| c.unwrap()).collect().await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c.choices.first().and_then(|ch| ch.delta.content.clone()))
        .collect();
    assert_eq!(text, "one two  three");
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty());
    assert_eq!(last.usage.as_ref().unwrap().completion_tokens, 3);
    let finish = &chunks[chunks.len() - 2].choices[0].finish_reason;
    assert_eq!(finish, &Some(FinishReason::Stop));
}

#[tokio::test]
async fn tools_are_called_with_streamed_argument_fragments() {
    let p = MockProvider::new("mock", MockConfig::default());
    let mut r = req("weather in Paris");
    r.tools = Some(vec![Tool::function(
        "get_weather",
        "Weather",
        json!({"type":"object"}),
    )]);
    let out = p.chat(&r, &ctx("echo")).await.unwrap().body;
    let call = &out.choices[0].message.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.function.name, "get_weather");
    assert_eq!(call.function.arguments, r#"{"input":"weather in Paris"}"#);
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::ToolCalls));

    let s = p.chat_stream(&r, &ctx("echo")).await.unwrap();
    let chunks: Vec<ChatChunk> = s.stream.map(|c| c.unwrap()).collect().await;
    let args: String = chunks
        .iter()
        .filter_map(|c| c.choices.first())
        .filter_map(|ch| ch.delta.tool_calls.as_ref())
        .flat_map(|tcs| {
            tcs.iter()
                .filter_map(|t| t.function.as_ref()?.arguments.clone())
        })
        .collect();
    assert_eq!(args, call.function.arguments);
    assert!(chunks.len() > 4, "arguments arrive in several fragments");

    // A tool result is answered in words.
    r.messages.push(Message {
        tool_calls: Some(vec![call.clone()]),
        ..Message::assistant("")
    });
    r.messages.push(Message::tool(call.id.clone(), "sunny"));
    let out = p.chat(&r, &ctx("echo")).await.unwrap().body;
    assert_eq!(out.text(), "sunny");
}

#[tokio::test]
async fn json_schema_gets_a_conforming_instance() {
    let p = MockProvider::new("mock", MockConfig::default());
    let mut r = req("hi");
    r.response_format = Some(ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "person".into(),
            description: None,
            schema: Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "kind": {"enum": ["a", "b"]}
                },
                "required": ["name", "age", "tags", "kind"]
            })),
            strict: Some(true),
        },
    });
    let out = p.chat(&r, &ctx("echo")).await.unwrap().body;
    let v: serde_json::Value = serde_json::from_str(out.text()).unwrap();
    assert_eq!(v, json!({"name": "hi", "age": 0, "tags": [], "kind": "a"}));
}

#[tokio::test]
async fn injected_faults_from_the_request() {
    let p = MockProvider::new("mock", MockConfig::default());
    let mut r = req("x");
    r.extra
        .insert("mock".into(), json!({"status": 429, "retry_after": 2}));
    let err = p.chat(&r, &ctx("echo")).await.unwrap_err();
    assert_eq!(err.http_status(), 429);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));

    r.extra.insert("mock".into(), json!({"cut_after": 2}));
    let s = p.chat_stream(&r, &ctx("echo")).await.unwrap();
    let items: Vec<_> = s.stream.collect().await;
    assert_eq!(items.len(), 3);
    assert!(items[2].is_err());

    // Absurd hints are ignored, never a panic.
    r.extra
        .insert("mock".into(), json!({"status": 503, "retry_after": 1e300}));
    assert_eq!(
        p.chat(&r, &ctx("echo")).await.unwrap_err().retry_after(),
        None
    );

    r.extra.insert("mock".into(), json!({"bogus": 1}));
    assert_eq!(
        p.chat(&r, &ctx("echo")).await.unwrap_err().http_status(),
        400
    );
}

#[tokio::test(start_paused = true)]
async fn delays_use_tokio_time() {
    let cfg = MockConfig {
        time_to_first_token: Duration::from_millis(200),
        inter_token_delay: Duration::from_millis(50),
        ..MockConfig::default()
    };
    let p = MockProvider::new("mock", cfg);
    let start = tokio::time::Instant::now();
    let s = p.chat_stream(&req("a b c"), &ctx("echo")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    let n = s.stream.count().await;
    // role chunk, 3 words, finish, usage: 5 gaps of 50ms
    assert_eq!(n, 6);
    assert_eq!(start.elapsed(), Duration::from_millis(200 + 5 * 50));
}

#[test]
fn embeddings_are_deterministic_and_similarity_tracks_shared_words() {
    let a = embed_text("the cat sat on the mat", 256);
    let b = embed_text("the cat sat on the mat", 256);
    let c = embed_text("the cat sat on a mat", 256);
    let d = embed_text("quantum chromodynamics lecture notes", 256);
    assert_eq!(a, b);
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
    assert!(dot(&a, &c) > 0.8);
    assert!(dot(&a, &d) < 0.5);
}
