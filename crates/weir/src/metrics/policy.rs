//! Counters the engine keeps for what no seam sees on its own: retries to the same
//! deployment, failovers to another, fallbacks to another group, deployments passed over
//! because their breaker was open, and retries the retry budget refused. Atomic adds only.

use std::sync::atomic::{AtomicU64, Ordering};

/// The engine's policy decisions since start.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    pub(crate) retries: AtomicU64,
    pub(crate) failovers: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) breaker_rejections: AtomicU64,
    pub(crate) budget_exhausted: AtomicU64,
}

/// [`PolicyCounters`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicySnapshot {
    /// Decisions to try the deployment that just failed again (after a backoff, or with
    /// another key); a breaker that opened meanwhile may still refuse the attempt.
    pub retries: u64,
    /// Attempts sent to another deployment of the same group after a failure.
    pub failovers: u64,
    /// Moves to a fallback group after a group failed.
    pub fallbacks: u64,
    /// Deployments passed over because their circuit breaker was open.
    pub breaker_rejections: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
}

impl PolicyCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot {
            retries: self.retries.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            breaker_rejections: self.breaker_rejections.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
        }
    }
}
