//! The ledger's upkeep and what it reports through the gateway: calls to a model without a
//! price (recorded with a null cost, reported as unpriced, never as free), cache savings in
//! `/cache/stats` summed from the ledger (so they survive a restart), and the retention and
//! roll-up sweep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Gateway;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn tempdir(name: &str) -> std::path::PathBuf {
    weir_test_support::temp_dir(&format!("upkeep-{name}")).unwrap()
}

async fn get_json(gw: &Gateway, path: &str) -> Value {
    let res = gw.get(path).send().await.unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.json().await.unwrap()
}

async fn chat(gw: &Gateway, model: &str, text: &str) {
    let res = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": model, "temperature": 0,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();
}

#[tokio::test]
async fn an_unpriced_model_is_recorded_with_a_null_cost_and_reported_as_unpriced() {
    let dir = tempdir("unpriced");
    let db = dir.join("weir.sqlite3");
    // `local` serves the mock's models under a name no price matches.
    let mut gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\nproviders:\n  local: {{ kind: mock }}\n",
        db.display()
    ))
    .await;
    chat(&gw, "local/echo", "one two three").await;
    chat(&gw, "local/echo", "four five").await;
    chat(&gw, "mock/echo", "priced at zero").await;

    let usage = get_json(&gw, "/admin/usage?group_by=model").await;
    let rows = usage["data"].as_array().unwrap();
    let local = rows.iter().find(|r| r["model"] == "local/echo").unwrap();
    assert_eq!(local["cost_usd"], Value::Null, "{local}");
    assert_eq!(local["unpriced_calls"], 2);
    assert!(local["input_tokens"].as_u64().unwrap() > 0);
    let mock = rows.iter().find(|r| r["model"] == "mock/echo").unwrap();
    assert_eq!(mock["cost_usd"], "0");
    assert_eq!(mock["unpriced_calls"], 0);
    assert_eq!(
        usage["unpriced"],
        json!([{"model": "local/echo", "calls": 2}])
    );
    // The totals row keeps the priced calls' cost and counts the others apart.
    let total = get_json(&gw, "/admin/usage").await;
    assert_eq!(total["data"][0]["unpriced_calls"], 2);
    assert_eq!(total["data"][0]["cost_usd"], "0");
    // CSV: an empty cost.
    let csv = gw
        .get("/admin/usage?group_by=model&format=csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = csv.lines().find(|l| l.starts_with("local/echo,")).unwrap();
    assert!(line.ends_with(",,0,2"), "{line}");
    // /status counts them per deployment too.
    let status = get_json(&gw, "/status").await;
    let models = status["models"].as_array().unwrap();
    let row = models.iter().find(|m| m["model"] == "local/echo").unwrap();
    assert_eq!(row["unpriced_calls"], 2);
    assert_eq!(status["unpriced_models"], json!(["local/echo"]));

    gw.shutdown().await.unwrap();
    let store = weir_store::open_store(&weir_store::StoreLocation::Sqlite(db))
        .await
        .unwrap();
    let records = store.ledger.records(0, i64::MAX, 10).await.unwrap();
    let unpriced: Vec<_> = records.iter().filter(|r| r.model == "local/echo").collect();
    assert_eq!(unpriced.len(), 2);
    for r in unpriced {
        assert_eq!(r.cost_usd, None, "never zero: {r:?}");
        assert!(r.input_tokens > 0 && r.output_tokens > 0, "{r:?}");
    }
    let priced = records.iter().find(|r| r.model == "mock/echo").unwrap();
    assert_eq!(priced.cost_usd, Some(Decimal::ZERO));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cache_savings_come_from_the_ledger_and_survive_a_restart() {
    let dir = tempdir("savings");
    let yaml = format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\nmock:\n  latency: 300ms\n",
        dir.join("weir.sqlite3").display()
    );
    let mut gw = Gateway::start(&yaml).await;
    // A miss, then a hit.
    chat(&gw, "mock/echo", "one two").await;
    chat(&gw, "mock/echo", "one two").await;
    // Two identical calls at once: one goes upstream, the other shares its answer.
    tokio::join!(
        chat(&gw, "mock/echo", "three four five"),
        chat(&gw, "mock/echo", "three four five")
    );
    let stats = get_json(&gw, "/cache/stats").await;
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["coalesced"], 1, "{stats}");
    let ledger = &stats["ledger"];
    assert_eq!(ledger["cache_hits"], 1, "{stats}");
    assert_eq!(ledger["coalesced"], 1, "{stats}");
    let dollars = |v: &Value| v.as_str().unwrap().parse::<Decimal>().unwrap();
    let hit_saved = dollars(&ledger["cache_hit_saved_usd"]);
    let shared_saved = dollars(&ledger["coalesced_saved_usd"]);
    assert!(
        hit_saved > Decimal::ZERO && shared_saved > Decimal::ZERO,
        "{stats}"
    );
    assert_eq!(dollars(&ledger["saved_usd"]), hit_saved + shared_saved);
    // The in-process figure and the ledger's agree on the hit.
    assert_eq!(dollars(&stats["estimated_savings_usd"]), hit_saved);
    gw.shutdown().await.unwrap();

    // Restarted on the same store: the process's counters start again, the ledger's do not.
    let gw = Gateway::start(&yaml).await;
    let after = get_json(&gw, "/cache/stats").await;
    assert_eq!(after["hits"], 0, "{after}");
    assert_eq!(after["ledger"], *ledger, "{after}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_store_cache_stats_have_no_ledger_figures() {
    let gw = Gateway::start("").await;
    let stats = get_json(&gw, "/cache/stats").await;
    assert!(stats.get("ledger").is_none(), "{stats}");
    assert!(stats.get("hits").is_some(), "{stats}");
}

const DAY_MS: i64 = 86_400_000;

/// Calls made 100 days, 40 days (two) and an hour ago, priced at a dollar each.
async fn back_dated_calls(store: &dyn weir_store::LedgerStore, now_ms: i64) {
    let call = |ago_ms: i64, id: &str| {
        let mut r = weir_store::LedgerRecord::new(now_ms - ago_ms, id, "chat", "mock/echo");
        r.cost_usd = Some(Decimal::ONE);
        r.input_tokens = 10;
        r
    };
    let calls = [
        call(100 * DAY_MS, "old"),
        call(40 * DAY_MS, "month-a"),
        call(40 * DAY_MS + 1, "month-b"),
        call(3_600_000, "recent"),
    ];
    store.append(&calls, None).await.unwrap();
}

fn settings(retention_days: Option<u64>, roll_up_days: Option<u64>) -> weir::config::LedgerConfig {
    let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
    weir::config::LedgerConfig {
        retention: retention_days.map(days),
        roll_up_after: roll_up_days.map(days),
        sweep_every: std::time::Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn a_sweep_deletes_past_the_retention_and_rolls_up_past_the_roll_up_age() {
    let dir = tempdir("sweep");
    let store =
        weir_store::open_store(&weir_store::StoreLocation::Sqlite(dir.join("weir.sqlite3")))
            .await
            .unwrap()
            .ledger;
    let now = weir_server::ledger::now_ms();
    back_dated_calls(store.as_ref(), now).await;
    let total = |store: std::sync::Arc<dyn weir_store::LedgerStore>| async move {
        store
            .spend(&weir_store::SpendFilter::default(), 0, i64::MAX)
            .await
            .unwrap()
    };
    assert_eq!(total(store.clone()).await.calls, 4);

    // Roll-up only: nothing is deleted, totals do not change.
    let report = weir_server::upkeep::sweep(store.as_ref(), &settings(None, Some(30)), now).await;
    assert_eq!(
        (report.deleted, report.rolled_up, report.error),
        (0, 3, None)
    );
    assert_eq!(
        store.count().await.unwrap(),
        1,
        "only the recent call stays a row"
    );
    assert_eq!(total(store.clone()).await.cost_usd, Decimal::from(4));

    // Retention: the 100-day-old day goes, rolled up or not; the 40-day-old ones stay.
    let report =
        weir_server::upkeep::sweep(store.as_ref(), &settings(Some(90), Some(30)), now).await;
    assert!(report.deleted >= 1, "{report:?}");
    assert_eq!(report.rolled_up, 0, "already rolled up");
    let left = total(store.clone()).await;
    assert_eq!((left.calls, left.cost_usd), (3, Decimal::from(3)));

    // Sweeping again changes nothing.
    let again =
        weir_server::upkeep::sweep(store.as_ref(), &settings(Some(90), Some(30)), now).await;
    assert_eq!((again.deleted, again.rolled_up), (0, 0));
    assert_eq!(total(store.clone()).await, left);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_gateway_sweeps_at_start_and_shows_it_in_status() {
    let dir = tempdir("sweep-gw");
    let db = dir.join("weir.sqlite3");
    {
        let store = weir_store::open_store(&weir_store::StoreLocation::Sqlite(db.clone()))
            .await
            .unwrap();
        back_dated_calls(store.ledger.as_ref(), weir_server::ledger::now_ms()).await;
    }
    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\nledger:\n  retention: 90d\n  roll_up_after: 30d\n  sweep_every: 2h\n",
        db.display()
    ))
    .await;
    let started = std::time::Instant::now();
    let ledger = loop {
        let status = get_json(&gw, "/status").await;
        if !status["ledger"]["last_sweep"].is_null() {
            break status["ledger"].clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no sweep: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(ledger["retention"], "90d", "{ledger}");
    assert_eq!(ledger["roll_up_after"], "30d", "{ledger}");
    assert_eq!(ledger["sweep_every"], "2h", "{ledger}");
    let sweep = &ledger["last_sweep"];
    assert_eq!(sweep["deleted"], 1, "{ledger}");
    assert_eq!(sweep["rolled_up"], 2, "{ledger}");
    assert!(sweep.get("error").is_none(), "{ledger}");
    assert!(sweep["at_ms"].as_i64().unwrap() > 0);
    assert!(
        ledger["store"].as_str().unwrap().contains("sqlite"),
        "{ledger}"
    );
    // The rolled-up calls still count in the reports.
    let usage = get_json(&gw, "/admin/usage?from=0").await;
    assert_eq!(usage["data"][0]["requests"], 3, "{usage}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_ledger_settings_the_gateway_does_not_sweep() {
    let dir = tempdir("no-sweep");
    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\n",
        dir.join("weir.sqlite3").display()
    ))
    .await;
    let status = get_json(&gw, "/status").await;
    assert!(status["ledger"].get("last_sweep").is_none(), "{status}");
    assert!(status["ledger"].get("retention").is_none(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
