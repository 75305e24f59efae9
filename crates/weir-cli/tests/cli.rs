//! The `weir` binary end to end: chat, streaming, stdin, JSON, models, config check, exit
//! codes, an OpenAI-compatible upstream on loopback, and secrets kept out of all output.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{ServeProcess, free_port, weir};

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run weir")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn chat_answers_from_the_mock() {
    let o = run(weir().args(["chat", "--model", "mock/echo", "hello"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
}

#[test]
fn chat_streams() {
    let o = run(weir().args([
        "chat",
        "--model",
        "mock/echo",
        "--stream",
        "one",
        "two",
        "three",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "one two three\n");
}

#[test]
fn chat_reads_stdin() {
    let mut child = weir()
        .args(["chat", "--model", "mock/echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), "from stdin\n");
}

#[test]
fn chat_json_has_usage_and_cost() {
    let o = run(weir().args(["chat", "--json", "--model", "mock/echo", "a b c"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "a b c");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["weir"]["provider"], "mock");
    assert!(v["weir"].get("cost_usd").is_some());

    let o = run(weir().args(["chat", "--json", "--stream", "--model", "mock/echo", "a b"]));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.last().unwrap()["weir"]["usage"]["completion_tokens"],
        2
    );
}

#[test]
fn mock_flag_answers_offline_whatever_the_model() {
    let o = run(weir().args(["chat", "--mock", "--model", "openai/gpt-4o", "offline"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "offline\n");
}

#[test]
fn unknown_model_is_a_usage_error() {
    let o = run(weir().args(["chat", "--model", "openai/gpt-4o", "x"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no provider named `openai`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn models_lists_mock_and_aliases() {
    let dir = tempdir();
    let file = dir.join("weir.yaml");
    std::fs::write(&file, "models:\n  fast: mock/lorem\n").unwrap();
    let o = run(weir().arg("--config").arg(&file).arg("models"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("mock/echo") && out.contains("fast"), "{out}");
}

#[test]
fn config_check_reports_every_problem() {
    let dir = tempdir();
    let good = dir.join("good.yaml");
    std::fs::write(&good, "models:\n  fast: mock/lorem\n").unwrap();
    let o = run(weir().args(["config", "check"]).arg(&good));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "server:\n  listen: nowhere\nmodels:\n  fast: nope/x\nretry:\n  base_delay: soon\n",
    )
    .unwrap();
    let o = run(weir().args(["config", "check"]).arg(&bad));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("bad.yaml"), "{err}");
    for path in ["server.listen", "models.fast", "retry.base_delay"] {
        assert!(err.contains(path), "missing {path}: {err}");
    }
}

/// `weir serve` as the "local OpenAI-compatible server" (it is one), so a second weir can
/// reach it through OPENAI_BASE_URL exactly as it would reach vLLM or Ollama.
fn serve_upstream(extra_env: &[(&str, &str)]) -> (ServeProcess, u16) {
    let port = free_port();
    let mut cmd = weir();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = ServeProcess(cmd.spawn().unwrap());
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "weir serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

#[test]
fn openai_compatible_provider_on_a_local_server() {
    let (_upstream, port) = serve_upstream(&[("WEIR_API_KEYS", "upstream-key")]);
    let base = format!("http://127.0.0.1:{port}/v1");
    let o = run(weir()
        .env("OPENAI_BASE_URL", &base)
        .env("OPENAI_API_KEY", "upstream-key")
        .args(["chat", "--model", "openai/mock/echo", "through two weirs"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "through two weirs\n");

    let o = run(weir()
        .env("OPENAI_BASE_URL", &base)
        .env("OPENAI_API_KEY", "upstream-key")
        .args([
            "chat",
            "--stream",
            "--model",
            "openai/mock/echo",
            "streamed",
            "too",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "streamed too\n");
}

#[test]
fn api_keys_never_appear_in_output_or_logs() {
    let secret = "sk-live-DO-NOT-PRINT-4242";
    // An upstream that rejects the key (401), with debug logs on.
    let (_upstream, port) = serve_upstream(&[("WEIR_API_KEYS", "the-right-key")]);
    let o = run(weir()
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
        .env("OPENAI_API_KEY", secret)
        .args(["-vv", "chat", "--model", "openai/mock/echo", "hi"]));
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("rejected the API key"), "{all}");
    assert!(!all.contains(secret), "secret leaked: {all}");

    // An upstream that is not there at all.
    let dead = free_port();
    let o = run(weir()
        .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{dead}/v1"))
        .env("OPENAI_API_KEY", secret)
        .env("LLM_MAX_RETRIES", "0")
        .args(["-vv", "chat", "--model", "openai/gpt-4o", "hi"]));
    assert_eq!(o.status.code(), Some(1));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains(secret), "secret leaked: {all}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-cli-test-{}-{}",
        std::process::id(),
        fastrand()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[test]
fn an_empty_prompt_is_a_usage_error() {
    let o = run(weir().args(["chat", "--mock", "   "]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("the prompt is empty"), "{}", stderr(&o));
}

#[test]
fn json_output_says_its_latency_is_in_milliseconds() {
    let o = run(weir().args(["chat", "--mock", "--json", "hi"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("\"latency_ms\""), "{out}");
}

#[test]
fn models_lists_offline_even_with_a_redis_cache_configured() {
    let dir = std::env::temp_dir().join(format!("weir-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("redis.yaml");
    // Nothing listens on port 1: listing must not try.
    std::fs::write(
        &config,
        "cache:\n  enabled: true\n  redis: { url: \"redis://127.0.0.1:1\" }\n",
    )
    .unwrap();
    let o = run(weir().args(["--config", config.to_str().unwrap(), "models"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mock/echo"), "{}", stdout(&o));
}

#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = run(weir().args(["serve", "--listen", &addr]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    let reason = std::io::Error::from(std::io::ErrorKind::AddrInUse).to_string();
    let said = err.matches("in use").count();
    assert_eq!(said, 1, "the OS message once ({reason}): {err}");
}

#[test]
fn config_check_refuses_a_retention_shorter_than_the_roll_up_age() {
    let dir = tempdir();
    let file = dir.join("ledger.yaml");
    std::fs::write(&file, "ledger:\n  retention: 30d\n  roll_up_after: 90d\n").unwrap();
    let o = run(weir().args(["config", "check"]).arg(&file));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("ledger.retention"), "{err}");
    assert!(
        err.contains("must be longer than roll_up_after") && err.contains("raise retention"),
        "{err}"
    );
}
