//! Breaker behaviour on tokio's paused clock (time moves only with `advance`), plus two
//! multi-threaded tests where the lock is really contended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::advance;

use super::*;
use crate::error::TimeoutPhase;

/// Defaults without jitter, so cooldowns can be asserted exactly.
fn steady() -> BreakerConfig {
    BreakerConfig {
        cooldown_jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn fail(b: &CircuitBreaker, n: u32) {
    for _ in 0..n {
        b.try_acquire().unwrap().failure();
    }
}

fn succeed(b: &CircuitBreaker, n: u32) {
    for _ in 0..n {
        b.try_acquire().unwrap().success();
    }
}

fn wait(b: &CircuitBreaker) -> Duration {
    b.try_acquire().unwrap_err()
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_match_the_documented_values() {
    let c = BreakerConfig::default();
    assert_eq!(
        c,
        BreakerConfig {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: secs(30),
            min_requests: 20,
            cooldown: secs(30),
            max_cooldown: secs(300),
            cooldown_jitter: 0.2,
            half_open_probes: 1,
            success_threshold: 2,
            enabled: true,
        }
    );
}

#[test]
fn handles_and_permits_cross_tasks() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<CircuitBreaker>();
    send_sync_static::<Permit>();
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_a_success_restarts_the_count() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 4);
    succeed(&b, 1);
    assert_eq!(b.snapshot().consecutive_failures, 0);
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(!b.is_available());
    assert_eq!(wait(&b), secs(30));
    let s = b.snapshot();
    assert_eq!((s.trips, s.consecutive_failures), (1, 5));
    assert_eq!(s.half_open_in_secs, Some(30.0));
}

#[tokio::test(start_paused = true)]
async fn ratio_trips_only_once_min_requests_are_in_the_window() {
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        ..steady()
    });
    // 100% failures, but only 10 requests: below min_requests, so still closed.
    fail(&b, 10);
    assert_eq!(b.state(), BreakerState::Closed);
    succeed(&b, 9);
    // 19 requests, 10 failures: the ratio is past 0.5 but the window is one short.
    assert_eq!(b.state(), BreakerState::Closed);
    // 20 requests, 10 failures: at the threshold. A success can trip it: what counts is
    // the ratio once the window holds enough requests.
    succeed(&b, 1);
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!((s.window_requests, s.window_failures), (20, 10));

    // Always just under the ratio, with plenty of traffic: stays closed.
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        ..steady()
    });
    succeed(&b, 2);
    for _ in 0..49 {
        fail(&b, 1);
        succeed(&b, 1);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window_failures, 49);
}

#[tokio::test(start_paused = true)]
async fn the_rolling_window_forgets_old_failures() {
    let config = BreakerConfig {
        consecutive_failures: 0,
        ..steady()
    };
    // 19 failures at t=0, then one more failure later: inside the window it trips (20 of 20),
    // once the old bucket has rolled out it does not (1 of 1, under min_requests).
    for (later, trips) in [(secs(15), true), (secs(29), true), (secs(30), false)] {
        let b = CircuitBreaker::new(config.clone());
        fail(&b, 19);
        advance(later).await;
        fail(&b, 1);
        assert_eq!(b.state() == BreakerState::Open, trips, "after {later:?}");
    }

    let b = CircuitBreaker::new(config);
    fail(&b, 19);
    advance(secs(30)).await;
    assert_eq!(b.snapshot().window_requests, 0);
    // A healthy stretch with one failure: 20 in the window, 5% failed.
    succeed(&b, 19);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn cooldown_jitter_stays_within_its_bounds() {
    let b = CircuitBreaker::new(BreakerConfig::default());
    let mut waits = Vec::new();
    for _ in 0..200 {
        fail(&b, 5);
        waits.push(wait(&b));
        b.reset();
    }
    assert!(
        waits.iter().all(|w| (secs(24)..=secs(36)).contains(w)),
        "{waits:?}"
    );
    waits.sort();
    waits.dedup();
    assert!(
        waits.len() > 100,
        "jitter should spread the waits: {waits:?}"
    );

    // At the ceiling, jitter only shortens: max_cooldown is a hard bound.
    let b = CircuitBreaker::new(BreakerConfig {
        cooldown: secs(300),
        ..BreakerConfig::default()
    });
    for _ in 0..100 {
        fail(&b, 5);
        let w = wait(&b);
        assert!((secs(240)..=secs(300)).contains(&w), "{w:?}");
        b.reset();
    }
}

#[tokio::test(start_paused = true)]
async fn cooldown_doubles_per_trip_up_to_the_max_and_resets_after_a_close() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 5);
    let mut cooldown = wait(&b);
    assert_eq!(cooldown, secs(30));
    for expected in [60, 120, 240, 300, 300] {
        advance(cooldown).await;
        fail(&b, 1); // the probe fails
        cooldown = wait(&b);
        assert_eq!(cooldown, secs(expected));
    }
    assert_eq!(b.snapshot().trips, 6);

    advance(cooldown).await;
    succeed(&b, 2);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b, 5);
    assert_eq!(wait(&b), secs(30));
}

#[tokio::test(start_paused = true)]
async fn open_turns_half_open_exactly_when_the_cooldown_ends() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 5);
    advance(secs(30) - Duration::from_millis(1)).await;
    assert_eq!(b.state(), BreakerState::Open);
    assert!(!b.is_available());
    assert_eq!(wait(&b), Duration::from_millis(1));
    advance(Duration::from_millis(1)).await;
    assert!(b.is_available());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().half_open_in_secs, None);
}

/// Trip `b`, wait out its cooldown, then have `tasks` tasks try to acquire at once while every
/// admitted probe is held. Returns how many were admitted.
async fn race_for_probes(b: &CircuitBreaker, tasks: usize) -> usize {
    let acquired = Arc::new(Barrier::new(tasks + 1));
    let release = Arc::new(Barrier::new(tasks + 1));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (b, acquired, release) = (b.clone(), acquired.clone(), release.clone());
            tokio::spawn(async move {
                let permit = b.try_acquire();
                let admitted = permit.is_ok();
                acquired.wait().await;
                release.wait().await;
                drop(permit);
                admitted
            })
        })
        .collect();
    acquired.wait().await;
    // Every task has tried and the admitted ones still hold their probe.
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::HalfOpen);
    assert!(!b.is_available());
    assert!(b.try_acquire().is_err());
    release.wait().await;
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    assert_eq!(s.probes_in_flight as usize, admitted);
    admitted
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_the_probe_limit_at_once() {
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 3,
        ..steady()
    });
    fail(&b, 5);
    advance(secs(30)).await;
    assert_eq!(race_for_probes(&b, 50).await, 3);
    // The probes were dropped unsettled: slots are free again and nothing was counted.
    let s = b.snapshot();
    assert_eq!((s.state, s.probes_in_flight), (BreakerState::HalfOpen, 0));
    assert!(b.is_available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_probe_limit_holds_across_threads() {
    // A zero cooldown goes half-open at once, so this runs on the real clock.
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 4,
        cooldown: Duration::ZERO,
        ..steady()
    });
    for _ in 0..20 {
        fail(&b, 5);
        assert_eq!(race_for_probes(&b, 64).await, 4);
        b.reset();
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_after_the_success_threshold() {
    let b = CircuitBreaker::new(BreakerConfig {
        success_threshold: 3,
        ..steady()
    });
    fail(&b, 5);
    advance(secs(30)).await;
    succeed(&b, 2);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b, 1);
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!(
        (s.consecutive_failures, s.window_requests, s.trips),
        (0, 0, 1)
    );
    // The slate is clean: it takes the full five failures to trip again.
    fail(&b, 4);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_half_open_reopens_for_longer() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 5);
    advance(secs(30)).await;
    succeed(&b, 1);
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(wait(&b), secs(60));
    assert_eq!(b.snapshot().trips, 2);
    // The earlier probe success does not carry over into the next half-open phase.
    advance(secs(60)).await;
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_and_dropped_outcomes_count_nothing() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 4);
    for _ in 0..10 {
        b.try_acquire().unwrap().ignore();
        drop(b.try_acquire().unwrap());
        b.try_acquire()
            .unwrap()
            .record_error(&Error::invalid_request("bad"));
    }
    // Neither counted as requests nor broke the failure streak.
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.consecutive_failures), (4, 4));
    fail(&b, 1);
    assert_eq!(b.state(), BreakerState::Open);

    // Half-open: an ignored or dropped probe frees its slot but is no success.
    advance(secs(30)).await;
    drop(b.try_acquire().unwrap());
    assert!(b.is_available());
    b.try_acquire().unwrap().ignore();
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    succeed(&b, 1);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn verdicts_from_an_earlier_phase_are_ignored() {
    let b = CircuitBreaker::new(steady());
    let sent_before_trip = b.try_acquire().unwrap();
    let also_before_trip = b.try_acquire().unwrap();
    fail(&b, 5);
    sent_before_trip.failure();
    assert_eq!((b.snapshot().trips, wait(&b)), (1, secs(30)));

    advance(secs(30)).await;
    let probe = b.try_acquire().unwrap();
    // A success from before the trip is no evidence of recovery and frees no probe slot.
    also_before_trip.success();
    let s = b.snapshot();
    assert_eq!((s.state, s.probes_in_flight), (BreakerState::HalfOpen, 1));
    probe.success();

    // Permits from before a manual reset settle without effect too.
    let stale = b.try_acquire().unwrap();
    b.reset();
    stale.failure();
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn manual_reset_closes_and_clears_counts_and_growth() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 5);
    advance(secs(30)).await;
    fail(&b, 1);
    assert_eq!(wait(&b), secs(60));

    b.reset();
    let s = b.snapshot();
    assert_eq!(s.state, BreakerState::Closed);
    assert_eq!(
        (s.consecutive_failures, s.window_requests, s.window_failures),
        (0, 0, 0)
    );
    assert_eq!(s.trips, 2, "the lifetime trip count survives a reset");
    assert!(b.is_available());
    fail(&b, 5);
    assert_eq!(wait(&b), secs(30), "growth starts over");
}

#[tokio::test(start_paused = true)]
async fn a_disabled_breaker_always_admits() {
    let b = CircuitBreaker::new(BreakerConfig {
        enabled: false,
        consecutive_failures: 1,
        ..steady()
    });
    fail(&b, 1_000);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.is_available());
    let s = b.snapshot();
    assert_eq!((s.trips, s.window_requests), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn degenerate_limits_still_let_the_breaker_recover() {
    let b = CircuitBreaker::new(BreakerConfig {
        half_open_probes: 0,
        success_threshold: 0,
        ..steady()
    });
    fail(&b, 5);
    advance(secs(30)).await;
    let probe = b.try_acquire().unwrap();
    assert!(
        b.try_acquire().is_err(),
        "one probe slot at least, and no more"
    );
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outcomes_are_counted_exactly() {
    // Thresholds out of reach, so every verdict lands in the window.
    let b = CircuitBreaker::new(BreakerConfig {
        consecutive_failures: 0,
        min_requests: u32::MAX,
        ..steady()
    });
    let handles: Vec<_> = (0..1_000u32)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let permit = b.try_acquire().unwrap();
                tokio::task::yield_now().await;
                match i % 4 {
                    0 => permit.failure(),
                    1 => permit.success(),
                    2 => permit.ignore(),
                    _ => drop(permit),
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let s = b.snapshot();
    assert_eq!((s.window_requests, s.window_failures), (500, 250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_trip_exactly_once() {
    // A thousand requests in flight when the upstream dies: the first five failures trip the
    // breaker; the rest belong to the closed phase and must not trip it again or grow the
    // cooldown.
    let b = CircuitBreaker::new(steady());
    let permits: Vec<Permit> = (0..1_000).map(|_| b.try_acquire().unwrap()).collect();
    let handles: Vec<_> = permits
        .into_iter()
        .map(|p| tokio::spawn(async move { p.failure() }))
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let s = b.snapshot();
    assert_eq!(
        (s.state, s.trips, s.consecutive_failures),
        (BreakerState::Open, 1, 5)
    );
    assert!(wait(&b) <= secs(30));
}

#[test]
fn only_upstream_health_failures_count() {
    let p = || "openai".to_owned();
    let upstream = |status| Error::from_upstream("openai", status, None, b"", None);
    let counted = [
        upstream(500),
        upstream(502),
        upstream(503),
        upstream(504),
        upstream(529),
        Error::Timeout {
            provider: p(),
            phase: TimeoutPhase::FirstByte,
            after: secs(10),
        },
        Error::Connection {
            provider: p(),
            message: "reset".into(),
        },
        Error::StreamInterrupted {
            provider: p(),
            message: "eof".into(),
        },
        Error::InvalidResponse {
            provider: p(),
            message: "not json".into(),
        },
    ];
    let not_counted = [
        upstream(400),
        upstream(401),
        upstream(403),
        upstream(404),
        upstream(422),
        upstream(429),
        upstream(501),
        Error::invalid_request("no messages"),
        Error::ModelNotFound {
            model: "gpt-9".into(),
            hint: "check the name".into(),
        },
        Error::BudgetExceeded {
            scope: "team".into(),
            message: "over".into(),
        },
        Error::PoolExhausted {
            pool: "openai".into(),
            retry_after: None,
        },
        Error::CircuitOpen {
            deployment: "openai/gpt".into(),
            retry_after: None,
        },
        Error::Unsupported {
            provider: p(),
            operation: "embeddings".into(),
        },
    ];
    for e in &counted {
        assert!(counts_as_failure(e), "{e} should count");
    }
    for e in &not_counted {
        assert!(!counts_as_failure(e), "{e} should not count");
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_serialises_in_snake_case() {
    let b = CircuitBreaker::new(steady());
    fail(&b, 5);
    let json = serde_json::to_value(b.snapshot()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "state": "open",
            "consecutive_failures": 5,
            "window_requests": 5,
            "window_failures": 5,
            "trips": 1,
            "half_open_in_secs": 30.0,
            "probes_in_flight": 0,
        })
    );
    assert_eq!(
        serde_json::to_value(BreakerState::HalfOpen).unwrap(),
        "half_open"
    );
    assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
}
