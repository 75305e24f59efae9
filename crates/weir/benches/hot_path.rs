//! Micro-benchmarks for weir's hot pieces: what every request pays for besides the upstream.
//!
//! Run with `cargo bench -p weir --bench hot_path` (add `-- --quick` for a fast pass, or a
//! filter such as `-- sse/`). The payloads are in `hot_path/payloads.rs`; what each benchmark
//! measures, and the figures on the reference machine, are in `bench/MICRO.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "hot_path/payloads.rs"]
mod payloads;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::CallContext;
use weir::limits::{InboundLimits, LimitsConfig, RateLimit};
use weir::metrics::Metrics;
use weir::pipeline::{
    Admission, AdmissionRequest, AttemptInfo, AttemptObserver, AttemptOutcome, CacheOutcome,
    Latencies, Operation, Outcome, RouteTaken, Tokens, UsageEvent, UsageSink,
};
use weir::pool::{Demand, KeyLimits, KeyPool, PoolConfig, PooledKey};
use weir::provider::anthropic::convert::{from_anthropic_response, to_anthropic_request};
use weir::provider::anthropic::stream::ChunkTranslator;
use weir::provider::openai::chat_body;
use weir::provider::sse::{SseDecoder, SseEvent};
use weir::retry::RetryBudget;
use weir_types::anthropic::{MessagesResponse, StreamEvent};
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse};

/// Decode a whole transcript delivered in `reads`, as the provider adapters do.
fn decode_sse(reads: &[&[u8]]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for read in reads {
        decoder.push(read, &mut events).unwrap();
    }
    events.extend(decoder.finish());
    events
}

fn chat_types(c: &mut Criterion) {
    let request_bytes = payloads::CHAT_REQUEST.as_bytes();
    let request = payloads::chat_request();
    let response_json = payloads::chat_response_json();
    let response = payloads::chat_response();

    let mut g = c.benchmark_group("chat");
    g.throughput(Throughput::Bytes(request_bytes.len() as u64));
    g.bench_function("request_parse", |b| {
        b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(request_bytes)).unwrap())
    });
    g.throughput(Throughput::Bytes(
        serde_json::to_vec(&request).unwrap().len() as u64,
    ));
    g.bench_function("request_serialise", |b| {
        b.iter(|| serde_json::to_vec(black_box(&request)).unwrap())
    });
    g.throughput(Throughput::Bytes(response_json.len() as u64));
    g.bench_function("response_parse", |b| {
        b.iter(|| {
            serde_json::from_slice::<ChatResponse>(black_box(response_json.as_bytes())).unwrap()
        })
    });
    g.bench_function("response_serialise", |b| {
        b.iter(|| serde_json::to_vec(black_box(&response)).unwrap())
    });
    g.finish();

    // A 40 KB conversation: parsed, then written as the upstream body (the provider's
    // borrowed view, through weir's JSON writer; serde_json beside it for comparison).
    let long_json = payloads::long_chat_request_json();
    let long: ChatRequest = serde_json::from_str(&long_json).unwrap();
    let body = chat_body(&long, "gpt-4o");
    let mut g = c.benchmark_group("chat_long");
    g.throughput(Throughput::Bytes(long_json.len() as u64));
    g.bench_function("request_parse", |b| {
        b.iter(|| serde_json::from_str::<ChatRequest>(black_box(&long_json)).unwrap())
    });
    g.bench_function("upstream_body", |b| {
        b.iter(|| weir::json::to_vec(black_box(&body)).unwrap())
    });
    g.bench_function("upstream_body_serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&body)).unwrap())
    });
    g.bench_function("cache_key", |b| {
        b.iter(|| weir::cache::key::cache_key(black_box(&long), "openai/gpt-4o", "shared").unwrap())
    });
    g.finish();
}

fn sse(c: &mut Criterion) {
    let openai = payloads::openai_sse();
    let openai_reads = payloads::network_reads(openai.as_bytes());
    let anthropic_reads = payloads::network_reads(payloads::ANTHROPIC_SSE.as_bytes());
    assert_eq!(decode_sse(&openai_reads).len(), 31, "30 chunks and [DONE]");

    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(openai.len() as u64));
    g.bench_function("openai_30_chunks_decode", |b| {
        b.iter(|| decode_sse(black_box(&openai_reads)))
    });
    // What the OpenAI adapter does per stream: decode, then parse each chunk.
    g.bench_function("openai_30_chunks_decode_parse", |b| {
        b.iter(|| {
            decode_sse(black_box(&openai_reads))
                .iter()
                .filter(|ev| !ev.is_done())
                .map(|ev| serde_json::from_str::<ChatChunk>(&ev.data).unwrap())
                .collect::<Vec<_>>()
        })
    });
    g.throughput(Throughput::Bytes(payloads::ANTHROPIC_SSE.len() as u64));
    g.bench_function("anthropic_tool_use_decode", |b| {
        b.iter(|| decode_sse(black_box(&anthropic_reads)))
    });
    g.finish();
}

fn anthropic(c: &mut Criterion) {
    let request = payloads::chat_request();
    let response_bytes = payloads::ANTHROPIC_RESPONSE.as_bytes();
    let events = decode_sse(&payloads::network_reads(payloads::ANTHROPIC_SSE.as_bytes()));
    let messages_request = payloads::messages_request();
    let chunks = payloads::openai_chunks();
    to_anthropic_request(&request, "claude-sonnet-4-5", 4096).unwrap();
    weir::messages::to_chat_request(&messages_request).unwrap();

    // Canonical (OpenAI-shaped) traffic to an Anthropic upstream.
    let mut g = c.benchmark_group("anthropic");
    g.bench_function("request_to_anthropic", |b| {
        b.iter(|| to_anthropic_request(black_box(&request), "claude-sonnet-4-5", 4096).unwrap())
    });
    g.bench_function("request_to_anthropic_body", |b| {
        b.iter(|| {
            let req = to_anthropic_request(black_box(&request), "claude-sonnet-4-5", 4096);
            serde_json::to_vec(&req.unwrap()).unwrap()
        })
    });
    g.bench_function("response_parse_to_openai", |b| {
        b.iter(|| {
            let resp: MessagesResponse = serde_json::from_slice(black_box(response_bytes)).unwrap();
            from_anthropic_response(resp)
        })
    });
    // The events already decoded from SSE: parse each as the adapter does, then translate.
    g.bench_function("stream_events_to_chunks", |b| {
        b.iter(|| {
            let mut translator = ChunkTranslator::new("claude-sonnet-4-5");
            let mut out = Vec::new();
            for ev in black_box(&events) {
                if ev.data.trim().is_empty() {
                    continue;
                }
                let parsed: StreamEvent = serde_json::from_str(&ev.data).unwrap();
                out.extend(translator.on_event(parsed).unwrap());
            }
            out.extend(translator.finish());
            out
        })
    });

    // Anthropic Messages traffic (`/v1/messages`) to a canonical upstream.
    g.bench_function("messages_request_to_chat", |b| {
        b.iter(|| weir::messages::to_chat_request(black_box(&messages_request)).unwrap())
    });
    g.bench_function("chunks_to_messages_events", |b| {
        b.iter(|| {
            let mut translator =
                weir::messages::EventTranslator::new("claude-sonnet-4-5", "msg_bench".into());
            let mut out = Vec::new();
            for chunk in black_box(&chunks) {
                out.extend(translator.on_chunk(chunk));
            }
            out.extend(translator.finish());
            out
        })
    });
    g.finish();
}

fn cache(c: &mut Criterion) {
    let request = payloads::chat_request();
    let response = payloads::chat_response();
    let replayed = weir::cache::replay::chunks_from_response(&response, true);
    assert!(weir::cache::replay::response_from_chunks(&replayed).is_some());

    let mut g = c.benchmark_group("cache");
    g.bench_function("key", |b| {
        b.iter(|| {
            weir::cache::key::cache_key(black_box(&request), "openai/gpt-4o", "shared").unwrap()
        })
    });
    g.bench_function("replay_chunks_from_response", |b| {
        b.iter(|| weir::cache::replay::chunks_from_response(black_box(&response), true))
    });
    g.bench_function("replay_response_from_chunks", |b| {
        b.iter(|| weir::cache::replay::response_from_chunks(black_box(&replayed)).unwrap())
    });
    g.finish();
}

fn tokens(c: &mut Criterion) {
    weir::tokens::warm_up();
    let request = payloads::chat_request();
    let text = payloads::text_1kb();

    let mut g = c.benchmark_group("tokens");
    g.bench_function("count_request_tokens", |b| {
        b.iter(|| weir::tokens::count_request_tokens(black_box(&request)))
    });
    // The cheap estimate (bytes / 4) hot paths may use instead.
    g.bench_function("estimate_prompt_tokens", |b| {
        b.iter(|| weir::tokens::estimate_prompt_tokens(black_box(&request)))
    });
    // The upper bound a request reserves first; the exact count runs only when a key has no
    // room for it.
    g.bench_function("request_tokens_upper_bound", |b| {
        b.iter(|| weir::tokens::request_tokens_upper_bound(black_box(&request)))
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("count_tokens_1kb", |b| {
        b.iter(|| weir::tokens::count_tokens(black_box(&text)))
    });
    g.finish();
}

/// Reservations per pool before it is replaced: far below what three keys admit per minute,
/// so no acquire ever waits and the figure is the admission path alone.
const POOL_ROTATION: u64 = 1000;

/// Three keys with Anthropic tier-4-like limits.
fn key_pool() -> KeyPool {
    let keys = (0..3)
        .map(|i| PooledKey {
            id: format!("anthropic#{i}"),
            secret: Some(format!("sk-ant-bench-{i}").into()),
            limits: KeyLimits {
                requests_per_minute: Some(4_000),
                input_tokens_per_minute: Some(2_000_000),
                output_tokens_per_minute: Some(400_000),
            },
        })
        .collect();
    KeyPool::new("anthropic", keys, PoolConfig::default())
}

fn limits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("limits");
    // One reservation (1,200 input tokens counted, max_tokens 512) and its settlement with
    // the real usage, on a pool of three limited keys.
    g.bench_function("pool_acquire_settle_3_keys", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(POOL_ROTATION);
                    let pool = key_pool();
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                    let start = std::time::Instant::now();
                    for _ in 0..batch {
                        let lease = pool
                            .acquire(black_box(Demand::new(1200, 512)), 0, deadline, &[])
                            .await
                            .unwrap();
                        lease.settle(black_box(1187), black_box(221));
                    }
                    total += start.elapsed();
                    left -= batch;
                }
                total
            })
        })
    });

    let budget = RetryBudget::new(0.2, 10);
    g.bench_function("retry_budget_deposit", |b| {
        b.iter(|| black_box(&budget).deposit())
    });
    // A ratio of 1 earns one retry per request: every withdrawal is granted.
    let granting = RetryBudget::new(1.0, 0);
    g.bench_function("retry_budget_deposit_withdraw_granted", |b| {
        b.iter(|| {
            granting.deposit();
            assert!(black_box(&granting).try_withdraw());
        })
    });
    // An empty budget: the refusal a retry storm hits, without writing.
    let empty = RetryBudget::new(0.0, 0);
    g.bench_function("retry_budget_withdraw_refused", |b| {
        b.iter(|| black_box(&empty).try_withdraw())
    });
    g.finish();
}

/// A usage event with these tokens, as a call's end hands it to the admissions.
fn usage_event(context: std::sync::Arc<CallContext>, input: u64, output: u64) -> UsageEvent {
    UsageEvent {
        context,
        operation: Operation::Chat,
        outcome: Outcome::Success,
        status: 200,
        error: None,
        route: None,
        attempts: 1,
        tokens: Tokens {
            input,
            output,
            ..Tokens::default()
        },
        tokens_estimated: false,
        cost_usd: None,
        cache: CacheOutcome::Miss,
        latency: Latencies::default(),
        prompt_fingerprint: None,
    }
}

/// The inbound limiter in memory: what a limited call pays before and after its upstream.
fn inbound_limits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Limits far above what the bench reaches, so every call is admitted and the figure is
    // the bookkeeping alone.
    let config = LimitsConfig {
        per_key: RateLimit {
            rpm: Some(1_000_000_000),
            tpm: Some(1_000_000_000_000),
        },
        per_user: RateLimit {
            rpm: Some(1_000_000_000),
            tpm: None,
        },
        ..LimitsConfig::default()
    };
    let limits = rt.block_on(async { InboundLimits::in_memory(&config) });
    let mut context = CallContext::default();
    context.principal.key_id = Some("key_bench".into());
    context.principal.user = Some("alice".into());
    let context = std::sync::Arc::new(context);
    let event = usage_event(std::sync::Arc::clone(&context), 1187, 221);
    let request = AdmissionRequest {
        context: &context,
        operation: Operation::Chat,
        input_tokens: 1200,
        max_output_tokens: 512,
    };
    let anonymous = CallContext::default();
    let unscoped = AdmissionRequest {
        context: &anonymous,
        ..request
    };

    let mut g = c.benchmark_group("limits");
    // Three cells (key requests and tokens, user requests): reserve, then settle the tokens.
    g.bench_function("inbound_reserve_settle_3_cells", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let admitted = limits.reserve(black_box(&request)).await.unwrap();
                    limits.settle(admitted.reservation, black_box(&event));
                }
                start.elapsed()
            })
        })
    });
    // A call no limit applies to (no key, user, team or address).
    g.bench_function("inbound_reserve_settle_unscoped", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let admitted = limits.reserve(black_box(&unscoped)).await.unwrap();
                    limits.settle(admitted.reservation, black_box(&event));
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// The rate-limit headers of every upstream response: OpenAI's, as its API sends them, among
/// the other headers of a real response.
fn rate_limit_headers(c: &mut Criterion) {
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("date", "Mon, 01 Dec 2026 12:00:00 GMT"),
        ("content-type", "application/json"),
        ("openai-organization", "org-bench"),
        ("openai-processing-ms", "412"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "29999000"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "2ms"),
        ("x-request-id", "req_0123456789abcdef"),
        ("cf-cache-status", "DYNAMIC"),
        ("server", "cloudflare"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    let mut g = c.benchmark_group("limits");
    g.bench_function("rate_limit_headers_openai", |b| {
        b.iter(|| weir::provider::ratelimit::parse_headers(black_box(&headers)))
    });
    g.finish();
}

/// Recording one call's metrics, as the gateway does: the attempt observer's start and end,
/// then the usage sink (counters, tokens, cost and five histograms). Atomic adds only.
fn metrics(c: &mut Criterion) {
    let yaml = "providers:\n  oai:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-bench\nmodels:\n  fast:\n    deployments: [oai/gpt-4o-mini]\n  smart:\n    deployments: [oai/gpt-4o]\n";
    let config = weir::Config::from_yaml(yaml, &|_: &str| None).unwrap();
    let metrics = Metrics::new(&config);
    let mut context = CallContext::with_request_id("req-1");
    context.model = "fast".into();
    let mut event = usage_event(std::sync::Arc::new(context), 1200, 300);
    event.route = Some(RouteTaken {
        provider: "oai".into(),
        upstream_model: "gpt-4o-mini".into(),
        key_label: Some("oai#0".into()),
    });
    event.cost_usd = Some(rust_decimal::Decimal::new(75, 6));
    event.latency = Latencies {
        total: Duration::from_millis(420),
        upstream: Duration::from_millis(410),
        first_token: None,
    };
    let attempt = AttemptInfo {
        request_id: "req-1",
        deployment: "oai/gpt-4o-mini",
        provider: "oai",
        key_label: "oai#0",
        number: 1,
        hedge: false,
    };
    let mut g = c.benchmark_group("metrics");
    g.bench_function("record_call", |b| {
        b.iter(|| {
            metrics.attempt_started(black_box(&attempt));
            metrics.attempt_ended(
                &attempt,
                AttemptOutcome::Success,
                Duration::from_millis(410),
            );
            metrics.record(black_box(&event));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = chat_types, sse, anthropic, cache, tokens, limits, inbound_limits, rate_limit_headers,
        metrics
}
criterion_main!(benches);
