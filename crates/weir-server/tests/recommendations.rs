//! `GET /admin/recommendations` on a gateway whose ledger, budgets and keys are seeded so
//! that every kind fires, each with its figures and saving; and its parameter errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Gateway;
use serde_json::{Value, json};
use weir_store::{KeyHash, LedgerRecord, NewKey, StoreLocation};

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn call(at_ms: i64, provider: &str, model: &str, output: u64, cost: &str) -> LedgerRecord {
    let mut r = LedgerRecord::new(at_ms, format!("req-{at_ms}"), "chat", model);
    r.provider = Some(provider.into());
    r.upstream_model = Some(model.into());
    r.input_tokens = 1000;
    r.output_tokens = output;
    r.cost_usd = Some(cost.parse().unwrap());
    r
}

#[tokio::test]
async fn every_kind_of_recommendation_fires_with_its_figures() {
    let dir = std::env::temp_dir().join(format!(
        "weir-recommend-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("weir.sqlite3");
    let store = weir_store::open_store(&StoreLocation::Sqlite(db.clone()))
        .await
        .unwrap();
    let start = now_ms() - 3_600_000;
    let mut calls = Vec::new();
    // 22 short answers from gpt-4o at $0.003 each; three of them the same prompt, missed.
    for i in 0..22 {
        let mut c = call(start + i, "openai", "gpt-4o", 50, "0.003");
        c.prompt_fingerprint = Some(if i < 3 {
            "same".into()
        } else {
            format!("p{i}")
        });
        c.cache = "miss".into();
        calls.push(c);
    }
    // 20 calls to claude-haiku-4-5, 4 of them retried.
    for i in 0..20 {
        let mut c = call(
            start + 100 + i,
            "anthropic",
            "claude-haiku-4-5",
            500,
            "0.0035",
        );
        c.attempts = if i < 4 { 2 } else { 1 };
        calls.push(c);
    }
    // Team `x` has spent past its budget today.
    let mut team = call(now_ms() - 1_000, "openai", "gpt-4o-mini", 10, "0.02");
    team.team = Some("x".into());
    calls.push(team);
    // A call older than the window does not count.
    calls.push(call(
        now_ms() - 30 * 86_400_000,
        "openai",
        "gpt-4o",
        50,
        "0.003",
    ));
    store.ledger.append(&calls, None).await.unwrap();

    let key = |id: &str, n: u8| NewKey::new(id, KeyHash([n; 32]), "wk-…", id);
    let mut expired = key("key_expired", 1);
    expired.expires_at = Some(1_000);
    store.keys.create_key(&expired).await.unwrap();
    store.keys.create_key(&key("key_idle", 2)).await.unwrap();
    store
        .keys
        .touch_keys(&[("key_idle".into(), 1_700_000_000)])
        .await
        .unwrap();
    drop(store);

    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\nbudgets:\n  - {{ id: team-x, scope: {{ team: x }}, limit_usd: 0.01, period: daily }}\n",
        db.display()
    ))
    .await;
    let res = gw.get("/admin/recommendations").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["days"], 7);
    assert_eq!(body["calls_analysed"], 43, "{body}");
    assert_eq!(body["truncated"], false);
    let items = body["data"].as_array().unwrap();
    let of = |kind: &str| -> Vec<Value> {
        items
            .iter()
            .filter(|i| i["kind"] == kind)
            .cloned()
            .collect()
    };
    for item in items {
        assert!(item["message"].as_str().unwrap().len() > 40, "{item}");
    }

    let cache = of("cache_repeats");
    assert_eq!(cache.len(), 1, "{body}");
    assert_eq!(cache[0]["figures"]["model"], "gpt-4o");
    assert_eq!(cache[0]["figures"]["repeats"], 2);
    assert_eq!(cache[0]["saving_usd"], "0.006");

    let cheaper = of("cheaper_model");
    assert_eq!(cheaper.len(), 1, "{body}");
    assert_eq!(cheaper[0]["figures"]["cheaper_model"], "gpt-4o-mini");
    assert_eq!(cheaper[0]["figures"]["calls"], 22);
    // 22 x ($0.003 - $0.00018).
    assert_eq!(cheaper[0]["saving_usd"], "0.06204");
    assert_eq!(
        items[0]["kind"], "cheaper_model",
        "the largest saving first"
    );

    let retries = of("retries");
    assert_eq!(retries.len(), 1, "{body}");
    assert_eq!(retries[0]["figures"]["model"], "claude-haiku-4-5");
    assert_eq!(retries[0]["figures"]["retried"], 4);
    assert_eq!(retries[0]["saving_usd"], Value::Null);

    let budget = of("budget_runs_out");
    assert_eq!(budget.len(), 1, "{body}");
    assert_eq!(budget[0]["figures"]["budget"], "team-x");
    assert!(budget[0]["figures"]["runs_out_at"].is_string());

    let expired = of("expired_key");
    assert_eq!(expired.len(), 1, "{body}");
    assert_eq!(expired[0]["figures"]["key_id"], "key_expired");
    let idle = of("idle_key");
    assert_eq!(idle.len(), 1, "{body}");
    assert_eq!(idle[0]["figures"]["key_id"], "key_idle");

    // A wider window reads the old call too; a tighter idle threshold is still 1 idle key.
    let wide: Value = gw
        .get("/admin/recommendations?days=31&idle_days=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wide["calls_analysed"], 44);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_parameters_and_a_gateway_without_a_ledger_are_refused() {
    let dir = std::env::temp_dir().join(format!(
        "weir-recommend-bad-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\n",
        dir.join("weir.sqlite3").display()
    ))
    .await;
    for (query, param) in [
        ("days=0", "days"),
        ("days=91", "days"),
        ("days=week", "days"),
        ("min_calls=-1", "min_calls"),
        ("idle=3", "idle"),
    ] {
        let res = gw
            .get(&format!("/admin/recommendations?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let empty: Value = gw
        .get("/admin/recommendations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty["data"], json!([]));
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);

    let bare = Gateway::start("").await;
    let res = bare.get("/admin/recommendations").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WEIR_DATA_DIR"),
        "{body}"
    );
}

#[tokio::test]
async fn prompts_repeated_through_the_gateway_are_recognised_by_their_fingerprint() {
    let dir = std::env::temp_dir().join(format!(
        "weir-recommend-real-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let mut gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\n",
        dir.join("weir.sqlite3").display()
    ))
    .await;
    // Sampled (temperature 0.7): the cache is bypassed, so every repeat is paid again.
    for text in [
        "same question",
        "same question",
        "same question",
        "another one",
    ] {
        let res = gw
            .post("/v1/chat/completions")
            .json(&json!({"model": "mock/echo", "temperature": 0.7,
                          "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // Until the ledger writer has stored the calls.
    let started = std::time::Instant::now();
    let body = loop {
        let body: Value = gw
            .get("/admin/recommendations")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["calls_analysed"] == 4 {
            break body;
        }
        assert!(started.elapsed().as_secs() < 10, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let repeats: Vec<_> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "cache_repeats")
        .collect();
    assert_eq!(repeats.len(), 1, "{body}");
    assert_eq!(repeats[0]["figures"]["model"], "mock/echo");
    assert_eq!(repeats[0]["figures"]["repeats"], 2);
    assert_eq!(repeats[0]["figures"]["prompts"], 1);
    assert_ne!(repeats[0]["saving_usd"], "0");
    gw.shutdown().await.unwrap();

    let store = weir_store::open_store(&StoreLocation::Sqlite(dir.join("weir.sqlite3")))
        .await
        .unwrap();
    let calls = store.ledger.records(0, i64::MAX, 10).await.unwrap();
    let prints: Vec<_> = calls
        .iter()
        .map(|c| c.prompt_fingerprint.clone().unwrap())
        .collect();
    assert_eq!(prints[0], prints[1]);
    assert_ne!(prints[0], prints[3]);
    assert!(
        !prints[0].contains("same question"),
        "a hash, never the prompt"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
