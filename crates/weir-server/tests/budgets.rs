//! Spend budgets through the gateway: a hard budget's 402 in each route's error shape (which
//! the official SDKs do not retry), soft-budget warnings as `x-weir-budget-warning`, and the
//! admin API that lists, sets and removes budgets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Gateway;
use serde_json::{Value, json};

/// mock/echo at $1000 per million tokens in and out: a tenth of a cent a token.
const PRICED: &str = "pricing:\n  mock/echo: { input: 1000, output: 1000 }\n";

fn chat(max_tokens: u32) -> Value {
    json!({"model": "mock/echo", "temperature": 0.7, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn a_hard_budget_refuses_with_a_402_naming_it() {
    let gw = Gateway::start(&format!(
        "{PRICED}budgets:\n  - {{ id: tiny, scope: global, limit_usd: 0.05, period: daily }}\n"
    ))
    .await;
    let mut last = None;
    for _ in 0..20 {
        let res = gw
            .post("/v1/chat/completions")
            .json(&chat(10))
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            last = Some(res);
            break;
        }
    }
    let res = last.expect("the budget runs out");
    assert_eq!(res.status(), 402);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("tiny") && msg.contains("0.05"), "{msg}");

    let res = gw
        .post("/v1/messages")
        .json(&json!({"model": "mock/echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 402);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");

    let status: Value = gw
        .get("/admin/budgets/tiny")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["spec"]["id"], "tiny");
    assert!(status["spent_usd"].as_str().is_some() || status["spent_usd"].is_number());
}

#[tokio::test]
async fn soft_budgets_warn_in_a_header() {
    let gw = Gateway::start(&format!(
        "{PRICED}budgets:\n  - {{ id: soft, scope: global, limit_usd: 0.05, period: daily, mode: soft }}\n"
    ))
    .await;
    let mut warnings = Vec::new();
    for _ in 0..30 {
        let res = gw
            .post("/v1/chat/completions")
            .json(&chat(10))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "a soft budget never refuses");
        for w in res.headers().get_all("x-weir-budget-warning") {
            warnings.push(w.to_str().unwrap().to_owned());
        }
    }
    assert!(!warnings.is_empty());
    assert!(warnings.iter().all(|w| w.contains("soft")), "{warnings:?}");
}

#[tokio::test]
async fn budgets_are_set_listed_and_removed_through_the_admin_api() {
    let gw = Gateway::start(PRICED).await;
    let res = gw
        .http
        .put(gw.url("/admin/budgets/team-search"))
        .json(&json!({"scope": {"team": "search"}, "limit_usd": "25", "period": "weekly", "mode": "hard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = gw
        .get("/admin/budgets")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["spec"]["id"], "team-search");
    assert!(list["data"][0]["resets_at"].is_string());

    let bad = gw
        .http
        .put(gw.url("/admin/budgets/bad"))
        .json(&json!({"scope": "global", "limit_usd": "-1", "period": "daily"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let res = gw
        .http
        .delete(gw.url("/admin/budgets/team-search"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = gw.get("/admin/budgets/team-search").send().await.unwrap();
    assert_eq!(res.status(), 404);
}
