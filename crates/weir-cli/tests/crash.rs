//! `kill -9` under load loses no completed call: eight clients keep `weir serve` busy, the
//! process is killed outright mid-load, and a new process on the same store replays what the
//! first one spooled. Every call whose answer a client received is then in the ledger,
//! exactly once, and the ledger holds no call the upstream did not serve.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::serve;
use serde_json::json;
use weir_test_support::fake::{FakeUpstream, Reply};
use weir_test_support::openai;

const CLIENTS: usize = 8;

/// Send calls until the gateway goes away; log the request id of every answer received whole.
async fn client(port: u16, n: usize, completed: Arc<Mutex<Vec<String>>>) -> usize {
    let http = reqwest::Client::new();
    let mut sent = 0;
    loop {
        let body = json!({"model": "fake/gpt-4o-mini",
                          "messages": [{"role": "user", "content": format!("client {n} call {sent}")}]});
        let Ok(res) = http
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
        else {
            return sent;
        };
        sent += 1;
        let id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = res.status();
        // An answer counts as completed only once its whole body has arrived.
        let Ok(text) = res.text().await else {
            return sent;
        };
        assert_eq!(status, 200, "{text}");
        completed
            .lock()
            .unwrap()
            .push(id.expect("every answer names its request id"));
    }
}

async fn ledger_settled(http: &reqwest::Client, port: u16) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(res) = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && let Ok(status) = res.json::<serde_json::Value>().await
            && status["ledger"]["backlog_bytes"] == 0
        {
            return status["ledger"].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the restarted gateway did not store the spooled records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_under_load_loses_no_completed_call_and_records_none_twice() {
    // reqwest is built without a default TLS provider (weir installs ring at start).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o-mini", "ok")));
    let dir = weir_test_support::temp_dir("crash").unwrap();
    let db = dir.join("weir.sqlite3");
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        format!(
            "providers:\n  fake: {{ kind: openai, base_url: \"{}\", api_key: sk-fake }}\n\
             cache: {{ enabled: false }}\nstore:\n  sqlite: {{ path: {} }}\n\
             pricing:\n  fake/gpt-4o-mini: {{ input: 1, output: 2 }}\n",
            fake.v1(),
            db.display()
        ),
    )
    .unwrap();

    let (mut first, port) = serve(&config);
    let completed = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(port, n, Arc::clone(&completed))))
        .collect();
    // Under load for a while, then SIGKILL: no shutdown, no flush.
    let started = Instant::now();
    while completed.lock().unwrap().len() < 500 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let mut sent = 0;
    for c in clients {
        sent += c.await.unwrap();
    }
    let completed = completed.lock().unwrap().clone();
    let served = fake.request_count();
    assert!(
        completed.len() >= 500,
        "only {} calls completed",
        completed.len()
    );

    // A new process on the same store and spool replays what the first one left.
    let (mut second, port) = serve(&config);
    let http = reqwest::Client::new();
    let ledger = ledger_settled(&http, port).await;
    second.0.kill().unwrap();
    second.0.wait().unwrap();

    let store = weir_store::open_store(&weir_store::StoreLocation::Sqlite(db))
        .await
        .unwrap();
    let records = store.ledger.records(0, i64::MAX, 1_000_000).await.unwrap();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *times.entry(r.request_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    let recorded: HashSet<&str> = times.keys().copied().collect();
    let missing: Vec<_> = completed
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    eprintln!(
        "kill -9 after {} completed calls ({sent} sent, {served} served upstream): {} \
         records, {} of the completed missing; restarted ledger {ledger}",
        completed.len(),
        records.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "completed calls not in the ledger: {missing:?}"
    );
    assert!(
        records.len() <= served,
        "{} records for {served} upstream calls",
        records.len()
    );
    assert!(
        records
            .iter()
            .all(|r| r.status == 200 && r.cost_usd.is_some())
    );
    let _ = std::fs::remove_dir_all(&dir);
}
