//! The cache through the gateway: `x-weir-cache` on every answer, `Cache-Control` and
//! `x-weir-cache-ttl`, streamed hits replayed as SSE, one namespace per gateway key, and the
//! admin routes `GET /cache/stats` and `DELETE /cache`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, sse_events};
use serde_json::{Value, json};

const KEYS: &str = "  api_keys: [key-alice, key-bob]\n";

fn body(text: &str) -> Value {
    json!({"model": "mock/echo", "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

async fn ask(gw: &Gateway, key: &str, body: &Value, headers: &[(&str, &str)]) -> (String, Value) {
    let mut req = gw.post("/v1/chat/completions").bearer_auth(key).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cache = res.headers()["x-weir-cache"].to_str().unwrap().to_owned();
    // Only an answer that went upstream says how long the upstream took.
    assert_eq!(
        res.headers().contains_key("x-weir-upstream-ms"),
        cache != "hit",
        "{cache}"
    );
    assert!(res.headers().contains_key("x-weir-processing-ms"));
    (cache, res.json().await.unwrap())
}

#[tokio::test]
async fn answers_say_hit_miss_or_bypass() {
    let gw = Gateway::start(KEYS).await;
    let (first, a) = ask(&gw, "key-alice", &body("hello cache"), &[]).await;
    let (second, b) = ask(&gw, "key-alice", &body("hello cache"), &[]).await;
    assert_eq!((first.as_str(), second.as_str()), ("miss", "hit"));
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(b["choices"][0]["message"]["content"], "hello cache");

    let (fresh, _) = ask(
        &gw,
        "key-alice",
        &body("hello cache"),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(fresh, "bypass");

    let sampled =
        json!({"model": "mock/echo", "messages": [{"role": "user", "content": "sampled"}]});
    let (s1, _) = ask(&gw, "key-alice", &sampled, &[]).await;
    let (s2, _) = ask(&gw, "key-alice", &sampled, &[]).await;
    assert_eq!(
        (s1.as_str(), s2.as_str()),
        ("bypass", "bypass"),
        "sampled requests are not cached"
    );
    let (t1, _) = ask(&gw, "key-alice", &sampled, &[("x-weir-cache-ttl", "10m")]).await;
    let (t2, _) = ask(&gw, "key-alice", &sampled, &[("x-weir-cache-ttl", "600")]).await;
    assert_eq!(
        (t1.as_str(), t2.as_str()),
        ("miss", "hit"),
        "a TTL header opts in"
    );
    let bad = gw
        .post("/v1/chat/completions")
        .bearer_auth("key-alice")
        .header("x-weir-cache-ttl", "soon")
        .json(&sampled)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["error"]["param"], "x-weir-cache-ttl");
    assert!(err["error"]["message"].as_str().unwrap().contains("10m"));

    let (n1, _) = ask(
        &gw,
        "key-alice",
        &body("not stored"),
        &[("cache-control", "no-store")],
    )
    .await;
    let (n2, _) = ask(&gw, "key-alice", &body("not stored"), &[]).await;
    assert_eq!((n1.as_str(), n2.as_str()), ("miss", "miss"));
}

#[tokio::test]
async fn each_gateway_key_has_its_own_namespace() {
    let gw = Gateway::start(KEYS).await;
    let (a1, _) = ask(&gw, "key-alice", &body("private"), &[]).await;
    let (b1, _) = ask(&gw, "key-bob", &body("private"), &[]).await;
    let (a2, _) = ask(&gw, "key-alice", &body("private"), &[]).await;
    assert_eq!([a1, b1, a2], ["miss", "miss", "hit"]);
}

#[tokio::test]
async fn a_streamed_hit_is_replayed_as_sse() {
    let gw = Gateway::start(KEYS).await;
    let mut streamed = body("stream me from the cache please");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let mut texts = Vec::new();
    for expected in ["miss", "hit"] {
        let res = gw
            .post("/v1/chat/completions")
            .bearer_auth("key-alice")
            .json(&streamed)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-weir-cache"], expected);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let events = sse_events(&res.text().await.unwrap());
        assert_eq!(events.last().unwrap().1, "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks.len() > 3);
        assert!(
            chunks.last().unwrap()["usage"]["total_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        texts.push(text);
    }
    assert_eq!(texts[0], "stream me from the cache please");
    assert_eq!(texts[0], texts[1]);
    // The streamed entry answers the same request unstreamed.
    let (hit, _) = ask(
        &gw,
        "key-alice",
        &body("stream me from the cache please"),
        &[],
    )
    .await;
    assert_eq!(hit, "hit");
}

#[tokio::test]
async fn stats_need_a_key_and_clearing_the_admin_key() {
    let gw = Gateway::start(&format!("{KEYS}  admin_key: the-admin\n")).await;
    assert_eq!(gw.get("/cache/stats").send().await.unwrap().status(), 401);
    for key in [None, Some("key-alice")] {
        let mut clear = gw.http.delete(gw.url("/cache"));
        if let Some(key) = key {
            clear = clear.bearer_auth(key);
        }
        assert_eq!(clear.send().await.unwrap().status(), 401, "{key:?}");
    }

    ask(&gw, "key-alice", &body("one"), &[]).await;
    ask(&gw, "key-alice", &body("one"), &[]).await;
    ask(&gw, "key-alice", &body("two"), &[]).await;
    let stats: Value = gw
        .get("/cache/stats")
        .bearer_auth("key-alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 2);
    assert!(stats["tokens_saved"].as_u64().unwrap() > 0);
    assert_eq!(stats["tiers"][0]["store"], "memory");
    assert_eq!(stats["tiers"][0]["entries"], 2);
    assert!(stats["tiers"][0]["bytes"].as_u64().unwrap() > 0);

    let res = gw
        .http
        .delete(gw.url("/cache?model=mock/echo"))
        .bearer_auth("the-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cleared: Value = res.json().await.unwrap();
    assert_eq!(cleared["removed"], 2);
    let (after, _) = ask(&gw, "key-alice", &body("one"), &[]).await;
    assert_eq!(after, "miss");

    let ready = gw.get("/ready").send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
