#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use weir_types::chat::*;

use super::*;
use crate::provider::mock::MockProvider;
use crate::provider::{ChunkStream, Provider, Upstream, UpstreamContext};

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, &|_: &str| None).unwrap()
}

fn client() -> Client {
    Client::new(config("retry:\n  base_delay: 1ms\n  max_delay: 5ms\n")).unwrap()
}

fn req(model: &str, text: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user(text)])
}

#[tokio::test]
async fn chat_carries_metadata() {
    let c = client();
    let done = c.chat(req("mock/echo", "hello")).await.unwrap();
    assert_eq!(done.response.text(), "hello");
    assert_eq!(done.meta.provider, "mock");
    assert_eq!(done.meta.upstream_model, "echo");
    assert_eq!(done.meta.attempts, 1);
    assert_eq!(done.meta.usage.as_ref().unwrap().completion_tokens, 1);
    assert_eq!(done.meta.cost_usd, Some(Decimal::ZERO));
}

#[tokio::test]
async fn bad_requests_fail_before_any_call() {
    let c = client();
    let err = c
        .chat(ChatRequest::new("mock/echo", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 400);
    let err = c.chat(req("nowhere/model", "x")).await.unwrap_err();
    assert_eq!(err.http_status(), 404);
}

/// Fails `failures` times with 503, then answers.
#[derive(Debug)]
struct Flaky {
    failures: u32,
    calls: AtomicU32,
}

#[async_trait]
impl Provider for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            return Err(Error::from_upstream("flaky", 503, None, b"busy", None));
        }
        MockProvider::new("flaky", Default::default())
            .chat(req, ctx)
            .await
    }
    async fn chat_stream(&self, req: &ChatRequest, ctx: &UpstreamContext) -> Result<ChunkStream> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            return Err(Error::from_upstream("flaky", 503, None, b"busy", None));
        }
        MockProvider::new("flaky", Default::default())
            .chat_stream(req, ctx)
            .await
    }
}

#[tokio::test]
async fn retries_retryable_errors_and_counts_attempts() {
    let flaky = Arc::new(Flaky {
        failures: 2,
        calls: AtomicU32::new(0),
    });
    let c = Client::builder(config("retry:\n  base_delay: 1ms\n  max_retries: 2\n"))
        .provider("flaky", flaky.clone())
        .build()
        .unwrap();
    let done = c.chat(req("flaky/echo", "hi")).await.unwrap();
    assert_eq!(done.meta.attempts, 3);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);

    let flaky = Arc::new(Flaky {
        failures: 5,
        calls: AtomicU32::new(0),
    });
    let c = Client::builder(config("retry:\n  base_delay: 1ms\n  max_retries: 2\n"))
        .provider("flaky", flaky.clone())
        .build()
        .unwrap();
    let err = c.chat_stream(req("flaky/echo", "hi")).await.unwrap_err();
    assert_eq!(err.http_status(), 503);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn non_retryable_errors_are_not_retried() {
    let c = client();
    let mut r = req("mock/echo", "x");
    r.extra.insert("mock".into(), json!({"status": 401}));
    let err = c.chat(r).await.unwrap_err();
    assert_eq!(err.http_status(), 401);
    let s = c.status();
    assert_eq!(s.models[0].errors, 1);
}

#[tokio::test]
async fn stream_strips_usage_unless_asked_and_always_accounts() {
    let c = client();
    let s = c.chat_stream(req("mock/echo", "a b c")).await.unwrap();
    let handle = s.summary_handle();
    let chunks: Vec<ChatChunk> = s.map(|c| c.unwrap()).collect().await;
    assert!(chunks.iter().all(|c| c.usage.is_none()));
    let summary = handle.get().unwrap();
    assert!(summary.completed);
    assert_eq!(summary.usage.as_ref().unwrap().completion_tokens, 3);

    let mut r = req("mock/echo", "a b c");
    r.stream_options = Some(StreamOptions {
        include_usage: Some(true),
        extra: Default::default(),
    });
    let s = c.chat_stream(r).await.unwrap();
    let chunks: Vec<ChatChunk> = s.map(|c| c.unwrap()).collect().await;
    assert!(chunks.last().unwrap().usage.is_some());

    let totals = &c.status().models[0];
    assert_eq!(totals.calls, 2);
    assert_eq!(totals.completion_tokens, 6);
}

#[tokio::test]
async fn dropped_stream_is_still_accounted() {
    let c = client();
    let mut s = c.chat_stream(req("mock/lorem", "x")).await.unwrap();
    let handle = s.summary_handle();
    let _ = s.next().await;
    let _ = s.next().await;
    drop(s);
    let summary = handle.get().unwrap();
    assert!(!summary.completed);
    assert!(summary.usage_estimated);
    assert!(summary.usage.as_ref().unwrap().prompt_tokens > 0);
    assert_eq!(c.status().models[0].calls, 1);
}

#[tokio::test]
async fn mid_stream_failure_ends_with_one_error() {
    let c = client();
    let mut r = req("mock/echo", "a b c d e");
    r.extra.insert("mock".into(), json!({"cut_after": 3}));
    let items: Vec<_> = c.chat_stream(r).await.unwrap().collect().await;
    assert_eq!(items.len(), 4);
    assert!(items[3].is_err());
}

#[tokio::test]
async fn batch_keeps_order_and_isolates_failures() {
    let c = client();
    let mut reqs: Vec<ChatRequest> = (0..10)
        .map(|i| req("mock/echo", &format!("n{i}")))
        .collect();
    reqs[4].extra.insert("mock".into(), json!({"status": 400}));
    let out = c.batch(reqs, 3).await;
    assert_eq!(out.len(), 10);
    for (i, r) in out.iter().enumerate() {
        if i == 4 {
            assert!(r.is_err());
        } else {
            assert_eq!(r.as_ref().unwrap().response.text(), format!("n{i}"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn one_deadline_bounds_hangs() {
    let c = Client::new(config("defaults:\n  request_timeout: 2s\n")).unwrap();
    let mut r = req("mock/echo", "x");
    r.extra.insert("mock".into(), json!({"hang": true}));
    let started = Instant::now();
    let err = c.chat(r).await.unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn embeddings_and_models() {
    let c = client();
    let out = c
        .embed(weir_types::embeddings::EmbeddingsRequest::new(
            "mock/echo",
            vec!["a".into(), "b".into()],
        ))
        .await
        .unwrap();
    assert_eq!(out.response.data.len(), 2);
    let ids: Vec<String> = c.models().into_iter().map(|m| m.id).collect();
    assert!(ids.contains(&"mock/echo".to_owned()));
    assert!(c.model("mock/lorem").is_some());
}
