//! The dashboard's routes: the page and its assets (embedded, no external references), the
//! figures at `/admin/dashboard.json` after a known load, its parameter errors, and the admin
//! guard (loopback only without an admin key; with one, the page loads and the figures need
//! the key).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Gateway;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn chat(gw: &Gateway, model: &str) -> u16 {
    let body =
        json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
    gw.post("/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded_and_self_contained() {
    let gw = Gateway::start("").await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let res = gw.http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        let body = res.text().await.unwrap();
        // Nothing fetched from elsewhere: no CDN, no external font or script.
        assert!(
            !body.contains("http://") && !body.contains("https://") || path == "/dashboard/app.js",
            "{path} references an external asset"
        );
    }
    let js = gw
        .http
        .get(gw.url("/dashboard/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The only URL in the script is SVG's namespace.
    let urls: Vec<&str> = js
        .match_indices("http")
        .map(|(i, _)| &js[i..i + 26])
        .collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
        "{urls:?}"
    );
    assert!(
        !js.contains("innerHTML"),
        "caller-supplied names must go in as text"
    );
}

#[tokio::test]
async fn the_figures_follow_the_load() {
    let gw = Gateway::start("pricing:\n  mock/echo: { input: 1000, output: 2000 }\n").await;
    for _ in 0..3 {
        assert_eq!(chat(&gw, "mock/echo").await, 200);
    }
    assert_eq!(chat(&gw, "mock/lorem").await, 200);
    assert_eq!(chat(&gw, "no-such-model").await, 404);
    let v: Value = gw
        .http
        .get(gw.url("/admin/dashboard.json?seconds=30"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = &v["traffic"];
    assert_eq!(t["requests_total"], 5);
    assert_eq!(t["errors_total"], 1);
    assert_eq!(t["window_seconds"], 30);
    assert_eq!(t["series"].as_array().unwrap().len(), 30);
    let in_series: u64 = t["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(in_series, 5);
    let recent = v["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 5);
    assert_eq!(recent[0]["model"], "no-such-model");
    assert_eq!(recent[0]["status"], 404);
    let hits = recent.iter().filter(|c| c["cache"] == "hit").count();
    assert_eq!(hits, 2, "the same prompt twice more: {recent:?}");
    let priced = recent
        .iter()
        .find(|c| c["model"] == "mock/echo" && c["cache"] == "miss")
        .unwrap();
    assert!(priced["cost_usd"].as_f64().unwrap() > 0.0, "{priced}");
    assert!(
        recent
            .iter()
            .all(|c| c.get("messages").is_none() && c.get("prompt").is_none())
    );
    let ids: Vec<&str> = v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock/echo"), "{ids:?}");
    assert!(v["keys"].as_array().is_some());
    assert_eq!(v["cache"]["hits"], 2);
    // No store in this gateway: no ledger figures, said as null.
    assert!(v["spend"].is_null(), "{}", v["spend"]);
}

#[tokio::test]
async fn bad_parameters_are_refused_with_what_to_send() {
    let gw = Gateway::start("").await;
    for (query, needle) in [
        ("seconds=0", "from 1 to 300"),
        ("seconds=301", "from 1 to 300"),
        ("seconds=abc", "whole number"),
        ("second=10", "takes only `seconds`"),
    ] {
        let res = gw
            .http
            .get(gw.url(&format!("/admin/dashboard.json?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{query}: {message}");
    }
}

#[tokio::test]
async fn without_an_admin_key_the_dashboard_answers_loopback_only() {
    let config = weir::Config::from_yaml("", &|_: &str| None).unwrap();
    let app = weir_server::router(weir_server::AppState::new(
        weir::Client::new(config).unwrap(),
    ));
    for path in ["/dashboard", "/dashboard/app.js", "/admin/dashboard.json"] {
        for (peer, status) in [("10.1.2.3:5555", 403), ("127.0.0.1:5555", 200)] {
            let mut req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut()
                .insert(weir_server::layers::PeerAddr(peer.parse().unwrap()));
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), status, "{path} from {peer}");
        }
    }
}

#[tokio::test]
async fn with_an_admin_key_the_page_loads_and_the_figures_need_the_key() {
    let gw = Gateway::start("  admin_key: the-admin\n").await;
    let get = |path: &str, key: Option<&str>| {
        let mut req = gw.http.get(gw.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(get("/dashboard", None).await.unwrap().status(), 200);
    assert_eq!(
        get("/dashboard/style.css", None).await.unwrap().status(),
        200
    );
    let res = get("/admin/dashboard.json", None).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("missing admin key"));
    let res = get("/admin/dashboard.json", Some("wrong")).await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("invalid admin key"));
    let res = get("/admin/dashboard.json", Some("the-admin"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(
        !body.contains("the-admin"),
        "the admin key is echoed in the figures"
    );
    // The page's actions are the admin routes, guarded as ever.
    let res = gw
        .http
        .post(gw.url("/admin/circuits/reset"))
        .json(&json!({"deployment": "mock/echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
