//! The cache across processes: two `weir serve` processes sharing one Redis (the test starts
//! its own `redis-server` on a loopback port), and `weir chat` + `weir cache stats|clear`
//! sharing the CLI's persistent SQLite tier.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{serve, weir};
use weir_test_support::redis::RedisServer;

fn tempdir(name: &str) -> std::path::PathBuf {
    weir_test_support::temp_dir(&format!("cli-{name}")).unwrap()
}

/// One HTTP/1.1 exchange; returns (status, lower-cased headers, body).
fn post(port: u16, path: &str, body: &str) -> (u16, String, String) {
    exchange(port, "POST", path, body)
}

fn exchange(port: u16, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn two_gateways_share_one_redis() {
    let Some(redis) = RedisServer::start().unwrap() else {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let dir = tempdir("redis");
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        format!(
            "cache:\n  redis:\n    url: {}\n    prefix: shared-test\n",
            redis.url()
        ),
    )
    .unwrap();
    let (_a, port_a) = serve(&config);
    let (_b, port_b) = serve(&config);
    let body = r#"{"model":"mock/echo","temperature":0,"messages":[{"role":"user","content":"shared across gateways"}]}"#;
    let (status, head, first) = post(port_a, "/v1/chat/completions", body);
    assert_eq!(status, 200, "{first}");
    assert!(head.contains("x-weir-cache: miss"), "{head}");
    // Gateway A writes Redis behind its memory tier: wait until its stats show the copy.
    let started = Instant::now();
    loop {
        let (_, _, stats) = exchange(port_a, "GET", "/cache/stats", "");
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        if stats["tiers"][1]["entries"] == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{stats}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, head, second) = post(port_b, "/v1/chat/completions", body);
    assert_eq!(status, 200, "{second}");
    assert!(
        head.contains("x-weir-cache: hit"),
        "the other gateway's answer: {head}"
    );
    assert!(second.contains("shared across gateways"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn chat_results_persist_for_the_cache_commands() {
    let dir = tempdir("sqlite");
    let run = |args: &[&str]| {
        let o = weir()
            .env("WEIR_CACHE_DIR", &dir)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ask = [
        "chat",
        "--model",
        "mock/echo",
        "--temperature",
        "0",
        "remember",
        "me",
    ];
    assert_eq!(run(&ask), "remember me\n");
    // A new process: the answer comes from the SQLite file.
    let json_ask = [&ask[..], &["--json"]].concat();
    let done: serde_json::Value = serde_json::from_str(&run(&json_ask)).unwrap();
    assert_eq!(done["weir"]["cache"], "hit");
    assert_eq!(done["choices"][0]["message"]["content"], "remember me");
    let no_cache = [&json_ask[..], &["--no-cache"]].concat();
    let done: serde_json::Value = serde_json::from_str(&run(&no_cache)).unwrap();
    assert_eq!(done["weir"]["cache"], "bypass");
    let stats: serde_json::Value = serde_json::from_str(&run(&["cache", "stats"])).unwrap();
    let sqlite = stats["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["store"] == "sqlite")
        .expect("a sqlite tier");
    assert_eq!(sqlite["entries"], 1);
    assert!(run(&["cache", "clear", "--model", "mock/other"]).contains("removed 0 entries"));
    assert!(run(&["cache", "clear"]).contains("removed 1 entry"));
    let stats: serde_json::Value = serde_json::from_str(&run(&["cache", "stats"])).unwrap();
    assert_eq!(stats["tiers"][1]["entries"], 0);
    let _ = std::fs::remove_dir_all(dir);
}
