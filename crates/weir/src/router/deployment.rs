//! One deployment: a model through one provider, with the live state routing reads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::latency::{LatencyConfig, PeakEwma};
use crate::breaker::{BreakerConfig, CircuitBreaker};

/// How a deployment is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Name of a configured provider.
    pub provider: String,
    /// The model's name at that provider.
    pub upstream_model: String,
    /// Relative share for [`Strategy::Weighted`] and for ties in `Priority` and
    /// `LowestCost`; 0 means "only when nothing else is left".
    ///
    /// [`Strategy::Weighted`]: super::Strategy::Weighted
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// For [`Strategy::Priority`]: lower numbers are tried first.
    ///
    /// [`Strategy::Priority`]: super::Strategy::Priority
    #[serde(default)]
    pub priority: u32,
    /// Blended price per million tokens, for [`Strategy::LowestCost`]; `None` (unknown)
    /// sorts after every known price.
    ///
    /// [`Strategy::LowestCost`]: super::Strategy::LowestCost
    #[serde(default)]
    pub cost_per_million: Option<Decimal>,
}

fn default_weight() -> u32 {
    1
}

impl DeploymentSpec {
    /// A deployment with weight 1, priority 0 and no known price.
    pub fn new(provider: impl Into<String>, upstream_model: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            upstream_model: upstream_model.into(),
            weight: default_weight(),
            priority: 0,
            cost_per_million: None,
        }
    }
}

/// The live health of one deployment (a provider and an upstream model): its breaker, its
/// latency estimate, its requests in flight and its recent first-byte times. One per
/// deployment, shared by every group that lists it, so a failing deployment is known as
/// failing wherever it is used.
pub struct DeploymentHealth {
    /// `provider/upstream_model`.
    pub id: String,
    pub breaker: CircuitBreaker,
    in_flight: AtomicU32,
    latency: PeakEwma,
    /// Recent times to first byte, kept only for groups that hedge at their p95.
    ttfb: Mutex<VecDeque<Duration>>,
}

impl std::fmt::Debug for DeploymentHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentHealth")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// TTFB samples kept per deployment for `hedge: { after: p95 }`.
const TTFB_SAMPLES: usize = 128;

impl DeploymentHealth {
    pub fn new(id: impl Into<String>, breaker: BreakerConfig, latency: LatencyConfig) -> Self {
        Self {
            id: id.into(),
            breaker: CircuitBreaker::new(breaker),
            in_flight: AtomicU32::new(0),
            latency: PeakEwma::new(latency),
            ttfb: Mutex::new(VecDeque::new()),
        }
    }

    /// Keep one time-to-first-byte sample for p95 hedging.
    pub fn record_ttfb(&self, d: Duration) {
        if let Ok(mut ring) = self.ttfb.lock() {
            if ring.len() == TTFB_SAMPLES {
                ring.pop_front();
            }
            ring.push_back(d);
        }
    }

    /// The 95th percentile of recent first-byte times, once there are enough samples to
    /// know one (20).
    pub fn ttfb_p95(&self) -> Option<Duration> {
        let ring = self.ttfb.lock().ok()?;
        if ring.len() < 20 {
            return None;
        }
        let mut v: Vec<Duration> = ring.iter().copied().collect();
        v.sort_unstable();
        v.get((v.len() * 95 / 100).min(v.len() - 1)).copied()
    }
}

/// A deployment in a [`Group`](super::Group), shared as `Arc<Deployment>` between the group
/// and the requests using it: the group's view (weight, priority, price) of a deployment
/// whose [`DeploymentHealth`] may be shared with other groups.
#[derive(Debug)]
pub struct Deployment {
    /// Position in the group.
    pub index: usize,
    /// `provider/upstream_model`, unique within the group (a repeat gets `#2`, `#3`, ...).
    pub id: String,
    pub spec: DeploymentSpec,
    pub health: Arc<DeploymentHealth>,
    /// The price as a sort key, converted once: `+inf` when unknown so it sorts last.
    price_key: f64,
}

impl Deployment {
    pub(super) fn new(
        index: usize,
        id: String,
        spec: DeploymentSpec,
        health: Arc<DeploymentHealth>,
    ) -> Self {
        let price_key = spec
            .cost_per_million
            // Normalised first so equal prices written differently (1.5, 1.50) make equal
            // keys and tie as they should.
            .and_then(|p| p.normalize().to_f64())
            .unwrap_or(f64::INFINITY);
        Self {
            index,
            id,
            spec,
            health,
            price_key,
        }
    }

    /// Count a request as in flight until the returned guard drops.
    #[must_use = "the request counts as in flight only while the guard lives"]
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            deployment: Arc::clone(self),
            started: Instant::now(),
        }
    }

    /// Feed one latency sample (time to first byte or to the full response; use one kind
    /// consistently per group, as estimates are compared with each other).
    pub fn observe_latency(&self, latency: Duration) {
        self.health.latency.observe(latency);
    }

    /// Requests currently holding an [`InFlight`] guard, from every group.
    pub fn in_flight(&self) -> u32 {
        self.health.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate now (the configured default before any sample).
    pub fn latency_estimate(&self) -> Duration {
        Duration::try_from_secs_f64(self.health.latency.estimate_secs()).unwrap_or(Duration::MAX)
    }

    /// Whether any latency sample has been observed.
    pub fn has_latency_samples(&self) -> bool {
        self.health.latency.has_samples()
    }

    /// Expected wait for a new request, in seconds: the estimate times the requests it
    /// would queue behind, counting itself (`ewma * (in_flight + 1)`).
    pub fn load(&self) -> f64 {
        self.health.latency.estimate_secs() * f64::from(self.in_flight().saturating_add(1))
    }

    pub(super) fn price_key(&self) -> f64 {
        self.price_key
    }

    /// Live state for status pages and logs.
    pub fn snapshot(&self) -> DeploymentSnapshot {
        DeploymentSnapshot {
            id: self.health.id.clone(),
            in_flight: self.in_flight(),
            latency_ms: self.health.latency.estimate_secs() * 1000.0,
            weight: self.spec.weight,
            priority: self.spec.priority,
        }
    }
}

/// A request in flight on a deployment; dropping it ends the count.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct InFlight {
    deployment: Arc<Deployment>,
    started: Instant,
}

impl InFlight {
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }

    /// Time since [`Deployment::begin`], on tokio's clock: what to pass to
    /// [`Deployment::observe_latency`] at first byte or at the end.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.deployment
            .health
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A deployment's live state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentSnapshot {
    pub id: String,
    pub in_flight: u32,
    /// The latency estimate in milliseconds (the default before any sample).
    pub latency_ms: f64,
    pub weight: u32,
    pub priority: u32,
}
