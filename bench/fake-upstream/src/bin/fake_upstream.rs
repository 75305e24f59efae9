//! `fake-upstream`: a loopback OpenAI/Anthropic server answering from pre-serialised bytes.
//!
//! Prints `listening on http://ADDR` on stdout once bound (port 0 picks a free one).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use weir_bench::fake::{Pacing, Shape, State, serve};

#[derive(Debug, Parser)]
#[command(
    name = "fake-upstream",
    about = "A fake OpenAI/Anthropic upstream for benchmarks"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Content chunks per answer (also the completion tokens).
    #[arg(long, default_value_t = 16)]
    chunks: usize,
    /// Paced mode: delay before the first stream frame (and before a JSON answer).
    #[arg(long, default_value_t = 0.0)]
    ttft_ms: f64,
    /// Paced mode: delay between stream frames.
    #[arg(long, default_value_t = 0.0)]
    chunk_interval_ms: f64,
    /// Prompt tokens reported in `usage`.
    #[arg(long, default_value_t = 24)]
    prompt_tokens: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = weir_bench::runtime(args.threads)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let pacing = Pacing {
            ttft: Duration::from_secs_f64(args.ttft_ms.max(0.0) / 1000.0),
            interval: Duration::from_secs_f64(args.chunk_interval_ms.max(0.0) / 1000.0),
        };
        let shape = Shape {
            chunks: args.chunks.max(1),
            prompt_tokens: args.prompt_tokens,
            stamped: false,
        };
        println!("listening on http://{}", listener.local_addr()?);
        serve(listener, State::new(shape, pacing)).await
    })
}
