//! Retry policy: when to retry, how long to wait, and how many retries the whole process may
//! afford. Pure decisions, no I/O: the client owns the loop, the sleeping and the deadline.
//!
//! - [`RetryPolicy`] and [`StrategyKind`]: the settings;
//! - [`Schedule`] (in `schedule`): the per-request sequence of waits;
//! - [`is_retryable`], [`is_context_window_error`], [`is_content_policy_error`] (in `classify`):
//!   which errors a retry could fix, and which ones call for a special fallback instead;
//! - [`RetryBudget`] (in `budget`): the process-wide cap that keeps retries a bounded fraction
//!   of traffic, so a failing upstream is not hammered by a retry storm.

mod budget;
mod classify;
mod schedule;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use budget::RetryBudget;
pub use classify::{is_content_policy_error, is_context_window_error, is_retryable};
pub use schedule::Schedule;

/// How the wait grows from one retry to the next.
///
/// Every strategy starts from [`RetryPolicy::base_delay`] and never waits longer than
/// [`RetryPolicy::max_delay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// "Full jitter": the n-th retry waits a uniform random time in
    /// `[0, min(max_delay, base_delay * factor^(n-1))]`. The default: it spreads clients that
    /// failed together the most, which is what an overloaded upstream needs.
    #[default]
    ExponentialJitter,
    /// AWS's "decorrelated jitter": each wait is uniform in
    /// `[base_delay, min(max_delay, previous_wait * factor)]`, the first previous wait being
    /// `base_delay`. AWS uses a factor of 3.
    DecorrelatedJitter,
    /// The n-th retry waits `base_delay * n`.
    Linear,
    /// The n-th retry waits `base_delay * fib(n)`: 1, 1, 2, 3, 5, 8... times the base.
    Fibonacci,
    /// Every retry waits `base_delay`.
    Constant,
}

impl StrategyKind {
    /// The configuration spelling, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::ExponentialJitter => "exponential_jitter",
            StrategyKind::DecorrelatedJitter => "decorrelated_jitter",
            StrategyKind::Linear => "linear",
            StrategyKind::Fibonacci => "fibonacci",
            StrategyKind::Constant => "constant",
        }
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that decides whether and when a failed request is sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub strategy: StrategyKind,
    /// The first wait, and the unit every strategy scales.
    pub base_delay: Duration,
    /// Growth per retry for the exponential and decorrelated strategies. Values below 1 (and
    /// NaN) are treated as 1: a backoff that shrinks would defeat its purpose.
    pub factor: f64,
    /// Longest single wait, whatever the strategy and attempt.
    pub max_delay: Duration,
    /// Retries after the first attempt, per request.
    pub max_retries: u32,
    /// Upstream HTTP statuses worth another try (429 also governs [`crate::Error::RateLimited`]).
    pub retry_on: Vec<u16>,
    /// Retries (and hedges) allowed per original request, over a rolling ~10 s window:
    /// 0.2 means at most one retry for every five requests.
    pub budget_ratio: f64,
    /// Retries per second always allowed on top of the ratio, so a quiet process can still
    /// retry its rare failures.
    pub budget_min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::ExponentialJitter,
            base_delay: Duration::from_millis(250),
            factor: 2.0,
            max_delay: Duration::from_secs(8),
            max_retries: 2,
            // The transient statuses, plus Anthropic's 529 "overloaded".
            retry_on: vec![408, 429, 500, 502, 503, 504, 529],
            budget_ratio: 0.2,
            budget_min_per_second: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_match_the_documented_policy() {
        let p = RetryPolicy::default();
        assert_eq!(p.strategy, StrategyKind::ExponentialJitter);
        assert_eq!(p.base_delay, Duration::from_millis(250));
        assert_eq!(p.factor, 2.0);
        assert_eq!(p.max_delay, Duration::from_secs(8));
        assert_eq!(p.max_retries, 2);
        assert_eq!(p.retry_on, [408, 429, 500, 502, 503, 504, 529]);
        assert_eq!(p.budget_ratio, 0.2);
        assert_eq!(p.budget_min_per_second, 10);
        // The default statuses are exactly the ones the error type calls transient.
        for status in 100..600 {
            assert_eq!(
                p.retry_on.contains(&status),
                crate::error::is_retryable_status(status),
                "status {status}"
            );
        }
    }

    #[test]
    fn strategy_kinds_use_snake_case_in_config() {
        let all = [
            StrategyKind::ExponentialJitter,
            StrategyKind::DecorrelatedJitter,
            StrategyKind::Linear,
            StrategyKind::Fibonacci,
            StrategyKind::Constant,
        ];
        for kind in all {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<StrategyKind>(&json).unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(StrategyKind::default(), StrategyKind::ExponentialJitter);
        assert!(serde_json::from_str::<StrategyKind>("\"ExponentialJitter\"").is_err());
    }
}
