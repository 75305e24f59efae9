//! Helpers shared by the CLI test files: the `weir` binary with a clean environment, a
//! spawned `weir serve` killed on drop, and a free loopback port.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn weir() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    // A clean environment: no provider keys or overrides leak in from the machine.
    for var in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENROUTER_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "OPENROUTER_BASE_URL",
        "WEIR_CONFIG",
        "WEIR_LISTEN",
        "WEIR_API_KEYS",
        "WEIR_ADMIN_KEY",
        "WEIR_POSTGRES_URL",
        "WEIR_REDIS_URL",
        "LLM_PROVIDER",
        "LLM_FORCE_MOCK",
        "LLM_MAX_RETRIES",
        "WEIR_LOG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_SDK_DISABLED",
    ] {
        cmd.env_remove(var);
    }
    // No persistent cache tier unless a test asks for one: runs must not see each other.
    cmd.env("WEIR_CACHE_DIR", "off");
    // Nor a key store in the user's data directory.
    cmd.env("WEIR_DATA_DIR", "off");
    cmd
}

pub struct ServeProcess(pub Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `weir serve --config <config>` on a free loopback port, once it accepts connections.
pub fn serve(config: &std::path::Path) -> (ServeProcess, u16) {
    let port = free_port();
    let child = weir()
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = ServeProcess(child);
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

/// A request written in one piece; returns (status, lower-cased head, body).
pub fn send(mut conn: TcpStream, request: &str) -> (u16, String, String) {
    conn.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

pub fn request(method: &str, path: &str, bearer: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {bearer}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

pub fn exchange(port: u16, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, _, body) = send(conn, &request(method, path, bearer, body));
    (status, body)
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}
