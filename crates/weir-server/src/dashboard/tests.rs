//! The live rings: series, percentiles, the recent-calls ring and its names.

use std::sync::Arc;
use std::time::Duration;

use weir::pipeline::{CacheOutcome, Latencies, Operation, Outcome, RouteTaken, Tokens, UsageEvent};

use super::live::{Live, RECENT, SECONDS};

fn event(model: &str, status: u16, latency_ms: u64) -> UsageEvent {
    let context = weir::CallContext {
        model: model.to_owned(),
        ..weir::CallContext::default()
    };
    UsageEvent {
        context: Arc::new(context),
        operation: Operation::Chat,
        outcome: if status < 400 {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        status,
        error: None,
        route: Some(RouteTaken {
            provider: "openai".into(),
            upstream_model: "gpt-4o".into(),
            key_label: None,
        }),
        attempts: 1,
        tokens: Tokens {
            input: 10,
            output: 5,
            ..Tokens::default()
        },
        tokens_estimated: false,
        cost_usd: Some(rust_decimal::Decimal::new(125, 5)),
        cache: CacheOutcome::Miss,
        latency: Latencies {
            total: Duration::from_millis(latency_ms),
            ..Latencies::default()
        },
        prompt_fingerprint: None,
    }
}

#[test]
fn series_counts_calls_errors_and_percentiles_per_second() {
    let live = Live::new();
    let t = 1_800_000_000_u64;
    for i in 0..98 {
        live.record_at(t * 1000 + i, &event("m", 200, 20));
    }
    live.record_at(t * 1000 + 500, &event("m", 502, 4_000));
    live.record_at(t * 1000 + 600, &event("m", 502, 4_000));
    live.record_at((t + 2) * 1000, &event("m", 200, 3));
    let snap = live.snapshot_at(t + 2, 3);
    assert_eq!(snap.series.len(), 3);
    assert_eq!(snap.series[0].requests, 100);
    assert_eq!(snap.series[0].errors, 2);
    assert_eq!(snap.series[0].p50_ms, Some(25));
    assert_eq!(snap.series[0].p99_ms, Some(5_000));
    assert_eq!(snap.series[1].requests, 0);
    assert_eq!(snap.series[1].p50_ms, None);
    assert_eq!(snap.series[2].requests, 1);
    assert_eq!(snap.series[2].p50_ms, Some(5));
    assert_eq!(snap.requests_total, 101);
    assert_eq!(snap.errors_total, 2);
    assert!((snap.requests_per_second - 101.0 / 3.0).abs() < 1e-9);
}

#[test]
fn a_bucket_is_recycled_when_its_second_comes_round_again() {
    let live = Live::new();
    let t = 1_800_000_000_u64;
    live.record_at(t * 1000, &event("m", 200, 1));
    let later = t + SECONDS as u64;
    live.record_at(later * 1000, &event("m", 200, 1));
    let snap = live.snapshot_at(later, SECONDS);
    let total: u32 = snap.series.iter().map(|p| p.requests).sum();
    assert_eq!(total, 1, "the old second's call is gone");
    // A call from before the recycled second is not shown.
    live.record_at(t * 1000, &event("m", 200, 1));
    assert_eq!(live.snapshot_at(later, 1).series[0].requests, 1);
}

#[test]
fn recent_calls_keep_the_last_ones_newest_first_without_prompts() {
    let live = Live::new();
    for i in 0..(RECENT as u64 + 10) {
        live.record_at(1_000 + i, &event(&format!("model-{i}"), 200, i));
    }
    let recent = live.recent();
    assert_eq!(recent.len(), RECENT);
    assert_eq!(recent[0].model, format!("model-{}", RECENT + 9));
    assert_eq!(recent[0].deployment, "openai/gpt-4o");
    assert_eq!(recent[0].status, 200);
    assert_eq!(recent[0].cache, "miss");
    assert_eq!(recent[0].input_tokens, 10);
    assert_eq!(recent[0].cost_usd, Some(0.00125));
    assert!((recent[0].latency_ms - (RECENT as f64 + 9.0)).abs() < 1e-9);
    assert_eq!(recent.last().map(|c| c.model.as_str()), Some("model-10"));
}

#[test]
fn long_names_are_cut_at_a_character_boundary() {
    let live = Live::new();
    let long = "é".repeat(40); // 80 bytes
    let mut e = event(&long, 200, 1);
    e.route = Some(RouteTaken {
        provider: "p".repeat(70),
        upstream_model: "x".into(),
        key_label: None,
    });
    e.cost_usd = None;
    live.record_at(5, &e);
    let call = &live.recent()[0];
    assert_eq!(call.model, "é".repeat(32));
    assert_eq!(call.deployment, "p".repeat(64));
    assert_eq!(call.cost_usd, None);
    let mut e = event("m", 200, 1);
    e.route = Some(RouteTaken {
        provider: "anthropic".into(),
        upstream_model: "y".repeat(80),
        key_label: None,
    });
    live.record_at(6, &e);
    let call = &live.recent()[0];
    assert_eq!(call.deployment, format!("anthropic/{}", "y".repeat(54)));
}

#[test]
fn concurrent_writers_lose_nothing_from_the_counters() {
    let live = Arc::new(Live::new());
    // The second's bucket is claimed first: a call racing the claim itself may be lost (see
    // the module's doc), which is not what this test measures.
    live.record_at(7_000, &event("m", 200, 1));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let live = Arc::clone(&live);
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    live.record_at(7_000, &event("m", 200, 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = live.snapshot_at(7, 1);
    assert_eq!(snap.requests_total, 4_001);
    assert_eq!(snap.series[0].requests, 4_001);
    let recent = live.recent();
    assert!(recent.len() <= RECENT);
    assert!(recent.iter().all(|c| c.model == "m"));
}
