//! The breaker's state machine: plain data and transitions, given the time by the caller.
//!
//! Nothing here locks, awaits or reads the clock, so each call is a few comparisons and the
//! handle in `mod.rs` can run it inside a tiny critical section.

use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;
use super::{BreakerConfig, BreakerSnapshot, BreakerState};

/// What a settled request said about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Failure,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug)]
pub(super) struct Machine {
    phase: Phase,
    /// Bumped on every transition. A permit remembers the generation it was admitted in, and
    /// its verdict counts only if that phase is still current: a request sent before a trip
    /// says nothing about the upstream after it, and a stale probe must not free a slot that
    /// belongs to a newer half-open phase.
    generation: u64,
    consecutive_failures: u32,
    window: Window,
    /// Trips since the breaker last closed: drives the cooldown's doubling.
    streak: u32,
    /// Trips over the breaker's life, never reset, so it can back a monotonic metric.
    trips: u64,
}

impl Machine {
    pub(super) fn new(config: &BreakerConfig, now: Instant) -> Self {
        Self {
            phase: Phase::Closed,
            generation: 0,
            consecutive_failures: 0,
            window: Window::new(config.window, now),
            streak: 0,
            trips: 0,
        }
    }

    /// Open -> HalfOpen once the cooldown has passed. Done lazily by every entry point, so no
    /// timer task is needed and paused-time tests see the transition as soon as they advance.
    fn refresh(&mut self, now: Instant) {
        if let Phase::Open { until } = self.phase
            && now >= until
        {
            self.enter(Phase::HalfOpen {
                in_flight: 0,
                successes: 0,
            });
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Admit a request: `Ok(generation)` to store in its permit, or `Err(wait)` until a probe
    /// could be admitted.
    pub(super) fn try_acquire(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
    ) -> Result<u64, Duration> {
        self.refresh(now);
        match &mut self.phase {
            Phase::Closed => Ok(self.generation),
            Phase::Open { until } => Err(until.saturating_duration_since(now)),
            Phase::HalfOpen { in_flight, .. } => {
                if *in_flight < probe_slots(config) {
                    *in_flight += 1;
                    Ok(self.generation)
                } else {
                    // The wait depends on the verdict of the probes in flight, unknown here.
                    // The base cooldown is a sober hint: a failing probe reopens for longer,
                    // a succeeding one frees a slot sooner.
                    Err(config.cooldown.min(config.max_cooldown))
                }
            }
        }
    }

    /// Apply the verdict of a request admitted in `generation`.
    pub(super) fn settle(
        &mut self,
        config: &BreakerConfig,
        generation: u64,
        outcome: Outcome,
        now: Instant,
    ) {
        if generation != self.generation {
            return;
        }
        match &mut self.phase {
            Phase::Closed => match outcome {
                Outcome::Success | Outcome::Failure => {
                    let failed = outcome == Outcome::Failure;
                    self.consecutive_failures = if failed {
                        self.consecutive_failures.saturating_add(1)
                    } else {
                        0
                    };
                    self.window.record(now, failed);
                    // Checked after a success too (as resilience4j does): the success that
                    // brings the window to min_requests can reveal a ratio already too high.
                    if self.should_trip(config, now) {
                        self.trip(config, now);
                    }
                }
                Outcome::Ignore => {}
            },
            Phase::HalfOpen {
                in_flight,
                successes,
            } => {
                // In a half-open generation every permit is a probe.
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success => {
                        *successes = successes.saturating_add(1);
                        if *successes >= config.success_threshold.max(1) {
                            self.close();
                        }
                    }
                    Outcome::Failure => self.trip(config, now),
                    Outcome::Ignore => {}
                }
            }
            // Open admits nothing, so no permit carries an open generation.
            Phase::Open { .. } => {}
        }
    }

    fn should_trip(&self, config: &BreakerConfig, now: Instant) -> bool {
        if config.consecutive_failures > 0
            && self.consecutive_failures >= config.consecutive_failures
        {
            return true;
        }
        let (requests, failures) = self.window.totals(now);
        // `>=` as Hystrix and resilience4j do: a 50% threshold trips at exactly half.
        // A ratio of zero or NaN would trip on any failure or never; both read as "off".
        requests >= config.min_requests
            && requests > 0
            && config.failure_ratio > 0.0
            && f64::from(failures) / f64::from(requests) >= config.failure_ratio
    }

    fn trip(&mut self, config: &BreakerConfig, now: Instant) {
        self.streak = self.streak.saturating_add(1);
        self.trips = self.trips.saturating_add(1);
        let cooldown = cooldown(config, self.streak, fastrand::f64());
        // `Instant + Duration` panics on overflow; only an absurd max_cooldown gets near it.
        let until = now
            .checked_add(cooldown)
            .or_else(|| now.checked_add(Duration::from_secs(86_400)))
            .unwrap_or(now);
        self.enter(Phase::Open { until });
    }

    /// Back to Closed with a clean slate: old failures must not re-trip a recovered upstream,
    /// and its next trip starts again from the base cooldown.
    fn close(&mut self) {
        self.consecutive_failures = 0;
        self.window.clear();
        self.streak = 0;
        self.enter(Phase::Closed);
    }

    pub(super) fn reset(&mut self) {
        self.close();
    }

    pub(super) fn state(&mut self, now: Instant) -> BreakerState {
        self.refresh(now);
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    pub(super) fn is_available(&mut self, config: &BreakerConfig, now: Instant) -> bool {
        self.refresh(now);
        match self.phase {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { in_flight, .. } => in_flight < probe_slots(config),
        }
    }

    pub(super) fn snapshot(&mut self, now: Instant) -> BreakerSnapshot {
        let state = self.state(now);
        let (window_requests, window_failures) = self.window.totals(now);
        let (half_open_in_secs, probes_in_flight) = match self.phase {
            Phase::Open { until } => (Some(until.saturating_duration_since(now).as_secs_f64()), 0),
            Phase::HalfOpen { in_flight, .. } => (None, in_flight),
            Phase::Closed => (None, 0),
        };
        BreakerSnapshot {
            state,
            consecutive_failures: self.consecutive_failures,
            window_requests,
            window_failures,
            trips: self.trips,
            half_open_in_secs,
            probes_in_flight,
        }
    }
}

/// Zero probe slots would leave the breaker half-open forever; one is the least that works.
fn probe_slots(config: &BreakerConfig) -> u32 {
    config.half_open_probes.max(1)
}

/// The cooldown for the `streak`-th trip in a row: `cooldown * 2^(streak - 1)`, jittered by
/// `±cooldown_jitter` with `sample` in `[0, 1)`, never above `max_cooldown`.
///
/// The cap applies after the jitter, so `max_cooldown` is a hard bound: once growth reaches
/// it, waits spread over `[max * (1 - jitter), max]`. Jitter keeps the breakers of many
/// gateway replicas (or of one provider's many keys) from probing a struggling upstream in
/// lockstep.
pub(super) fn cooldown(config: &BreakerConfig, streak: u32, sample: f64) -> Duration {
    let max = config.max_cooldown;
    let base = config.cooldown.min(max);
    let doublings = streak.saturating_sub(1).min(31);
    let grown = base.checked_mul(1 << doublings).unwrap_or(max).min(max);
    let jitter = if config.cooldown_jitter.is_finite() {
        config.cooldown_jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let factor = 1.0 + jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
    Duration::try_from_secs_f64(grown.as_secs_f64() * factor)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(jitter: f64) -> BreakerConfig {
        BreakerConfig {
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            cooldown_jitter: jitter,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn cooldown_doubles_per_trip_and_stops_at_the_max() {
        let c = config(0.0);
        let secs: Vec<u64> = (1..=7).map(|n| cooldown(&c, n, 0.5).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(cooldown(&c, u32::MAX, 0.5), Duration::from_secs(300));
    }

    #[test]
    fn jitter_spans_plus_minus_its_fraction_and_the_max_stays_hard() {
        let c = config(0.2);
        assert_eq!(cooldown(&c, 1, 0.0), Duration::from_secs(24));
        assert_eq!(cooldown(&c, 1, 0.5), Duration::from_secs(30));
        assert_eq!(cooldown(&c, 1, 1.0), Duration::from_secs(36));
        assert_eq!(cooldown(&c, 9, 0.0), Duration::from_secs(240));
        assert_eq!(cooldown(&c, 9, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn absurd_settings_do_not_panic() {
        let c = BreakerConfig {
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
            cooldown_jitter: f64::NAN,
            ..BreakerConfig::default()
        };
        assert_eq!(cooldown(&c, 40, 1.0), Duration::MAX);
        let c = BreakerConfig {
            cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(10),
            cooldown_jitter: 5.0,
            ..BreakerConfig::default()
        };
        // The base is capped by the max, and jitter is clamped to 100%.
        assert_eq!(cooldown(&c, 1, 0.0), Duration::ZERO);
        assert_eq!(cooldown(&c, 1, 1.0), Duration::from_secs(10));
    }
}
