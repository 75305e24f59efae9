//! Three `weir serve` replicas sharing one Postgres (keys) and one Redis (limits), as a
//! deployment behind a load balancer runs them. The test starts its own `postgres` and
//! `redis-server` on loopback ports.
//!
//! - 300 concurrent requests spread over the replicas, with a key limited to 60 per minute:
//!   exactly 60 succeed, and every other one is a 429 with the rate-limit headers.
//! - A key revoked on one replica stops working on the others within a second.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{ServeProcess, exchange, header, request, send, serve};
use weir_test_support::postgres::PostgresServer;
use weir_test_support::redis::RedisServer;

const CHAT: &str = r#"{"model":"mock/echo","messages":[{"role":"user","content":"hi"}]}"#;

const ADMIN_KEY: &str = "replica-admin-key";

#[test]
fn three_replicas_hold_one_limit_and_see_a_revocation_within_a_second() {
    let Some(redis) = RedisServer::start().unwrap() else {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let Some(postgres) = PostgresServer::start().unwrap() else {
        eprintln!("postgres not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let database = postgres.create_database("replicas").unwrap();
    let dir = std::env::temp_dir().join(format!("weir-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  admin_key: {ADMIN_KEY}\nstore:\n  postgres:\n    url: {database}\nredis:\n  url: {}\n  prefix: replicas-{}\ncache:\n  enabled: false\n",
            redis.url(),
            std::process::id()
        ),
    )
    .unwrap();
    let replicas: Vec<(ServeProcess, u16)> = (0..3).map(|_| serve(&config)).collect();
    let ports: Vec<u16> = replicas.iter().map(|(_, p)| *p).collect();

    let (status, body) = exchange(
        ports[0],
        "POST",
        "/admin/keys",
        ADMIN_KEY,
        r#"{"name":"shared","limits":{"rpm":60}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    // Every connection open before the first request is written, so the 300 requests arrive
    // together rather than at the pace of connecting.
    const REQUESTS: usize = 300;
    let barrier = Arc::new(Barrier::new(REQUESTS));
    let started = Instant::now();
    let workers: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let conn = TcpStream::connect(("127.0.0.1", ports[i % ports.len()])).unwrap();
            let barrier = Arc::clone(&barrier);
            let request = request("POST", "/v1/chat/completions", &key, CHAT);
            std::thread::spawn(move || {
                barrier.wait();
                send(conn, &request)
            })
        })
        .collect();
    let answers: Vec<(u16, String, String)> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    eprintln!(
        "three replicas: {ok} admitted, {} limited, in {elapsed:?}",
        limited.len()
    );
    for &port in &ports {
        let (_, status) = exchange(port, "GET", "/status", &key, "");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(status["limits"]["backend"], "redis", "{status}");
        assert_eq!(status["limits"]["store_errors"], 0, "{}", status["limits"]);
    }
    assert_eq!(ok, 60, "exactly the limit is admitted across the replicas");
    assert_eq!(limited.len(), REQUESTS - 60, "every other request is a 429");
    for (_, head, body) in &limited {
        assert_eq!(header(head, "x-ratelimit-limit"), Some("60"), "{head}");
        assert_eq!(header(head, "x-ratelimit-remaining"), Some("0"), "{head}");
        assert!(header(head, "x-ratelimit-reset").is_some(), "{head}");
        assert!(header(head, "retry-after").is_some(), "{head}");
        assert!(body.contains("60 requests per minute"), "{body}");
        assert!(!body.contains(&key), "the key is never echoed");
    }
    for (_, head, _) in answers.iter().filter(|(s, _, _)| *s == 200) {
        assert_eq!(header(head, "x-ratelimit-limit"), Some("60"), "{head}");
    }

    // Revoke on replica 1; replicas 0 and 2 must refuse the key within a second. A fresh key
    // without limits shows the others are still serving.
    let (status, body) = exchange(
        ports[1],
        "POST",
        "/admin/keys",
        ADMIN_KEY,
        r#"{"name":"to-revoke"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let doomed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let doomed_key = doomed["key"].as_str().unwrap().to_owned();
    for &port in &ports {
        let (status, body) = exchange(port, "POST", "/v1/chat/completions", &doomed_key, CHAT);
        assert_eq!(status, 200, "{body}");
    }
    let revoked_at = Instant::now();
    let (status, body) = exchange(
        ports[1],
        "POST",
        &format!("/admin/keys/{}/revoke", doomed["id"].as_str().unwrap()),
        ADMIN_KEY,
        "",
    );
    assert_eq!(status, 200, "{body}");
    let mut took = Duration::ZERO;
    for &port in &[ports[0], ports[2]] {
        loop {
            let (status, body) = exchange(port, "POST", "/v1/chat/completions", &doomed_key, CHAT);
            if status == 401 {
                assert!(body.contains("revoked"), "{body}");
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "the revocation had not reached replica {port} after a second"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        took = took.max(revoked_at.elapsed());
    }
    eprintln!("revocation seen by every replica after {took:?}");
    let (status, _) = exchange(ports[0], "GET", &format!("/admin/keys/{id}"), ADMIN_KEY, "");
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
