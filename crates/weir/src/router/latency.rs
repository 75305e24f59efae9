//! Peak-EWMA latency estimate, lock-free: the signal behind [`Strategy::LowestLatency`].
//!
//! The estimator follows Finagle's, linkerd's and tower's `PeakEwma`:
//! - a sample above the current estimate replaces it at once, so a deployment that turns slow
//!   is avoided from its next response on;
//! - a sample below blends in as a time-weighted EWMA, `est * w + sample * (1 - w)` with
//!   `w = exp(-elapsed / tau)`, so recoveries are believed only gradually;
//! - while no samples arrive, reads decay the estimate toward zero with the same `tau`. Those
//!   implementations get this by feeding a zero sample on every read; here the read computes
//!   it without storing it, so the estimate does not depend on how often anyone looks. This
//!   is what makes an idle slow deployment look cheaper over time until power-of-two-choices
//!   probes it again, and a recovered deployment is found that way.
//!
//! Time comes from tokio's clock, so tests drive it with paused time.
//!
//! [`Strategy::LowestLatency`]: super::Strategy::LowestLatency

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How latency estimates behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    /// Time constant of the decay: after `tau` the weight of the old estimate is 1/e.
    pub tau: Duration,
    /// The estimate of a deployment with no samples yet. Keep it modest so new deployments
    /// get tried, but not zero: a zero estimate would make a new deployment win every
    /// comparison, whatever its in-flight count, until its first response arrives.
    pub default_latency: Duration,
}

impl LatencyConfig {
    /// Ten seconds: long enough to ride out one odd response, short enough to follow load.
    pub const DEFAULT_TAU: Duration = Duration::from_secs(10);
    /// Half a second, about a typical time to first token.
    pub const DEFAULT_LATENCY: Duration = Duration::from_millis(500);
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            tau: Self::DEFAULT_TAU,
            default_latency: Self::DEFAULT_LATENCY,
        }
    }
}

/// The packed state meaning "no samples yet": its estimate half is a NaN bit pattern, which
/// no real sample produces.
const EMPTY: u64 = u64::MAX;

/// A peak-EWMA estimate shared by all requests to one deployment.
///
/// The estimate and the time of its last update live in one `AtomicU64` (an `f32` of seconds
/// in the high half, milliseconds since `epoch` in the low half), so every update is a single
/// compare-and-swap and a sample is never blended against another sample's timestamp. The
/// millisecond stamp wraps after 49 days; only a single idle gap that long would be misread,
/// and any sample in between resets it.
#[derive(Debug)]
pub(super) struct PeakEwma {
    state: AtomicU64,
    epoch: Instant,
    tau_secs: f64,
    default_latency: Duration,
}

impl PeakEwma {
    pub(super) fn new(config: LatencyConfig) -> Self {
        Self {
            state: AtomicU64::new(EMPTY),
            epoch: Instant::now(),
            // A zero tau would divide by zero; a millisecond is already "no memory".
            tau_secs: config.tau.as_secs_f64().max(0.001),
            default_latency: config.default_latency,
        }
    }

    /// Record one observed latency.
    pub(super) fn observe(&self, sample: Duration) {
        let sample = sample.as_secs_f64();
        let now = self.now_ms();
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let estimate = match unpack(current) {
                None => sample,
                // Compare with the stored estimate, not the idle-decayed read: the idle decay
                // is optimism to get the deployment probed, and a probe that comes back as
                // slow as before must restore the old estimate, not ratchet it down.
                Some((stored, _)) if sample > stored => sample,
                Some((stored, stamp)) => {
                    let w = self.weight(now.wrapping_sub(stamp));
                    stored * w + sample * (1.0 - w)
                }
            };
            match self.state.compare_exchange_weak(
                current,
                pack(estimate, now),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The current estimate in seconds, decayed for the time since the last sample.
    pub(super) fn estimate_secs(&self) -> f64 {
        match unpack(self.state.load(Ordering::Relaxed)) {
            None => self.default_latency.as_secs_f64(),
            Some((stored, stamp)) => stored * self.weight(self.now_ms().wrapping_sub(stamp)),
        }
    }

    /// Whether any sample has been observed.
    pub(super) fn has_samples(&self) -> bool {
        self.state.load(Ordering::Relaxed) != EMPTY
    }

    fn weight(&self, elapsed_ms: u32) -> f64 {
        (-(f64::from(elapsed_ms) / 1000.0) / self.tau_secs).exp()
    }

    fn now_ms(&self) -> u32 {
        // Truncation is the intended wrap-around; differences use `wrapping_sub`.
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u32
    }
}

fn pack(estimate_secs: f64, stamp_ms: u32) -> u64 {
    // Samples are finite and non-negative, so the estimate is too; f32 keeps 7 significant
    // digits, far finer than latency noise.
    (u64::from((estimate_secs as f32).to_bits()) << 32) | u64::from(stamp_ms)
}

fn unpack(state: u64) -> Option<(f64, u32)> {
    if state == EMPTY {
        return None;
    }
    let estimate = f32::from_bits((state >> 32) as u32);
    Some((f64::from(estimate), state as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn ewma() -> PeakEwma {
        PeakEwma::new(LatencyConfig::default())
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 0.005 * expected.max(0.001)
    }

    #[tokio::test(start_paused = true)]
    async fn no_samples_reads_the_configured_default_without_decay() {
        let e = PeakEwma::new(LatencyConfig {
            default_latency: Duration::from_millis(750),
            ..LatencyConfig::default()
        });
        assert!(!e.has_samples());
        advance(Duration::from_secs(60)).await;
        assert!(close(e.estimate_secs(), 0.75));
        e.observe(Duration::from_millis(200));
        assert!(e.has_samples());
        assert!(
            close(e.estimate_secs(), 0.2),
            "first sample replaces the default"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_spike_replaces_the_estimate_at_once_and_decays_back() {
        let e = ewma();
        let step = Duration::from_millis(100);
        for _ in 0..50 {
            e.observe(step);
            advance(step).await;
        }
        e.observe(Duration::from_secs(2));
        assert!(close(e.estimate_secs(), 2.0), "{}", e.estimate_secs());

        // Baseline samples every 100 ms blend the spike out with time constant tau: after
        // one tau, 0.1 + 1.9/e.
        let mut previous = e.estimate_secs();
        for i in 1..=300 {
            advance(step).await;
            e.observe(step);
            let now = e.estimate_secs();
            assert!(now <= previous, "decay is monotone without new peaks");
            previous = now;
            if i == 100 {
                let expected = 0.1 + 1.9 * (-1.0f64).exp();
                assert!((now - expected).abs() < 0.01, "{now} vs {expected}");
            }
        }
        assert!(previous < 0.2, "back near the baseline: {previous}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sample_below_blends_with_the_time_since_the_last_one() {
        let e = ewma();
        e.observe(Duration::from_secs(1));
        advance(Duration::from_secs(10)).await;
        e.observe(Duration::ZERO);
        // Weight of the old estimate after one tau is 1/e.
        assert!(close(e.estimate_secs(), (-1.0f64).exp()));
        // Two samples at the same instant: the second barely moves the estimate.
        e.observe(Duration::ZERO);
        assert!(close(e.estimate_secs(), (-1.0f64).exp()));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_reads_decay_toward_zero_but_a_slow_probe_restores_the_estimate() {
        let e = ewma();
        e.observe(Duration::from_secs(1));
        advance(Duration::from_secs(20)).await;
        assert!(close(e.estimate_secs(), (-2.0f64).exp()));
        // Still as slow as before: back to the full second, not a blend with the decay.
        e.observe(Duration::from_secs(1));
        assert!(close(e.estimate_secs(), 1.0));
        // Recovered: after a long gap the new sample dominates.
        advance(Duration::from_secs(30)).await;
        e.observe(Duration::from_millis(100));
        let expected = (-3.0f64).exp() + 0.1 * (1.0 - (-3.0f64).exp());
        assert!(close(e.estimate_secs(), expected));
    }

    #[test]
    fn packing_round_trips() {
        let state = pack(1.25, 0xDEAD_BEEF);
        assert_ne!(state, EMPTY);
        assert_eq!(unpack(state), Some((1.25, 0xDEAD_BEEF)));
        assert_eq!(unpack(EMPTY), None);
    }
}
