//! Pool behaviour on tokio's paused clock: waits are measured exactly, and time moves only
//! when every task is blocked (auto-advance) or with `advance`. One multi-threaded test runs
//! the lock under real contention.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::{JoinHandle, yield_now};
use tokio::time::{Instant, advance};

use super::*;
use crate::error::ErrorKind;
use crate::provider::ratelimit::RateLimitWindow;

const SECRET: &str = "sk-very-secret-value";

fn key(id: &str, rpm: Option<u32>, itpm: Option<u64>, otpm: Option<u64>) -> PooledKey {
    PooledKey {
        id: id.to_owned(),
        secret: Some(SECRET.into()),
        limits: KeyLimits {
            requests_per_minute: rpm,
            input_tokens_per_minute: itpm,
            output_tokens_per_minute: otpm,
        },
    }
}

fn rpm(id: &str, n: u32) -> PooledKey {
    key(id, Some(n), None, None)
}

/// A pool whose waits end only by the caller's deadline (two hours away unless a test says).
fn pool(keys: Vec<PooledKey>) -> KeyPool {
    pool_with_timeout(keys, Duration::from_secs(7200))
}

fn pool_with_timeout(keys: Vec<PooledKey>, timeout: Duration) -> KeyPool {
    KeyPool::new(
        "test",
        keys,
        PoolConfig {
            acquire_timeout: timeout,
        },
    )
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(7200)
}

const fn d(input: u64, output: u64) -> Demand {
    Demand::new(input, output)
}

async fn get(pool: &KeyPool, demand: Demand) -> Lease {
    pool.acquire(demand, 0, later(), &[]).await.unwrap()
}

fn status_of(pool: &KeyPool, id: &str) -> KeyStatus {
    pool.status().into_iter().find(|s| s.key_id == id).unwrap()
}

fn assert_secs(got: Duration, want: f64) {
    assert!(
        (got.as_secs_f64() - want).abs() < 0.01,
        "waited {got:?}, expected {want}s"
    );
}

/// Let spawned tasks run until they block.
async fn settle_tasks() {
    for _ in 0..10 {
        yield_now().await;
    }
}

/// Drain `n` requests from a pool with one key, dropping the leases.
async fn drain(pool: &KeyPool, n: usize) {
    for _ in 0..n {
        drop(get(pool, d(0, 0)).await);
    }
}

#[tokio::test(start_paused = true)]
async fn picks_the_key_with_the_most_headroom() {
    let p = pool(vec![
        key("small", Some(100), Some(10_000), None),
        key("big", Some(100), Some(50_000), None),
    ]);
    let mut held = Vec::new();
    let mut order = Vec::new();
    for _ in 0..6 {
        let lease = get(&p, d(5_000, 0)).await;
        order.push(lease.key_id().to_owned());
        held.push(lease);
    }
    // big: 0.9, 0.8, 0.7, 0.6 left after each; then 0.5 ties small's 0.5 and small has
    // fewer in flight; then small would be at 0.0 and big at 0.5 wins again.
    assert_eq!(order, ["big", "big", "big", "big", "small", "big"]);
    assert_eq!(status_of(&p, "big").in_flight, 5);
    assert_eq!(status_of(&p, "small").in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn equal_keys_take_turns() {
    let p = pool(vec![rpm("a", 100), rpm("b", 100), rpm("c", 100)]);
    let mut ids = Vec::new();
    for _ in 0..6 {
        // Dropped at once: in-flight counts stay equal, so the tie-break rotates.
        ids.push(get(&p, d(1, 1)).await.key_id().to_owned());
    }
    // Each admission lowers that key's headroom, so the next goes elsewhere.
    assert_eq!(ids, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn settle_refunds_an_overestimate_and_debits_an_underestimate() {
    let p = pool(vec![key("k", None, Some(1_000), Some(1_000))]);
    let lease = get(&p, d(100, 500)).await;
    let s = status_of(&p, "k");
    assert_eq!(
        (s.remaining_input_tokens, s.remaining_output_tokens),
        (Some(900), Some(500))
    );
    assert_eq!(s.remaining_requests, None);
    assert_eq!(s.in_flight, 1);
    lease.settle(80, 200);
    let s = status_of(&p, "k");
    assert_eq!(
        (s.remaining_input_tokens, s.remaining_output_tokens),
        (Some(920), Some(800))
    );
    assert_eq!(s.in_flight, 0);

    // 1,500 input used on a 100 reservation: the bucket goes into debt...
    get(&p, d(100, 100)).await.settle(1_500, 100);
    assert_eq!(status_of(&p, "k").remaining_input_tokens, Some(-580));
    // ...and the next 100 waits for 680 tokens at 1000/60 per second: 40.8 s.
    let t0 = Instant::now();
    let lease = get(&p, d(100, 0)).await;
    assert_secs(t0.elapsed(), 40.8);

    // Dropped unsettled: the reservation stays spent, the in-flight slot is freed.
    let before = status_of(&p, "k").remaining_input_tokens;
    drop(lease);
    let s = status_of(&p, "k");
    assert_eq!((s.remaining_input_tokens, s.in_flight), (before, 0));
}

#[tokio::test(start_paused = true)]
async fn buckets_refill_continuously_up_to_capacity() {
    let p = pool(vec![rpm("k", 60)]);
    let t0 = Instant::now();
    drain(&p, 60).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "a full bucket admits a burst");
    drop(get(&p, d(0, 0)).await);
    assert_secs(t0.elapsed(), 1.0);

    advance(Duration::from_secs(30)).await;
    let s = status_of(&p, "k");
    assert!(matches!(s.remaining_requests, Some(29 | 30)), "{s:?}");
    assert_secs(Duration::from_secs_f64(s.seconds_until_full.unwrap()), 30.0);

    advance(Duration::from_secs(3600)).await;
    let s = status_of(&p, "k");
    assert_eq!(s.remaining_requests, Some(60));
    assert_eq!(s.seconds_until_full, Some(0.0));
}

fn window(limit: u64, remaining: u64, reset_secs: f64) -> Option<RateLimitWindow> {
    Some(RateLimitWindow {
        limit: Some(limit),
        remaining: Some(remaining),
        reset_after: Some(Duration::from_secs_f64(reset_secs)),
        reset_at: None,
    })
}

fn snapshot() -> RateLimitSnapshot {
    RateLimitSnapshot {
        observed_at: Some(SystemTime::now()),
        ..RateLimitSnapshot::default()
    }
}

#[tokio::test(start_paused = true)]
async fn learns_limits_from_openai_headers() {
    let p = pool(vec![key("k", None, None, None)]);
    assert_eq!(status_of(&p, "k").limits, KeyLimits::default());
    p.observe(
        "k",
        &RateLimitSnapshot {
            requests: window(100, 10, 90.0),
            tokens: window(10_000, 2_000, 6.0),
            ..snapshot()
        },
    );
    let s = status_of(&p, "k");
    assert_eq!(s.limits.requests_per_minute, Some(100));
    assert_eq!(s.tokens_per_minute, Some(10_000));
    assert_eq!(
        (s.remaining_requests, s.remaining_tokens),
        (Some(10), Some(2_000))
    );

    // 3,000 combined tokens: 1,000 short, at 10,000/60 per second (the upstream's faster
    // reset does not speed weir up): 6 s.
    let t0 = Instant::now();
    get(&p, d(2_500, 500)).await.settle(2_500, 500);
    assert_secs(t0.elapsed(), 6.0);

    // The requests window refills at the upstream's pace until its reset: 90 to go in 90 s,
    // 1/s, slower than 100/60 s. 6 s ago 10 were left, one was taken: 10 - 1 + 6 = 15.
    assert!(matches!(
        status_of(&p, "k").remaining_requests,
        Some(14 | 15)
    ));

    // More tokens than the learned window holds can never be sent.
    let err = p
        .acquire(d(9_000, 2_000), 0, later(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn anthropic_split_windows_win_and_config_is_kept() {
    let p = pool(vec![rpm("k", 50)]);
    p.observe(
        "k",
        &RateLimitSnapshot {
            requests: window(1_000, 5, 1.0),
            input_tokens: window(40_000, 39_000, 2.0),
            output_tokens: window(8_000, 7_000, 8.0),
            // Anthropic's combined window is the tighter of the split ones: not a third limit.
            tokens: window(8_000, 7_000, 8.0),
            ..snapshot()
        },
    );
    let s = status_of(&p, "k");
    assert_eq!(
        s.limits,
        KeyLimits {
            requests_per_minute: Some(50),
            input_tokens_per_minute: Some(40_000),
            output_tokens_per_minute: Some(8_000),
        }
    );
    assert_eq!(s.tokens_per_minute, None);
    // The configured limit stays, but the upstream's lower remaining is believed.
    assert_eq!(s.remaining_requests, Some(5));
    assert_eq!(s.remaining_input_tokens, Some(39_000));
    assert_eq!(s.remaining_output_tokens, Some(7_000));
    // A higher remaining never raises the local count.
    p.observe(
        "k",
        &RateLimitSnapshot {
            requests: window(1_000, 999, 1.0),
            ..snapshot()
        },
    );
    assert_eq!(status_of(&p, "k").remaining_requests, Some(5));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_in_headers_benches_the_key() {
    let p = pool(vec![rpm("a", 100)]);
    p.observe(
        "a",
        &RateLimitSnapshot {
            retry_after: Some(Duration::from_secs(3)),
            ..snapshot()
        },
    );
    assert!(status_of(&p, "a").limited_now);
    let t0 = Instant::now();
    drop(get(&p, d(1, 1)).await);
    assert_secs(t0.elapsed(), 3.0);
    p.observe("nobody", &snapshot()); // unknown ids are ignored
}

#[tokio::test(start_paused = true)]
async fn a_429_moves_requests_to_another_key_until_it_expires() {
    let p = pool(vec![rpm("a", 100), rpm("b", 100)]);
    p.mark_limited("a", Duration::from_secs(30));
    let s = status_of(&p, "a");
    assert!(s.limited_now);
    assert_secs(Duration::from_secs_f64(s.limited_for_secs.unwrap()), 30.0);
    for _ in 0..5 {
        // a has more headroom than b after the first few, but is benched.
        assert_eq!(get(&p, d(1, 1)).await.key_id(), "b");
    }
    // The engine's retry excludes b (say b just failed too): it waits for a's bench to end.
    let t0 = Instant::now();
    let lease = p
        .acquire(d(1, 1), 0, later(), &["b".to_owned()])
        .await
        .unwrap();
    assert_eq!(lease.key_id(), "a");
    assert_secs(t0.elapsed(), 30.0);
    assert!(!status_of(&p, "a").limited_now);
    // A shorter bench never cuts a longer one.
    p.mark_limited("a", Duration::from_secs(60));
    p.mark_limited("a", Duration::from_secs(1));
    assert!(status_of(&p, "a").limited_for_secs.unwrap() > 59.0);
}

#[tokio::test(start_paused = true)]
async fn excluding_every_key_fails_at_once_with_a_retry_time() {
    let p = pool(vec![rpm("a", 100), rpm("b", 100)]);
    p.mark_limited("a", Duration::from_secs(20));
    p.mark_limited("b", Duration::from_secs(10));
    let all = ["a".to_owned(), "b".to_owned()];
    let err = p.acquire(d(1, 1), 0, later(), &all).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted);
    assert_secs(err.retry_after().unwrap(), 10.0);
    assert_eq!(p.queue_len(), 0);
}

type Log = Arc<Mutex<Vec<(u32, Duration)>>>;

fn spawn_waiter(p: &KeyPool, label: u32, priority: u8, log: &Log) -> JoinHandle<()> {
    let (p, log) = (p.clone(), Arc::clone(log));
    let t0 = Instant::now();
    tokio::spawn(async move {
        let lease = p.acquire(d(1, 1), priority, later(), &[]).await.unwrap();
        log.lock().unwrap().push((label, t0.elapsed()));
        lease.settle(1, 1);
    })
}

#[tokio::test(start_paused = true)]
async fn serves_higher_priority_first_and_fifo_within_a_priority() {
    let p = pool(vec![rpm("k", 60)]);
    drain(&p, 60).await;
    let log = Log::default();
    let mut tasks = Vec::new();
    for (label, priority) in [(1, 0), (2, 0), (3, 5), (4, 0), (5, 5), (6, 9)] {
        tasks.push(spawn_waiter(&p, label, priority, &log));
        settle_tasks().await; // enqueue in this order
    }
    assert_eq!(p.queue_len(), 6);
    {
        // Only the head holds a timer: nobody else is woken when capacity comes back.
        let st = p.inner.lock();
        let timers: Vec<bool> = st.queue.values().map(|w| w.wake_at.is_some()).collect();
        assert_eq!(timers, [true, false, false, false, false, false]);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap();
    let order: Vec<u32> = log.iter().map(|(l, _)| *l).collect();
    assert_eq!(order, [6, 3, 5, 1, 2, 4]);
    // One per second, as the bucket refills.
    for (i, (_, at)) in log.iter().enumerate() {
        assert_secs(*at, (i + 1) as f64);
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_arrival_does_not_jump_the_queue() {
    let p = pool(vec![key("k", None, Some(100), None)]);
    let held = get(&p, d(100, 0)).await;
    let log = Log::default();
    let first = spawn_waiter_demand(&p, 1, d(100, 0), &log);
    settle_tasks().await;
    // The refund lets the queued waiter in, inside settle, before anyone else can look.
    held.settle(0, 0);
    let late = spawn_waiter_demand(&p, 2, d(50, 0), &log);
    first.await.unwrap();
    late.await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[0], (1, Duration::ZERO));
    assert_eq!(log[1].0, 2);
    assert_secs(log[1].1, 30.0); // 50 tokens at 100/60 per second
}

fn spawn_waiter_demand(p: &KeyPool, label: u32, demand: Demand, log: &Log) -> JoinHandle<()> {
    let (p, log) = (p.clone(), Arc::clone(log));
    let t0 = Instant::now();
    tokio::spawn(async move {
        let lease = p.acquire(demand, 0, later(), &[]).await.unwrap();
        log.lock().unwrap().push((label, t0.elapsed()));
        drop(lease);
    })
}

#[tokio::test(start_paused = true)]
async fn times_out_with_pool_exhausted_and_a_retry_time() {
    // 6 per minute: one every 10 s.
    let p = pool_with_timeout(vec![rpm("k", 6)], Duration::from_secs(5));
    drain(&p, 6).await;

    let t0 = Instant::now();
    let err = p.acquire(d(1, 1), 0, later(), &[]).await.unwrap_err();
    assert_secs(t0.elapsed(), 5.0);
    assert!(matches!(&err, Error::PoolExhausted { pool, .. } if pool == "test"));
    assert!(err.is_retryable());
    assert_secs(err.retry_after().unwrap(), 5.0);
    assert_eq!(p.queue_len(), 0);

    // The caller's deadline, when sooner, ends the wait first.
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(2);
    let err = p.acquire(d(1, 1), 0, deadline, &[]).await.unwrap_err();
    assert_secs(t0.elapsed(), 2.0);
    assert_secs(err.retry_after().unwrap(), 3.0);

    // A deadline already past fails at once.
    let err = p.acquire(d(1, 1), 0, t0, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted);
    assert_secs(Instant::now() - t0, 2.0);
}

#[tokio::test(start_paused = true)]
async fn the_retry_time_counts_the_queue_ahead() {
    let p = pool_with_timeout(vec![rpm("k", 6)], Duration::from_secs(60));
    drain(&p, 6).await;
    let log = Log::default();
    let ahead = spawn_waiter(&p, 1, 0, &log);
    settle_tasks().await;
    let t0 = Instant::now();
    let err = p
        .acquire(d(1, 1), 0, t0 + Duration::from_secs(3), &[])
        .await
        .unwrap_err();
    // At 3 s the bucket holds 0.3; two requests (the one ahead and ours) need 1.7 more at
    // 0.1/s: 17 s, not the 7 s our own request alone would suggest.
    assert_secs(err.retry_after().unwrap(), 17.0);
    ahead.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_does_not_block_the_ones_behind() {
    let p = pool(vec![rpm("k", 6)]);
    drain(&p, 6).await;
    let log = Log::default();
    let t0 = Instant::now();
    let head = spawn_waiter(&p, 1, 0, &log);
    settle_tasks().await;
    let next = spawn_waiter(&p, 2, 0, &log);
    settle_tasks().await;
    assert_eq!(p.queue_len(), 2);
    advance(Duration::from_secs(4)).await;
    head.abort();
    settle_tasks().await;
    assert_eq!(p.queue_len(), 1);
    next.await.unwrap();
    // Served when the next request refilled, as if the dropped one had never queued.
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0, 2);
    assert_secs(t0.elapsed(), 10.0);
    assert_eq!(status_of(&p, "k").in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_granted_to_a_waiter_that_is_gone_is_refunded_whole() {
    let p = pool(vec![key("k", None, Some(100), None)]);
    let held = get(&p, d(100, 0)).await;
    let log = Log::default();
    let first = spawn_waiter_demand(&p, 1, d(100, 0), &log);
    settle_tasks().await;
    let second = spawn_waiter_demand(&p, 2, d(100, 0), &log);
    settle_tasks().await;
    // The refund grants `first` its lease inside settle; it is dropped before it runs.
    held.settle(0, 0);
    first.abort();
    second.await.unwrap();
    assert_eq!(log.lock().unwrap().as_slice(), [(2, Duration::ZERO)]);
    let s = status_of(&p, "k");
    assert_eq!((s.in_flight, s.remaining_input_tokens), (0, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_head_hands_over_to_the_next() {
    let p = pool(vec![rpm("k", 6)]);
    drain(&p, 6).await;
    let t0 = Instant::now();
    let log = Log::default();
    let (p2, log2) = (p.clone(), Arc::clone(&log));
    let impatient = tokio::spawn(async move {
        let r = p2
            .acquire(d(1, 1), 0, t0 + Duration::from_secs(3), &[])
            .await;
        log2.lock().unwrap().push((1, t0.elapsed()));
        r.map(drop)
    });
    settle_tasks().await;
    let patient = spawn_waiter(&p, 2, 0, &log);
    assert!(impatient.await.unwrap().is_err());
    patient.await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[0].0, 1);
    assert_secs(log[0].1, 3.0);
    assert_eq!(log[1].0, 2);
    assert_secs(log[1].1, 10.0);
}

#[tokio::test(start_paused = true)]
async fn never_chooses_a_key_of_zero_capacity() {
    let p = pool(vec![
        rpm("zero", 0),
        key("no-input", None, Some(0), None),
        rpm("a", 10),
    ]);
    let t0 = Instant::now();
    for _ in 0..11 {
        assert_eq!(get(&p, d(0, 0)).await.key_id(), "a");
    }
    assert_secs(t0.elapsed(), 6.0); // the 11th waited for a, not for the zero keys
    assert_eq!(status_of(&p, "zero").in_flight, 0);

    let dead = pool(vec![rpm("zero", 0)]);
    let err = dead.acquire(d(1, 1), 0, later(), &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted);
    assert_eq!(err.retry_after(), None);
}

#[tokio::test(start_paused = true)]
async fn a_demand_larger_than_any_key_fails_at_once() {
    let p = pool(vec![
        key("a", None, Some(100_000), Some(4_096)),
        key("b", None, Some(100_000), Some(2_048)),
    ]);
    let t0 = Instant::now();
    let err = p.acquire(d(10, 5_000), 0, later(), &[]).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(
        matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "max_tokens"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("4096"), "{err}");
    let err = p.acquire(d(200_000, 1), 0, later(), &[]).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "messages"));
    // Fits a only: served there.
    assert_eq!(get(&p, d(10, 3_000)).await.key_id(), "a");
    assert_eq!(p.queue_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_provider_without_keys_is_one_keyless_unlimited_key() {
    let p = KeyPool::new("ollama", vec![], PoolConfig::default());
    let held: Vec<Lease> =
        futures::future::join_all((0..100).map(|_| get(&p, d(9_999, 9_999)))).await;
    assert!(
        held.iter()
            .all(|l| l.key_id() == "ollama#keyless" && l.secret().is_none())
    );
    assert_eq!(p.status().len(), 1);
    assert_eq!(p.status()[0].in_flight, 100);
}

#[tokio::test(start_paused = true)]
async fn debug_and_status_never_show_the_secret() {
    let k = key("openai#0", Some(10), None, None);
    let p = pool(vec![k.clone()]);
    let lease = get(&p, d(1, 1)).await;
    use secrecy::ExposeSecret;
    assert_eq!(lease.secret().unwrap().expose_secret(), SECRET);
    let shown = [
        format!("{k:?}"),
        format!("{p:?}"),
        format!("{lease:?}"),
        format!("{:?}", p.status()),
        serde_json::to_string(&p.status()).unwrap(),
    ];
    for s in shown {
        assert!(!s.contains(SECRET), "{s}");
        assert!(s.contains("openai#0"), "{s}");
    }
    assert!(format!("{k:?}").contains("redacted"));
}

#[test]
fn a_configured_key_keeps_its_limits_in_the_pool() {
    let limits = KeyLimits {
        requests_per_minute: Some(500),
        input_tokens_per_minute: Some(30_000),
        output_tokens_per_minute: Some(8_000),
    };
    let configured = ApiKey {
        id: "anthropic#0".to_owned(),
        secret: SECRET.into(),
        limits,
    };
    let pooled = PooledKey::from(configured);
    assert_eq!(pooled.id, "anthropic#0");
    assert_eq!(pooled.limits, limits);
    use secrecy::ExposeSecret;
    assert_eq!(pooled.secret.unwrap().expose_secret(), SECRET);
}

#[test]
fn leases_and_acquire_futures_are_send_and_static() {
    fn send_static<T: Send + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_static::<Lease>();
    send_static::<KeyPool>();
    let p = pool(vec![rpm("k", 1)]);
    let deadline = Instant::now();
    send(&p.acquire(d(1, 1), 0, deadline, &[]));
}

/// In every window `[t, t + w)`, the sum of `weight` admitted is at most what a bucket of
/// `cap` refilling at `cap / 60` per second can admit: `cap + cap × w / 60`.
fn assert_bucket_bound(events: &[(f64, u64)], cap: u64, what: &str) {
    for w in [0.5, 1.0, 6.0, 30.0, 60.0, 120.0, 600.0] {
        let bound = cap as f64 * (1.0 + w / 60.0) + 1e-3;
        let mut j = 0;
        let mut sum = 0u64;
        let mut worst = 0u64;
        for i in 0..events.len() {
            while j < events.len() && events[j].0 < events[i].0 + w {
                sum += events[j].1;
                j += 1;
            }
            worst = worst.max(sum);
            sum -= events[i].1;
        }
        assert!(
            worst as f64 <= bound,
            "{what}: {worst} admitted in a {w}s window, bound {bound}"
        );
    }
}

/// 1,000 tasks acquire at once against one key and hold their leases a while; returns
/// (admission time in seconds, demand) for each, sorted by time.
async fn thousand_acquirers(limits: KeyLimits) -> Vec<(f64, Demand)> {
    let p = pool(vec![PooledKey {
        id: "k".into(),
        secret: None,
        limits,
    }]);
    let t0 = Instant::now();
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..1000u64)
        .map(|i| {
            let (p, admitted) = (p.clone(), Arc::clone(&admitted));
            let demand = d(50 + (i * 37) % 200, 20 + (i * 53) % 180);
            tokio::spawn(async move {
                let lease = p.acquire(demand, 0, later(), &[]).await.unwrap();
                let at = t0.elapsed().as_secs_f64();
                admitted.lock().unwrap().push((at, demand));
                // Hold it a while, as a real call would; settle exactly or drop unsettled,
                // which both leave the reservation spent.
                tokio::time::sleep(Duration::from_millis(i % 3 * 700)).await;
                if i % 2 == 0 {
                    lease.settle(demand.input_tokens, demand.output_tokens);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = status_of(&p, "k");
    assert_eq!((s.in_flight, s.queue_len), (0, 0));
    let mut admitted = admitted.lock().unwrap().clone();
    admitted.sort_by(|a, b| a.0.total_cmp(&b.0));
    admitted
}

/// Every dimension stays within the bucket bound, and the last admission comes when the
/// binding dimension's total demand, minus its initial burst, has refilled: nothing wasted.
fn assert_admissions_within(admitted: &[(f64, Demand)], rpm: u64, itpm: u64, otpm: u64) {
    assert_eq!(admitted.len(), 1000);
    type Cost = fn(&Demand) -> u64;
    let dims: [(Cost, u64, &str); 3] = [
        (|_| 1, rpm, "requests"),
        (|d| d.input_tokens, itpm, "input tokens"),
        (|d| d.output_tokens, otpm, "output tokens"),
    ];
    let mut lower: f64 = 0.0;
    for (cost, cap, what) in dims {
        let events: Vec<(f64, u64)> = admitted.iter().map(|(t, d)| (*t, cost(d))).collect();
        assert_bucket_bound(&events, cap, what);
        let total: u64 = events.iter().map(|e| e.1).sum();
        lower = lower.max(total.saturating_sub(cap) as f64 / (cap as f64 / 60.0));
    }
    let last = admitted.last().map_or(0.0, |a| a.0);
    assert!(
        last >= lower - 0.01 && last <= lower * 1.05,
        "last admission at {last}s, lower bound {lower}s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_thousand_acquirers_never_exceed_the_request_limit() {
    // Requests bind: 900 after the burst at 100/min is 540 s; tokens would allow ~388 s.
    let limits = KeyLimits {
        requests_per_minute: Some(100),
        input_tokens_per_minute: Some(20_000),
        output_tokens_per_minute: Some(12_000),
    };
    let admitted = thousand_acquirers(limits).await;
    assert_admissions_within(&admitted, 100, 20_000, 12_000);
    assert!((admitted[999].0 - 540.0).abs() < 0.01);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_acquirers_never_exceed_the_token_limit() {
    // Input tokens bind: 149,500 in all, 137,500 after the burst at 200/s is 687.5 s.
    let limits = KeyLimits {
        requests_per_minute: Some(100),
        input_tokens_per_minute: Some(12_000),
        output_tokens_per_minute: Some(12_000),
    };
    let admitted = thousand_acquirers(limits).await;
    assert_admissions_within(&admitted, 100, 12_000, 12_000);
    assert!((admitted[999].0 - 687.5).abs() < 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stays_consistent_under_real_contention() {
    let p = pool(vec![
        rpm("a", u32::MAX),
        rpm("b", u32::MAX),
        rpm("c", u32::MAX),
    ]);
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    let lease = get(&p, d(i, t)).await;
                    if i % 2 == 0 {
                        lease.settle(i / 2, t);
                    }
                    if i % 50 == 0 {
                        yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let status = p.status();
    assert!(status.iter().all(|s| s.in_flight == 0));
    assert_eq!(p.queue_len(), 0);
}

/// The tokenizer is built only once a key's input-token window is half used: until then a
/// request's upper bound is reserved and nothing needs an exact count.
#[tokio::test(start_paused = true)]
async fn the_tokenizer_warms_up_once_a_token_window_is_half_used() {
    let p = pool(vec![key("a", None, Some(1000), None)]);
    let warming = |p: &KeyPool| p.inner.warming.load(Ordering::Relaxed);
    get(&p, d(400, 10)).await.settle(400, 10);
    assert!(!warming(&p), "600 of 1,000 left");
    get(&p, d(200, 10)).await.settle(200, 10);
    assert!(warming(&p), "400 of 1,000 left");
}
