//! What the request path pays to record a call: [`Spool::append`] of one typical record (one
//! JSON line, one `write` to the page cache), alone and from four threads at once, next to the
//! JSON encoding alone.
//!
//! Run with `cargo bench -p weir-store --bench spool` (add `-- --quick` for a fast pass). Each
//! sample appends to a fresh spool in the temp directory, removed afterwards; no writer runs,
//! so the figures are the append alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_store::{Decimal, LedgerRecord, Spool};

/// A chat call as the gateway records it: attributed, priced, one tag.
fn record() -> LedgerRecord {
    LedgerRecord {
        at_ms: 1_793_886_312_345,
        request_id: "req_01JC9ZQ7R3N5X2V8K4M6P0T1WS".into(),
        key_id: Some("wk_4f9a2c1e8b7d3a60".into()),
        user: Some("alice@example.com".into()),
        team: Some("search".into()),
        project: Some("ranker".into()),
        tags: vec![("env".into(), "prod".into())],
        operation: "chat".into(),
        model: "gpt-4o".into(),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-4o-2024-08-06".into()),
        status: 200,
        outcome: "success".into(),
        error_kind: None,
        attempts: 1,
        cache: "miss".into(),
        input_tokens: 1_250,
        output_tokens: 310,
        cached_input_tokens: 1_024,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: Some(Decimal::new(6_225, 6)),
        saved_usd: None,
        latency_us: 1_840_000,
        upstream_us: Some(1_790_000),
        first_token_us: Some(420_000),
        prompt_fingerprint: Some("3f9a0c7d5b1e2f48".into()),
    }
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-spool-bench-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `iters` appends split over `threads` threads, on a fresh spool.
fn appends(iters: u64, threads: u64) -> Duration {
    let dir = fresh_dir();
    let spool = Spool::open(&dir, u64::MAX).unwrap();
    let record = record();
    let per_thread = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..per_thread {
                    spool.append(black_box(&record)).unwrap();
                }
            });
        }
    });
    let elapsed = start.elapsed();
    drop(spool);
    std::fs::remove_dir_all(&dir).unwrap();
    elapsed
}

fn spool(c: &mut Criterion) {
    let line = serde_json::to_vec(&record()).unwrap().len() as u64 + 1;
    let mut group = c.benchmark_group("spool");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_only", |b| {
        let record = record();
        let mut buf = Vec::with_capacity(1024);
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&record)).unwrap();
            buf.push(b'\n');
            black_box(buf.len())
        });
    });
    group.bench_function("append", |b| b.iter_custom(|iters| appends(iters, 1)));
    group.bench_function("append_4_threads", |b| {
        b.iter_custom(|iters| appends(iters, 4))
    });
    group.finish();
    eprintln!("spool: one record is a {line}-byte line");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = spool
}
criterion_main!(benches);
