//! The gateway end to end on a loopback port: routes, headers, auth, streams, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, sse_events};
use serde_json::{Value, json};

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn chat_completion_with_metadata_headers() {
    let gw = Gateway::start("").await;
    let res = gw
        .post("/v1/chat/completions")
        .header("x-request-id", "my-id-123")
        .json(&chat_body("mock/echo", "hello gateway"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["x-request-id"], "my-id-123");
    assert_eq!(h["x-weir-provider"], "mock");
    assert_eq!(h["x-weir-upstream-model"], "echo");
    assert!(h.contains_key("x-weir-processing-ms"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "hello gateway");
    assert_eq!(body["usage"]["completion_tokens"], 2);

    // A request id is generated when the client sends none.
    let res = gw
        .post("/v1/chat/completions")
        .json(&chat_body("mock/echo", "x"))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}

#[tokio::test]
async fn streaming_ends_with_done_and_honours_include_usage() {
    let gw = Gateway::start("").await;
    let mut body = chat_body("mock/echo", "one two three");
    body["stream"] = json!(true);
    let res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "one two three");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage unless asked"
    );

    body["stream_options"] = json!({"include_usage": true});
    let text = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 3);

    // The totals count streams.
    let status: Value = gw
        .get("/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "mock/echo")
        .unwrap();
    assert_eq!(m["calls"], 2);
    assert_eq!(m["completion_tokens"], 6);
}

#[tokio::test]
async fn mid_stream_failure_ends_with_an_error_event() {
    let gw = Gateway::start("retry:\n  max_retries: 0\n").await;
    let mut body = chat_body("mock/echo", "a b c d e f");
    body["stream"] = json!(true);
    body["mock"] = json!({"cut_after": 3});
    let text = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{last}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn upstream_errors_keep_status_and_retry_after() {
    let gw = Gateway::start("retry:\n  max_retries: 0\n").await;
    let mut body = chat_body("mock/echo", "x");
    body["mock"] = json!({"status": 429, "retry_after": 7});
    let res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(res.headers()["retry-after-ms"], "7000");
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(err["error"].get("param").is_some() && err["error"].get("code").is_some());

    body["mock"] = json!({"status": 503});
    let res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn gateway_keys_are_required_when_configured() {
    let gw = Gateway::start("  api_keys: [\"k-one\", \"k-two\"]\n").await;
    let body = chat_body("mock/echo", "x");
    let res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_api_key");
    let res = gw
        .post("/v1/chat/completions")
        .bearer_auth("k-wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = gw
        .post("/v1/chat/completions")
        .bearer_auth("k-two")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = gw
        .post("/v1/chat/completions")
        .header("x-api-key", "k-one")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Anthropic's shape on /v1/messages.
    let res = gw
        .post("/v1/messages")
        .json(&json!({"model": "mock/echo", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "authentication_error");
    // Liveness stays open.
    assert_eq!(gw.get("/health").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn models_list_and_get_with_slashes() {
    let gw = Gateway::start("models:\n  fast: mock/lorem\n").await;
    let list: Value = gw
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"mock/echo") && ids.contains(&"fast"),
        "{ids:?}"
    );
    let one: Value = gw
        .get("/v1/models/mock/echo")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "mock/echo");
    let res = gw.get("/v1/models/nope/nothing").send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn embeddings() {
    let gw = Gateway::start("").await;
    let res: Value = gw
        .post("/v1/embeddings")
        .json(&json!({"model": "mock/echo", "input": ["a cat", "a dog"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["data"].as_array().unwrap().len(), 2);
    assert_eq!(res["data"][1]["index"], 1);
}

#[tokio::test]
async fn messages_translated_from_mock() {
    let gw = Gateway::start("").await;
    let res = gw
        .post("/v1/messages")
        .json(
            &json!({"model": "mock/echo", "max_tokens": 50, "system": "be nice",
                      "messages": [{"role": "user", "content": "hi claude"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg: Value = res.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"][0]["type"], "text");
    assert_eq!(msg["content"][0]["text"], "hi claude");
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(msg["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn messages_stream_in_anthropic_order() {
    let gw = Gateway::start("").await;
    let text = gw
        .post("/v1/messages")
        .json(
            &json!({"model": "mock/echo", "max_tokens": 50, "stream": true,
                      "mock": {"reasoning": "let me think"},
                      "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events
        .iter()
        .map(|(e, _)| e.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 2..],
        &["message_delta", "message_stop"]
    );
    // Blocks open and close in order, one at a time.
    let mut open: Option<u64> = None;
    let mut kinds = Vec::new();
    for (name, data) in &events {
        let v: Value = serde_json::from_str(data).unwrap();
        match name.as_deref() {
            Some("content_block_start") => {
                assert!(open.is_none(), "a block opened before the previous closed");
                open = v["index"].as_u64();
                kinds.push(v["content_block"]["type"].as_str().unwrap().to_owned());
            }
            Some("content_block_delta") => assert_eq!(open, v["index"].as_u64()),
            Some("content_block_stop") => {
                assert_eq!(open, v["index"].as_u64());
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["thinking", "text"]);
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn count_tokens() {
    let gw = Gateway::start("").await;
    let v: Value = gw
        .post("/v1/messages/count_tokens")
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello world"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn graceful_shutdown_lets_streams_finish() {
    let mut gw = Gateway::start("  shutdown_grace: 10s\nmock:\n  inter_token_delay: 20ms\n").await;
    let mut body = chat_body("mock/echo", "a b c d e f g h i j");
    body["stream"] = json!(true);
    let res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let task = gw.shutdown();
    let text = res.text().await.unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "stream finished despite shutdown: {text}"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    // New connections are refused.
    assert!(gw.get("/health").send().await.is_err());
}

#[tokio::test]
async fn client_disconnect_is_still_accounted() {
    let gw = Gateway::start("mock:\n  inter_token_delay: 50ms\n").await;
    let mut body = chat_body("mock/lorem", "x");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(200);
    let mut res = gw
        .post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let _first = res.chunk().await.unwrap();
    drop(res);
    // Accounting runs when the server notices the disconnect and drops the stream.
    let mut calls = 0;
    for _ in 0..100 {
        let status: Value = gw
            .get("/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        calls = status["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == "mock/lorem")
            .map_or(0, |m| m["calls"].as_u64().unwrap());
        if calls == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(calls, 1);
}
