//! The call pipeline: one usage event per call whatever the operation, and the seams
//! (usage sinks, admissions, attempt observers) seeing what they promise to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::json;
use weir::pipeline::{
    Admission, AdmissionRequest, Admitted, AttemptInfo, AttemptObserver, AttemptOutcome,
    CacheOutcome, Operation, Outcome, Reservation, UsageEvent, UsageSink, rejected,
};
use weir::provider::mock::MockProvider;
use weir::provider::{ChunkStream, Provider, Upstream, UpstreamContext};
use weir::{Client, Config, Error};
use weir_types::anthropic::MessagesRequest;
use weir_types::chat::{ChatRequest, ChatResponse, Message};
use weir_types::embeddings::EmbeddingsRequest;

/// Keeps every event it is given.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<UsageEvent>>);

impl UsageSink for Recorder {
    fn record(&self, event: &UsageEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<UsageEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const CONFIG: &str = "
retry: { max_retries: 0 }
pricing:
  mock/echo: { input: 1.0, output: 2.0 }
cache:
  enabled: true
  memory: { enabled: true, max_bytes: 1MiB }
models:
  fast: mock/echo
";

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, &|_: &str| None).unwrap()
}

fn recorded_client(yaml: &str) -> (Client, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let client = Client::builder(config(yaml))
        .usage_sink(recorder.clone())
        .build()
        .unwrap();
    (client, recorder)
}

fn chat(text: &str, temperature: f64, mock: serde_json::Value) -> ChatRequest {
    let mut r = ChatRequest::new("fast", vec![Message::user(text)]);
    r.temperature = Some(temperature);
    if !mock.is_null() {
        r.extra.insert("mock".into(), mock);
    }
    r
}

fn messages(text: &str, stream: bool) -> MessagesRequest {
    serde_json::from_value(json!({
        "model": "fast", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }))
    .unwrap()
}

/// Dollars for mock/echo at $1 / $2 per million input / output tokens.
fn price(input: u64, output: u64) -> Decimal {
    (Decimal::from(input) + Decimal::from(2 * output)) / Decimal::from(1_000_000)
}

/// The one event of a call, checked for its operation, outcome, status and cache verdict.
fn only(events: Vec<UsageEvent>, op: Operation, outcome: Outcome, status: u16) -> UsageEvent {
    assert_eq!(events.len(), 1, "{op:?}: {events:#?}");
    let e = events.into_iter().next().unwrap();
    assert_eq!(
        (e.operation, e.outcome, e.status),
        (op, outcome, status),
        "{e:#?}"
    );
    e
}

#[tokio::test]
async fn every_operation_emits_exactly_one_usage_event_with_its_tokens_cost_and_status() {
    let (client, events) = recorded_client(CONFIG);

    // Chat (sampled, so the cache does not apply): "hello there" is 2 words + 3 = 5 in, 2 out.
    let done = client
        .chat(chat("hello there", 0.7, json!(null)))
        .await
        .unwrap();
    let e = only(events.take(), Operation::Chat, Outcome::Success, 200);
    assert_eq!((e.tokens.input, e.tokens.output), (5, 2));
    assert_eq!(e.cost_usd, Some(price(5, 2)));
    assert_eq!(e.cost_usd, done.meta.cost_usd);
    assert_eq!(e.cache, CacheOutcome::Bypass);
    assert_eq!(e.route.as_ref().unwrap().deployment(), "mock/echo");
    assert_eq!((e.attempts, e.context.model.as_str()), (1, "fast"));

    // Chat stream, drained.
    let stream = client
        .chat_stream(chat("one two three", 0.7, json!(null)))
        .await
        .unwrap();
    let _: Vec<_> = stream.collect().await;
    let e = only(events.take(), Operation::ChatStream, Outcome::Success, 200);
    assert_eq!((e.tokens.input, e.tokens.output), (6, 3));
    assert_eq!(e.cost_usd, Some(price(6, 3)));
    assert!(!e.tokens_estimated);
    assert!(e.latency.first_token.is_some());

    // Embeddings.
    let out = client
        .embed(EmbeddingsRequest::new(
            "mock/echo",
            vec!["a b c".to_owned()],
        ))
        .await
        .unwrap();
    let e = only(events.take(), Operation::Embeddings, Outcome::Success, 200);
    assert_eq!(e.tokens.input, out.response.usage.prompt_tokens);
    assert_eq!(e.tokens.output, 0);
    assert_eq!(e.cost_usd, Some(price(e.tokens.input, 0)));

    // Messages, translated to the mock.
    let out = client.messages(messages("hi you", false)).await.unwrap();
    let e = only(events.take(), Operation::Messages, Outcome::Success, 200);
    assert_eq!(e.tokens.output, out.response.usage.output_tokens);
    assert_eq!(e.tokens.input, out.response.usage.input_tokens);
    assert_eq!(e.cost_usd, Some(price(e.tokens.input, e.tokens.output)));

    // Messages stream, drained.
    let stream = client
        .messages_stream(messages("hi you", true))
        .await
        .unwrap();
    let _: Vec<_> = stream.collect().await;
    let e = only(
        events.take(),
        Operation::MessagesStream,
        Outcome::Success,
        200,
    );
    assert_eq!((e.tokens.input, e.tokens.output), (5, 2));
    assert_eq!(e.cost_usd, Some(price(5, 2)));

    // Cache: a miss pays, the hit after it is free and carries the same tokens.
    client
        .chat(chat("cached words", 0.0, json!(null)))
        .await
        .unwrap();
    let miss = only(events.take(), Operation::Chat, Outcome::Success, 200);
    assert_eq!(miss.cache, CacheOutcome::Miss);
    assert_eq!(miss.cost_usd, Some(price(5, 2)));
    let hit = client
        .chat(chat("cached words", 0.0, json!(null)))
        .await
        .unwrap();
    let e = only(events.take(), Operation::Chat, Outcome::Success, 200);
    assert_eq!(e.cache, CacheOutcome::Hit);
    assert_eq!((e.tokens.input, e.tokens.output, e.attempts), (5, 2, 0));
    assert_eq!(e.cost_usd, Some(Decimal::ZERO));
    assert_eq!(hit.meta.cost_usd, Some(Decimal::ZERO));

    // A streamed hit: free too, with the answer's tokens.
    let stream = client
        .chat_stream(chat("cached words", 0.0, json!(null)))
        .await
        .unwrap();
    let _: Vec<_> = stream.collect().await;
    let e = only(events.take(), Operation::ChatStream, Outcome::Success, 200);
    assert_eq!((e.cache, e.tokens.output), (CacheOutcome::Hit, 2));
    assert_eq!(e.cost_usd, Some(Decimal::ZERO));

    // Single flight: the leader pays, its follower shares the answer for free.
    let slow = json!({"latency_ms": 300});
    let (a, b) = tokio::join!(
        client.chat(chat("shared answer", 0.0, slow.clone())),
        client.chat(chat("shared answer", 0.0, slow.clone())),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.meta.coalesced != b.meta.coalesced, "one of them followed");
    let mut both = events.take();
    assert_eq!(both.len(), 2, "{both:#?}");
    both.sort_by_key(|e| e.cache == CacheOutcome::Coalesced);
    assert_eq!(both[0].cache, CacheOutcome::Miss);
    assert_eq!(both[0].cost_usd, Some(price(5, 2)));
    assert_eq!(both[1].cache, CacheOutcome::Coalesced);
    assert_eq!(both[1].cost_usd, Some(Decimal::ZERO));
    assert_eq!((both[1].tokens.output, both[1].attempts), (2, 0));

    // Failure: the upstream's status and error kind, no tokens, and so nothing spent (a
    // zero cost, not an unknown one: the model has a price).
    let err = client
        .chat(chat("boom", 0.7, json!({"status": 500})))
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 500);
    let e = only(events.take(), Operation::Chat, Outcome::Failure, 500);
    assert_eq!(e.error, Some(weir::ErrorKind::Upstream));
    assert_eq!(e.route.unwrap().deployment(), "mock/echo");
    assert_eq!((e.tokens.input, e.cost_usd), (0, Some(Decimal::ZERO)));

    // A model that routes nowhere: refused before routing, still one event.
    let mut nowhere = chat("x", 0.7, json!(null));
    nowhere.model = "nowhere-model".into();
    client.chat(nowhere).await.unwrap_err();
    let e = only(events.take(), Operation::Chat, Outcome::Failure, 404);
    assert!(e.route.is_none());

    // Disconnect mid-stream: counted with an estimate when the usage never came.
    let mut stream = client
        .chat_stream(chat("a b c d e f g h", 0.7, json!({"inter_token_ms": 50})))
        .await
        .unwrap();
    // The role chunk, then the first word.
    stream.next().await.unwrap().unwrap();
    stream.next().await.unwrap().unwrap();
    assert!(events.take().is_empty(), "nothing before the end");
    drop(stream);
    let e = only(
        events.take(),
        Operation::ChatStream,
        Outcome::Disconnected,
        499,
    );
    assert!(e.tokens_estimated);
    assert!(e.tokens.input > 0 && e.tokens.output > 0, "{e:#?}");
    assert_eq!(e.cost_usd, Some(price(e.tokens.input, e.tokens.output)));
}

#[tokio::test]
async fn status_counts_each_deployment_once_whatever_name_was_used_and_counts_hits() {
    let (client, _) = recorded_client(CONFIG);
    client.chat(chat("a", 0.0, json!(null))).await.unwrap();
    client.chat(chat("a", 0.0, json!(null))).await.unwrap();
    client
        .chat(chat("b", 0.7, json!({"status": 500})))
        .await
        .unwrap_err();
    let mut direct = chat("c", 0.7, json!(null));
    direct.model = "mock/echo".into();
    client.chat(direct).await.unwrap();
    let models = client.status().models;
    assert_eq!(models.len(), 1, "{models:#?}");
    let row = &models[0];
    assert_eq!(row.model, "mock/echo");
    assert_eq!((row.calls, row.errors, row.cache_hits), (4, 1, 1));
}

/// Refuses calls for the `blocked` user; otherwise reserves and settles token counts.
#[derive(Debug, Default)]
struct DailyQuota {
    reserved: AtomicU32,
    settled: Mutex<Vec<(u64, u64, u64)>>,
}

#[async_trait]
impl Admission for DailyQuota {
    async fn reserve(&self, request: &AdmissionRequest<'_>) -> weir::Result<Admitted> {
        if request.context.principal.user.as_deref() == Some("blocked") {
            return Err(rejected(
                429,
                "quota_exceeded",
                "the daily quota of user `blocked` is spent; it resets at midnight UTC",
            ));
        }
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Ok(Admitted::new(Box::new(request.input_tokens)))
    }

    fn settle(&self, reservation: Reservation, event: &UsageEvent) {
        let estimate = *reservation.downcast::<u64>().unwrap();
        self.settled
            .lock()
            .unwrap()
            .push((estimate, event.tokens.input, event.tokens.output));
    }

    fn release(&self, _reservation: Reservation) {}
}

#[tokio::test]
async fn an_admission_refuses_with_a_typed_4xx_and_settles_admitted_calls_with_real_usage() {
    let quota = Arc::new(DailyQuota::default());
    let recorder = Arc::new(Recorder::default());
    let client = Client::builder(config(CONFIG))
        .admission(quota.clone())
        .usage_sink(recorder.clone())
        .build()
        .unwrap();
    let mut ctx = weir::CallContext::default();
    ctx.principal.user = Some("blocked".into());
    let err = client
        .chat_with(chat("hi", 0.7, json!(null)), ctx)
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), 429);
    assert!(matches!(
        err,
        Error::Rejected {
            code: "quota_exceeded",
            ..
        }
    ));
    assert!(err.to_string().contains("resets at midnight"), "{err}");
    let e = only(recorder.take(), Operation::Chat, Outcome::Failure, 429);
    assert_eq!(e.error, Some(weir::ErrorKind::Rejected));
    assert_eq!(e.attempts, 0);
    assert!(quota.settled.lock().unwrap().is_empty());

    client
        .chat(chat("hello there", 0.7, json!(null)))
        .await
        .unwrap();
    let stream = client
        .chat_stream(chat("one two three", 0.7, json!(null)))
        .await
        .unwrap();
    drop(stream.collect::<Vec<_>>().await);
    let settled = quota.settled.lock().unwrap().clone();
    assert_eq!(quota.reserved.load(Ordering::SeqCst), 2);
    assert_eq!(settled.len(), 2);
    assert_eq!((settled[0].1, settled[0].2), (5, 2), "the real usage");
    assert_eq!((settled[1].1, settled[1].2), (6, 3));
    assert!(settled[0].0 >= 5, "the estimate is an upper bound here");
}

/// One attempt as seen: deployment, number, hedge, and how it ended.
type Seen = (String, u32, bool, Option<AttemptOutcome>);

/// Records every attempt it sees.
#[derive(Debug, Default)]
struct Attempts(Mutex<Vec<Seen>>);

impl AttemptObserver for Attempts {
    fn attempt_started(&self, a: &AttemptInfo<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((a.deployment.to_owned(), a.number, a.hedge, None));
    }
    fn attempt_ended(&self, a: &AttemptInfo<'_>, outcome: AttemptOutcome, _: Duration) {
        let mut all = self.0.lock().unwrap();
        let slot = all
            .iter_mut()
            .find(|(d, n, _, o)| d == a.deployment && *n == a.number && o.is_none())
            .unwrap();
        slot.3 = Some(outcome);
    }
}

/// Fails its first `failures` calls with 503, waits `delay` before every answer.
#[derive(Debug)]
struct Scripted {
    name: &'static str,
    failures: u32,
    delay: Duration,
    calls: AtomicU32,
}

impl Scripted {
    fn new(name: &'static str, failures: u32, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            name,
            failures,
            delay,
            calls: AtomicU32::new(0),
        })
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> weir::Result<Upstream<ChatResponse>> {
        tokio::time::sleep(self.delay).await;
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(Error::from_upstream(self.name, 503, None, b"busy", None));
        }
        MockProvider::new(self.name, Default::default())
            .chat(req, ctx)
            .await
    }
    async fn chat_stream(
        &self,
        req: &ChatRequest,
        ctx: &UpstreamContext,
    ) -> weir::Result<ChunkStream> {
        MockProvider::new(self.name, Default::default())
            .chat_stream(req, ctx)
            .await
    }
}

#[tokio::test]
async fn an_attempt_observer_sees_retries_and_hedges() {
    let yaml = "
retry: { max_retries: 2, base_delay: 1ms, max_delay: 2ms }
providers:
  flaky: { kind: mock }
  slow: { kind: mock }
  quick: { kind: mock }
models:
  raced:
    strategy: priority
    deployments:
      - { model: slow/echo, priority: 0 }
      - { model: quick/echo, priority: 1 }
    hedge: { after: 30ms }
";
    let seen = Arc::new(Attempts::default());
    let client = Client::builder(config(yaml))
        .provider("flaky", Scripted::new("flaky", 2, Duration::ZERO))
        .provider("slow", Scripted::new("slow", 0, Duration::from_secs(2)))
        .provider("quick", Scripted::new("quick", 0, Duration::ZERO))
        .attempt_observer(seen.clone())
        .build()
        .unwrap();

    let done = client
        .chat(ChatRequest::new("flaky/echo", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(done.meta.attempts, 3);
    let attempts = std::mem::take(&mut *seen.0.lock().unwrap());
    let failed = AttemptOutcome::Failed {
        kind: weir::ErrorKind::Upstream,
        status: 503,
    };
    assert_eq!(
        attempts,
        [
            ("flaky/echo".to_owned(), 1, false, Some(failed)),
            ("flaky/echo".to_owned(), 2, false, Some(failed)),
            (
                "flaky/echo".to_owned(),
                3,
                false,
                Some(AttemptOutcome::Success)
            ),
        ]
    );

    let done = client
        .chat(ChatRequest::new("raced", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(done.meta.provider, "quick", "the hedge won");
    let attempts = std::mem::take(&mut *seen.0.lock().unwrap());
    assert_eq!(
        attempts,
        [
            (
                "slow/echo".to_owned(),
                1,
                false,
                Some(AttemptOutcome::Cancelled)
            ),
            (
                "quick/echo".to_owned(),
                2,
                true,
                Some(AttemptOutcome::Success)
            ),
        ]
    );
}

#[tokio::test]
async fn one_breaker_per_deployment_is_shared_by_every_group_that_lists_it() {
    let yaml = "
retry: { max_retries: 0 }
circuit_breaker: { consecutive_failures: 2, cooldown: 1m }
providers:
  flaky: { kind: mock }
models:
  first: flaky/echo
  second:
    deployments: [flaky/echo]
";
    let flaky = Scripted::new("flaky", 100, Duration::ZERO);
    let client = Client::builder(config(yaml))
        .provider("flaky", flaky.clone())
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = client
            .chat(ChatRequest::new("first", vec![Message::user("x")]))
            .await
            .unwrap_err();
        assert_eq!(err.http_status(), 503);
    }
    // Tripped through `first`: `second` and the direct name fail fast, sending nothing.
    for model in ["second", "flaky/echo"] {
        let err = client
            .chat(ChatRequest::new(model, vec![Message::user("x")]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CircuitOpen { .. }), "{model}: {err}");
    }
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    let status = client.status();
    let listed: Vec<_> = status
        .deployments
        .iter()
        .filter(|d| d.deployment.id == "flaky/echo")
        .collect();
    assert_eq!(listed.len(), 1, "one entry per deployment");
    assert_eq!(listed[0].groups, ["first", "second"]);
    assert_eq!(listed[0].breaker.state, weir::breaker::BreakerState::Open);
    assert_eq!(client.reset_circuits(Some("second")), 1);
    assert_ne!(
        client.status().deployments[0].breaker.state,
        weir::breaker::BreakerState::Open
    );
}

#[tokio::test]
async fn requests_naming_unknown_models_leave_no_state_behind() {
    let (client, events) = recorded_client(CONFIG);
    client.chat(chat("warm", 0.7, json!(null))).await.unwrap();
    let groups = client.group_count();
    let rows = client.status().models.len();
    for i in 0..10_000 {
        let mut r = chat("x", 0.7, json!(null));
        r.model = format!("made-up-model-{i}");
        assert_eq!(client.chat(r).await.unwrap_err().http_status(), 404);
    }
    assert_eq!(client.group_count(), groups);
    let status = client.status();
    assert_eq!(status.models.len(), rows + 1, "{:?}", status.models);
    let other = status.models.iter().find(|m| m.model == "other").unwrap();
    assert_eq!((other.calls, other.errors), (10_000, 10_000));
    assert_eq!(events.take().len(), 10_001);
}

#[test]
fn decimal_prices_are_exact() {
    assert_eq!(price(5, 2), Decimal::from_str("0.000009").unwrap());
}

/// Records the spans opened on this thread, with their `request_id` and `deployment` fields.
#[derive(Debug, Default)]
struct Spans(Mutex<Vec<(String, String)>>);

struct FieldText<'a>(&'a mut String);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "request_id" | "weir.deployment") {
            self.0.push_str(&format!("{}={value:?};", field.name()));
        }
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = String::new();
        attrs.record(&mut FieldText(&mut fields));
        let mut all = self.0.lock().unwrap();
        all.push((attrs.metadata().name().to_owned(), fields));
        tracing::span::Id::from_u64(all.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn each_call_has_a_span_and_each_attempt_one_inside_it() {
    let spans = Arc::new(Spans::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let yaml = "retry: { max_retries: 2, base_delay: 1ms, max_delay: 2ms }\nproviders:\n  flaky: { kind: mock }\n";
    let client = Client::builder(config(yaml))
        .provider("flaky", Scripted::new("flaky", 1, Duration::ZERO))
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(spans.clone());
    // Other tests in this binary run on other threads without this subscriber: a span
    // callsite they reach first may have its interest cached as "never"; ask again.
    tracing::callsite::rebuild_interest_cache();
    runtime.block_on(async {
        let ctx = weir::CallContext::with_request_id("req-span-1");
        client
            .chat_with(
                ChatRequest::new("flaky/echo", vec![Message::user("hi")]),
                ctx,
            )
            .await
            .unwrap();
    });
    let seen = spans.0.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["weir.call", "weir.attempt", "weir.attempt"],
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|(_, f)| f.contains("request_id=req-span-1")),
        "{seen:?}"
    );
    assert!(seen[1].1.contains("deployment=flaky/echo"), "{seen:?}");
}

#[tokio::test]
async fn a_channel_sink_queues_events_and_counts_what_did_not_fit() {
    let (sink, mut receiver) = weir::pipeline::ChannelSink::new(1);
    let sink = Arc::new(sink);
    let client = Client::builder(config(CONFIG))
        .usage_sink(sink.clone())
        .build()
        .unwrap();
    for text in ["one", "two", "three"] {
        client.chat(chat(text, 0.7, json!(null))).await.unwrap();
    }
    let first = receiver.try_recv().unwrap();
    assert_eq!(first.operation, Operation::Chat);
    assert!(receiver.try_recv().is_err(), "the queue held one");
    assert_eq!(sink.dropped(), 2, "the rest were dropped, never waited for");
}

#[tokio::test]
async fn a_timeout_past_the_clocks_range_means_no_limit_not_a_panic() {
    let (client, events) = recorded_client(CONFIG);
    let ctx = weir::CallContext {
        timeout: Some(Duration::MAX),
        ..weir::CallContext::default()
    };
    client
        .chat_with(chat("still answered", 0.7, json!(null)), ctx)
        .await
        .unwrap();
    only(events.take(), Operation::Chat, Outcome::Success, 200);
}

/// Admits every call, reporting a fixed quota.
#[derive(Debug)]
struct Reports(weir::Quota);

#[async_trait]
impl Admission for Reports {
    async fn reserve(&self, _request: &AdmissionRequest<'_>) -> weir::Result<Admitted> {
        Ok(Admitted {
            reservation: Box::new(()),
            quota: Some(self.0),
            warnings: Vec::new(),
        })
    }

    fn settle(&self, _reservation: Reservation, _event: &UsageEvent) {}

    fn release(&self, _reservation: Reservation) {}
}

#[tokio::test]
async fn every_answer_carries_the_tightest_quota_of_its_admissions() {
    let quota = |scope, remaining, reset_s| weir::Quota {
        scope,
        kind: weir::LimitKind::Requests,
        limit: 100,
        remaining,
        reset: Duration::from_secs(reset_s),
    };
    let loose = quota(weir::LimitScope::Key, 7, 50);
    let tight = quota(weir::LimitScope::User, 3, 10);
    // As few left as `tight`, but longer to recover: it wins the tie.
    let slow = quota(weir::LimitScope::Team, 3, 40);
    let client = Client::builder(config(CONFIG))
        .admission(Arc::new(Reports(loose)))
        .admission(Arc::new(Reports(tight)))
        .admission(Arc::new(Reports(slow)))
        .build()
        .unwrap();

    // Complete and streamed, upstream and from the cache.
    for _ in 0..2 {
        let done = client.chat(chat("cached", 0.0, json!(null))).await.unwrap();
        assert_eq!(done.meta.quota, Some(slow), "{:?}", done.meta.cache);
        let stream = client
            .chat_stream(chat("cached stream", 0.0, json!(null)))
            .await
            .unwrap();
        assert_eq!(stream.meta().quota, Some(slow));
        drop(stream.collect::<Vec<_>>().await);
    }
    let embedded = client
        .embed(EmbeddingsRequest::new(
            "mock/echo",
            vec!["some text".to_owned()],
        ))
        .await
        .unwrap();
    assert_eq!(embedded.meta.quota, Some(slow));
    let answer = client.messages(messages("hi", false)).await.unwrap();
    assert_eq!(answer.meta.quota, Some(slow));
    let json = serde_json::to_value(&embedded.meta).unwrap();
    assert_eq!(
        json["quota"],
        json!({"scope": "team", "kind": "requests", "limit": 100, "remaining": 3, "reset_ms": 40000})
    );

    // Without admissions, no quota.
    let (plain, _) = recorded_client(CONFIG);
    let done = plain.chat(chat("plain", 0.7, json!(null))).await.unwrap();
    assert_eq!(done.meta.quota, None);
}
