//! The execution engine's decisions, with scripted providers on tokio's paused clock:
//! failover order, fallbacks (general, context window), permanent errors, hedging with loser
//! cancellation, breakers opening and manual reset, one deadline, Retry-After handling; and
//! over HTTP: a 429 moves the request to another key, and key limits are never over-admitted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use weir::error::{Error, ErrorKind, Result};
use weir::provider::mock::MockProvider;
use weir::provider::{ChunkStream, Provider, Upstream, UpstreamContext};
use weir::{Client, Config};
use weir_test_support::{FakeUpstream, Reply, openai};
use weir_types::chat::{ChatRequest, ChatResponse, Message};

/// What a scripted provider does on every call.
#[derive(Debug, Clone)]
enum Script {
    Ok {
        latency: Duration,
    },
    Fail {
        status: u16,
        message: &'static str,
        retry_after: Option<Duration>,
    },
    Hang,
}

#[derive(Debug)]
struct Scripted {
    name: String,
    script: Script,
    calls: AtomicU32,
    /// Calls whose future was dropped before it finished (cancelled by the engine).
    cancelled: Arc<AtomicU32>,
}

struct CancelGuard(Arc<AtomicU32>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Scripted {
    fn new(name: &str, script: Script) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            script,
            calls: AtomicU32::new(0),
            cancelled: Arc::new(AtomicU32::new(0)),
        })
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn cancelled(&self) -> u32 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> Result<Upstream<ChatResponse>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = CancelGuard(Arc::clone(&self.cancelled), false);
        let out = match &self.script {
            Script::Ok { latency } => {
                tokio::time::sleep(*latency).await;
                let mut ctx = ctx.clone();
                ctx.upstream_model = "echo".into();
                MockProvider::new(self.name.clone(), Default::default())
                    .chat(req, &ctx)
                    .await
            }
            Script::Fail {
                status,
                message,
                retry_after,
            } => Err(Error::from_upstream(
                &self.name,
                *status,
                Some((*message).to_owned()),
                b"",
                *retry_after,
            )),
            Script::Hang => futures::future::pending().await,
        };
        guard.1 = true;
        out
    }

    async fn chat_stream(&self, _req: &ChatRequest, _ctx: &UpstreamContext) -> Result<ChunkStream> {
        Err(self.unsupported("streaming in this test"))
    }
}

fn scripted_client(yaml: &str, providers: &[&Arc<Scripted>]) -> Client {
    let config = Config::from_yaml(yaml, &|_: &str| None).unwrap();
    let mut b = Client::builder(config);
    for p in providers {
        b = b.provider(p.name.clone(), Arc::clone(p) as Arc<dyn Provider>);
    }
    b.build().unwrap()
}

fn req(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![Message::user("hello")])
}

fn ok() -> Script {
    Script::Ok {
        latency: Duration::from_millis(10),
    }
}

fn fail(status: u16) -> Script {
    Script::Fail {
        status,
        message: "scripted failure",
        retry_after: None,
    }
}

/// Config entries for the scripted providers: groups may only name configured providers, so
/// each gets an OpenAI-kind placeholder that the builder's registration then replaces.
fn placeholders(names: &[&str]) -> String {
    let mut s = String::from("providers:\n");
    for n in names {
        s.push_str(&format!(
            "  {n}:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n"
        ));
    }
    s
}

#[tokio::test(start_paused = true)]
async fn priority_failover_skips_the_failing_deployment() {
    let a = Scripted::new("a", fail(500));
    let b = Scripted::new("b", ok());
    let c = Scripted::new("c", ok());
    let yaml = format!(
        "{}models:\n  g:\n    strategy: priority\n    deployments:\n      - {{ model: a/m, priority: 0 }}\n      - {{ model: b/m, priority: 1 }}\n      - {{ model: c/m, priority: 2 }}\n",
        placeholders(&["a", "b", "c"])
    );
    let client = scripted_client(&yaml, &[&a, &b, &c]);
    let done = client.chat(req("g")).await.unwrap();
    assert_eq!(done.meta.provider, "b");
    assert_eq!(done.meta.attempts, 2);
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_do_not_fail_over() {
    let a = Scripted::new("a", fail(400));
    let b = Scripted::new("b", ok());
    let yaml = format!(
        "{}models:\n  g:\n    strategy: priority\n    deployments: [a/m, {{ model: b/m, priority: 1 }}]\n    fallbacks: [b/m]\n",
        placeholders(&["a", "b"])
    );
    let client = scripted_client(&yaml, &[&a, &b]);
    let err = client.chat(req("g")).await.unwrap_err();
    assert_eq!(err.http_status(), 400);
    assert_eq!(b.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_models_after_the_group_fails() {
    let a = Scripted::new("a", fail(503));
    let b = Scripted::new("b", ok());
    let yaml = format!(
        "{}retry:\n  max_retries: 1\n  base_delay: 10ms\nmodels:\n  primary:\n    deployments: [a/m]\n    fallbacks: [backup]\n  backup: b/m\n",
        placeholders(&["a", "b"])
    );
    let client = scripted_client(&yaml, &[&a, &b]);
    let done = client.chat(req("primary")).await.unwrap();
    assert_eq!(done.meta.provider, "b");
    assert_eq!(
        a.calls(),
        2,
        "one retry on the only deployment, then the fallback"
    );
}

#[tokio::test(start_paused = true)]
async fn context_window_errors_go_to_their_own_fallbacks() {
    let small = Scripted::new(
        "small",
        Script::Fail {
            status: 400,
            message: "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            retry_after: None,
        },
    );
    let big = Scripted::new("big", ok());
    let other = Scripted::new("other", ok());
    let yaml = format!(
        "{}models:\n  g:\n    deployments: [small/m]\n    fallbacks: [other/m]\n    context_window_fallbacks: [big/m]\n",
        placeholders(&["small", "big", "other"])
    );
    let client = scripted_client(&yaml, &[&small, &big, &other]);
    let done = client.chat(req("g")).await.unwrap();
    assert_eq!(done.meta.provider, "big");
    assert_eq!(other.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn hedge_wins_and_the_loser_is_cancelled() {
    let slow = Scripted::new(
        "slow",
        Script::Ok {
            latency: Duration::from_secs(5),
        },
    );
    let fast = Scripted::new(
        "fast",
        Script::Ok {
            latency: Duration::from_millis(20),
        },
    );
    let yaml = format!(
        "{}models:\n  g:\n    strategy: priority\n    deployments: [slow/m, {{ model: fast/m, priority: 1 }}]\n    hedge: {{ after: 100ms }}\n",
        placeholders(&["slow", "fast"])
    );
    let client = scripted_client(&yaml, &[&slow, &fast]);
    let started = Instant::now();
    let done = client.chat(req("g")).await.unwrap();
    assert_eq!(done.meta.provider, "fast");
    assert_eq!(started.elapsed(), Duration::from_millis(120));
    assert_eq!(done.meta.attempts, 2);
    assert_eq!((slow.calls(), fast.calls()), (1, 1));
    assert_eq!(
        slow.cancelled(),
        1,
        "the losing attempt is dropped, cancelling its call"
    );
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_answers_in_time() {
    let a = Scripted::new(
        "a",
        Script::Ok {
            latency: Duration::from_millis(50),
        },
    );
    let b = Scripted::new("b", ok());
    let yaml = format!(
        "{}models:\n  g:\n    strategy: priority\n    deployments: [a/m, {{ model: b/m, priority: 1 }}]\n    hedge: {{ after: 100ms }}\n",
        placeholders(&["a", "b"])
    );
    let client = scripted_client(&yaml, &[&a, &b]);
    let done = client.chat(req("g")).await.unwrap();
    assert_eq!(done.meta.provider, "a");
    assert_eq!(b.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_then_fails_fast_and_resets_by_hand() {
    let a = Scripted::new("a", fail(500));
    let yaml = format!(
        "{}retry:\n  max_retries: 0\ncircuit_breaker:\n  consecutive_failures: 3\n  cooldown: 60s\n",
        placeholders(&["a"])
    );
    let client = scripted_client(&yaml, &[&a]);
    for _ in 0..3 {
        assert_eq!(
            client.chat(req("a/m")).await.unwrap_err().http_status(),
            500
        );
    }
    let err = client.chat(req("a/m")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert!(err.retry_after().is_some());
    assert_eq!(a.calls(), 3, "an open breaker sends nothing upstream");
    let status = client.status();
    let d = status
        .deployments
        .iter()
        .find(|d| d.deployment.id == "a/m")
        .unwrap();
    assert_eq!(d.breaker.state, weir::breaker::BreakerState::Open);

    assert_eq!(client.reset_circuits(Some("a/m")), 1);
    assert_eq!(
        client.chat(req("a/m")).await.unwrap_err().http_status(),
        500
    );
    assert_eq!(a.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn one_deadline_bounds_every_attempt_and_wait() {
    let a = Scripted::new("a", Script::Hang);
    let b = Scripted::new("b", Script::Hang);
    let yaml = format!(
        "{}defaults:\n  request_timeout: 3s\nmodels:\n  g:\n    deployments: [a/m, b/m]\n",
        placeholders(&["a", "b"])
    );
    let client = scripted_client(&yaml, &[&a, &b]);
    let started = Instant::now();
    let err = client.chat(req("g")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_that_fits_is_waited_one_that_does_not_fails_fast() {
    let short = Scripted::new(
        "short",
        Script::Fail {
            status: 503,
            message: "busy",
            retry_after: Some(Duration::from_secs(2)),
        },
    );
    let yaml = format!(
        "{}defaults:\n  request_timeout: 10s\nretry:\n  max_retries: 2\n",
        placeholders(&["short"])
    );
    let client = scripted_client(&yaml, &[&short]);
    let started = Instant::now();
    let err = client.chat(req("short/m")).await.unwrap_err();
    assert_eq!(err.http_status(), 503);
    assert_eq!(short.calls(), 3);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4),
        "two waits of the upstream's 2 s"
    );

    let long = Scripted::new(
        "long",
        Script::Fail {
            status: 429,
            message: "quota",
            retry_after: Some(Duration::from_secs(60)),
        },
    );
    let yaml = format!(
        "{}defaults:\n  request_timeout: 10s\n",
        placeholders(&["long"])
    );
    let client = scripted_client(&yaml, &[&long]);
    let started = Instant::now();
    let err = client.chat(req("long/m")).await.unwrap_err();
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(60)),
        "the hint is passed on"
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(long.calls(), 1);
}

#[tokio::test]
async fn a_429_moves_the_request_to_another_key() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(
        Reply::error(429, openai::error("slow down", "requests", None)).header("retry-after", "30"),
    );
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o", "hi")));
    let yaml = format!(
        "providers:\n  oai:\n    kind: openai\n    base_url: {}\n    api_keys: [k-one, k-two]\n",
        fake.v1()
    );
    let client = Client::new(Config::from_yaml(&yaml, &|_: &str| None).unwrap()).unwrap();
    let done = client.chat(req("oai/gpt-4o")).await.unwrap();
    let keys: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "the retry used the other key");
    assert_eq!(done.meta.attempts, 2);
    let status = client.status();
    let limited: Vec<&str> = status
        .keys
        .iter()
        .filter(|k| k.limited_now)
        .map(|k| k.key_id.as_str())
        .collect();
    assert_eq!(limited.len(), 1, "the key that got the 429 is benched");
}

#[tokio::test]
async fn key_limits_are_never_over_admitted_under_concurrency() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o", "hi")));
    let yaml = format!(
        "retry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_keys:\n      - {{ key: k1, limits: {{ requests_per_minute: 20 }} }}\n      - {{ key: k2, limits: {{ requests_per_minute: 30 }} }}\n    pool: {{ acquire_timeout: 300ms }}\n",
        fake.v1()
    );
    let client = Client::new(Config::from_yaml(&yaml, &|_: &str| None).unwrap()).unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(req("oai/gpt-4o")).await })
        })
        .collect();
    let mut ok = 0;
    let mut exhausted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.http_status(), 429, "{e}");
                assert!(e.retry_after().is_some());
                exhausted += 1;
            }
        }
    }
    // 50 requests of capacity, plus at most 50/60 per second refilled while the test runs.
    assert!(ok >= 50, "capacity was used: {ok}");
    assert!(ok <= 51, "over-admitted: {ok}");
    assert_eq!(ok + exhausted, 1000);
    assert_eq!(fake.request_count(), ok);
}

/// Input tokens are first reserved as an upper bound (the text's bytes) and counted exactly
/// only when no key has room for the bound: a key too small for the bound but big enough for
/// the real count still serves, and its usage settles to what the upstream reported.
#[tokio::test]
async fn a_key_too_small_for_the_bound_is_asked_again_with_the_exact_count() {
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o", "hi")));
    // "hello " is one o200k token per 6 bytes: 100 of them are ~100 tokens, 600 bytes.
    let prompt = "hello ".repeat(100);
    let exact = weir::tokens::count_request_tokens(&ChatRequest::new(
        "oai/gpt-4o",
        vec![Message::user(prompt.clone())],
    ));
    assert!(exact < 200, "{exact}");
    let yaml = format!(
        "retry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_keys:\n      - {{ key: k1, limits: {{ input_tokens_per_minute: 300 }} }}\n    pool: {{ acquire_timeout: 100ms }}\n",
        fake.v1()
    );
    let client = Client::new(Config::from_yaml(&yaml, &|_: &str| None).unwrap()).unwrap();
    let mut r = ChatRequest::new("oai/gpt-4o", vec![Message::user(prompt)]);
    r.max_tokens = Some(16);
    let done = client.chat(r).await.expect("the exact count fits the key");
    assert_eq!(done.response.choices.len(), 1);
    assert_eq!(fake.request_count(), 1);
}

/// With one deployment a request queues for its key, but only once it is counted exactly: a
/// bound that does not fit the key's headroom now is counted first, and the exact count may
/// fit at once.
#[tokio::test]
async fn a_bound_that_does_not_fit_now_is_counted_before_queueing() {
    // Built up front so the timing below measures queueing, not the tokenizer's build.
    weir::tokens::warm_up();
    let fake = FakeUpstream::start().await.unwrap();
    let mut big = openai::chat_completion("gpt-4o", "hi");
    big["usage"] =
        serde_json::json!({"prompt_tokens": 300, "completion_tokens": 1, "total_tokens": 301});
    fake.push(Reply::json(big));
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o", "hi")));
    let yaml = format!(
        "retry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_keys:\n      - {{ key: k1, limits: {{ input_tokens_per_minute: 700 }} }}\n    pool: {{ acquire_timeout: 2s }}\n",
        fake.v1()
    );
    let client = Client::new(Config::from_yaml(&yaml, &|_: &str| None).unwrap()).unwrap();
    let ask = |text: String| {
        let mut r = ChatRequest::new("oai/gpt-4o", vec![Message::user(text)]);
        r.max_tokens = Some(16);
        r
    };
    // Settles to the 300 prompt tokens the upstream reports: 400 of 700 left.
    client.chat(ask("first".into())).await.unwrap();
    // ~100 tokens, 600 bytes: the bound does not fit the 400 left, the count does. Waiting
    // for the bound to fit would take ~18 s of refill, past the 2 s acquire timeout.
    let started = std::time::Instant::now();
    client.chat(ask("hello ".repeat(100))).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "served at once, not after waiting for the bound to fit: {:?}",
        started.elapsed()
    );
    assert_eq!(fake.request_count(), 2);
}
