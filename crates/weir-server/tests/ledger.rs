//! The usage ledger through the gateway: every call (answered, streamed, a cache hit, refused)
//! is one record in the store, attributed to its key, with its exact cost; and `/status`
//! shows the ledger's backlog.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::str::FromStr;

use common::Gateway;
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn every_call_is_one_record_with_its_exact_cost() {
    let dir = weir_test_support::temp_dir("ledger-gw").unwrap();
    let db = dir.join("weir.sqlite3");
    let mut gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\n",
        db.display()
    ))
    .await;
    let body = |text: &str, stream: bool| {
        json!({"model": "mock/echo", "temperature": 0, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    for (text, stream) in [("one two", false), ("three", true), ("one two", false)] {
        let res = gw
            .post("/v1/chat/completions")
            .json(&body(text, stream))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.text().await.unwrap();
    }
    let res = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "nope/nothing", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let status: serde_json::Value = gw
        .get("/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        status["ledger"]["store"]
            .as_str()
            .unwrap()
            .contains("sqlite")
    );
    // Stopping the gateway flushes the ledger.
    gw.shutdown().await.unwrap();

    let store = weir_store::open_store(&weir_store::StoreLocation::Sqlite(db))
        .await
        .unwrap();
    let records = store.ledger.records(0, i64::MAX, 100).await.unwrap();
    assert_eq!(records.len(), 4, "{records:#?}");
    let hits: Vec<_> = records.iter().filter(|r| r.cache == "hit").collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].cost_usd, Some(Decimal::ZERO));
    assert!(hits[0].saved_usd.unwrap() > Decimal::ZERO);
    let priced: Decimal = records.iter().filter_map(|r| r.cost_usd).sum();
    // mock/echo echoes: "one two" is 2 tokens out, "three" 1; input tokens as the mock counts
    // them. $0.001 a token in and out.
    let expected: Decimal = records
        .iter()
        .filter(|r| r.cache != "hit" && r.status == 200)
        .map(|r| {
            Decimal::from(r.input_tokens + r.output_tokens) * Decimal::from_str("0.001").unwrap()
        })
        .sum();
    assert_eq!(priced, expected);
    assert!(priced > Decimal::ZERO);
    let failed: Vec<_> = records.iter().filter(|r| r.status == 404).collect();
    assert_eq!(failed.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_restart_starts_budgets_from_the_ledgers_spend() {
    let dir = weir_test_support::temp_dir("ledger-seed").unwrap();
    let yaml = format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\nbudgets:\n  - {{ id: day, scope: global, limit_usd: 100, period: daily }}\n",
        dir.join("weir.sqlite3").display()
    );
    let spent = |status: &serde_json::Value| {
        Decimal::from_str(
            status["spent_usd"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| status["spent_usd"].to_string())
                .as_str(),
        )
        .unwrap()
    };
    let mut first = Gateway::start(&yaml).await;
    for text in ["a b c", "d e", "f"] {
        let res = first
            .post("/v1/chat/completions")
            .json(&json!({"model": "mock/echo", "temperature": 0.7,
                          "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let before: serde_json::Value = first
        .get("/admin/budgets/day")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let before = spent(&before);
    assert!(before > Decimal::ZERO);
    first.shutdown().await.unwrap();

    let second = Gateway::start(&yaml).await;
    let after: serde_json::Value = second
        .get("/admin/budgets/day")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        spent(&after),
        before,
        "the restarted gateway starts from the ledger"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn usage_reports_group_filter_and_come_as_csv() {
    let dir = weir_test_support::temp_dir("ledger-usage").unwrap();
    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\n",
        dir.join("weir.sqlite3").display()
    ))
    .await;
    for (model, user) in [
        ("mock/echo", "ann"),
        ("mock/echo", "bob"),
        ("mock/lorem", "ann"),
    ] {
        let res = gw
            .post("/v1/chat/completions")
            .header("x-weir-user", user)
            .json(&json!({"model": model, "temperature": 0.7, "max_tokens": 5,
                          "messages": [{"role": "user", "content": "hi there"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let by_model: serde_json::Value = gw
        .get("/admin/usage?group_by=model")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = by_model["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{by_model}");
    let echo = rows.iter().find(|r| r["model"] == "mock/echo").unwrap();
    assert_eq!(echo["requests"], 2);
    assert_ne!(echo["cost_usd"], "0");

    let ann: serde_json::Value = gw
        .get("/admin/usage?user=ann")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ann["data"][0]["requests"], 2, "{ann}");

    let csv = gw
        .get("/admin/usage?group_by=user,model&format=csv")
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("user,model,requests,"));
    assert_eq!(lines.count(), 3);

    let bad = gw.get("/admin/usage?group_by=color").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let _ = std::fs::remove_dir_all(&dir);
}
