//! Helpers shared by the CLI test files: the `weir` binary with a clean environment, a
//! spawned `weir serve` killed on drop, and a free loopback port.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Child, Command};

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
