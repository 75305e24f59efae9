//! Budgets across three `weir serve` replicas sharing one Postgres (the ledger) and one
//! Redis (the budget counters), as a deployment behind a load balancer runs them. The test
//! starts its own `postgres` and `redis-server` on loopback ports.
//!
//! - 100 concurrent calls spread over the replicas against a hard budget: the spend never
//!   passes the limit by more than one call's cost, and every refusal is a 402 naming it.
//! - A soft budget on the same calls warns once per threshold, across all the replicas.
//! - The hard budget's period ends, and calls pass again on every replica.
//! - The ledger in Postgres holds exactly what the answers said they cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::str::FromStr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ServeProcess, exchange, header, request, send, serve};
use rust_decimal::Decimal;
use weir_test_support::postgres::PostgresServer;
use weir_test_support::redis::RedisServer;

const ADMIN_KEY: &str = "budget-admin-key";
const CALLS: usize = 100;
/// The hard budget's window: the shortest rolling period there is.
const WINDOW_SECS: u64 = 60;

const CHAT: &str = r#"{"model":"mock/echo","max_tokens":10,"messages":[{"role":"user","content":"count these few words please"}]}"#;

fn dollars(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn budget<'a>(list: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["spec"]["id"] == id || b["id"] == id)
        .unwrap_or_else(|| panic!("no budget {id} in {list}"))
}

fn money(v: &serde_json::Value) -> Decimal {
    match v {
        serde_json::Value::String(s) => dollars(s),
        other => dollars(&other.to_string()),
    }
}

#[test]
fn three_replicas_hold_a_hard_budget_warn_once_and_reset_together() {
    let Some(redis) = RedisServer::start().unwrap() else {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let Some(postgres) = PostgresServer::start().unwrap() else {
        eprintln!("postgres not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let database = postgres.create_database("budget_replicas").unwrap();
    let dir = std::env::temp_dir().join(format!("weir-budget-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  admin_key: {ADMIN_KEY}\n\
             store:\n  postgres:\n    url: {database}\n  spool_dir: {spool}\n\
             redis:\n  url: {redis}\n  prefix: budgets-{pid}\n\
             cache:\n  enabled: false\n\
             pricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\n\
             budgets:\n\
             \x20 - {{ id: burst-hard, scope: global, limit_usd: 0.5, period: {{ rolling: 1m }} }}\n\
             \x20 - {{ id: echo-soft, scope: {{ model: mock/echo }}, limit_usd: 0.3, period: daily, mode: soft, thresholds: [0.5, 1.0] }}\n",
            spool = dir.join("spool-{replica}").display(),
            redis = redis.url(),
            pid = std::process::id()
        )
        .replace("{replica}", "shared"),
    )
    .unwrap();
    // Each replica its own spool: three configs differing only there.
    let replicas: Vec<(ServeProcess, u16)> = (0..3)
        .map(|i| {
            let own = dir.join(format!("weir-{i}.yaml"));
            let text = std::fs::read_to_string(&config)
                .unwrap()
                .replace("spool-shared", &format!("spool-{i}"));
            std::fs::write(&own, text).unwrap();
            serve(&own)
        })
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|(_, p)| *p).collect();
    for &port in &ports {
        let started = Instant::now();
        while exchange(port, "GET", "/ready", ADMIN_KEY, "").0 != 200 {
            assert!(started.elapsed() < Duration::from_secs(30), "not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Start the burst early in a window, so it is counted in one period.
    let into_window = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % WINDOW_SECS;
    if into_window > WINDOW_SECS * 2 / 3 {
        std::thread::sleep(
            Duration::from_secs(WINDOW_SECS - into_window) + Duration::from_millis(200),
        );
    }
    let barrier = Arc::new(Barrier::new(CALLS));
    let workers: Vec<_> = (0..CALLS)
        .map(|i| {
            let conn = TcpStream::connect(("127.0.0.1", ports[i % ports.len()])).unwrap();
            let barrier = Arc::clone(&barrier);
            let request = request("POST", "/v1/chat/completions", ADMIN_KEY, CHAT);
            std::thread::spawn(move || {
                barrier.wait();
                send(conn, &request)
            })
        })
        .collect();
    let answers: Vec<(u16, String, String)> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();

    let admitted: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 200).collect();
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 402).collect();
    assert_eq!(admitted.len() + refused.len(), CALLS, "only 200s and 402s");
    assert!(!admitted.is_empty() && !refused.is_empty());
    for (_, _, body) in &refused {
        assert!(body.contains("budget_exceeded"), "{body}");
        assert!(body.contains("burst-hard"), "{body}");
    }
    let costs: Vec<Decimal> = admitted
        .iter()
        .map(|(_, head, _)| dollars(header(head, "x-weir-cost-usd").expect("a priced answer")))
        .collect();
    let spent: Decimal = costs.iter().sum();
    let dearest = costs.iter().max().copied().unwrap();
    let limit = dollars("0.5");
    eprintln!(
        "three replicas, {CALLS} calls at once: {} admitted, {} refused; spent ${spent} against \
         ${limit} (one call costs at most ${dearest})",
        admitted.len(),
        refused.len()
    );
    assert!(
        spent <= limit + dearest,
        "spent ${spent}, past the ${limit} limit by more than one call (${dearest})"
    );

    // The soft budget warned once per threshold, whichever replica saw the crossing.
    let warnings: Vec<&str> = admitted
        .iter()
        .flat_map(|(_, head, _)| {
            head.lines()
                .filter_map(|l| l.strip_prefix("x-weir-budget-warning:"))
                .map(str::trim)
        })
        .collect();
    let soft: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("echo-soft"))
        .collect();
    eprintln!("soft budget warnings: {soft:?}");
    assert_eq!(soft.len(), 2, "one warning per threshold: {warnings:?}");
    assert!(soft.iter().any(|w| w.contains("50%")), "{soft:?}");
    assert!(soft.iter().any(|w| w.contains("100%")), "{soft:?}");

    // Every replica sees the same spend (the counters are in Redis), once the last calls'
    // settlements (sent to Redis after their answers) have landed.
    let mut resets_at = None;
    for &port in &ports {
        let started = Instant::now();
        let hard = loop {
            let (status, body) = exchange(port, "GET", "/admin/budgets", ADMIN_KEY, "");
            assert_eq!(status, 200, "{body}");
            let list: serde_json::Value = serde_json::from_str(&body).unwrap();
            let hard = budget(&list, "burst-hard").clone();
            if money(&hard["reserved_usd"]).is_zero() || started.elapsed() > Duration::from_secs(5)
            {
                break hard;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(money(&hard["reserved_usd"]), Decimal::ZERO, "{hard}");
        assert_eq!(money(&hard["spent_usd"]), spent, "{hard}");
        resets_at = hard["resets_at"].as_str().map(str::to_owned);
    }

    // The ledger in Postgres holds exactly what the answers cost, once all three replicas
    // have stored their spools.
    let started = Instant::now();
    loop {
        let (status, body) = exchange(ports[0], "GET", "/admin/usage", ADMIN_KEY, "");
        assert_eq!(status, 200, "{body}");
        let usage: serde_json::Value = serde_json::from_str(&body).unwrap();
        let row = &usage["data"][0];
        if row["requests"].as_u64() == Some(CALLS as u64) {
            assert_eq!(money(&row["cost_usd"]), spent, "{usage}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the ledger never showed the burst: {usage}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The window ends; every replica admits calls again.
    let resets_at: jiff::Timestamp = resets_at.unwrap().parse().unwrap();
    let wait = resets_at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait.unsigned_abs() + 100));
    }
    for &port in &ports {
        let (status, body) = exchange(port, "POST", "/v1/chat/completions", ADMIN_KEY, CHAT);
        assert_eq!(status, 200, "after the reset: {body}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
