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

/// Run 100 tasks at once, each calling until the budget refuses it; returns (calls
/// admitted, their total cost, the dearest call).
async fn exhaust(clients: &[Client]) -> (usize, Decimal, Decimal) {
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut costs = Vec::new();
            loop {
                match client.chat_with(hello(16), as_team("search")).await {
                    Ok(done) => costs.push(done.meta.cost_usd.unwrap()),
                    Err(e) if e.http_status() == 402 => return costs,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut costs = Vec::new();
    for t in tasks {
        costs.extend(t.await.unwrap());
    }
    let total = costs.iter().sum();
    let dearest = costs.iter().copied().max().unwrap_or_default();
    (costs.len(), total, dearest)
}

const HARD: &str = "budgets:\n  - { id: all, scope: global, limit_usd: 0.5, period: daily }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_never_pass_a_hard_budget_in_memory() {
    let client = Client::new(config(HARD)).unwrap();
    let (admitted, total, dearest) = exhaust(std::slice::from_ref(&client)).await;
    let status = status(client.budgets().unwrap(), "all").await;
    let limit = d("0.5");
    eprintln!(
        "memory: {admitted} calls admitted, spent ${} of ${limit} (overshoot ${}), one call ${dearest}",
        status.spent_usd,
        status.spent_usd - limit
    );
    assert_eq!(status.spent_usd, total, "every call is counted exactly");
    assert_eq!(status.reserved_usd, Decimal::ZERO);
    assert!(status.spent_usd <= limit + dearest, "{status:?}");
    // Reservations are worst cases, so the spend stays under the limit itself.
    assert!(status.spent_usd <= limit, "{status:?}");
    assert!(
        status.spent_usd > limit / Decimal::TWO,
        "the budget was filled: {status:?}"
    );
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
    let (admitted, total, dearest) = exhaust(&[a.clone(), b.clone()]).await;
    // Settling in Redis happens off the request path: wait for the last of it.
    let mut settled = None;
    for _ in 0..100 {
        let s = status(a.budgets().unwrap(), "all").await;
        if s.reserved_usd.is_zero() && s.spent_usd == total {
            settled = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = settled.expect("every settlement reaches Redis");
    let limit = d("0.5");
    eprintln!(
        "redis, two clients: {admitted} calls admitted, spent ${} of ${limit} (overshoot ${}), \
         one call ${dearest}",
        status.spent_usd,
        status.spent_usd - limit
    );
    assert!(status.spent_usd <= limit + dearest, "{status:?}");
    assert!(status.spent_usd <= limit, "{status:?}");
    assert!(
        status.spent_usd > limit / Decimal::TWO,
        "the budget was filled: {status:?}"
    );
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
