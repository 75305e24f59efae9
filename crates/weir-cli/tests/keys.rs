//! `weir keys` against a running `weir serve` with its embedded key store: create (the key
//! printed once), list, update, rotate and revoke, and the errors a person can make.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{ServeProcess, free_port, weir};

const ADMIN: &str = "cli-admin-key";

fn serve(data_dir: &std::path::Path, admin_key: Option<&str>) -> (ServeProcess, u16) {
    let port = free_port();
    let mut cmd = weir();
    cmd.env("WEIR_DATA_DIR", data_dir)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null());
    if let Some(key) = admin_key {
        cmd.env("WEIR_ADMIN_KEY", key);
    }
    let served = ServeProcess(cmd.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "weir serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (served, port)
}

fn keys(port: u16, args: &[&str]) -> Output {
    weir()
        .args(["keys", "--url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .env("WEIR_ADMIN_KEY", ADMIN)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    weir_test_support::temp_dir(&format!("cli-keys-{name}")).unwrap()
}

#[test]
fn keys_are_created_listed_updated_rotated_and_revoked() {
    let dir = tempdir("lifecycle");
    let (_gw, port) = serve(&dir, Some(ADMIN));

    let out = keys(
        port,
        &[
            "create",
            "--name",
            "web",
            "--team",
            "search",
            "--model",
            "mock/*",
            "--rpm",
            "20",
            "--meta",
            "owner=ops",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .expect("the key is printed")
        .to_owned();
    assert!(key.starts_with("wk-"), "{stdout}");
    assert!(stdout.contains("shown this once"), "{stdout}");
    assert!(
        stdout.contains("team=search") && stdout.contains("rpm=20"),
        "{stdout}"
    );
    let id = stdout.split_whitespace().next().unwrap().to_owned();
    assert!(id.starts_with("key_"), "{stdout}");
    assert!(
        dir.join("weir.sqlite3").exists(),
        "the store is in WEIR_DATA_DIR"
    );

    let out = keys(port, &["list"]);
    let listing = text(&out.stdout);
    assert!(out.status.success() && listing.contains(&id), "{listing}");
    assert!(!listing.contains(&key), "listings never show the key");

    let out = keys(port, &["update", &id, "--rpm", "50", "--expires-in", "30d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rpm=50"));

    let out = keys(port, &["--json", "show", &id]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["limits"]["rpm"], 50);
    assert!(shown["expires_at"].as_i64().unwrap() > 0);
    assert_eq!(shown["metadata"]["owner"], "ops");

    let out = keys(port, &["rotate", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(&key), "a new secret");

    let out = keys(port, &["revoke", &id]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("revoked"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistakes_are_reported_with_what_to_do() {
    let dir = tempdir("mistakes");
    let (_gw, port) = serve(&dir, Some(ADMIN));

    let out = keys(port, &["create"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--name"));

    let out = keys(port, &["update", "key_x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing to update"));

    let out = keys(port, &["show", "key_missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));

    let out = weir()
        .args(["keys", "--url", &format!("http://127.0.0.1:{port}"), "list"])
        .env("WEIR_ADMIN_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("401") && err.contains("WEIR_ADMIN_KEY"),
        "{err}"
    );
    assert!(!err.contains("wrong\""), "{err}");

    let closed = free_port();
    let out = keys(closed, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is `weir serve` running"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_an_admin_key_loopback_may_manage_keys() {
    let dir = tempdir("loopback");
    let (_gw, port) = serve(&dir, None);
    let out = weir()
        .args(["keys", "--url", &format!("http://127.0.0.1:{port}")])
        .args(["create", "--name", "local"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn budgets_and_usage_come_from_the_running_gateway() {
    let dir = tempdir("reports");
    let (_gw, port) = serve(&dir, Some(ADMIN));
    let url = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        weir()
            .args(args)
            .args(["--url", &url])
            .env("WEIR_ADMIN_KEY", ADMIN)
            .output()
            .unwrap()
    };
    let out = run(&[
        "budgets", "set", "team-a", "--scope", "team=a", "--limit", "25", "--period", "weekly",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["spec"]["id"], "team-a");
    let out = run(&["budgets", "list"]);
    assert!(text(&out.stdout).contains("team-a"));
    let out = run(&[
        "budgets",
        "set",
        "bad",
        "--scope",
        "colour=red",
        "--limit",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["budgets", "remove", "team-a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let chat = weir().args(["chat", "--json", "hello"]).output().unwrap();
    assert!(chat.status.success());
    // A call through the gateway, so its ledger has a row.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = r#"{"model":"mock/echo","messages":[{"role":"user","content":"hi"}]}"#;
    use std::io::{Read, Write};
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let out = run(&["usage", "--group-by", "model", "--csv"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    assert!(csv.starts_with("model,requests,"), "{csv}");
    assert!(csv.contains("mock/echo,1,"), "{csv}");
    let out = run(&["usage", "--group-by", "colour"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("400"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recommend_reports_an_expired_key_as_a_table_or_json() {
    let dir = tempdir("recommend");
    let (_gw, port) = serve(&dir, Some(ADMIN));
    let url = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| {
        weir()
            .args(args)
            .args(["--url", &url])
            .env("WEIR_ADMIN_KEY", ADMIN)
            .output()
            .unwrap()
    };
    let out = run(&["recommend"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("nothing to recommend from the last 7 days"),
        "{}",
        text(&out.stdout)
    );

    let out = keys(
        port,
        &[
            "create",
            "--name",
            "short-lived",
            "--expires-in",
            "1s",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(2100));

    let out = run(&["recommend"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    assert_eq!(lines.next(), Some("kind\tsaving_usd\tmessage"));
    let row = lines.next().unwrap();
    assert!(row.starts_with("expired_key\t-\t"), "{row}");
    assert!(row.contains(&format!("weir keys revoke {id}")), "{row}");

    let out = run(&["recommend", "--json", "--days", "30", "--idle-days", "5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["days"], 30);
    assert_eq!(json["data"][0]["figures"]["key_id"], id.as_str());

    let out = run(&["recommend", "--days", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("400") && err.contains("days=0"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
