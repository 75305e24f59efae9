//! The per-request sequence of retry waits, one [`Schedule`] per request.
//!
//! Owns the arithmetic of each [`StrategyKind`]: it never returns more than `max_delay`, never
//! panics (no float-to-`Duration` conversion can fail here), and stays correct however many
//! retries are asked for. It does not know about errors, Retry-After hints or deadlines: the
//! caller combines those with the wait it gets here.

use std::time::Duration;

use super::{RetryPolicy, StrategyKind};

/// The waits before the 1st, 2nd, ... retry of one request.
#[derive(Debug)]
pub struct Schedule {
    strategy: StrategyKind,
    base: Duration,
    /// Sanitised to a finite value `>= 1` (see [`RetryPolicy::factor`]).
    factor: f64,
    cap: Duration,
    max_retries: u32,
    /// Waits handed out so far; the next one is for retry `retries + 1`.
    retries: u32,
    /// The previous wait, which bounds the next one under decorrelated jitter.
    prev: Duration,
    rng: fastrand::Rng,
}

impl Schedule {
    /// A schedule drawing its jitter from a fresh random seed.
    pub fn new(policy: &RetryPolicy) -> Self {
        Self::with_rng(policy, fastrand::Rng::new())
    }

    /// A schedule drawing its jitter from `rng`, so tests can fix the sequence.
    pub fn with_rng(policy: &RetryPolicy, rng: fastrand::Rng) -> Self {
        let factor = if policy.factor.is_nan() {
            1.0
        } else {
            // Infinity becomes f64::MAX so the arithmetic below stays finite-or-capped.
            policy.factor.clamp(1.0, f64::MAX)
        };
        Self {
            strategy: policy.strategy,
            base: policy.base_delay,
            factor,
            cap: policy.max_delay,
            max_retries: policy.max_retries,
            retries: 0,
            prev: policy.base_delay,
            rng,
        }
    }

    /// The wait before the next retry, counting it as made.
    ///
    /// Always within `[0, max_delay]`. Callers should check [`Schedule::retries_left`] first;
    /// asking past `max_retries` still yields a sane (capped) wait rather than a panic.
    pub fn next_delay(&mut self) -> Duration {
        self.retries = self.retries.saturating_add(1);
        let n = self.retries;
        let delay = match self.strategy {
            StrategyKind::ExponentialJitter => {
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                let ceiling = scale(self.base, self.factor.powi(exponent), self.cap);
                uniform(&mut self.rng, Duration::ZERO, ceiling)
            }
            StrategyKind::DecorrelatedJitter => {
                let low = self.base.min(self.cap);
                let high = scale(self.prev, self.factor, self.cap);
                // Sampling under the cap (rather than capping the sample, as AWS's formula
                // does) keeps waits spread out once they reach the cap, instead of piling
                // most of them onto exactly `max_delay`.
                let wait = uniform(&mut self.rng, low, high);
                self.prev = wait;
                wait
            }
            StrategyKind::Linear => self.base.checked_mul(n).unwrap_or(self.cap),
            StrategyKind::Fibonacci => self.base.checked_mul(fibonacci(n)).unwrap_or(self.cap),
            StrategyKind::Constant => self.base,
        };
        delay.min(self.cap)
    }

    /// Whether the policy allows another retry of this request.
    pub fn retries_left(&self) -> bool {
        self.retries < self.max_retries
    }

    /// Retries scheduled so far (calls to [`Schedule::next_delay`]).
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

/// `d * mult`, saturating at `cap`. `mult` is finite and `>= 1` or `+inf`; anything the float
/// arithmetic cannot represent (overflow, NaN) means "as long as allowed", which is `cap`.
fn scale(d: Duration, mult: f64, cap: Duration) -> Duration {
    if d.is_zero() {
        // 0 * inf would be NaN; zero base means no waiting at all.
        return Duration::ZERO;
    }
    let secs = d.as_secs_f64() * mult;
    if secs >= cap.as_secs_f64() {
        return cap;
    }
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
}

/// A uniform random duration in `[low, high]` (`low` when the range is empty).
fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let span = (high - low).as_secs_f64() * rng.f64();
    let offset = Duration::try_from_secs_f64(span).unwrap_or(Duration::ZERO);
    // Float rounding could step a nanosecond past `high`.
    low.saturating_add(offset).min(high)
}

/// fib(1) = fib(2) = 1, saturating at `u32::MAX` (reached at n = 48, far past any cap).
fn fibonacci(n: u32) -> u32 {
    let (mut a, mut b) = (0u32, 1u32);
    for _ in 1..n {
        match a.checked_add(b) {
            Some(next) => (a, b) = (b, next),
            None => return u32::MAX,
        }
    }
    if n == 0 { 0 } else { b }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(strategy: StrategyKind, base_ms: u64, factor: f64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            strategy,
            base_delay: MS * base_ms as u32,
            factor,
            max_delay: MS * cap_ms as u32,
            max_retries: 10,
            ..RetryPolicy::default()
        }
    }

    fn waits(p: &RetryPolicy, seed: u64, count: usize) -> Vec<Duration> {
        let mut s = Schedule::with_rng(p, fastrand::Rng::with_seed(seed));
        (0..count).map(|_| s.next_delay()).collect()
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn constant_waits_the_base_capped() {
        let p = policy(StrategyKind::Constant, 300, 2.0, 1000);
        assert_eq!(waits(&p, 1, 4), ms(&[300, 300, 300, 300]));
        let p = policy(StrategyKind::Constant, 3000, 2.0, 1000);
        assert_eq!(waits(&p, 1, 2), ms(&[1000, 1000]));
    }

    #[test]
    fn linear_grows_by_the_base_until_the_cap() {
        let p = policy(StrategyKind::Linear, 100, 2.0, 450);
        assert_eq!(waits(&p, 1, 6), ms(&[100, 200, 300, 400, 450, 450]));
    }

    #[test]
    fn fibonacci_follows_the_sequence_until_the_cap() {
        let p = policy(StrategyKind::Fibonacci, 100, 2.0, 1000);
        assert_eq!(
            waits(&p, 1, 8),
            ms(&[100, 100, 200, 300, 500, 800, 1000, 1000])
        );
        assert_eq!(
            (0..=10).map(fibonacci).collect::<Vec<_>>(),
            [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
        );
        assert_eq!(fibonacci(47), 2_971_215_073);
        assert_eq!(fibonacci(48), u32::MAX);
        assert_eq!(fibonacci(u32::MAX), u32::MAX);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_exponential_ceiling() {
        let p = policy(StrategyKind::ExponentialJitter, 100, 2.0, 1000);
        let ceilings = ms(&[100, 200, 400, 800, 1000, 1000]);
        let samples = 4000;
        let mut seen = vec![Vec::with_capacity(samples); ceilings.len()];
        for seed in 0..samples as u64 {
            for (i, w) in waits(&p, seed, ceilings.len()).into_iter().enumerate() {
                assert!(
                    w <= ceilings[i],
                    "retry {}: {w:?} > {:?}",
                    i + 1,
                    ceilings[i]
                );
                seen[i].push(w.as_secs_f64() / ceilings[i].as_secs_f64());
            }
        }
        // Full jitter, not "equal jitter": the fractions of the ceiling cover [0, 1]
        // uniformly, so some waits are near zero, some near the ceiling, the mean near half.
        for fractions in &seen {
            let min = fractions.iter().copied().fold(f64::MAX, f64::min);
            let max = fractions.iter().copied().fold(0.0, f64::max);
            let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
            assert!(min < 0.01, "min fraction {min}");
            assert!(max > 0.99, "max fraction {max}");
            assert!((mean - 0.5).abs() < 0.03, "mean fraction {mean}");
        }
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_the_previous_wait() {
        let p = policy(StrategyKind::DecorrelatedJitter, 100, 3.0, 2000);
        let (base, cap) = (p.base_delay, p.max_delay);
        let (mut hit_low, mut hit_high, mut reached_cap_region) = (false, false, false);
        for seed in 0..2000 {
            let mut prev = base;
            for w in waits(&p, seed, 10) {
                let high = cap.min(prev * 3);
                assert!(w >= base && w <= high, "{w:?} outside [{base:?}, {high:?}]");
                let fraction = (w - base).as_secs_f64() / (high - base).as_secs_f64();
                hit_low |= fraction < 0.01;
                hit_high |= fraction > 0.99;
                reached_cap_region |= w > cap.mul_f64(0.95);
                prev = w;
            }
        }
        assert!(hit_low && hit_high && reached_cap_region);
    }

    #[test]
    fn decorrelated_with_a_cap_below_the_base_waits_the_cap() {
        let p = policy(StrategyKind::DecorrelatedJitter, 500, 3.0, 200);
        assert_eq!(waits(&p, 9, 3), ms(&[200, 200, 200]));
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        for strategy in [
            StrategyKind::ExponentialJitter,
            StrategyKind::DecorrelatedJitter,
        ] {
            let p = policy(strategy, 100, 2.0, 5000);
            assert_eq!(waits(&p, 42, 8), waits(&p, 42, 8));
            assert_ne!(waits(&p, 42, 8), waits(&p, 43, 8));
        }
    }

    #[test]
    fn unseeded_schedules_respect_the_default_bounds() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            let mut s = Schedule::new(&p);
            assert!(s.next_delay() <= Duration::from_millis(250));
            assert!(s.next_delay() <= Duration::from_millis(500));
        }
    }

    #[test]
    fn counts_retries_against_max_retries() {
        let mut p = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let mut s = Schedule::with_rng(&p, fastrand::Rng::with_seed(1));
        assert!(s.retries_left());
        s.next_delay();
        assert!(s.retries_left());
        s.next_delay();
        assert!(!s.retries_left());
        assert_eq!(s.retries(), 2);
        // Asking anyway is harmless.
        assert!(s.next_delay() <= p.max_delay);

        p.max_retries = 0;
        assert!(!Schedule::new(&p).retries_left());
    }

    #[test]
    fn huge_attempt_counts_saturate_at_the_cap() {
        let cap = Duration::from_secs(30);
        for strategy in [
            StrategyKind::ExponentialJitter,
            StrategyKind::DecorrelatedJitter,
            StrategyKind::Linear,
            StrategyKind::Fibonacci,
            StrategyKind::Constant,
        ] {
            let p = RetryPolicy {
                strategy,
                base_delay: Duration::from_secs(1),
                max_delay: cap,
                ..RetryPolicy::default()
            };
            let mut s = Schedule::with_rng(&p, fastrand::Rng::with_seed(5));
            s.retries = u32::MAX - 3;
            for _ in 0..6 {
                let w = s.next_delay();
                assert!(w <= cap, "{strategy}: {w:?}");
                if matches!(strategy, StrategyKind::Linear | StrategyKind::Fibonacci) {
                    assert_eq!(w, cap, "{strategy}");
                }
            }
            assert_eq!(s.retries(), u32::MAX);
            assert!(!s.retries_left());
        }
    }

    #[test]
    fn extreme_settings_never_panic_or_exceed_the_cap() {
        let durations = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_secs(8),
            Duration::MAX,
        ];
        let factors = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -3.0,
            0.0,
            0.5,
            1.0,
            2.0,
            f64::MAX,
        ];
        for strategy in [
            StrategyKind::ExponentialJitter,
            StrategyKind::DecorrelatedJitter,
            StrategyKind::Linear,
            StrategyKind::Fibonacci,
            StrategyKind::Constant,
        ] {
            for base in durations {
                for cap in durations {
                    for factor in factors {
                        let p = RetryPolicy {
                            strategy,
                            base_delay: base,
                            factor,
                            max_delay: cap,
                            ..RetryPolicy::default()
                        };
                        let mut s = Schedule::with_rng(&p, fastrand::Rng::with_seed(3));
                        for _ in 0..70 {
                            let w = s.next_delay();
                            assert!(w <= cap, "{p:?}: {w:?}");
                            if base.is_zero() {
                                assert_eq!(w, Duration::ZERO, "{p:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_factor_below_one_does_not_shrink_the_backoff() {
        for factor in [0.5, -2.0, f64::NAN] {
            let p = policy(StrategyKind::DecorrelatedJitter, 100, factor, 1000);
            assert_eq!(waits(&p, 7, 3), ms(&[100, 100, 100]));
            let p = policy(StrategyKind::ExponentialJitter, 100, factor, 1000);
            assert!(waits(&p, 7, 20).iter().all(|w| *w <= MS * 100));
        }
    }

    fn strategy() -> impl Strategy<Value = StrategyKind> {
        prop_oneof![
            Just(StrategyKind::ExponentialJitter),
            Just(StrategyKind::DecorrelatedJitter),
            Just(StrategyKind::Linear),
            Just(StrategyKind::Fibonacci),
            Just(StrategyKind::Constant),
        ]
    }

    proptest! {
        #[test]
        fn any_policy_yields_waits_within_the_cap(
            strategy in strategy(),
            base_ns in any::<u64>(),
            cap_ns in any::<u64>(),
            factor in any::<f64>(),
            start in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy {
                strategy,
                base_delay: Duration::from_nanos(base_ns),
                factor,
                max_delay: Duration::from_nanos(cap_ns),
                ..RetryPolicy::default()
            };
            let mut s = Schedule::with_rng(&p, fastrand::Rng::with_seed(seed));
            s.retries = start;
            for _ in 0..5 {
                prop_assert!(s.next_delay() <= p.max_delay);
            }
        }
    }
}
