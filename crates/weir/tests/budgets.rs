//! Spend budgets through a real `Client` on the mock provider (priced here): the 402 refusal,
//! threshold warnings on answers and streams, and 100 concurrent calls against one hard
//! budget, in memory and shared by two clients (two gateway replicas) through one Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use weir::budgets::{BudgetStatus, Budgets};
use weir::{CallContext, Client, Config, Error, Principal};
#[cfg(feature = "redis")]
use weir_test_support::redis::RedisServer;
use weir_types::chat::{ChatRequest, Message};

/// mock/echo at $1000 per million tokens in and out: a tenth of a cent a token, so a call
/// costs a few cents and a 50-cent budget fills after a dozen or two.
const PRICED: &str = "
pricing:
  mock/echo: { input: 1000, output: 1000 }
mock:
  latency: 3ms
";

fn config(yaml: &str) -> Config {
    Config::from_yaml(&format!("{PRICED}{yaml}"), &|_: &str| None).unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn hello(max_tokens: u32) -> ChatRequest {
    let mut req = ChatRequest::new("mock/echo", vec![Message::user("hello there")]);
    req.max_tokens = Some(max_tokens);
    // Sampled: the cache stays out of the way.
    req.temperature = Some(0.7);
    req
}

fn as_team(team: &str) -> CallContext {
    CallContext {
        principal: Principal {
            team: Some(team.into()),
            ..Principal::default()
        },
        ..CallContext::default()
    }
}

async fn status(budgets: &Budgets, id: &str) -> BudgetStatus {
    let all = budgets.status().await.unwrap();
    all.into_iter().find(|s| s.spec.id == id).unwrap()
}

#[tokio::test]
async fn a_hard_budget_refuses_with_a_402_that_names_it() {
    let client = Client::new(config(
        "budgets:\n  search-daily: { scope: { team: search }, limit_usd: 0.05, period: daily }\n",
    ))
    .unwrap();
    let budgets = client.budgets().expect("registered from the config");
    assert_eq!(budgets.health().backend, "memory");
    // Each call reserves (its input estimate + 16) tenths of a cent: two fit, then one more
    // once they settle at their (lower) real cost.
    let mut spent = Decimal::ZERO;
    let mut refused = None;
    for _ in 0..10 {
        match client.chat_with(hello(16), as_team("search")).await {
            Ok(done) => spent += done.meta.cost_usd.unwrap(),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the budget refuses before ten calls");
    assert_eq!(err.http_status(), 402);
    let Error::Rejected { code, message, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*code, "budget_exceeded");
    assert!(message.contains("budget `search-daily`"), "{message}");
    assert!(message.contains("hard $0.05 daily"), "{message}");
    assert!(
        message.contains(&format!("${spent} spent so far")),
        "{message}"
    );
    assert!(message.contains("resets at 20"), "{message}");
    assert_eq!(status(budgets, "search-daily").await.spent_usd, spent);
    // Another team is not counted by it.
    client.chat_with(hello(16), as_team("ads")).await.unwrap();
}

#[tokio::test]
async fn soft_budget_warnings_reach_answers_and_streams_once() {
    let client = Client::new(config(
        "budgets:\n  - { id: soft, scope: global, limit_usd: 0.1, period: monthly, mode: soft, \
         thresholds: [0.2, 0.6] }\n",
    ))
    .unwrap();
    let mut warnings = Vec::new();
    for _ in 0..6 {
        let done = client.chat(hello(16)).await.unwrap();
        warnings.push(done.meta.budget_warnings);
    }
    let stream = client.chat_stream(hello(16)).await.unwrap();
    warnings.push(stream.meta().budget_warnings.clone());
    drop(stream);
    let all: Vec<&String> = warnings.iter().flatten().collect();
    assert_eq!(all.len(), 2, "{warnings:?}");
    assert!(
        all[0].contains("budget `soft`") && all[0].contains("reached 20%"),
        "{all:?}"
    );
    assert!(all[1].contains("reached 60%"), "{all:?}");
    // Soft: nothing was refused, however far past the limit.
    for _ in 0..10 {
        client.chat(hello(16)).await.unwrap();
    }
    let budgets = client.budgets().unwrap();
    assert!(status(budgets, "soft").await.percent > d("100"));
}

/// What 100 tasks calling at once until the budget is full did.
struct Exhausted {
    admitted: usize,
    /// Their total cost.
    total: Decimal,
    /// The dearest call.
    dearest: Decimal,
    /// A call's worst case, as the last refusal gave it.
    worst_case: Decimal,
}

/// Run 100 tasks at once, each calling until the budget refuses it with no other call in
/// flight (a refusal while others hold reservations may only mean "not yet": it tries again
/// a moment later). Bounded: it gives up after 30 seconds.
async fn exhaust(clients: &[Client]) -> Exhausted {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut costs = Vec::new();
            loop {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the budget never filled"
                );
                match client.chat_with(hello(16), as_team("search")).await {
                    Ok(done) => costs.push(done.meta.cost_usd.unwrap()),
                    Err(Error::Rejected {
                        status: 402,
                        message,
                        ..
                    }) => {
                        if message.contains("reserved by calls in flight") {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            continue;
                        }
                        let worst = message
                            .split("could cost up to $")
                            .nth(1)
                            .and_then(|rest| rest.split(';').next())
                            .map(d)
                            .unwrap();
                        return (costs, worst);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut costs = Vec::new();
    let mut worst_case = Decimal::ZERO;
    for t in tasks {
        let (mine, worst) = t.await.unwrap();
        costs.extend(mine);
        worst_case = worst_case.max(worst);
    }
    Exhausted {
        admitted: costs.len(),
        total: costs.iter().sum(),
        dearest: costs.iter().copied().max().unwrap_or_default(),
        worst_case,
    }
}

const HARD: &str = "budgets:\n  - { id: all, scope: global, limit_usd: 0.5, period: daily }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_never_pass_a_hard_budget_in_memory() {
    let client = Client::new(config(HARD)).unwrap();
    let run = exhaust(std::slice::from_ref(&client)).await;
    let status = status(client.budgets().unwrap(), "all").await;
    assert_eq!(status.spent_usd, run.total, "every call is counted exactly");
    assert_eq!(status.reserved_usd, Decimal::ZERO);
    let label = "memory";
    let limit = d("0.5");
    eprintln!(
        "{label}: {} calls admitted, spent ${} of ${limit} (overshoot ${}), one call ${} \
         (reserving ${})",
        run.admitted,
        status.spent_usd,
        status.spent_usd - limit,
        run.dearest,
        run.worst_case
    );
    assert!(status.spent_usd <= limit + run.dearest, "{status:?}");
    // Reservations are worst cases, so the spend stays under the limit itself...
    assert!(status.spent_usd <= limit, "{status:?}");
    // ...and the budget is full: not even one more worst case fits.
    assert!(status.spent_usd + run.worst_case > limit, "{status:?}");
}

#[cfg(feature = "redis")]
fn redis_or_skip() -> Option<RedisServer> {
    let redis = RedisServer::start().unwrap();
    if redis.is_none() {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
    }
    redis
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sharing_redis_never_pass_a_hard_budget_together() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let yaml = format!(
        "redis: {{ url: '{}', prefix: budgets-test }}\n{HARD}",
        redis.url()
    );
    let a = Client::builder(config(&yaml)).build_async().await.unwrap();
    let b = Client::builder(config(&yaml)).build_async().await.unwrap();
    assert_eq!(a.budgets().unwrap().health().backend, "redis");
    let run = exhaust(&[a.clone(), b.clone()]).await;
    // Settling in Redis happens off the request path: wait for the last of it.
    let mut settled = None;
    for _ in 0..100 {
        let s = status(a.budgets().unwrap(), "all").await;
        if s.reserved_usd.is_zero() && s.spent_usd == run.total {
            settled = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = settled.expect("every settlement reaches Redis");
    let label = "redis, two clients";
    let limit = d("0.5");
    eprintln!(
        "{label}: {} calls admitted, spent ${} of ${limit} (overshoot ${}), one call ${} \
         (reserving ${})",
        run.admitted,
        status.spent_usd,
        status.spent_usd - limit,
        run.dearest,
        run.worst_case
    );
    assert!(status.spent_usd <= limit + run.dearest, "{status:?}");
    // Reservations are worst cases, so the spend stays under the limit itself...
    assert!(status.spent_usd <= limit, "{status:?}");
    // ...and the budget is full: not even one more worst case fits.
    assert!(status.spent_usd + run.worst_case > limit, "{status:?}");
    // Both clients see the same counters.
    let seen_by_b = self::status(b.budgets().unwrap(), "all").await;
    assert_eq!(seen_by_b.spent_usd, status.spent_usd);
    assert!(a.budgets().unwrap().health().healthy);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_seed_in_redis_is_set_only_once_per_period() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let yaml = format!(
        "redis: {{ url: '{}', prefix: seed-test }}\n{HARD}",
        redis.url()
    );
    let a = Client::builder(config(&yaml)).build_async().await.unwrap();
    let b = Client::builder(config(&yaml)).build_async().await.unwrap();
    let budgets = Arc::clone(a.budgets().unwrap());
    let start = status(&budgets, "all").await.period_start;
    assert!(budgets.seed("all", start, d("0.49")).await.unwrap());
    // The second replica's seed finds the period already counted.
    assert!(
        !b.budgets()
            .unwrap()
            .seed("all", start, d("0.1"))
            .await
            .unwrap()
    );
    assert_eq!(status(&budgets, "all").await.spent_usd, d("0.49"));
    // A cent left: less than one call's worst case (its 16 output tokens alone cost more).
    assert_eq!(a.chat(hello(16)).await.unwrap_err().http_status(), 402);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_reservation_lost_with_its_instance_expires_in_redis() {
    use weir::pipeline::{Admission, AdmissionRequest, Operation};
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let yaml = format!(
        "redis: {{ url: '{}', prefix: expiry-test }}\n{HARD}",
        redis.url()
    );
    let config = config(&yaml);
    let budgets = Budgets::new(&config)
        .await
        .unwrap()
        .with_reservation_margin(Duration::ZERO);
    let context = CallContext {
        model: "mock/echo".into(),
        timeout: Some(Duration::from_millis(300)),
        ..CallContext::default()
    };
    let request = AdmissionRequest {
        context: &context,
        operation: Operation::Chat,
        input_tokens: 100,
        max_output_tokens: 300,
    };
    // $0.4 of $0.5: the second cannot fit while the first is held.
    let lost = budgets.reserve(&request).await.unwrap();
    assert_eq!(status(&budgets, "all").await.reserved_usd, d("0.4"));
    assert_eq!(
        budgets.reserve(&request).await.unwrap_err().http_status(),
        402
    );
    // The instance holding it "dies": the reservation is never settled nor released.
    std::mem::forget(lost);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&budgets, "all").await.reserved_usd, Decimal::ZERO);
    let next = budgets.reserve(&request).await.unwrap();
    budgets.release(next.reservation);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_dead_redis_is_let_through_or_refused_as_budgets_on_store_error_says() {
    let Some(redis) = redis_or_skip() else {
        return;
    };
    let client = |on_store_error: &str| {
        config(&format!(
            "redis: {{ url: '{}', prefix: dead-test }}\nbudgets:\n  on_store_error: {on_store_error}\n  store_timeout: 200ms\n  all: {{ scope: global, limit_usd: 0.5, period: daily }}\n",
            redis.url()
        ))
    };
    let allow = Client::builder(client("allow"))
        .build_async()
        .await
        .unwrap();
    let deny = Client::builder(client("deny")).build_async().await.unwrap();
    allow.chat(hello(16)).await.unwrap();
    drop(redis);
    // Let through, uncounted.
    allow.chat(hello(16)).await.unwrap();
    let err = deny.chat(hello(16)).await.unwrap_err();
    assert_eq!(err.http_status(), 503);
    let Error::Rejected { code, message, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*code, "budgets_unavailable");
    assert!(
        message.contains("budgets.on_store_error: deny"),
        "{message}"
    );
    for c in [&allow, &deny] {
        let health = c.status().budgets.unwrap();
        assert_eq!(health.backend, "redis");
        assert!(!health.healthy && health.store_errors > 0, "{health:?}");
        assert!(!health.last_error.unwrap().contains("password"));
    }
}
