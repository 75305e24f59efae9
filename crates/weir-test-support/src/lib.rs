//! Test helpers for weir: fake upstreams speaking the providers' real wire formats.
//!
//! - [`FakeUpstream`] ([`fake`]): an HTTP server on `127.0.0.1:0` answering from a script of
//!   [`Reply`]s (JSON, error statuses with headers, SSE transcripts split at awkward byte
//!   boundaries, delays, stalls, cut connections) and recording every request it received;
//! - [`openai`] and [`anthropic`]: realistic bodies, stream transcripts (text, tool calls,
//!   thinking, usage), error bodies and rate-limit headers of each API;
//! - [`sse`]: building transcripts by hand;
//! - [`redis`] and [`postgres`]: throwaway servers on free loopback ports, for the shared cache
//!   and store tests;
//! - [`temp_dir`]: a fresh directory per test, for SQLite stores, spools and configs.
//!
//! Used by the library's provider tests and by the gateway's end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use weir_test_support::{FakeUpstream, Reply, openai};
//! let fake = FakeUpstream::start().await?;
//! fake.push(Reply::sse(openai::text_stream("gpt-4o-mini", &["Hel", "lo"])).awkward());
//! // ... point a provider at fake.v1(), call it, then:
//! let req = fake.last_request();
//! # Ok(()) }
//! ```

pub mod anthropic;
pub mod fake;
pub mod openai;
pub mod postgres;
pub mod redis;
pub mod sse;

pub use fake::{Chunking, FakeUpstream, Recorded, Reply};

/// A new, empty directory under the system's temp dir, named `weir-{name}-{pid}-{nanos}`, so
/// tests running at once never share one. Tests remove it when they pass; a failing test's
/// files stay for a look.
pub fn temp_dir(name: &str) -> std::io::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("weir-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
