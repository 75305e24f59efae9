//! Budgets set through the admin API are kept in the store: they survive a restart (and
//! stay enforced), removals too, they win over a configured budget with the same id, and a
//! second gateway on the same store picks changes up. Forecasts read the ledger's daily spend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Gateway;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// mock/echo at $1000 per million tokens in and out: a tenth of a cent a token.
const PRICED: &str = "pricing:\n  mock/echo: { input: 1000, output: 1000 }\n";

fn tempdir(name: &str) -> std::path::PathBuf {
    weir_test_support::temp_dir(name).unwrap()
}

/// A gateway config on the SQLite file in `dir`, its spool in `dir/<spool>`.
fn yaml(dir: &std::path::Path, spool: &str, extra: &str) -> String {
    format!(
        "store:\n  sqlite: {{ path: {} }}\n  spool_dir: {}\n{PRICED}{extra}",
        dir.join("weir.sqlite3").display(),
        dir.join(spool).display()
    )
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let res = gw.get(path).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn put(gw: &Gateway, id: &str, body: Value) -> u16 {
    gw.http
        .put(gw.url(&format!("/admin/budgets/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn delete(gw: &Gateway, id: &str) -> u16 {
    gw.http
        .delete(gw.url(&format!("/admin/budgets/{id}")))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Chat until refused; the status of the first refusal, or 200 if none came in 30 calls.
async fn chat_until_refused(gw: &Gateway) -> u16 {
    chat_until_refused_after(gw, 30).await
}

#[tokio::test]
async fn a_budget_set_through_the_api_survives_a_restart_and_is_enforced() {
    let dir = tempdir("stored-budgets");
    let config = yaml(&dir, "spool", "");
    let mut first = Gateway::start(&config).await;
    let tiny = json!({"scope": "global", "limit_usd": "0.05", "period": "daily"});
    assert_eq!(put(&first, "tiny", tiny).await, 200);
    assert_eq!(
        put(
            &first,
            "other",
            json!({"scope": {"team": "a"}, "limit_usd": "5", "period": "weekly"})
        )
        .await,
        200
    );
    assert_eq!(delete(&first, "other").await, 200);
    first.shutdown().await.unwrap();

    let mut second = Gateway::start(&config).await;
    let (status, tiny) = get(&second, "/admin/budgets/tiny").await;
    assert_eq!(status, 200, "{tiny}");
    assert_eq!(tiny["spec"]["limit_usd"], "0.05");
    assert_eq!(
        get(&second, "/admin/budgets/other").await.0,
        404,
        "the removal held"
    );
    assert_eq!(
        chat_until_refused(&second).await,
        402,
        "the stored budget is enforced"
    );
    assert_eq!(delete(&second, "tiny").await, 200);
    assert_eq!(delete(&second, "tiny").await, 404);
    second.shutdown().await.unwrap();

    let third = Gateway::start(&config).await;
    let (_, list) = get(&third, "/admin/budgets").await;
    assert_eq!(list["data"], json!([]), "{list}");
    assert_eq!(chat_until_refused(&third).await, 200);
    drop(third);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stored_budget_wins_over_the_configured_one_with_its_id() {
    let dir = tempdir("stored-budgets-config");
    let config = yaml(
        &dir,
        "spool",
        "budgets:\n  - { id: cfg, scope: global, limit_usd: 100, period: daily }\n  - { id: keep, scope: global, limit_usd: 50, period: monthly }\n",
    );
    let mut first = Gateway::start(&config).await;
    let raised = json!({"scope": "global", "limit_usd": "250", "period": "daily"});
    assert_eq!(put(&first, "cfg", raised).await, 200);
    assert_eq!(delete(&first, "keep").await, 200);
    first.shutdown().await.unwrap();

    let second = Gateway::start(&config).await;
    let (_, cfg) = get(&second, "/admin/budgets/cfg").await;
    assert_eq!(cfg["spec"]["limit_usd"], "250", "{cfg}");
    assert_eq!(
        get(&second, "/admin/budgets/keep").await.0,
        404,
        "a removed configured budget stays removed"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Budgets set and removed on `one` reach `two` (both on one store).
async fn two_follows_one(one: &Gateway, two: &Gateway) {
    let wait_for = |want: u16| async move {
        let started = Instant::now();
        loop {
            let (status, _) = get(two, "/admin/budgets/shared").await;
            if status == want {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the second gateway never answered {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let body = json!({"scope": {"project": "web"}, "limit_usd": "10", "period": "monthly"});
    assert_eq!(put(one, "shared", body).await, 200);
    wait_for(200).await;
    let raised = json!({"scope": {"project": "web"}, "limit_usd": "20", "period": "monthly"});
    assert_eq!(put(one, "shared", raised).await, 200);
    let started = Instant::now();
    while get(two, "/admin/budgets/shared").await.1["spec"]["limit_usd"] != "20" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delete(one, "shared").await, 200);
    wait_for(404).await;
}

#[tokio::test]
async fn a_second_gateway_on_the_same_store_follows_budget_changes() {
    let dir = tempdir("stored-budgets-replicas");
    let one = Gateway::start(&yaml(&dir, "spool-one", "")).await;
    let two = Gateway::start(&yaml(&dir, "spool-two", "")).await;
    two_follows_one(&one, &two).await;
    drop((one, two));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn replicas_on_postgres_share_budget_changes() {
    let Some(server) = weir_test_support::postgres::PostgresServer::shared().unwrap() else {
        eprintln!("postgres not installed: skipping");
        return;
    };
    let url = server.create_unique_database("stored_budgets").unwrap();
    let dir = tempdir("stored-budgets-postgres");
    let config = |spool: &str| {
        format!(
            "store:\n  postgres: {{ url: '{url}' }}\n  spool_dir: {}\n{PRICED}",
            dir.join(spool).display()
        )
    };
    let one = Gateway::start(&config("spool-one")).await;
    let two = Gateway::start(&config("spool-two")).await;
    two_follows_one(&one, &two).await;
    drop((one, two));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn forecasts_follow_the_ledgers_daily_spend() {
    let dir = tempdir("stored-budgets-forecast");
    let config = yaml(&dir, "spool", "");
    // Five weeks of team `search` spending $10 a day, and a day of another team.
    let store =
        weir_store::open_store(&weir_store::StoreLocation::Sqlite(dir.join("weir.sqlite3")))
            .await
            .unwrap();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let today = now_ms - now_ms.rem_euclid(86_400_000);
    let mut records = Vec::new();
    for back in 1..=35 {
        let mut call = weir_store::LedgerRecord::new(
            today - back * 86_400_000 + 3_600_000,
            format!("req-{back}"),
            "chat",
            "mock/echo",
        );
        call.team = Some("search".into());
        call.cost_usd = Some(Decimal::from(10));
        records.push(call);
    }
    store.ledger.append(&records, None).await.unwrap();
    drop(store);

    let gw = Gateway::start(&config).await;
    let team = json!({"scope": {"team": "search"}, "limit_usd": "1000000", "period": "monthly"});
    assert_eq!(put(&gw, "search", team).await, 200);
    let fresh = json!({"scope": {"team": "new"}, "limit_usd": "5", "period": "monthly"});
    assert_eq!(put(&gw, "new", fresh).await, 200);
    let (_, list) = get(&gw, "/admin/budgets").await;
    let find = |id: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["spec"]["id"] == id)
            .cloned()
            .unwrap()
    };
    let search = find("search");
    assert_eq!(search["forecast_method"], "weekday", "{search}");
    let forecast: Decimal = search["forecast_usd"].as_str().unwrap().parse().unwrap();
    let spent: Decimal = search["spent_usd"].as_str().unwrap().parse().unwrap();
    assert!(forecast > spent, "{search}");
    assert!(search["runs_out_at"].is_null());
    let new = find("new");
    assert_eq!(new["forecast_method"], "linear");
    assert!(
        new["forecast_usd"].is_null(),
        "nothing spent, nothing to extend"
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_budget_whose_period_changes_starts_again_from_the_ledger() {
    let dir = tempdir("stored-budgets-period");
    let gw = Gateway::start(&yaml(&dir, "spool", "")).await;
    let daily = json!({"scope": "global", "limit_usd": "100", "period": "daily"});
    assert_eq!(put(&gw, "g", daily).await, 200);
    assert_eq!(chat_until_refused_after(&gw, 1).await, 200);
    // Until the ledger writer has stored the call.
    let started = Instant::now();
    while get(&gw, "/admin/usage").await.1["data"][0]["requests"] != 1 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spent = |v: &Value| v["spent_usd"].as_str().unwrap().parse::<Decimal>().unwrap();
    let before = spent(&get(&gw, "/admin/budgets/g").await.1);
    assert!(before > Decimal::ZERO);
    let weekly = json!({"scope": "global", "limit_usd": "100", "period": "weekly"});
    assert_eq!(put(&gw, "g", weekly).await, 200);
    let (_, after) = get(&gw, "/admin/budgets/g").await;
    assert_eq!(after["spec"]["period"], "weekly");
    assert_eq!(spent(&after), before, "today's call is in this week too");
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Make `calls` calls; the status of the first that is not a 200, else 200.
async fn chat_until_refused_after(gw: &Gateway, calls: usize) -> u16 {
    for _ in 0..calls {
        let res = gw
            .post("/v1/chat/completions")
            .json(
                &json!({"model": "mock/echo", "temperature": 0.7, "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hello there"}]}),
            )
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            return res.status().as_u16();
        }
    }
    200
}
