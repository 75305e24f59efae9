//! The rolling failure-ratio window: a ring of time buckets on tokio's clock.
//!
//! A ring of counters instead of a log of timestamps keeps memory and the cost of a record
//! constant however busy the deployment is. The price is granularity: the window covers the
//! current bucket plus the `BUCKETS - 1` before it, so an event is forgotten between
//! `window * (BUCKETS - 1) / BUCKETS` and `window` after it happened.

use std::time::Duration;

use tokio::time::Instant;

/// Buckets per window: 10 gives a 10% granularity, the usual trade-off (Hystrix, resilience4j).
pub(super) const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket-length slice of time since `origin` these counts belong to; a slot whose
    /// epoch is not the one being written is stale and restarts from zero.
    epoch: u64,
    requests: u32,
    failures: u32,
}

/// Request and failure counts over the last `window`.
#[derive(Debug)]
pub(super) struct Window {
    origin: Instant,
    bucket_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(super) fn new(window: Duration, origin: Instant) -> Self {
        Self {
            origin,
            // A zero window would divide by zero; one-nanosecond buckets make it forget at once.
            bucket_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX)
    }

    /// Count one request. `now` must not go backwards between calls, which holds because the
    /// breaker reads the clock under its lock.
    pub(super) fn record(&mut self, now: Instant, failure: bool) {
        let epoch = self.epoch(now);
        let slot = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        slot.requests = slot.requests.saturating_add(1);
        if failure {
            slot.failures = slot.failures.saturating_add(1);
        }
    }

    /// `(requests, failures)` over the buckets still inside the window at `now`.
    pub(super) fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=current).contains(&b.epoch))
            .fold((0u32, 0u32), |(r, f), b| {
                (r.saturating_add(b.requests), f.saturating_add(b.failures))
            })
    }

    pub(super) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn forgets_a_bucket_once_it_leaves_the_window() {
        let mut w = Window::new(Duration::from_secs(10), Instant::now());
        w.record(Instant::now(), true);
        w.record(Instant::now(), false);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        w.record(Instant::now(), true);
        assert_eq!(w.totals(Instant::now()), (3, 2));
        // The first bucket covered [0s, 1s): at 10s it is ten buckets old and out.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.totals(Instant::now()), (1, 1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.totals(Instant::now()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slot_restarts_from_zero() {
        let mut w = Window::new(Duration::from_secs(10), Instant::now());
        for _ in 0..5 {
            w.record(Instant::now(), true);
        }
        // Exactly one lap later the same slot is written again: old counts must not leak in.
        tokio::time::advance(Duration::from_secs(10)).await;
        w.record(Instant::now(), false);
        assert_eq!(w.totals(Instant::now()), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_window_does_not_divide_by_zero() {
        let mut w = Window::new(Duration::ZERO, Instant::now());
        w.record(Instant::now(), true);
        assert_eq!(w.totals(Instant::now()), (1, 1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.totals(Instant::now()), (0, 0));
    }
}
