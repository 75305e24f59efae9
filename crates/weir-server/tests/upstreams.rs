//! The gateway in front of fake upstreams speaking the providers' real wire formats:
//! native Anthropic pass-through, translation to an OpenAI upstream, key hygiene.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, sse_events};
use serde_json::{Value, json};
use weir_test_support::{FakeUpstream, Reply, anthropic, openai};

async fn gateway_with(fake_anthropic: &FakeUpstream, fake_openai: &FakeUpstream) -> Gateway {
    Gateway::start(&format!(
        "  api_keys: [\"gw-key\"]\nretry:\n  max_retries: 0\nproviders:\n  claude:\n    kind: anthropic\n    base_url: {}\n    api_key: sk-ant-upstream\n  oai:\n    kind: openai\n    base_url: {}\n    api_key: sk-oai-upstream\n",
        fake_anthropic.v1(),
        fake_openai.v1()
    ))
    .await
}

#[tokio::test]
async fn messages_pass_through_natively_to_anthropic() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    fa.push(Reply::json(anthropic::thinking_message(
        "claude-sonnet-4-5",
        "hmm",
        "Paris",
    )));
    let body = json!({
        "model": "claude/claude-sonnet-4-5", "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
        "messages": [{"role": "user", "content": "capital of France?"}]
    });
    let res = gw
        .post("/v1/messages")
        .header("x-api-key", "gw-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let msg: Value = res.json().await.unwrap();
    assert_eq!(msg["content"][0]["type"], "thinking");
    assert_eq!(msg["content"][1]["text"], "Paris");

    let sent = fa.last_request().unwrap();
    assert!(sent.path.ends_with("/v1/messages"), "{}", sent.path);
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-upstream"));
    assert!(sent.header("anthropic-version").is_some());
    let upstream_body = sent.json().unwrap();
    assert_eq!(upstream_body["model"], "claude-sonnet-4-5");
    assert_eq!(
        upstream_body["top_k"], 5,
        "Anthropic-only fields pass through natively"
    );
    assert_eq!(upstream_body["thinking"]["budget_tokens"], 1024);
    assert!(
        !sent.everything().contains("gw-key"),
        "the gateway key never travels upstream"
    );
}

#[tokio::test]
async fn native_stream_events_are_forwarded_in_order() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    let transcript = anthropic::tool_use_stream(
        "claude-sonnet-4-5",
        "toolu_1",
        "get_weather",
        &["{\"ci", "ty\": \"Par", "is\"}"],
    );
    fa.push(Reply::sse(transcript.clone()).awkward());
    let body = json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "weather?"}]});
    let text = gw
        .post("/v1/messages")
        .bearer_auth("gw-key")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let got: Vec<(Option<String>, Value)> = sse_events(&text)
        .into_iter()
        .map(|(e, d)| (e, serde_json::from_str(&d).unwrap()))
        .collect();
    let want: Vec<(Option<String>, Value)> = sse_events(&transcript)
        .into_iter()
        .map(|(e, d)| (e, serde_json::from_str(&d).unwrap()))
        .collect();
    assert_eq!(got, want, "native events pass through unchanged");

    // Streamed usage is counted.
    let status: Value = gw
        .get("/status")
        .bearer_auth("gw-key")
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
        .find(|m| m["model"] == "claude/claude-sonnet-4-5")
        .unwrap();
    assert_eq!(m["calls"], 1);
    assert!(m["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn chat_completions_through_the_anthropic_adapter() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    fa.push(Reply::sse(anthropic::text_stream("claude-sonnet-4-5", &["Hel", "lo!"])).awkward());
    let body = json!({"model": "claude/claude-sonnet-4-5", "stream": true,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}]});
    let text = gw
        .post("/v1/chat/completions")
        .bearer_auth("gw-key")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    assert_eq!(content, "Hello!");
    assert!(
        chunks.last().unwrap()["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let sent = fa.last_request().unwrap().json().unwrap();
    assert!(sent["system"].to_string().contains("terse"));
    assert!(
        sent["max_tokens"].as_u64().is_some(),
        "max_tokens defaulted for Anthropic"
    );
}

#[tokio::test]
async fn messages_translated_to_an_openai_upstream() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    fo.push(
        Reply::sse(openai::tool_call_stream(
            "gpt-4o",
            "call_1",
            "get_weather",
            &["{\"city\":", "\"Paris\"}"],
        ))
        .awkward(),
    );
    let body = json!({"model": "oai/gpt-4o", "max_tokens": 100, "stream": true,
                      "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
                      "messages": [{"role": "user", "content": "weather?"}]});
    let text = gw
        .post("/v1/messages")
        .bearer_auth("gw-key")
        .json(&body)
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
    assert_eq!(names[0], "message_start");
    assert_eq!(*names.last().unwrap(), "message_stop");
    let start = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("content_block_start"))
        .unwrap();
    let start: Value = serde_json::from_str(&start.1).unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "get_weather");
    let json: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["delta"]["partial_json"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        json!({"city": "Paris"})
    );
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    let sent = fo.last_request().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer sk-oai-upstream"));
    assert_eq!(
        sent.json().unwrap()["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn upstream_errors_pass_through_with_status_and_retry_after() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    fo.push(
        Reply::error(
            429,
            openai::error(
                "Rate limit reached",
                "requests",
                Some("rate_limit_exceeded"),
            ),
        )
        .header("retry-after", "3"),
    );
    let res = gw
        .post("/v1/chat/completions")
        .bearer_auth("gw-key")
        .json(&json!({"model": "oai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit reached")
    );
    assert!(!v.to_string().contains("sk-oai-upstream"));

    fa.push(Reply::error(
        529,
        anthropic::error("overloaded_error", "Overloaded"),
    ));
    let res = gw
        .post("/v1/messages")
        .bearer_auth("gw-key")
        .json(&json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 529);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    let pieces: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    fo.push(
        Reply::sse(openai::text_stream("gpt-4o", &refs))
            .chunked(weir_test_support::Chunking::Every(64))
            .chunk_delay(std::time::Duration::from_millis(20)),
    );
    let body = json!({"model": "oai/gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let mut res = gw
        .post("/v1/chat/completions")
        .bearer_auth("gw-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(res);
    let mut abandoned = 0;
    for _ in 0..200 {
        abandoned = fo.abandoned_streams();
        if abandoned == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        abandoned, 1,
        "the upstream stream was cancelled, not read to its end"
    );
}

/// `POST /v1/chat/completions` with the gateway key these tests configure.
async fn post_chat(gw: &Gateway, body: &Value) -> reqwest::Response {
    gw.post("/v1/chat/completions")
        .bearer_auth("gw-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// An OpenAI-compatible answer goes out as the upstream wrote it (not decoded and encoded
/// again): byte for byte, through a miss and then through a cache hit.
#[tokio::test]
async fn openai_answers_are_forwarded_byte_for_byte() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = Gateway::start(&format!(
        "  api_keys: [\"gw-key\"]\nretry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_key: sk-oai-upstream\n  claude:\n    kind: anthropic\n    base_url: {}\n    api_key: sk-ant\ncache:\n  enabled: true\n",
        fo.v1(),
        fa.v1()
    ))
    .await;
    // Pretty-printed, fields in an unusual order, a vendor field and a float weir's encoder
    // would write differently: any re-encoding shows.
    let upstream = "{\n  \"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 1, \"total_tokens\": 6},\n  \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"hi\"}, \"finish_reason\": \"stop\"}],\n  \"id\": \"chatcmpl-raw\", \"object\": \"chat.completion\", \"created\": 1, \"model\": \"gpt-4o\",\n  \"x_vendor\": {\"score\": 1.50}\n}";
    fo.set_default(
        Reply::status(200)
            .header("content-type", "application/json")
            .body(upstream),
    );
    let body = json!({"model": "oai/gpt-4o", "temperature": 0,
                      "messages": [{"role": "user", "content": "hi"}]});
    for expected_cache in ["miss", "hit"] {
        let res = post_chat(&gw, &body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-weir-cache"], expected_cache);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), upstream, "{expected_cache}");
    }
    assert_eq!(fo.request_count(), 1);
}

/// Streamed chunks go out as the upstream wrote them too, unless weir had to change one: the
/// usage chunk weir asked for on the client's behalf is dropped, and a content chunk that
/// carried usage loses it (and so is written afresh).
#[tokio::test]
async fn openai_stream_chunks_are_forwarded_byte_for_byte() {
    let fo = FakeUpstream::start().await.unwrap();
    let gw = Gateway::start(&format!(
        "  api_keys: [\"gw-key\"]\nretry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_key: sk-oai-upstream\n",
        fo.v1()
    ))
    .await;
    // Unusual key order, a vendor field and a float weir's encoder would write differently.
    let first = r#"{"choices":[{"delta":{"role":"assistant","content":"hi"},"index":0,"finish_reason":null}],"x_vendor":{"score":1.50},"id":"c1","created":1,"model":"gpt-4o","object":"chat.completion.chunk"}"#;
    let with_usage = r#"{"choices":[{"delta":{"content":"!"},"index":0,"finish_reason":"stop"}],"id":"c1","created":1,"model":"gpt-4o","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
    let usage_only = r#"{"choices":[],"id":"c1","created":1,"model":"gpt-4o","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
    fo.set_default(Reply::sse(format!(
        "data: {first}\n\ndata: {with_usage}\n\ndata: {usage_only}\n\ndata: [DONE]\n\n"
    )));
    let body = json!({"model": "oai/gpt-4o", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let res = post_chat(&gw, &body).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(frames.len(), 3, "{text}");
    assert_eq!(frames[0], first, "unchanged: forwarded as received");
    let rewritten: serde_json::Value = serde_json::from_str(frames[1]).unwrap();
    assert!(
        rewritten.get("usage").is_none(),
        "the client did not ask for usage"
    );
    assert_eq!(rewritten["choices"][0]["delta"]["content"], "!");
    assert_eq!(frames[2], "[DONE]");
}

#[tokio::test]
async fn the_clients_anthropic_version_and_beta_headers_reach_the_upstream() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    let body = json!({
        "model": "claude/claude-sonnet-4-5", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}]
    });
    let ask = |beta: Option<&'static str>, version: Option<&'static str>| {
        let mut req = gw
            .post("/v1/messages")
            .header("x-api-key", "gw-key")
            .json(&body);
        if let Some(b) = beta {
            req = req.header("anthropic-beta", b);
        }
        if let Some(v) = version {
            req = req.header("anthropic-version", v);
        }
        req.send()
    };
    fa.push(Reply::json(anthropic::message("claude-sonnet-4-5", "ok")));
    let res = ask(Some("prompt-caching-2024-07-31"), Some("2023-01-01"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = fa.last_request().unwrap();
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(sent.header("anthropic-version"), Some("2023-01-01"));

    // Without the client's, the configured version is the default, and no beta is sent.
    fa.push(Reply::json(anthropic::message("claude-sonnet-4-5", "ok")));
    let res = ask(None, None).await.unwrap();
    assert_eq!(res.status(), 200);
    let sent = fa.last_request().unwrap();
    assert_eq!(sent.header("anthropic-beta"), None);
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
}

#[tokio::test]
async fn anthropic_structured_output_reaches_an_openai_upstream_as_response_format() {
    let fa = FakeUpstream::start().await.unwrap();
    let fo = FakeUpstream::start().await.unwrap();
    let gw = gateway_with(&fa, &fo).await;
    fo.push(Reply::json(openai::chat_completion(
        "gpt-4o",
        "{\"name\":\"Ada\"}",
    )));
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}});
    let body = json!({"model": "oai/gpt-4o", "max_tokens": 100,
                      "output_config": {"format": {"type": "json_schema", "schema": schema}},
                      "messages": [{"role": "user", "content": "who?"}]});
    let res = gw
        .post("/v1/messages")
        .bearer_auth("gw-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = fo.last_request().unwrap().json().unwrap();
    assert_eq!(sent["response_format"]["type"], "json_schema", "{sent}");
    assert_eq!(sent["response_format"]["json_schema"]["schema"], schema);

    // A format that cannot be translated is refused in Anthropic's shape, before any call.
    let calls = fo.requests().len();
    let mut odd = body.clone();
    odd["output_config"] = json!({"format": {"type": "yaml"}});
    let res = gw
        .post("/v1/messages")
        .bearer_auth("gw-key")
        .json(&odd)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output_config.format"),
        "{err}"
    );
    assert_eq!(fo.requests().len(), calls);
}
