//! The response cache through `weir::Client`, against a fake OpenAI upstream that counts calls:
//! which fields split the key, the sampled-request policy, tenant isolation, directives,
//! errors and cut streams never stored, stream store and replay, single-flight for answers and
//! streams, clearing by model, SQLite persistence across a restart, two clients sharing one
//! Redis, and the semantic cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use weir::client::{CacheDirectives, CacheStatus};
use weir::{CallContext, Client, Config};
use weir_test_support::redis::RedisServer;
use weir_test_support::{FakeUpstream, Reply, openai};
use weir_types::chat::{ChatChunk, ChatRequest};

const MODEL: &str = "oai/gpt-4o";

async fn fake() -> FakeUpstream {
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion(
        "gpt-4o",
        "cached answer",
    )));
    fake
}

fn config(fake: &FakeUpstream, cache_yaml: &str) -> Config {
    let yaml = format!(
        "retry:\n  max_retries: 0\nproviders:\n  oai:\n    kind: openai\n    base_url: {}\n    api_keys: [k]\n{cache_yaml}",
        fake.v1()
    );
    Config::from_yaml(&yaml, &|_: &str| None).unwrap()
}

fn client(fake: &FakeUpstream, cache_yaml: &str) -> Client {
    Client::new(config(fake, cache_yaml)).unwrap()
}

/// A request from JSON, deterministic (temperature 0) unless the JSON says otherwise.
fn request(body: Value) -> ChatRequest {
    let mut body = body;
    let obj = body.as_object_mut().unwrap();
    obj.entry("model").or_insert(json!(MODEL));
    obj.entry("messages")
        .or_insert(json!([{"role": "user", "content": "What is the capital of France?"}]));
    obj.entry("temperature").or_insert(json!(0));
    serde_json::from_value(body).unwrap()
}

fn opts(tenant: Option<&str>, cache: CacheDirectives) -> CallContext {
    let mut ctx = CallContext {
        cache,
        ..CallContext::default()
    };
    ctx.principal.tenant = tenant.map(Into::into);
    ctx
}

async fn collect(mut stream: weir::ChatStream) -> Vec<ChatChunk> {
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item.unwrap());
    }
    out
}

fn streamed_text(chunks: &[ChatChunk]) -> String {
    chunks
        .iter()
        .flat_map(|c| &c.choices)
        .filter_map(|c| c.delta.content.as_deref())
        .collect()
}

#[tokio::test]
async fn a_deterministic_request_is_answered_once_then_from_the_cache() {
    let fake = fake().await;
    let client = client(&fake, "");
    let first = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(first.meta.cache, CacheStatus::Miss);
    assert!(first.meta.cost_usd.unwrap() > Decimal::ZERO);
    let second = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(second.meta.cache, CacheStatus::Hit);
    assert_eq!(
        second.meta.cost_usd,
        Some(Decimal::ZERO),
        "a hit costs nothing"
    );
    assert_eq!(second.meta.provider, "oai");
    assert_eq!(second.meta.upstream_model, "gpt-4o");
    assert_eq!(second.response, first.response);
    assert_eq!(fake.request_count(), 1);

    let stats = client.cache_stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.hit_rate, 0.5);
    assert_eq!(stats.tokens_saved, openai::USAGE.0 + openai::USAGE.1);
    // gpt-4o: 11 prompt tokens at $2.50/M and 7 completion tokens at $10/M.
    assert_eq!(
        stats.estimated_savings_usd,
        "0.0000975".parse::<Decimal>().unwrap()
    );
    assert_eq!(stats.tiers[0].entries, 1);
    assert_eq!(stats.hits_by_tier.get("memory"), Some(&1));
}

#[tokio::test]
async fn fields_that_decide_the_answer_split_the_key_and_the_others_do_not() {
    let fake = fake().await;
    let client = client(&fake, "cache:\n  cache_sampled: true\n");
    client.chat(request(json!({}))).await.unwrap();
    assert_eq!(fake.request_count(), 1);

    let same = [
        json!({"user": "alice"}),
        json!({"metadata": {"trace": "abc"}}),
        json!({"stream": false}),
        json!({"n": 1}),
        json!({"stop": []}),
        json!({"response_format": {"type": "text"}}),
        json!({"temperature": 0.0}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]}),
    ];
    for body in same {
        let done = client.chat(request(body.clone())).await.unwrap();
        assert_eq!(
            done.meta.cache,
            CacheStatus::Hit,
            "{body} should share the entry"
        );
    }
    assert_eq!(fake.request_count(), 1);

    let different = [
        json!({"messages": [{"role": "user", "content": "What is the capital of Spain?"}]}),
        json!({"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is the capital of France?"}]}),
        json!({"temperature": 0.5}),
        json!({"top_p": 0.5}),
        json!({"seed": 7}),
        json!({"max_tokens": 5}),
        json!({"stop": ["."]}),
        json!({"response_format": {"type": "json_object"}}),
        json!({"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]}),
        json!({"logprobs": true}),
        json!({"model": "oai/gpt-4o-mini"}),
    ];
    for (i, body) in different.iter().enumerate() {
        let done = client.chat(request(body.clone())).await.unwrap();
        assert_eq!(
            done.meta.cache,
            CacheStatus::Miss,
            "{body} must not share the entry"
        );
        assert_eq!(fake.request_count(), 2 + i);
    }
}

#[tokio::test]
async fn sampled_requests_bypass_the_cache_unless_asked() {
    let fake = fake().await;
    let client = client(&fake, "");
    let sampled = || request(json!({"temperature": 0.8}));
    for _ in 0..2 {
        let done = client.chat(sampled()).await.unwrap();
        assert_eq!(done.meta.cache, CacheStatus::Bypass);
    }
    assert_eq!(fake.request_count(), 2);

    // A per-call TTL opts one request in.
    let forced = opts(
        None,
        CacheDirectives {
            ttl: Some(Duration::from_secs(60)),
            force: true,
            ..Default::default()
        },
    );
    client.chat_with(sampled(), forced.clone()).await.unwrap();
    let again = client.chat_with(sampled(), forced.clone()).await.unwrap();
    assert_eq!(again.meta.cache, CacheStatus::Hit);
    assert_eq!(fake.request_count(), 3);

    // `n > 1` asks for several independent answers: never cached.
    let many = || request(json!({"n": 2}));
    client.chat(many()).await.unwrap();
    assert_eq!(
        client.chat(many()).await.unwrap().meta.cache,
        CacheStatus::Bypass
    );
}

#[tokio::test]
async fn tenants_never_read_each_others_entries() {
    let fake = fake().await;
    let client = client(&fake, "");
    let alice = opts(Some("alice-ns"), CacheDirectives::default());
    let bob = opts(Some("bob-ns"), CacheDirectives::default());
    client
        .chat_with(request(json!({})), alice.clone())
        .await
        .unwrap();
    let b = client
        .chat_with(request(json!({})), bob.clone())
        .await
        .unwrap();
    assert_eq!(b.meta.cache, CacheStatus::Miss);
    let a = client
        .chat_with(request(json!({})), alice.clone())
        .await
        .unwrap();
    assert_eq!(a.meta.cache, CacheStatus::Hit);
    assert_eq!(fake.request_count(), 2);

    // With per-tenant namespaces off, everyone shares.
    let fake = self::fake().await;
    let shared = self::client(&fake, "cache:\n  per_tenant: false\n");
    shared
        .chat_with(request(json!({})), alice.clone())
        .await
        .unwrap();
    let b = shared
        .chat_with(request(json!({})), bob.clone())
        .await
        .unwrap();
    assert_eq!(b.meta.cache, CacheStatus::Hit);
}

#[tokio::test]
async fn no_cache_skips_the_read_and_no_store_the_write() {
    let fake = fake().await;
    let client = client(&fake, "");
    let no_store = opts(
        None,
        CacheDirectives {
            no_store: true,
            ..Default::default()
        },
    );
    client
        .chat_with(request(json!({})), no_store.clone())
        .await
        .unwrap();
    let miss = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(miss.meta.cache, CacheStatus::Miss, "no-store wrote nothing");
    let no_read = opts(
        None,
        CacheDirectives {
            no_read: true,
            ..Default::default()
        },
    );
    let fresh = client
        .chat_with(request(json!({})), no_read.clone())
        .await
        .unwrap();
    assert_eq!(fresh.meta.cache, CacheStatus::Bypass);
    assert_eq!(fake.request_count(), 3);
    assert_eq!(
        client.chat(request(json!({}))).await.unwrap().meta.cache,
        CacheStatus::Hit
    );

    // The global switch.
    let off = self::client(&fake, "cache:\n  enabled: false\n");
    assert!(off.cache_stats().await.is_none());
    let done = off.chat(request(json!({}))).await.unwrap();
    assert_eq!(done.meta.cache, CacheStatus::Bypass);
}

#[tokio::test]
async fn errors_and_cut_streams_are_never_stored() {
    let fake = fake().await;
    fake.push(Reply::error(
        400,
        openai::error("bad", "invalid_request_error", None),
    ));
    let client = client(&fake, "");
    assert!(client.chat(request(json!({}))).await.is_err());
    let next = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(
        next.meta.cache,
        CacheStatus::Miss,
        "the error was not cached"
    );

    let transcript = openai::text_stream("gpt-4o", &["Par", "is", " it", " is"]);
    let cut = transcript.len() / 2;
    fake.push(Reply::sse(transcript).cut_after(cut));
    let streamed = request(json!({"messages": [{"role": "user", "content": "stream me"}]}));
    let mut stream = client.chat_stream(streamed.clone()).await.unwrap();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        failed |= item.is_err();
    }
    assert!(failed, "the cut stream ended with an error");
    let before = fake.request_count();
    let again = client.chat(streamed).await.unwrap();
    assert_eq!(
        again.meta.cache,
        CacheStatus::Miss,
        "a cut stream was not cached"
    );
    assert_eq!(fake.request_count(), before + 1);
}

#[tokio::test]
async fn a_stored_stream_replays_as_an_equivalent_stream() {
    let fake = fake().await;
    let pieces = ["The", " capital", " of", " France", " is", " Paris."];
    fake.set_default(Reply::sse(openai::text_stream("gpt-4o", &pieces)));
    let client = client(&fake, "");
    let streamed = request(json!({"stream": true, "stream_options": {"include_usage": true}}));

    let live = client.chat_stream(streamed.clone()).await.unwrap();
    assert_eq!(live.meta().cache, CacheStatus::Miss);
    let live = collect(live).await;
    let replay = client.chat_stream(streamed.clone()).await.unwrap();
    assert_eq!(replay.meta().cache, CacheStatus::Hit);
    let replayed = collect(replay).await;
    assert_eq!(fake.request_count(), 1);

    assert_eq!(streamed_text(&live), pieces.concat());
    assert_eq!(streamed_text(&replayed), pieces.concat());
    assert!(
        replayed.len() > 3,
        "replayed in several chunks: {}",
        replayed.len()
    );
    let assembled =
        |chunks: &[ChatChunk]| weir::cache::replay::response_from_chunks(chunks).unwrap();
    assert_eq!(assembled(&replayed), assembled(&live));
    assert_eq!(replayed.last().unwrap().usage, live.last().unwrap().usage);
    assert!(
        replayed.last().unwrap().choices.is_empty(),
        "usage chunk last"
    );

    // Without include_usage, the replay has no usage chunk.
    let plain = request(json!({"stream": true}));
    let chunks = collect(client.chat_stream(plain).await.unwrap()).await;
    assert!(chunks.iter().all(|c| c.usage.is_none()));
    assert_eq!(streamed_text(&chunks), pieces.concat());

    // The stored stream answers a non-streamed request too.
    let done = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(done.meta.cache, CacheStatus::Hit);
    assert_eq!(done.response.text(), pieces.concat());
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn one_hundred_identical_requests_in_flight_make_one_upstream_call() {
    let fake = fake().await;
    fake.set_default(
        Reply::json(openai::chat_completion("gpt-4o", "shared answer"))
            .delay(Duration::from_millis(300)),
    );
    let client = client(&fake, "");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(request(json!({}))).await })
        })
        .collect();
    let mut coalesced = 0;
    for t in tasks {
        let done = t.await.unwrap().unwrap();
        assert_eq!(done.response.text(), "shared answer");
        coalesced += u32::from(done.meta.coalesced);
    }
    assert_eq!(fake.request_count(), 1);
    let stats = client.cache_stats().await.unwrap();
    assert_eq!(coalesced, 99);
    assert_eq!(stats.coalesced, 99);
}

#[tokio::test]
async fn identical_streams_in_flight_share_one_upstream_stream() {
    let fake = fake().await;
    let pieces = ["one", " two", " three", " four"];
    fake.set_default(
        Reply::sse(openai::text_stream("gpt-4o", &pieces)).chunk_delay(Duration::from_millis(40)),
    );
    let client = client(&fake, "");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = if i % 2 == 0 {
                    json!({"stream": true, "stream_options": {"include_usage": true}})
                } else {
                    json!({"stream": true})
                };
                let stream = client.chat_stream(request(body)).await.unwrap();
                (i, collect(stream).await)
            })
        })
        .collect();
    for t in tasks {
        let (i, chunks) = t.await.unwrap();
        assert_eq!(streamed_text(&chunks), pieces.concat());
        let has_usage = chunks.iter().any(|c| c.usage.is_some());
        assert_eq!(
            has_usage,
            i % 2 == 0,
            "each caller gets usage only if it asked"
        );
    }
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn a_leaders_error_reaches_its_followers_and_is_not_cached() {
    let fake = fake().await;
    fake.push(
        Reply::error(400, openai::error("refused", "invalid_request_error", None))
            .delay(Duration::from_millis(200)),
    );
    let client = client(&fake, "");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.chat(request(json!({}))).await })
        })
        .collect();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.http_status(), 400);
    }
    assert_eq!(fake.request_count(), 1);
    let next = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(next.meta.cache, CacheStatus::Miss);
}

#[tokio::test]
async fn clearing_one_model_keeps_the_others() {
    let fake = fake().await;
    let client = client(&fake, "");
    let mini = || request(json!({"model": "oai/gpt-4o-mini"}));
    client.chat(request(json!({}))).await.unwrap();
    client.chat(mini()).await.unwrap();
    assert_eq!(client.clear_cache(Some("oai/gpt-4o-mini")).await, 1);
    assert_eq!(
        client.chat(mini()).await.unwrap().meta.cache,
        CacheStatus::Miss
    );
    let kept = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(kept.meta.cache, CacheStatus::Hit);
    assert!(client.clear_cache(None).await >= 2);
    let gone = client.chat(request(json!({}))).await.unwrap();
    assert_eq!(gone.meta.cache, CacheStatus::Miss);
}

/// Wait (up to 5 s) until the second tier holds `n` entries: it is written behind L1.
async fn wait_for_l2_entries(client: &Client, n: u64) {
    for _ in 0..500 {
        let stats = client.cache_stats().await.unwrap();
        if stats.tiers.get(1).is_some_and(|t| t.entries >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the L2 copy never landed");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("weir-cache-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn the_sqlite_tier_survives_a_restart() {
    let fake = fake().await;
    let dir = tempdir("sqlite");
    let yaml = format!(
        "cache:\n  sqlite:\n    path: {}\n",
        dir.join("cache.sqlite3").display()
    );
    {
        let before = client(&fake, &yaml);
        before.chat(request(json!({}))).await.unwrap();
        // The SQLite copy is written behind the memory one.
        wait_for_l2_entries(&before, 1).await;
    }
    let after = client(&fake, &yaml);
    let done = after.chat(request(json!({}))).await.unwrap();
    assert_eq!(done.meta.cache, CacheStatus::Hit);
    assert_eq!(done.response.text(), "cached answer");
    assert_eq!(fake.request_count(), 1);
    let stats = after.cache_stats().await.unwrap();
    assert_eq!(stats.hits_by_tier.get("sqlite"), Some(&1));
    // Promoted into memory: the next hit is local.
    after.chat(request(json!({}))).await.unwrap();
    let stats = after.cache_stats().await.unwrap();
    assert_eq!(stats.hits_by_tier.get("memory"), Some(&1));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_clients_share_one_redis() {
    let Some(redis) = RedisServer::start().unwrap() else {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
        return;
    };
    let fake = fake().await;
    let yaml = format!("cache:\n  redis:\n    url: {}\n", redis.url());
    assert!(
        Client::new(config(&fake, &yaml)).is_err(),
        "Redis needs build_async"
    );
    let a = Client::builder(config(&fake, &yaml))
        .build_async()
        .await
        .unwrap();
    let b = Client::builder(config(&fake, &yaml))
        .build_async()
        .await
        .unwrap();
    a.chat(request(json!({}))).await.unwrap();
    wait_for_l2_entries(&a, 1).await;
    let done = b.chat(request(json!({}))).await.unwrap();
    assert_eq!(done.meta.cache, CacheStatus::Hit);
    assert_eq!(fake.request_count(), 1);
    assert_eq!(
        b.cache_stats().await.unwrap().hits_by_tier.get("redis"),
        Some(&1)
    );
    assert!(b.cache_ready().await.is_ok());
    drop(redis);
    assert!(
        b.cache_ready().await.is_err(),
        "a dead Redis makes the cache not ready"
    );
    // ...but requests still succeed, as misses.
    let fresh = request(json!({"seed": 1}));
    assert!(b.chat(fresh).await.is_ok());
}

#[tokio::test]
async fn the_semantic_cache_serves_a_rephrased_prompt() {
    let fake = fake().await;
    let client = client(
        &fake,
        "cache:\n  semantic:\n    model: mock/embed\n    threshold: 0.9\n",
    );
    let ask = |text: &str| request(json!({"messages": [{"role": "user", "content": text}]}));
    client
        .chat(ask("What is the capital city of France?"))
        .await
        .unwrap();
    let near = client
        .chat(ask("what is the capital city of france"))
        .await
        .unwrap();
    assert_eq!(near.meta.cache, CacheStatus::Hit);
    assert_eq!(fake.request_count(), 1);
    let stats = client.cache_stats().await.unwrap();
    assert_eq!(stats.hits_by_tier.get("semantic"), Some(&1));

    let other = client
        .chat(ask("Write a haiku about autumn leaves falling"))
        .await
        .unwrap();
    assert_eq!(other.meta.cache, CacheStatus::Miss);
    // Same prompt, different parameters: a different partition.
    let hotter = request(json!({
        "messages": [{"role": "user", "content": "what is the capital city of france"}],
        "seed": 3,
    }));
    assert_eq!(
        client.chat(hotter).await.unwrap().meta.cache,
        CacheStatus::Miss
    );
    assert_eq!(fake.request_count(), 3);
}
