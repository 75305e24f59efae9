//! A corpus of malformed requests: each gets the right 4xx in the route's error shape, and the
//! server stays healthy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Gateway;
use serde_json::Value;

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    mention: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: &[u8],
    status: u16,
    mention: &'static str,
) -> Case {
    Case {
        name,
        path,
        content_type: Some("application/json"),
        body: body.to_vec(),
        status,
        mention,
    }
}

#[tokio::test]
async fn malformed_requests_get_4xx_in_the_route_shape() {
    let gw = Gateway::start("  body_limit: 4KiB\n").await;
    let chat = "/v1/chat/completions";
    let msgs = "/v1/messages";
    let mut cases = vec![
        case("malformed json", chat, b"{\"model\": ", 400, "malformed JSON"),
        case("not an object", chat, b"[1,2]", 400, "invalid"),
        case("empty body", chat, b"", 400, "empty"),
        case("messages wrong type", chat, br#"{"model":"mock/echo","messages":"hi"}"#, 400, "messages"),
        case("temperature wrong type", chat, br#"{"model":"mock/echo","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#, 400, "temperature"),
        case("missing messages", chat, br#"{"model":"mock/echo"}"#, 400, "messages"),
        case("empty messages", chat, br#"{"model":"mock/echo","messages":[]}"#, 400, "messages"),
        case("missing model", chat, br#"{"messages":[{"role":"user","content":"x"}]}"#, 400, "model"),
        case("unknown role", chat, br#"{"model":"mock/echo","messages":[{"role":"wizard","content":"x"}]}"#, 400, "role"),
        case("unknown model", chat, br#"{"model":"nowhere/nothing","messages":[{"role":"user","content":"x"}]}"#, 404, "not found"),
        case("bad utf-8", chat, b"{\"model\":\"mock/echo\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", 400, "UTF-8"),
        case("trailing garbage", chat, br#"{"model":"mock/echo","messages":[{"role":"user","content":"x"}]} garbage"#, 400, "malformed JSON"),
        case("oversized", chat, &[b' '; 8192], 413, "limit"),
        case("tool without id", chat, br#"{"model":"mock/echo","messages":[{"role":"tool","content":"x"}]}"#, 400, "tool_call_id"),
        case("temperature out of range", chat, br#"{"model":"mock/echo","messages":[{"role":"user","content":"x"}],"temperature":9}"#, 400, "temperature"),
        case("embeddings without input", "/v1/embeddings", br#"{"model":"mock/echo"}"#, 400, "input"),
        case("messages malformed", msgs, b"{", 400, "malformed JSON"),
        case("messages wrong type", msgs, br#"{"model":"mock/echo","max_tokens":5,"messages":"hi"}"#, 400, "messages"),
        case("messages unknown model", msgs, br#"{"model":"nowhere/x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#, 404, "not found"),
    ];
    cases.push(Case {
        content_type: Some("text/plain"),
        ..case(
            "wrong content type",
            chat,
            br#"{"model":"mock/echo","messages":[{"role":"user","content":"x"}]}"#,
            415,
            "content type",
        )
    });
    for c in cases {
        let mut req = gw.post(c.path).body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", c.name));
        let message = if c.path == msgs {
            assert_eq!(v["type"], "error", "{}: {text}", c.name);
            v["error"]["message"].as_str().unwrap().to_owned()
        } else {
            for field in ["message", "type", "param", "code"] {
                assert!(
                    v["error"].get(field).is_some(),
                    "{}: missing error.{field}: {text}",
                    c.name
                );
            }
            v["error"]["message"].as_str().unwrap().to_owned()
        };
        assert!(
            message.to_lowercase().contains(&c.mention.to_lowercase()),
            "{}: message should mention {:?}: {message}",
            c.name,
            c.mention
        );
    }
    let res = gw.get("/health").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = gw.get("/nope").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = gw.get("/v1/chat/completions").send().await.unwrap();
    assert_eq!(res.status(), 405);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not allowed")
    );
}
