//! One rate-limit dimension of one key (requests, input tokens, ...) as a token bucket.
//!
//! Capacity is the per-minute limit and the bucket refills continuously at `limit / 60` per
//! second, the way OpenAI and Anthropic meter ("continuously replenished", "token bucket").
//! The level may go negative: a request that used more than it reserved is debited in full,
//! and the debt delays later admissions instead of being forgotten.
//!
//! When the upstream reports what it has left and when it will be full again, the bucket is
//! clamped to that and, until that reset, refills no faster than the upstream said it would.
//! This is what keeps a limit weir only learned from headers honest even when its real window
//! is longer than a minute (OpenAI reports per-day request limits in the same headers): the
//! upstream's own reset time bounds the refill, and every response renews that bound.

use std::time::Duration;

use tokio::time::Instant;

/// Slack on "is there enough": refill is float math, and a waiter must not wake one rounding
/// error short of its demand and need another timer.
pub(super) const EPSILON: f64 = 1e-6;

#[derive(Debug, Clone)]
pub(super) struct Bucket {
    /// Capacity per minute; `None` is unlimited (nothing configured or learned yet).
    limit: Option<u64>,
    /// The limit came from configuration, so the upstream's is not adopted over it.
    configured: bool,
    /// Level as of `updated`; may be negative (debt).
    level: f64,
    updated: Instant,
    /// Until this instant, refill at this rate (per second) instead of `limit / 60`: the
    /// upstream reported a slower path back to full.
    upstream: Option<(Instant, f64)>,
}

impl Bucket {
    /// A bucket with a configured limit (`Some`), or an unlimited one that may learn its
    /// limit from the upstream (`None`). Starts full.
    pub(super) fn new(limit: Option<u64>, now: Instant) -> Self {
        Self {
            limit,
            configured: limit.is_some(),
            level: limit.map_or(0.0, |l| l as f64),
            updated: now,
            upstream: None,
        }
    }

    pub(super) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// A limit of zero: the dimension can never admit anything.
    pub(super) fn is_zero(&self) -> bool {
        self.limit == Some(0)
    }

    /// Whether `amount` fits in the bucket's whole capacity, i.e. could ever be admitted.
    pub(super) fn fits(&self, amount: u64) -> bool {
        self.limit.is_none_or(|l| amount <= l)
    }

    fn rate(&self) -> f64 {
        self.limit.map_or(0.0, |l| l as f64 / 60.0)
    }

    /// The level at `now`, refilled but not stored.
    pub(super) fn level_at(&self, now: Instant) -> f64 {
        let Some(limit) = self.limit else {
            return f64::INFINITY;
        };
        let mut level = self.level;
        let mut t = self.updated;
        if now <= t {
            return level;
        }
        if let Some((until, rate)) = self.upstream {
            let end = until.min(now);
            if end > t {
                level += rate * (end - t).as_secs_f64();
                t = end;
            }
        }
        level += self.rate() * (now - t).as_secs_f64();
        // Refill only adds, so clamping once at the end equals clamping all along.
        level.min(limit as f64)
    }

    /// Store the refill up to `now`.
    fn advance(&mut self, now: Instant) {
        if self.limit.is_none() || now <= self.updated {
            return;
        }
        self.level = self.level_at(now);
        self.updated = now;
        if self.upstream.is_some_and(|(until, _)| until <= now) {
            self.upstream = None;
        }
    }

    /// Whether `amount` can be admitted at `now`.
    pub(super) fn has(&self, amount: u64, now: Instant) -> bool {
        self.limit.is_none() || self.level_at(now) + EPSILON >= amount as f64
    }

    /// What would be left of the capacity after admitting `amount`, as a fraction of it;
    /// `None` for an unlimited dimension, which never constrains.
    pub(super) fn headroom_after(&self, amount: u64, now: Instant) -> Option<f64> {
        let limit = self.limit.filter(|&l| l > 0)?;
        Some((self.level_at(now) - amount as f64) / limit as f64)
    }

    pub(super) fn take(&mut self, amount: u64, now: Instant) {
        if self.limit.is_some() {
            self.advance(now);
            self.level -= amount as f64;
        }
    }

    /// Give back tokens that were reserved and not used, never above capacity.
    pub(super) fn give(&mut self, amount: u64, now: Instant) {
        if let Some(limit) = self.limit {
            self.advance(now);
            self.level = (self.level + amount as f64).min(limit as f64);
        }
    }

    /// How long until `amount` can be admitted; `None` if never (a zero limit, or an amount
    /// above capacity).
    pub(super) fn time_until(&self, amount: u64, now: Instant) -> Option<Duration> {
        if self.limit.is_none() {
            return Some(Duration::ZERO);
        }
        if !self.fits(amount) || self.is_zero() {
            return None;
        }
        // The same slack as `has`, so "ready in zero" and "has it now" always agree.
        self.time_to_level(amount as f64 - EPSILON, now)
    }

    /// How long until the bucket is full; `None` for an unlimited dimension.
    pub(super) fn time_until_full(&self, now: Instant) -> Option<Duration> {
        let limit = self.limit?;
        if limit == 0 {
            return Some(Duration::ZERO);
        }
        self.time_to_level(limit as f64, now)
    }

    /// Time for the refill to reach `target` (at most the capacity, so it is reached).
    fn time_to_level(&self, target: f64, now: Instant) -> Option<Duration> {
        let mut need = target - self.level_at(now);
        if need <= 0.0 {
            return Some(Duration::ZERO);
        }
        let mut secs = 0.0;
        if let Some((until, rate)) = self.upstream
            && until > now
        {
            let span = (until - now).as_secs_f64();
            if rate > 0.0 && rate * span >= need {
                return Duration::try_from_secs_f64(need / rate).ok();
            }
            need -= rate * span;
            secs = span;
        }
        Duration::try_from_secs_f64(secs + need / self.rate()).ok()
    }

    /// Take in what the upstream reported for this dimension.
    ///
    /// - `limit`: adopted when none is configured (the upstream knows the key's tier). A zero
    ///   limit is ignored: it would disable the key for good, since a key that takes no
    ///   requests never sees headers that could lift it.
    /// - `remaining`: the level is lowered to it, never raised (the upstream also counts other
    ///   clients of the same key; weir's own count also knows requests not yet sent).
    /// - `reset_after`: until then, refill no faster than from `remaining` to the limit over
    ///   that time. A faster upstream refill is ignored: weir's own rate already binds.
    pub(super) fn observe(
        &mut self,
        limit: Option<u64>,
        remaining: Option<u64>,
        reset_after: Option<Duration>,
        now: Instant,
    ) {
        self.advance(now);
        if !self.configured
            && let Some(learned) = limit.filter(|&l| l > 0)
        {
            match self.limit {
                // First limit: the bucket was unlimited, start full and let `remaining` clamp.
                None => {
                    self.level = learned as f64;
                    self.updated = now;
                }
                Some(_) => self.level = self.level.min(learned as f64),
            }
            self.limit = Some(learned);
        }
        let Some(cap) = self.limit else {
            return;
        };
        let Some(remaining) = remaining else {
            return;
        };
        let remaining = remaining.min(cap) as f64;
        self.level = self.level.min(remaining);
        self.upstream = match reset_after {
            Some(d) if !d.is_zero() => {
                let upstream_rate = (cap as f64 - remaining) / d.as_secs_f64();
                (upstream_rate < self.rate())
                    .then(|| now.checked_add(d).map(|until| (until, upstream_rate)))
                    .flatten()
            }
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn unlimited_never_constrains() {
        let now = Instant::now();
        let mut b = Bucket::new(None, now);
        b.take(1_000_000, now);
        assert!(b.has(u64::MAX, now));
        assert_eq!(b.headroom_after(5, now), None);
        assert_eq!(b.time_until(u64::MAX, now), Some(Duration::ZERO));
        assert!(b.fits(u64::MAX));
    }

    #[test]
    fn refills_at_limit_per_minute_up_to_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(60), t0);
        b.take(60, t0);
        assert!(!b.has(1, t0));
        assert!((b.level_at(t0 + secs(10.0)) - 10.0).abs() < 1e-9);
        assert_eq!(b.level_at(t0 + secs(3600.0)), 60.0);
        let wait = b.time_until(1, t0).unwrap();
        assert!(b.has(1, t0 + wait) && !b.has(1, t0 + wait / 2));
    }

    #[test]
    fn debt_delays_and_refund_is_capped() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(600), t0);
        b.take(900, t0); // -300
        let wait = b.time_until(100, t0).unwrap();
        assert!((wait.as_secs_f64() - 40.0).abs() < 1e-3, "{wait:?}");
        b.give(5_000, t0);
        assert_eq!(b.level_at(t0), 600.0);
    }

    #[test]
    fn zero_and_oversized_are_never_ready() {
        let now = Instant::now();
        assert_eq!(Bucket::new(Some(0), now).time_until(0, now), None);
        assert!(Bucket::new(Some(0), now).is_zero());
        assert_eq!(Bucket::new(Some(10), now).time_until(11, now), None);
    }

    #[test]
    fn observe_learns_clamps_and_follows_the_upstream_reset() {
        let t0 = Instant::now();
        let mut b = Bucket::new(None, t0);
        // 100 per window, 10 left, full again in 90 s: 1/s, slower than 100/60 s.
        b.observe(Some(100), Some(10), Some(secs(90.0)), t0);
        assert_eq!(b.limit(), Some(100));
        assert_eq!(b.level_at(t0), 10.0);
        assert!((b.level_at(t0 + secs(45.0)) - 55.0).abs() < 1e-6);
        let full = b.time_until_full(t0).unwrap().as_secs_f64();
        assert!((full - 90.0).abs() < 1e-3, "{full}");
        // After the reset the normal rate applies again.
        b.take(100, t0 + secs(90.0));
        assert!((b.level_at(t0 + secs(96.0)) - 10.0).abs() < 1e-6);
    }

    #[test]
    fn observe_never_raises_and_keeps_a_configured_limit() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(50), t0);
        b.take(45, t0);
        b.observe(Some(1000), Some(900), None, t0);
        assert_eq!(b.limit(), Some(50));
        assert_eq!(b.level_at(t0), 5.0);
        b.observe(Some(1000), Some(2), None, t0);
        assert_eq!(b.level_at(t0), 2.0);
        // A zero limit from the upstream is not adopted.
        let mut b = Bucket::new(None, t0);
        b.observe(Some(0), Some(0), None, t0);
        assert_eq!(b.limit(), None);
    }

    #[test]
    fn a_faster_upstream_reset_does_not_speed_up_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(60), t0);
        b.observe(None, Some(0), Some(secs(1.0)), t0);
        assert!((b.level_at(t0 + secs(1.0)) - 1.0).abs() < 1e-9);
    }
}
