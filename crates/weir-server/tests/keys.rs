//! Stored gateway keys and inbound limits, end to end: a real gateway on a loopback port with
//! an embedded SQLite key store, driven over HTTP. The admin API, each refusal (missing,
//! unknown, revoked, disabled, expired key; a model the key may not use), attribution, the
//! admin guard, and the per-key and per-IP limits with their headers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::Gateway;
use serde_json::{Value, json};

const ADMIN: &str = "test-admin-key";

fn tempdir(name: &str) -> std::path::PathBuf {
    weir_test_support::temp_dir(&format!("keys-{name}")).unwrap()
}

async fn gateway(name: &str, extra: &str) -> Gateway {
    let db = tempdir(name).join("weir.sqlite3");
    Gateway::start(&format!(
        "  admin_key: {ADMIN}\nstore:\n  sqlite: {{ path: {} }}\n{extra}",
        db.display()
    ))
    .await
}

async fn create(gw: &Gateway, body: Value) -> Value {
    let res = gw
        .post("/admin/keys")
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> reqwest::Response {
    gw.post("/v1/chat/completions")
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn error_message(res: reqwest::Response) -> String {
    let body: Value = res.json().await.unwrap();
    body["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_works() {
    let gw = gateway("create", "").await;
    let created = create(&gw, json!({"name": "web", "team": "search"})).await;
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("wk-") && key.len() >= 40, "{key}");
    assert_eq!(created["status"], "active");
    assert_eq!(created["team"], "search");
    let hint = created["hint"].as_str().unwrap();
    assert!(
        !hint.contains(&key[8..key.len() - 4]),
        "a hint, not the key"
    );

    assert_eq!(chat(&gw, key, "mock/echo").await.status(), 200);

    let listed: Value = gw
        .get("/admin/keys")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(!text.contains(key), "listings never show the secret");
    assert_eq!(listed["data"][0]["id"], created["id"]);
    assert!(listed["data"][0].get("key").is_none());

    let shown = gw
        .get(&format!("/admin/keys/{}", created["id"].as_str().unwrap()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let missing = gw
        .get("/admin/keys/key_nope")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn each_refusal_says_which_it_was_and_never_echoes_the_key() {
    let gw = gateway("refusals", "").await;
    let live = create(&gw, json!({"name": "live"})).await;
    let live_key = live["key"].as_str().unwrap();

    let res = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(error_message(res).await.contains("missing"));

    let res = chat(&gw, "wk-unknown-key-123", "mock/echo").await;
    assert_eq!(res.status(), 401);
    let msg = error_message(res).await;
    assert!(
        msg.contains("no such key") && !msg.contains("wk-unknown"),
        "{msg}"
    );

    let revoked = create(&gw, json!({"name": "revoked"})).await;
    let id = revoked["id"].as_str().unwrap();
    let res = gw
        .post(&format!("/admin/keys/{id}/revoke"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = chat(&gw, revoked["key"].as_str().unwrap(), "mock/echo").await;
    assert_eq!(res.status(), 401);
    let msg = error_message(res).await;
    assert!(msg.contains("revoked"), "{msg}");
    assert!(!msg.contains(revoked["key"].as_str().unwrap()));

    let disabled = create(&gw, json!({"name": "off", "enabled": false})).await;
    let res = chat(&gw, disabled["key"].as_str().unwrap(), "mock/echo").await;
    assert_eq!(res.status(), 401);
    assert!(error_message(res).await.contains("disabled"));

    let expired = create(&gw, json!({"name": "old", "expires_at": 1_000_000})).await;
    assert_eq!(expired["status"], "expired");
    let res = chat(&gw, expired["key"].as_str().unwrap(), "mock/echo").await;
    assert_eq!(res.status(), 401);
    assert!(error_message(res).await.contains("expired"));

    // Anthropic's route answers in Anthropic's shape.
    let res = gw
        .post("/v1/messages")
        .header("x-api-key", "wk-unknown-key-123")
        .json(&json!({"model": "mock/echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    assert_eq!(chat(&gw, live_key, "mock/echo").await.status(), 200);
}

#[tokio::test]
async fn a_key_uses_only_its_models() {
    let gw = gateway("models", "").await;
    let key = create(&gw, json!({"name": "lorem-only", "models": ["mock/lorem"]})).await;
    let key = key["key"].as_str().unwrap();
    assert_eq!(chat(&gw, key, "mock/lorem").await.status(), 200);
    let res = chat(&gw, key, "mock/echo").await;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock/echo")
    );

    let wild = create(&gw, json!({"name": "mock-all", "models": ["mock/*"]})).await;
    assert_eq!(
        chat(&gw, wild["key"].as_str().unwrap(), "mock/echo")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn update_rotate_and_clear() {
    let gw = gateway("update", "").await;
    let created = create(
        &gw,
        json!({"name": "k", "user": "alice", "limits": {"rpm": 5}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let old_key = created["key"].as_str().unwrap().to_owned();

    let res = gw
        .patch(&format!("/admin/keys/{id}"))
        .bearer_auth(ADMIN)
        .json(&json!({"user": null, "team": "ads", "limits": {"rpm": null, "tpm": 100000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let updated: Value = res.json().await.unwrap();
    assert!(updated["user"].is_null());
    assert_eq!(updated["team"], "ads");
    assert!(updated["limits"]["rpm"].is_null());
    assert_eq!(updated["limits"]["tpm"], 100000);

    let bad = gw
        .patch(&format!("/admin/keys/{id}"))
        .bearer_auth(ADMIN)
        .json(&json!({"limits": {"rpm": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let rotated: Value = gw
        .post(&format!("/admin/keys/{id}/rotate"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_key = rotated["key"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["id"], created["id"]);
    assert_eq!(chat(&gw, &old_key, "mock/echo").await.status(), 401);
    assert_eq!(chat(&gw, new_key, "mock/echo").await.status(), 200);
}

#[tokio::test]
async fn admin_routes_need_the_admin_key() {
    let gw = gateway("admin", "").await;
    let res = gw.get("/admin/keys").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = gw
        .get("/admin/keys")
        .bearer_auth("not-the-admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(!res.text().await.unwrap().contains("not-the-admin-key"));
    let res = gw.http.delete(gw.url("/cache")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = gw.post("/admin/circuits/reset").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = gw
        .post("/admin/circuits/reset")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A gateway key is not an admin key.
    let key = create(&gw, json!({"name": "api"})).await;
    let res = gw
        .get("/admin/keys")
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn without_an_admin_key_admin_routes_answer_loopback_only() {
    use tower::ServiceExt;
    let config = weir::Config::from_yaml("", &|_: &str| None).unwrap();
    let app = weir_server::router(weir_server::AppState::new(
        weir::Client::new(config).unwrap(),
    ));
    let request = |peer: &str| {
        let mut req = axum::http::Request::post("/admin/circuits/reset")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(weir_server::layers::PeerAddr(peer.parse().unwrap()));
        req
    };
    let res = app.clone().oneshot(request("10.1.2.3:5555")).await.unwrap();
    assert_eq!(res.status(), 403);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&body).contains("admin_key"));
    let res = app
        .clone()
        .oneshot(request("127.0.0.1:5555"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app.oneshot(request("[::1]:5555")).await.unwrap();
    assert_eq!(res.status(), 200);
}

/// Records the principal of every call.
#[derive(Debug, Default)]
struct Principals(std::sync::Mutex<Vec<weir::Principal>>);

impl weir::pipeline::UsageSink for Principals {
    fn record(&self, event: &weir::pipeline::UsageEvent) {
        self.0.lock().unwrap().push(event.context.principal.clone());
    }
}

#[tokio::test]
async fn calls_are_attributed_and_name_their_user_only_when_the_key_allows() {
    let db = tempdir("attribution").join("weir.sqlite3");
    let yaml = format!(
        "server:\n  admin_key: {ADMIN}\nstore:\n  sqlite: {{ path: {} }}\n",
        db.display()
    );
    let config = weir::Config::from_yaml(&yaml, &|_: &str| None).unwrap();
    let store = weir_store::open(&weir_server::store_location(&config.store).unwrap())
        .await
        .unwrap();
    let authority =
        weir_server::keys::KeyAuthority::start(store, weir_server::layers::StaticKeys::new(&[]))
            .await
            .unwrap();
    let principals = Arc::new(Principals::default());
    let client = weir::Client::builder(config)
        .usage_sink(principals.clone())
        .build()
        .unwrap();
    let state = weir_server::AppState::new(client).with_keys(authority);
    let app = weir_server::router(state);

    use tower::ServiceExt;
    let send = |path: &str, bearer: Option<&str>, headers: &[(&str, &str)], body: Value| {
        let mut req = axum::http::Request::post(path).header("content-type", "application/json");
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(axum::body::Body::from(body.to_string())).unwrap();
        app.clone().oneshot(req)
    };
    let create_body = |name: &str, allow: bool| json!({"name": name, "user": "owner", "team": "search", "project": "p1", "allow_user_override": allow});
    let created = send(
        "/admin/keys",
        Some(ADMIN),
        &[],
        create_body("strict", false),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(created.into_body(), 1 << 16)
        .await
        .unwrap();
    let strict: Value = serde_json::from_slice(&body).unwrap();
    let created = send("/admin/keys", Some(ADMIN), &[], create_body("open", true))
        .await
        .unwrap();
    let body = axum::body::to_bytes(created.into_body(), 1 << 16)
        .await
        .unwrap();
    let open: Value = serde_json::from_slice(&body).unwrap();

    let chat = |user: Option<&str>| {
        let mut body =
            json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]});
        if let Some(u) = user {
            body["user"] = json!(u);
        }
        body
    };
    for (key, header, field) in [
        (&strict, Some("mallory"), Some("eve")),
        (&open, None, Some("bob")),
        (&open, Some("carol"), Some("bob")),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("x-weir-user", h)).into_iter().collect();
        let res = send(
            "/v1/chat/completions",
            key["key"].as_str(),
            &headers,
            chat(field),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
    }
    let seen = principals.0.lock().unwrap().clone();
    let users: Vec<_> = seen.iter().map(|p| p.user.as_deref()).collect();
    assert_eq!(users, [Some("owner"), Some("bob"), Some("carol")]);
    for p in &seen {
        assert_eq!(p.team.as_deref(), Some("search"));
        assert_eq!(p.project.as_deref(), Some("p1"));
        assert!(p.key_id.as_deref().unwrap().starts_with("key_"));
    }
    assert_eq!(seen[0].key_id.as_deref(), strict["id"].as_str());
}

#[tokio::test]
async fn twenty_per_minute_per_ip_lets_exactly_twenty_through() {
    let gw = Gateway::start("limits:\n  per_ip: { rpm: 20 }\n").await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..25 {
        let res = gw
            .post("/v1/chat/completions")
            .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(res.headers().contains_key(name), "{name} missing");
        }
        last = Some(res);
    }
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20..], [429; 5]);
    let res = last.unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit"], "20");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "0");
    assert!(res.headers().contains_key("retry-after"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("20 requests per minute"), "{msg}");
}

#[tokio::test]
async fn a_keys_own_limit_wins_and_its_calls_carry_the_headers() {
    let gw = gateway("own-limit", "limits:\n  per_key: { rpm: 100 }\n").await;
    let tight = create(&gw, json!({"name": "tight", "limits": {"rpm": 2}})).await;
    let roomy = create(&gw, json!({"name": "roomy"})).await;
    let tight = tight["key"].as_str().unwrap();
    let first = chat(&gw, tight, "mock/echo").await;
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(chat(&gw, tight, "mock/echo").await.status(), 200);
    let refused = chat(&gw, tight, "mock/echo").await;
    assert_eq!(refused.status(), 429);
    let res = chat(&gw, roomy["key"].as_str().unwrap(), "mock/echo").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-limit"], "100");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "99");
}

#[tokio::test]
async fn the_model_list_shows_what_the_key_may_use() {
    let gw = gateway("model-list", "").await;
    let key = create(&gw, json!({"name": "lorem", "models": ["mock/lorem"]})).await;
    let list: Value = gw
        .get("/v1/models")
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock/lorem"]);
}

#[tokio::test]
async fn a_dead_redis_lets_calls_through_and_shows_in_status_and_ready() {
    // A port nothing listens on: Redis is down from the start.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = Gateway::start(&format!(
        "redis:\n  url: redis://127.0.0.1:{closed}/\nlimits:\n  per_ip: {{ rpm: 1 }}\n"
    ))
    .await;
    for _ in 0..3 {
        let res = gw
            .post("/v1/chat/completions")
            .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "on_store_error: allow lets calls through"
        );
    }
    let status: Value = gw
        .get("/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["limits"]["backend"], "redis");
    assert_eq!(status["limits"]["healthy"], false);
    assert!(
        status["limits"]["store_errors"].as_u64().unwrap() >= 1,
        "{status}"
    );
    let ready = gw.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["limits"]["healthy"], false, "{body}");
}

#[tokio::test]
async fn a_dead_redis_with_deny_refuses_with_a_503_that_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = Gateway::start(&format!(
        "redis:\n  url: redis://:hunter2@127.0.0.1:{closed}/\nlimits:\n  per_ip: {{ rpm: 100 }}\n  on_store_error: deny\n"
    ))
    .await;
    let res = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(body.contains("limits_unavailable"), "{body}");
    assert!(!body.contains("hunter2"), "{body}");
}
