//! Chaos: one healthy deployment among deployments failing in every injected way, driven
//! over real HTTP through fake upstreams: 1,000 requests per fault, 100 in flight at a time
//! (the fakes, the client and the test share two cores in a debug build; more in flight only
//! measures the machine, not the policies).
//!
//! Each scenario asserts that at least 99.9% of requests succeed, that no request outlives its
//! deadline, and prints the success rate and latency percentiles (run with `--nocapture` to
//! see them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weir::{CallContext, Client, Config};
use weir_test_support::{FakeUpstream, Reply, openai};
use weir_types::chat::{ChatRequest, Message};

const REQUESTS: usize = 1000;
const DEADLINE: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 100;

fn healthy() -> Reply {
    Reply::json(openai::chat_completion("m", "ok"))
}

fn healthy_stream() -> Reply {
    Reply::sse(openai::text_stream("m", &["o", "k"]))
}

fn config(healthy: &FakeUpstream, faulty: &FakeUpstream, extra: &str) -> Config {
    let yaml = format!(
        r#"
defaults:
  request_timeout: {deadline}ms
retry:
  max_retries: 3
  base_delay: 10ms
  max_delay: 100ms
circuit_breaker:
  consecutive_failures: 5
  cooldown: 10s
providers:
  good:
    kind: openai
    base_url: {good}
    api_key: k-good
    timeouts: {{ first_byte: 1s, total: 3s }}
  bad:
    kind: openai
    base_url: {bad}
    api_key: k-bad
    timeouts: {{ first_byte: 1s, total: 3s }}
models:
  chaos:
    strategy: round_robin
    deployments: [bad/m, good/m]
{extra}
"#,
        deadline = DEADLINE.as_millis(),
        good = healthy.v1(),
        bad = faulty.v1(),
    );
    Config::from_yaml(&yaml, &|_: &str| None).unwrap()
}

struct Outcome {
    ok: usize,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    }
}

async fn run(client: &Client, stream: bool) -> Outcome {
    let client = Arc::new(client.clone());
    let tasks: Vec<_> = futures::stream::iter(0..REQUESTS)
        .map(|i| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let req = ChatRequest::new("chaos", vec![Message::user(format!("q{i}"))]);
                let opts = CallContext::default();
                let started = tokio::time::Instant::now();
                let err = if stream {
                    match client.chat_stream_with(req, opts.clone()).await {
                        Ok(s) => {
                            let items: Vec<_> = s.collect().await;
                            items
                                .into_iter()
                                .find_map(Result::err)
                                .map(|e| e.to_string())
                        }
                        Err(e) => Some(e.to_string()),
                    }
                } else {
                    client
                        .chat_with(req, opts)
                        .await
                        .err()
                        .map(|e| e.to_string())
                };
                (err, started.elapsed())
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut out = Outcome {
        ok: 0,
        latencies: Vec::new(),
    };
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for t in tasks {
        let (err, took) = t.unwrap();
        match err {
            None => out.ok += 1,
            Some(e) => *errors.entry(e).or_default() += 1,
        }
        out.latencies.push(took);
    }
    for (e, n) in errors.iter().take(5) {
        eprintln!("  {n} x {e}");
    }
    out
}

async fn scenario(name: &str, faulty_reply: Reply, stream: bool) {
    let good = FakeUpstream::start().await.unwrap();
    let bad = FakeUpstream::start().await.unwrap();
    good.set_default(if stream { healthy_stream() } else { healthy() });
    bad.set_default(faulty_reply);
    let client = Client::new(config(&good, &bad, "")).unwrap();
    let out = run(&client, stream).await;
    let rate = out.ok as f64 / REQUESTS as f64;
    let max = out.pct(1.0);
    eprintln!(
        "chaos {name:<28} success {:>6.2}%  p50 {:>7.1?}  p99 {:>7.1?}  max {:>7.1?}  upstream calls: good {} bad {}",
        rate * 100.0,
        out.pct(0.50),
        out.pct(0.99),
        max,
        good.request_count(),
        bad.request_count(),
    );
    assert!(rate >= 0.999, "{name}: only {:.2}% succeeded", rate * 100.0);
    // Small slack for the scheduler: the deadline is enforced by a timer.
    assert!(
        max <= DEADLINE + Duration::from_millis(250),
        "{name}: a request took {max:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_server_errors() {
    scenario(
        "500s",
        Reply::error(500, openai::error("boom", "server_error", None)),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_overloaded_503_with_retry_after() {
    let reply = Reply::error(503, openai::error("overloaded", "server_error", None))
        .header("retry-after", "30");
    scenario("503 + retry-after 30s", reply, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_rate_limited() {
    let reply = Reply::error(
        429,
        openai::error("slow down", "requests", Some("rate_limit_exceeded")),
    )
    .header("retry-after", "20");
    scenario("429 + retry-after 20s", reply, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_hangs() {
    scenario("hang (no first byte)", Reply::stall(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_connection_resets() {
    let reply = Reply::json(openai::chat_completion("m", "never arrives")).cut_after(3);
    scenario("connection reset mid-body", reply, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_garbled_responses() {
    let reply = Reply::status(200)
        .header("content-type", "application/json")
        .body("{not json");
    scenario("garbled 200", reply, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_streams_failing_before_first_byte() {
    scenario(
        "stream 500s",
        Reply::error(502, openai::error("bad gateway", "server_error", None)),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_streams_stalling_after_headers() {
    // 200 and headers at once, then no event: the first-byte timeout covers the first event.
    scenario(
        "stream stalls after headers",
        healthy_stream().stall_after(0),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_slow_headers() {
    // Headers only after longer than the per-attempt first-byte timeout (1 s).
    scenario(
        "headers after 1.5 s",
        healthy().delay(Duration::from_millis(1500)),
        false,
    )
    .await;
}
