//! The ledger is exact: 1,000 calls through the gateway, of every kind a ledger gets wrong
//! somewhere (answered, streamed, cache hits, coalesced followers, retried, failed over to a
//! fallback, and streams the client walked away from), against a fake upstream reporting a
//! different, known usage on every answer. The ledger's total must equal the sum of the
//! reported usage at the configured prices, to the last digit; hits and followers cost zero
//! and record their saving; an abandoned stream is billed on its estimate, never as free.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use common::Gateway;
use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use weir_test_support::fake::{Chunking, FakeUpstream, Reply};
use weir_test_support::openai;

const PLAIN: usize = 400;
const STREAMED: usize = 250;
const CACHED: usize = 100;
const COALESCED_GROUPS: usize = 10;
const COALESCED_PER_GROUP: usize = 5;
const RETRIED: usize = 100;
const FAILED_OVER: usize = 50;
const DISCONNECTED: usize = 50;
const TOTAL: usize = PLAIN
    + STREAMED
    + CACHED
    + COALESCED_GROUPS * COALESCED_PER_GROUP
    + RETRIED
    + FAILED_OVER
    + DISCONNECTED;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The configured price of both deployments, dollars per million tokens.
fn price(input: u64, cached: u64, output: u64) -> Decimal {
    (Decimal::from(input - cached) * d("0.15")
        + Decimal::from(cached) * d("0.075")
        + Decimal::from(output) * d("0.60"))
        / Decimal::from(1_000_000u32)
}

/// A known, different usage for the i-th answer: (input, cached input, output).
fn usage_of(i: usize) -> (u64, u64, u64) {
    let i = i as u64;
    let input = 40 + (i * 37) % 1_900;
    let cached = if i.is_multiple_of(3) { input / 4 } else { 0 };
    (input, cached, 1 + (i * 53) % 600)
}

fn usage_json((input, cached, output): (u64, u64, u64)) -> Value {
    json!({"prompt_tokens": input, "completion_tokens": output,
           "total_tokens": input + output,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

fn answer(i: usize) -> Reply {
    let mut body = openai::chat_completion("gpt-4o-mini", &format!("answer {i}"));
    body["usage"] = usage_json(usage_of(i));
    Reply::json(body)
}

fn streamed_answer(i: usize, pieces: &[&str]) -> Reply {
    let mut transcript = String::new();
    let stream = openai::text_stream("gpt-4o-mini", pieces);
    // The canned transcript's usage chunk, with this answer's usage instead.
    for event in stream.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            transcript.push_str("data: [DONE]\n\n");
            continue;
        }
        let mut chunk: Value = serde_json::from_str(data).unwrap();
        if chunk.get("usage").is_some() {
            chunk["usage"] = usage_json(usage_of(i));
        }
        transcript.push_str(&format!("data: {chunk}\n\n"));
    }
    Reply::sse(transcript)
}

fn body(prompt: &str, stream: bool) -> Value {
    json!({"model": "exact", "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": prompt}]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    gw.post("/v1/chat/completions")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn complete(gw: &Gateway, body: &Value) {
    let res = post(gw, body).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_calls_are_recorded_to_the_last_digit() {
    let fake = FakeUpstream::start().await.unwrap();
    let dir = weir_test_support::temp_dir("ledger-exact").unwrap();
    let db = dir.join("weir.sqlite3");
    let prices = "{ input: 0.15, output: 0.60, cached_input: 0.075 }";
    // Two providers on the one fake, so the replies queued there serve whichever deployment
    // calls next: `exact` (a) retries once, then falls back to `backup` (b).
    let mut gw = Gateway::start(&format!(
        "providers:
  a: {{ kind: openai, base_url: \"{url}\", api_key: sk-a }}
  b: {{ kind: openai, base_url: \"{url}\", api_key: sk-b }}
models:
  exact:
    deployments: [a/gpt-4o-mini]
    fallbacks: [backup]
  backup: b/gpt-4o-mini
retry: {{ max_retries: 1, base_delay: 1ms, max_delay: 2ms, budget: {{ ratio: 1.0, min_per_second: 100000 }} }}
circuit_breaker: {{ enabled: false }}
cache: {{ enabled: true, ttl: 1h }}
store:
  sqlite: {{ path: {db} }}
pricing:
  a/gpt-4o-mini: {prices}
  b/gpt-4o-mini: {prices}
",
        url = fake.v1(),
        db = db.display()
    ))
    .await;

    let mut reported = Decimal::ZERO;
    let mut next = 0usize;
    let mut take = |reported: &mut Decimal| {
        let i = next;
        next += 1;
        let (input, cached, output) = usage_of(i);
        *reported += price(input, cached, output);
        i
    };

    // Answered, then streamed, each a miss with its own usage.
    for n in 0..PLAIN {
        let i = take(&mut reported);
        fake.push(answer(i));
        complete(&gw, &body(&format!("plain {n}"), false)).await;
    }
    for n in 0..STREAMED {
        let i = take(&mut reported);
        fake.push(streamed_answer(i, &["str", "eamed"]));
        complete(&gw, &body(&format!("streamed {n}"), true)).await;
    }
    // Hits: the first prompts again. No upstream call, no reply queued.
    for n in 0..CACHED {
        complete(&gw, &body(&format!("plain {n}"), false)).await;
    }
    // Coalesced: identical calls at once, one slow upstream answer shared by all.
    for g in 0..COALESCED_GROUPS {
        let i = take(&mut reported);
        fake.push(answer(i).delay(Duration::from_millis(300)));
        let request = body(&format!("coalesced {g}"), false);
        let calls = (0..COALESCED_PER_GROUP).map(|_| complete(&gw, &request));
        futures::future::join_all(calls).await;
    }
    // Retried: a 500, then the answer from the same deployment.
    for n in 0..RETRIED {
        fake.push(Reply::error(
            500,
            openai::error("boom", "server_error", None),
        ));
        let i = take(&mut reported);
        fake.push(answer(i));
        complete(&gw, &body(&format!("retried {n}"), false)).await;
    }
    // Failed over, streamed: both tries on `a` fail; the fallback answers.
    for n in 0..FAILED_OVER {
        for _ in 0..2 {
            fake.push(Reply::error(
                500,
                openai::error("boom", "server_error", None),
            ));
        }
        let i = take(&mut reported);
        fake.push(streamed_answer(i, &["failed ", "over"]));
        complete(&gw, &body(&format!("failover {n}"), true)).await;
    }
    // Abandoned: the client reads the first chunk of a slow stream, then hangs up. The usage
    // chunk never comes; weir bills its estimate.
    for n in 0..DISCONNECTED {
        let i = next;
        next += 1;
        let pieces: Vec<String> = (0..20).map(|k| format!("piece{k} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        fake.push(
            streamed_answer(i, &pieces)
                .chunked(Chunking::Every(150))
                .chunk_delay(Duration::from_millis(20)),
        );
        let res = post(&gw, &body(&format!("abandoned {n}"), true)).await;
        assert_eq!(res.status(), 200);
        let mut chunks = res.bytes_stream();
        let first = chunks.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(chunks);
    }
    // Let the abandoned streams notice, then stop: stopping flushes the ledger.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.shutdown().await.unwrap();

    let store = weir_store::open_store(&weir_store::StoreLocation::Sqlite(db))
        .await
        .unwrap();
    let records = store.ledger.records(0, i64::MAX, 10_000).await.unwrap();
    assert_eq!(records.len(), TOTAL, "one record per call");
    let ids: HashSet<_> = records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), TOTAL, "no call recorded twice");

    let count = |cache: &str| records.iter().filter(|r| r.cache == cache).count();
    let followers = COALESCED_GROUPS * (COALESCED_PER_GROUP - 1);
    assert_eq!(count("hit"), CACHED);
    assert_eq!(count("coalesced"), followers);
    for free in records
        .iter()
        .filter(|r| r.cache == "hit" || r.cache == "coalesced")
    {
        assert_eq!(free.cost_usd, Some(Decimal::ZERO), "{free:?}");
        let saved = free.saved_usd.expect("a free call records its saving");
        assert_eq!(
            saved,
            price(free.input_tokens, 0, free.output_tokens),
            "{free:?}"
        );
        assert!(saved > Decimal::ZERO);
    }
    let retried = records
        .iter()
        .filter(|r| r.attempts >= 2 && r.provider.as_deref() == Some("a"))
        .count();
    assert_eq!(retried, RETRIED, "retried calls");
    let failed_over = records
        .iter()
        .filter(|r| r.provider.as_deref() == Some("b"))
        .count();
    assert_eq!(failed_over, FAILED_OVER, "calls answered by the fallback");

    let abandoned: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == "disconnected")
        .collect();
    let mut kinds = std::collections::BTreeMap::new();
    for r in &records {
        *kinds
            .entry((r.outcome.clone(), r.status, r.tokens_estimated))
            .or_insert(0) += 1;
    }
    assert_eq!(abandoned.len(), DISCONNECTED, "{kinds:?}");
    let mut estimated = Decimal::ZERO;
    for r in &abandoned {
        assert!(r.tokens_estimated, "{r:?}");
        assert!(r.input_tokens > 0, "{r:?}");
        let cost = r.cost_usd.expect("an abandoned stream is priced");
        assert_eq!(cost, price(r.input_tokens, 0, r.output_tokens), "{r:?}");
        estimated += cost;
    }
    for r in records.iter().filter(|r| r.outcome != "disconnected") {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(!r.tokens_estimated, "{r:?}");
    }

    let total: Decimal = records.iter().filter_map(|r| r.cost_usd).sum();
    eprintln!(
        "{} records: ledger total ${total}; reported usage × price ${reported}; abandoned \
         streams' estimates ${estimated}",
        records.len()
    );
    assert_eq!(
        total - estimated,
        reported,
        "every reported token is in the ledger at its price, to the last digit"
    );
    // The store's own sum (what budgets and reports read) agrees.
    let spend = store
        .ledger
        .spend(&weir_store::SpendFilter::default(), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(spend.cost_usd, total);
    assert_eq!(spend.calls, TOTAL as u64);
    assert_eq!(spend.unpriced_calls, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
