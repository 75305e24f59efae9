//! `weir status` and `weir top` against a running `weir serve` that took a known load: the
//! summary names the deployments (an open breaker among them), key pools, cache, spend and
//! budgets; `--json` is the gateway's answer; `weir top` redraws; and the errors a person can
//! make (no gateway there, a missing admin key, a bad interval) say what to do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{ServeProcess, exchange, free_port, weir};

const ADMIN: &str = "status-admin-key";

fn tempdir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "weir-cli-status-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A gateway with a store (for spend), a budget, a price for mock/echo, and a provider whose
/// upstream is a closed port (its breaker opens after two failures).
fn serve(name: &str, admin_key: Option<&str>) -> (ServeProcess, u16) {
    let dir = tempdir(name);
    let closed = free_port();
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        format!(
            "retry: {{ max_retries: 0 }}
circuit_breaker: {{ consecutive_failures: 2, cooldown: 10m, max_cooldown: 10m }}
providers:
  dead: {{ kind: openai, base_url: \"http://127.0.0.1:{closed}/v1\", api_key: sk-dead-secret }}
models:
  broken: dead/gpt-dead
pricing:
  mock/echo: {{ input: 1000, output: 2000 }}
budgets:
  - {{ id: all-daily, scope: global, limit_usd: 100, period: daily }}
"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = weir();
    cmd.env("WEIR_DATA_DIR", dir.join("data"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null());
    if let Some(key) = admin_key {
        cmd.env("WEIR_ADMIN_KEY", key);
    }
    let served = ServeProcess(cmd.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "weir serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (served, port)
}

fn chat(port: u16, model: &str) -> u16 {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    exchange(port, "POST", "/v1/chat/completions", "", &body).0
}

/// Three answered calls and three failed ones (the last refused by the open breaker).
fn load(port: u16) {
    for _ in 0..3 {
        assert_eq!(chat(port, "mock/echo"), 200);
    }
    for _ in 0..3 {
        assert!(chat(port, "broken") >= 500);
    }
}

fn run(port: u16, args: &[&str]) -> Output {
    weir()
        .args(args)
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_names_the_deployments_pools_cache_spend_and_budgets() {
    let (_gw, port) = serve("summary", None);
    load(port);
    let o = run(port, &["status"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for needle in [
        "since start: 6 requests, 3 errors",
        "DEPLOYMENT",
        "mock/echo",
        "KEY ",
        "dead#0",
        "mock#keyless",
        "cache: hit rate",
        "MODEL (UTC)",
        "broken",
        "all-daily",
        "$100.00 daily",
    ] {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }
    let dead = out
        .lines()
        .find(|l| l.starts_with("dead/gpt-dead"))
        .unwrap_or_else(|| panic!("no dead/gpt-dead row in:\n{out}"));
    assert!(dead.contains("open") && dead.contains("100.0%"), "{dead}");
    let echo = out
        .lines()
        .find(|l| l.starts_with("mock/echo ") && l.contains('$'))
        .unwrap_or_else(|| panic!("no mock/echo spend row in:\n{out}"));
    assert!(echo.contains(" 3 "), "three calls today: {echo}");
    assert!(
        !out.contains("sk-dead-secret"),
        "a provider key was printed"
    );
}

#[test]
fn status_json_is_the_gateways_answer() {
    let (_gw, port) = serve("json", None);
    load(port);
    let o = run(port, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["traffic"]["requests_total"], 6);
    assert_eq!(v["traffic"]["errors_total"], 3);
    assert_eq!(v["recent"].as_array().unwrap().len(), 6);
    let dead = v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "dead/gpt-dead")
        .unwrap();
    assert_eq!(dead["breaker"]["state"], "open");
    assert_eq!(v["budgets"][0]["spec"]["id"], "all-daily");
}

#[test]
fn top_redraws_until_its_iterations_are_done() {
    let (_gw, port) = serve("top", None);
    load(port);
    let started = Instant::now();
    let o = run(port, &["top", "--interval", "200ms", "-n", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.matches("\x1b[2J\x1b[H").count(), 3, "{out}");
    assert_eq!(out.matches("dead/gpt-dead").count(), 3, "{out}");
    assert!(out.contains("q or Ctrl-C quits"), "{out}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[test]
fn top_stops_on_ctrl_c() {
    let (_gw, port) = serve("top-int", None);
    let mut child = weir()
        .args(["top", "--url", &format!("http://127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "weir top ignored Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn status_errors_say_what_to_do() {
    // No gateway there.
    let o = run(free_port(), &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is `weir serve` running there?"),
        "{}",
        text(&o.stderr)
    );

    // Not a URL.
    let o = weir()
        .args(["status", "--url", "localhost:4100"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("is not an http:// or https:// URL"));

    // An interval too short to read.
    let o = run(free_port(), &["top", "--interval", "10ms"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("at least 100ms"),
        "{}",
        text(&o.stderr)
    );

    // A gateway with an admin key, asked without it, then with it.
    let (_gw, port) = serve("keyed", Some(ADMIN));
    let o = run(port, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("401") && err.contains("--admin-key"), "{err}");
    let o = run(port, &["status", "--admin-key", ADMIN]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("dead/gpt-dead"));
}
