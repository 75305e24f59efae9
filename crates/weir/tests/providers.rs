//! Provider conformance: one set of scenarios, run against every HTTP adapter (OpenAI and
//! Anthropic) through a fake upstream that speaks its real wire format.
//!
//! Each scenario is an `async fn(Dialect)`; the `conformance!` macro at the bottom turns each
//! into one test per dialect. A scenario says what every adapter must do (classify a 429,
//! survive a stream split inside CRLF pairs, never leak the key...), and the [`Dialect`] says
//! how that looks on its wire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "providers/dialect.rs"]
mod dialect;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use weir::config::Timeouts;
use weir::error::{Error, TimeoutPhase};
use weir::provider::SharedProvider;
use weir::provider::anthropic::AnthropicProvider;
use weir::provider::openai::OpenAiProvider;
use weir_test_support::{FakeUpstream, Reply, anthropic, openai, sse};
use weir_types::chat::FinishReason;

use dialect::*;

// --- scenarios -------------------------------------------------------------------------------

async fn simple_chat(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(d.chat_body("Hello there")));
    let p = d.provider(&fake);
    let up = p.chat(&request("hi"), &ctx()).await.unwrap();
    assert_eq!(up.body.text(), "Hello there");
    let usage = up.body.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);

    let r = fake.last_request().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, d.chat_path());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json().unwrap();
    assert_eq!(
        body["model"], MODEL,
        "the upstream model replaces the requested one"
    );
    assert_ne!(body["stream"], true);
    d.assert_auth(&r);
    assert_eq!(r.header("x-request-id"), Some("weir-req-42"));
}

async fn stream_split_awkwardly(d: Dialect, crlf: bool) {
    let fake = FakeUpstream::start().await.unwrap();
    let pieces = ["Hel", "lo", " wörld ", "😀", ""];
    let mut transcript = d.text_stream(&pieces);
    if crlf {
        transcript = sse::crlf(&transcript);
    }
    // A keep-alive comment first, as proxies send.
    transcript = sse::comment("keep-alive") + &transcript;
    fake.push(Reply::sse(transcript).awkward());
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text_of(&chunks), "Hello wörld 😀");
    let finish = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish, Some(FinishReason::Stop));
    let usage = chunks
        .iter()
        .rev()
        .find_map(|c| c.usage.clone())
        .expect("a usage chunk");
    assert!(usage.completion_tokens > 0);

    let body = fake.last_request().unwrap().json().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], MODEL);
    if d == Dialect::OpenAi {
        assert_eq!(
            body["stream_options"]["include_usage"], true,
            "usage is always requested"
        );
    }
}

async fn stream_split_lf(d: Dialect) {
    stream_split_awkwardly(d, false).await;
}

async fn stream_split_crlf(d: Dialect) {
    stream_split_awkwardly(d, true).await;
}

async fn stream_tool_call(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    let pieces = ["{\"ci", "ty\": \"Pa", "ris\", \"unit\"", ": \"°C\"}"];
    fake.push(Reply::sse(d.tool_stream("call_abc", "get_weather", &pieces)).awkward());
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("weather?"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert!(err.is_none(), "{err:?}");
    let calls: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.tool_calls.as_ref())
        .flatten()
        .collect();
    let first = calls.first().expect("tool call deltas");
    assert_eq!(first.id.as_deref(), Some("call_abc"));
    assert_eq!(
        first.function.as_ref().and_then(|f| f.name.as_deref()),
        Some("get_weather")
    );
    let args: String = calls
        .iter()
        .filter_map(|c| c.function.as_ref()?.arguments.as_deref())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "°C"}));
    let finish = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .find_map(|c| c.finish_reason.clone());
    assert_eq!(finish, Some(FinishReason::ToolCalls));
}

async fn rate_limited_with_retry_after(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::error(429, d.error_body(429, "slow down")).header("retry-after", "7"));
    fake.push(Reply::error(429, d.error_body(429, "slow down")).header("retry-after-ms", "1500"));
    fake.push(Reply::error(429, d.error_body(429, "slow down")).header("retry-after", "3"));
    let p = d.provider(&fake);

    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    assert!(
        matches!(&e, Error::RateLimited { message, .. } if message.contains("slow down")),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));

    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));

    // A streamed call fails before any chunk, so the caller can still retry.
    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
}

async fn server_error_keeps_status_and_excerpt(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::error(
        503,
        d.error_body(503, "the model is overloaded"),
    ));
    fake.push(
        Reply::status(502)
            .header("content-type", "text/html")
            .body("<html><body>502 Bad Gateway</body></html>"),
    );
    // A huge error body is read only in part.
    fake.push(Reply::status(500).body("x".repeat(10 * 1024 * 1024)));
    let p = d.provider(&fake);

    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    match &e {
        Error::Upstream {
            status,
            message,
            body_excerpt,
            ..
        } => {
            assert_eq!(*status, 503);
            assert_eq!(message, "the model is overloaded");
            assert!(body_excerpt.contains("the model is overloaded"));
        }
        other => panic!("expected Upstream, got {other:?}"),
    }
    assert!(e.is_retryable());

    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    match &e {
        Error::Upstream {
            status, message, ..
        } => {
            assert_eq!(*status, 502);
            assert!(message.contains("502 Bad Gateway"), "{message}");
        }
        other => panic!("expected Upstream, got {other:?}"),
    }

    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    match &e {
        Error::Upstream {
            status: 500,
            body_excerpt,
            ..
        } => {
            assert!(body_excerpt.len() <= weir::error::BODY_EXCERPT_LIMIT);
        }
        other => panic!("expected Upstream 500, got {other:?}"),
    }
}

async fn unauthorized_never_leaks_the_key(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    // A careless upstream that echoes the key back.
    let echo = format!("Incorrect API key provided: {KEY}");
    fake.push(Reply::error(401, d.error_body(401, &echo)));
    fake.push(Reply::error(401, d.error_body(401, &echo)));
    let p = d.provider(&fake);

    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_no_key(&e.to_string());
    assert_no_key(&format!("{e:?}"));

    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
    assert_no_key(&format!("{e} {e:?}"));

    // The key went where it belongs, and is in no Debug output.
    d.assert_auth(&fake.last_request().unwrap());
    assert_no_key(&format!("{p:?}"));
    assert_no_key(&format!("{:?}", ctx()));
}

async fn malformed_chunk_is_an_error_item(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    let broken = d.stream_prefix() + "data: {\"id\": \"x\", \"choices\": [tru\n\n";
    let broken = match d {
        Dialect::OpenAi => broken,
        Dialect::Anthropic => {
            broken.replace("data: {\"id\"", "event: content_block_delta\ndata: {\"id\"")
        }
    };
    fake.push(Reply::sse(broken).awkward());
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert_eq!(
        text_of(&chunks),
        "Hello there",
        "chunks before the bad one arrive"
    );
    let e = err.expect("an error item");
    assert!(
        matches!(
            e,
            Error::StreamInterrupted { .. } | Error::InvalidResponse { .. }
        ),
        "{e:?}"
    );
}

async fn error_event_mid_stream(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::sse(
        d.stream_prefix() + &d.error_event("Overloaded right now"),
    ));
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert_eq!(text_of(&chunks), "Hello there");
    let e = err.expect("an error item");
    assert!(matches!(e, Error::StreamInterrupted { .. }), "{e:?}");
    assert!(e.to_string().contains("Overloaded right now"), "{e}");
}

async fn connection_cut_mid_stream(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    let full = d.text_stream(&["Hello", " there", " and more"]);
    let cut = d.stream_prefix().len() + 7; // a few bytes into the next event
    fake.push(Reply::sse(full).awkward().cut_after(cut));
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert_eq!(text_of(&chunks), "Hello there");
    let e = err.expect("an error item");
    assert!(matches!(e, Error::StreamInterrupted { .. }), "{e:?}");
    assert!(e.is_retryable());
}

async fn clean_close_before_the_end(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::sse(d.stream_prefix()));
    let p = d.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert_eq!(text_of(&chunks), "Hello there");
    let e = err.expect("a truncated stream must not pass as complete");
    assert!(matches!(e, Error::StreamInterrupted { .. }), "{e:?}");
}

async fn rate_limit_headers_reach_meta(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(d.chat_body("ok")).headers(d.rate_limit_headers()));
    fake.push(Reply::sse(d.text_stream(&["ok"])).headers(d.rate_limit_headers()));
    let p = d.provider(&fake);

    let up = p.chat(&request("hi"), &ctx()).await.unwrap();
    let rl = up.meta.rate_limit.expect("rate limits parsed");
    let requests = rl.requests.as_ref().expect("a request window");
    assert!(requests.limit.is_some() && requests.remaining.is_some());
    assert!(requests.reset_after.is_some());
    assert!(rl.tokens.is_some());
    assert!(!rl.is_limited_now());
    assert_eq!(up.meta.upstream_request_id.as_deref(), Some(d.request_id()));

    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    assert!(s.meta.rate_limit.is_some());
    assert_eq!(s.meta.upstream_request_id.as_deref(), Some(d.request_id()));
    let (_, err) = collect(s.stream).await;
    assert!(err.is_none());
}

async fn unknown_fields_are_forwarded(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    match d {
        Dialect::OpenAi => {
            fake.push(Reply::json(d.chat_body("ok")));
            fake.push(Reply::sse(d.text_stream(&["ok"])));
            let mut req = request("hi");
            req.extra.insert("logprobs".into(), json!(true));
            req.extra
                .insert("vendor_knob".into(), json!({"depth": [1, 2]}));
            let p = d.provider(&fake);
            p.chat(&req, &ctx()).await.unwrap();
            let body = fake.last_request().unwrap().json().unwrap();
            assert_eq!(body["logprobs"], true);
            assert_eq!(body["vendor_knob"], json!({"depth": [1, 2]}));
            assert_eq!(body["messages"][0]["content"], "hi");

            let s = p.chat_stream(&req, &ctx()).await.unwrap();
            collect(s.stream).await;
            let body = fake.last_request().unwrap().json().unwrap();
            assert_eq!(body["vendor_knob"], json!({"depth": [1, 2]}));
        }
        Dialect::Anthropic => {
            // The native pass-through keeps everything but the model name.
            fake.push(Reply::json(d.chat_body("ok")));
            let req: weir_types::anthropic::MessagesRequest = serde_json::from_value(json!({
                "model": "alias",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
                "service_tier": "standard_only",
                "container": {"id": "c1"},
            }))
            .unwrap();
            let p = d.provider(&fake);
            assert!(p.speaks_anthropic_messages());
            let up = p.messages(&req, &ctx()).await.unwrap();
            assert_eq!(up.body.text(), "ok");
            let body = fake.last_request().unwrap().json().unwrap();
            assert_eq!(body["model"], MODEL);
            assert_eq!(body["service_tier"], "standard_only");
            assert_eq!(body["container"], json!({"id": "c1"}));
            assert_eq!(body["max_tokens"], 64);
        }
    }
}

async fn first_byte_timeout(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::stall());
    fake.push(Reply::stall());
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(150),
        total: Duration::from_secs(10),
    };
    let p = d.provider_with(&fake, timeouts);
    let started = std::time::Instant::now();
    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                phase: TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());
    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                phase: TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn first_byte_timeout_after_headers(d: Dialect) {
    // Headers at once, then nothing: what a queueing server does. The first event is late.
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::sse(d.text_stream(&["late"])).stall_after(0));
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_millis(150),
        total: Duration::from_secs(10),
    };
    let p = d.provider_with(&fake, timeouts);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert!(chunks.is_empty());
    let e = err.expect("a timeout item");
    assert!(
        matches!(
            e,
            Error::Timeout {
                phase: TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{e:?}"
    );
}

async fn total_timeout_and_caller_deadline(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    // A stream that trickles: each event on time, the whole too slow.
    fake.push(
        Reply::sse(d.text_stream(&["a", "b", "c", "d", "e", "f"]))
            .chunked(weir_test_support::Chunking::Every(64))
            .chunk_delay(Duration::from_millis(60)),
    );
    fake.push(Reply::stall());
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        total: Duration::from_millis(300),
    };
    let p = d.provider_with(&fake, timeouts);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (_, err) = collect(s.stream).await;
    let e = err.expect("a timeout item");
    assert!(
        matches!(
            e,
            Error::Timeout {
                phase: TimeoutPhase::Total,
                ..
            }
        ),
        "{e:?}"
    );

    // The caller's deadline wins over a longer first-byte timeout, and is reported as total.
    let p = d.provider(&fake);
    let mut c = ctx();
    c.deadline = Some(tokio::time::Instant::now() + Duration::from_millis(150));
    let started = std::time::Instant::now();
    let e = p.chat(&request("hi"), &c).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                phase: TimeoutPhase::Total,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn connection_refused(d: Dialect) {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = d.config(
        &format!("http://127.0.0.1:{port}/v1?key={KEY}"),
        quick_timeouts(),
    );
    let p: SharedProvider = match d {
        Dialect::OpenAi => std::sync::Arc::new(OpenAiProvider::new(&cfg).unwrap()),
        Dialect::Anthropic => std::sync::Arc::new(AnthropicProvider::new(&cfg, 1024).unwrap()),
    };
    let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::Connection { .. }), "{e:?}");
    assert!(e.is_retryable());
    // Neither the URL's query nor the key appear in the message.
    let text = format!("{e} {e:?} {p:?}");
    assert_no_key(&text);
    assert!(!text.contains("key="), "{text}");
}

async fn json_answer_to_a_stream_request(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(
        json!({"error": {"message": "streaming is disabled", "code": 400}}),
    ));
    fake.push(Reply::json(d.chat_body("not a stream")));
    let p = d.provider(&fake);
    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    assert!(e.to_string().contains("streaming is disabled"), "{e}");
    let e = p.chat_stream(&request("hi"), &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidResponse { .. }), "{e:?}");
}

async fn malformed_success_body(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(
        json!({"unexpected": "shape", "prompt": "private words"}),
    ));
    fake.push(
        Reply::status(200)
            .header("content-type", "application/json")
            .body("{trunc"),
    );
    let p = d.provider(&fake);
    for _ in 0..2 {
        let e = p.chat(&request("hi"), &ctx()).await.unwrap_err();
        assert!(matches!(e, Error::InvalidResponse { .. }), "{e:?}");
        assert!(!e.to_string().contains("private words"), "{e}");
    }
}

async fn lists_models(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    let ids = ["model-a", "model-b"];
    let body = match d {
        Dialect::OpenAi => openai::models(&ids),
        Dialect::Anthropic => anthropic::models(&ids),
    };
    fake.push(Reply::json(body));
    let p = d.provider(&fake);
    let models = p.models(&ctx()).await.unwrap();
    let got: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, ids);
    let r = fake.last_request().unwrap();
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/v1/models");
    d.assert_auth(&r);
    if d == Dialect::Anthropic {
        assert!(models[0].created > 0, "created_at parsed");
    }
}

async fn pooled_connection_is_reused(d: Dialect) {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(d.chat_body("one")));
    fake.push(Reply::sse(d.text_stream(&["two"])));
    fake.push(Reply::sse(d.text_stream(&["three"])));
    fake.push(Reply::json(d.chat_body("four")));
    let p = d.provider(&fake);
    p.chat(&request("hi"), &ctx()).await.unwrap();
    for _ in 0..2 {
        let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
        let (_, err) = collect(s.stream).await;
        assert!(err.is_none());
        // hyper's connection task reads the body's end and pools the connection on its own
        // time; give it a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.chat(&request("hi"), &ctx()).await.unwrap();
    assert_eq!(
        fake.connections(),
        1,
        "one keep-alive connection for all four calls"
    );
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod openai_adapter {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Dialect::OpenAi).await;
                }
            )*
        }
        mod anthropic_adapter {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::Dialect::Anthropic).await;
                }
            )*
        }
    };
}

conformance!(
    simple_chat,
    stream_split_lf,
    stream_split_crlf,
    stream_tool_call,
    rate_limited_with_retry_after,
    server_error_keeps_status_and_excerpt,
    unauthorized_never_leaks_the_key,
    malformed_chunk_is_an_error_item,
    error_event_mid_stream,
    connection_cut_mid_stream,
    clean_close_before_the_end,
    rate_limit_headers_reach_meta,
    unknown_fields_are_forwarded,
    first_byte_timeout,
    first_byte_timeout_after_headers,
    total_timeout_and_caller_deadline,
    connection_refused,
    json_answer_to_a_stream_request,
    malformed_success_body,
    lists_models,
    pooled_connection_is_reused,
);

// --- adapter-specific ------------------------------------------------------------------------

/// OpenAI-compatible servers: no key means no Authorization header (local Ollama, vLLM).
#[tokio::test]
async fn openai_without_key_sends_no_auth() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(openai::chat_completion(MODEL, "ok")));
    let p = Dialect::OpenAi.provider(&fake);
    let mut c = ctx();
    c.api_key = None;
    c.request_id = String::new();
    p.chat(&request("hi"), &c).await.unwrap();
    let r = fake.last_request().unwrap();
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("x-request-id"), None);
}

/// DeepSeek-style reasoning deltas pass through the OpenAI adapter untouched.
#[tokio::test]
async fn openai_reasoning_stream() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(
        Reply::sse(openai::reasoning_stream(
            MODEL,
            &["Let me ", "think."],
            &["42"],
        ))
        .awkward(),
    );
    let p = Dialect::OpenAi.provider(&fake);
    let s = p.chat_stream(&request("hi"), &ctx()).await.unwrap();
    let (chunks, err) = collect(s.stream).await;
    assert!(err.is_none());
    let thinking: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.reasoning_content.as_deref())
        .collect();
    assert_eq!(thinking, "Let me think.");
    assert_eq!(text_of(&chunks), "42");
}

/// OpenAI embeddings reach `/embeddings` with the upstream model; Anthropic has none.
#[tokio::test]
async fn embeddings() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(openai::embeddings(MODEL, 2, 3)));
    let p = Dialect::OpenAi.provider(&fake);
    let req = weir_types::embeddings::EmbeddingsRequest::new("alias", vec!["a".into(), "b".into()]);
    let up = p.embed(&req, &ctx()).await.unwrap();
    assert_eq!(up.body.data.len(), 2);
    let r = fake.last_request().unwrap();
    assert_eq!(r.path, "/v1/embeddings");
    assert_eq!(r.json().unwrap()["model"], MODEL);
    // Already naming the upstream model (as the client sends it): sent as it is.
    fake.push(Reply::json(openai::embeddings(MODEL, 2, 3)));
    let named = weir_types::embeddings::EmbeddingsRequest::new(MODEL, vec!["a".into(), "b".into()]);
    p.embed(&named, &ctx()).await.unwrap();
    let sent = fake.last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], MODEL);
    assert_eq!(sent["input"], json!(["a", "b"]));

    let p = Dialect::Anthropic.provider(&fake);
    let e = p.embed(&req, &ctx()).await.unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
}

/// The native Anthropic stream yields Anthropic's own events, in order, thinking included.
#[tokio::test]
async fn anthropic_native_stream_passes_events_through() {
    use weir_types::anthropic::{BlockDelta, StreamEvent};
    let fake = FakeUpstream::start().await.unwrap();
    let transcript = sse::crlf(&anthropic::thinking_stream(MODEL, &["Hmm", "..."], &["Hi"]));
    fake.push(Reply::sse(transcript).awkward());
    let p = Dialect::Anthropic.provider(&fake);
    let req: weir_types::anthropic::MessagesRequest = serde_json::from_value(json!({
        "model": "alias", "max_tokens": 64, "stream": false,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }))
    .unwrap();
    let s = p.messages_stream(&req, &ctx()).await.unwrap();
    let events: Vec<StreamEvent> = s.stream.map(|e| e.unwrap()).collect().await;
    assert!(matches!(
        events.first(),
        Some(StreamEvent::MessageStart { .. })
    ));
    assert!(matches!(events.last(), Some(StreamEvent::MessageStop)));
    let thinking: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ContentBlockDelta {
                delta: BlockDelta::ThinkingDelta { thinking },
                ..
            } => Some(thinking.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(thinking, "Hmm...");
    let body = fake.last_request().unwrap().json().unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["thinking"]["budget_tokens"], 1024);
}

/// A canonical chat over Anthropic always sends `max_tokens` (Anthropic requires it).
#[tokio::test]
async fn anthropic_chat_fills_max_tokens() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::json(anthropic::message(MODEL, "ok")));
    let p = Dialect::Anthropic.provider(&fake);
    let mut req = request("hi");
    req.max_tokens = None;
    p.chat(&req, &ctx()).await.unwrap();
    assert_eq!(
        fake.last_request().unwrap().json().unwrap()["max_tokens"],
        1024
    );
}
