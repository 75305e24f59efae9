//! Circuit breaking: one [`CircuitBreaker`] per deployment (provider, key, upstream model).
//!
//! A breaker stops sending traffic to a deployment that is failing, so requests fail fast and
//! the router tries the next deployment instead of waiting on a sick one.
//!
//! ```text
//!            N consecutive failures, or failure ratio >= threshold
//!            over the rolling window with >= min_requests
//!   Closed ───────────────────────────────────────────────────────▶ Open
//!     ▲                                                           │  ▲
//!     │ success_threshold probe successes       cooldown (jitter, │  │ any probe failure
//!     │ (cooldown growth resets)                 doubling per     │  │ (cooldown doubles,
//!     │                                          trip, capped)    ▼  │  up to max_cooldown)
//!     └──────────────────────────────────────────────────────── HalfOpen
//!                                 at most half_open_probes requests in flight
//! ```
//!
//! Usage: ask [`CircuitBreaker::try_acquire`] before each attempt and settle the returned
//! [`Permit`] with its verdict; classify errors with [`counts_as_failure`] (or let
//! [`Permit::record_error`] do it). Routing reads [`CircuitBreaker::is_available`] to skip a
//! deployment cheaply, and the `Err` of `try_acquire` is the wait to report as Retry-After.
//!
//! Design notes:
//! - [`CircuitBreaker`] is a cheap-to-clone handle around an `Arc`; clones share one state.
//!   A [`Permit`] holds its own `Arc`, so it is `'static + Send` and can move into a spawned
//!   task or a response stream that outlives the call that acquired it.
//! - The state sits behind one `std::sync::Mutex`, held only for a few comparisons and
//!   never across an `.await`; an async mutex would cost more and buy nothing here.
//! - Time is tokio's clock ([`tokio::time::Instant`]), so tests pause and advance it. The
//!   Open -> HalfOpen transition happens lazily on the next call, so no timer task runs.
//! - A verdict counts only in the phase its permit was admitted in: a request sent before a
//!   trip says nothing about the upstream after it (see `state.rs`).
//!
//! ```
//! use weir::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig {
//!     consecutive_failures: 2,
//!     ..BreakerConfig::default()
//! });
//! for _ in 0..2 {
//!     let permit = breaker.try_acquire().expect("closed breakers admit");
//!     permit.failure();
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! let wait = breaker.try_acquire().expect_err("open breakers fail fast");
//! assert!(wait.as_secs() >= 24); // the 30 s default cooldown, minus at most 20% jitter
//! ```

mod state;
mod window;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::Error;
use state::{Machine, Outcome};

/// How a breaker trips and recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row (while closed) that trip the breaker; 0 turns this rule off.
    pub consecutive_failures: u32,
    /// Failed share of the requests in `window` at or above which the breaker trips, once
    /// `min_requests` have been seen; values above 1 (or 0) turn this rule off.
    pub failure_ratio: f64,
    /// Length of the rolling window the ratio is computed over (10 buckets of window / 10).
    pub window: Duration,
    /// Requests the window must hold before the ratio can trip the breaker, so a quiet
    /// deployment is not cut off by one unlucky request out of two.
    pub min_requests: u32,
    /// Wait after the first trip before a probe is let through.
    pub cooldown: Duration,
    /// Ceiling of the cooldown, which doubles on each trip in a row.
    pub max_cooldown: Duration,
    /// Random spread of each cooldown, as a fraction: 0.2 means ±20% (clamped to `0..=1`).
    pub cooldown_jitter: f64,
    /// Requests let through at once while half-open (at least 1).
    pub half_open_probes: u32,
    /// Probe successes that close the breaker again (at least 1).
    pub success_threshold: u32,
    /// `false` makes the breaker admit everything and count nothing.
    pub enabled: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: Duration::from_secs(30),
            min_requests: 20,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            cooldown_jitter: 0.2,
            half_open_probes: 1,
            success_threshold: 2,
            enabled: true,
        }
    }
}

/// Where a breaker is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Traffic flows; outcomes are counted.
    Closed,
    /// Failing fast until the cooldown ends.
    Open,
    /// A few probes test whether the upstream recovered.
    HalfOpen,
}

impl BreakerState {
    /// A label for metrics and logs, the same as the serde name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker's state and counters at one moment, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Failures in a row while closed. Kept, not cleared, while open or half-open, so the
    /// numbers that caused a trip stay visible until the breaker closes.
    pub consecutive_failures: u32,
    /// Requests with a verdict in the rolling window (ignored outcomes are not counted).
    pub window_requests: u32,
    pub window_failures: u32,
    /// Trips over the breaker's life; [`CircuitBreaker::reset`] does not clear it, so it can
    /// back a monotonic counter metric.
    pub trips: u64,
    /// When open: seconds until a probe will be admitted.
    pub half_open_in_secs: Option<f64>,
    /// When half-open: probes admitted and not yet settled.
    pub probes_in_flight: u32,
}

/// A circuit breaker for one deployment.
///
/// A cheap-to-clone handle (`Arc` inside): clones share one state, and the breaker can be
/// used from many tasks at once. `Send + Sync`.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    config: BreakerConfig,
    machine: Mutex<Machine>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The critical sections cannot panic (no unwraps, no indexing out of range), so a
        // poisoned lock would still guard consistent state: recover it rather than fail.
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let machine = Machine::new(&config, Instant::now());
        Self {
            shared: Arc::new(Shared {
                config,
                machine: Mutex::new(machine),
            }),
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Ask to send one request.
    ///
    /// `Ok(permit)`: send it, then settle the permit with the verdict. `Err(wait)`: the
    /// breaker is open (or half-open with every probe slot taken); `wait` is the time until a
    /// probe can be admitted, for Retry-After, and the router should try another deployment.
    pub fn try_acquire(&self) -> Result<Permit, Duration> {
        if !self.shared.config.enabled {
            return Ok(Permit { inner: None });
        }
        let generation = {
            let mut machine = self.shared.lock();
            machine.try_acquire(&self.shared.config, Instant::now())?
        };
        Ok(Permit {
            inner: Some((Arc::clone(&self.shared), generation)),
        })
    }

    pub fn state(&self) -> BreakerState {
        if !self.shared.config.enabled {
            return BreakerState::Closed;
        }
        self.shared.lock().state(Instant::now())
    }

    /// Whether [`try_acquire`](Self::try_acquire) would admit a request now: closed,
    /// half-open with a free probe slot, or open with the cooldown over. For routing to skip
    /// a deployment without taking a permit; the answer can change before the next call.
    pub fn is_available(&self) -> bool {
        if !self.shared.config.enabled {
            return true;
        }
        self.shared
            .lock()
            .is_available(&self.shared.config, Instant::now())
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        if !self.shared.config.enabled {
            return BreakerSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                window_requests: 0,
                window_failures: 0,
                trips: 0,
                half_open_in_secs: None,
                probes_in_flight: 0,
            };
        }
        self.shared.lock().snapshot(Instant::now())
    }

    /// Force the breaker closed (an operator's "the upstream is fixed"): clears the counts
    /// and the cooldown growth. Permits taken before the reset settle without effect.
    pub fn reset(&self) {
        self.shared.lock().reset();
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.shared.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// Leave to send one request through a breaker; settle it with the request's verdict.
///
/// Dropping it unsettled is [`Permit::ignore`]: a cancelled request frees its probe slot and
/// counts nothing. `'static + Send`, so it can travel with a response stream.
#[must_use = "settle the permit with success(), failure() or ignore() once the request ends"]
pub struct Permit {
    /// `None` for a disabled breaker, and once settled (so `Drop` does not settle twice).
    inner: Option<(Arc<Shared>, u64)>,
}

impl Permit {
    /// The upstream answered properly.
    pub fn success(mut self) {
        self.settle(Outcome::Success);
    }

    /// The upstream failed in a way that says it is unhealthy (see [`counts_as_failure`]).
    pub fn failure(mut self) {
        self.settle(Outcome::Failure);
    }

    /// The outcome says nothing about the upstream (a 400, a client cancel): frees the probe
    /// slot, counts nothing.
    pub fn ignore(mut self) {
        self.settle(Outcome::Ignore);
    }

    /// [`failure`](Self::failure) if [`counts_as_failure`] says so, else
    /// [`ignore`](Self::ignore).
    pub fn record_error(self, err: &Error) {
        if counts_as_failure(err) {
            self.failure();
        } else {
            self.ignore();
        }
    }

    fn settle(&mut self, outcome: Outcome) {
        if let Some((shared, generation)) = self.inner.take() {
            shared
                .lock()
                .settle(&shared.config, generation, outcome, Instant::now());
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.settle(Outcome::Ignore);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.inner.as_ref().map(|(_, g)| *g))
            .finish()
    }
}

/// Whether an error says the upstream deployment is unhealthy, and so counts against its
/// breaker.
///
/// Yes: 5xx (including Anthropic's 529 "overloaded"), timeouts, connection errors, streams
/// broken midway, and garbled 2xx responses: each means this deployment could not serve a
/// valid request, and another might.
///
/// No: errors about the request or the caller rather than the upstream's health. 400, 413,
/// 422, 404 and model-not-found fail the same way everywhere; 401/403 are about the key;
/// 429 is the key's quota, which the key pool handles (tripping the breaker on it would take
/// a healthy deployment out of rotation for a quota reset); budget, pool exhaustion,
/// unsupported operations and config are weir's own decisions; an open circuit is the
/// breaker itself. 501 Not Implemented is also excluded: it is a fixed answer for one
/// operation, and counting it would trip a breaker that also guards healthy operations.
pub fn counts_as_failure(err: &Error) -> bool {
    // Every variant is listed, without a wildcard, so a new variant must be classified here.
    match err {
        Error::Timeout { .. }
        | Error::Connection { .. }
        | Error::StreamInterrupted { .. }
        | Error::InvalidResponse { .. } => true,
        Error::Upstream { status, .. } => (500..=599).contains(status) && *status != 501,
        Error::InvalidRequest { .. }
        | Error::Authentication { .. }
        | Error::Permission { .. }
        | Error::ModelNotFound { .. }
        | Error::RateLimited { .. }
        | Error::CircuitOpen { .. }
        | Error::BudgetExceeded { .. }
        | Error::PoolExhausted { .. }
        | Error::Unsupported { .. }
        | Error::Rejected { .. }
        | Error::Config(_) => false,
    }
}

#[cfg(test)]
mod tests;
