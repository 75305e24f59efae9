//! Deployment groups and the order in which to try them.
//!
//! A model name in config maps to a [`Group`]: the same model through several providers,
//! keys or regions, each a [`Deployment`]. For every request the execution engine asks
//! [`Group::order`] for an attempt order and walks it (breakers, retries, fallbacks and
//! hedging are the engine's). Every deployment appears exactly once: the preferred first by
//! the group's [`Strategy`], then the rest, and last the deployments the engine marked
//! unavailable (say, an open breaker), in their own strategy order, as a last resort.
//!
//! While a request runs, the engine holds the guard from [`Deployment::begin`] (the
//! in-flight count that `LeastInFlight` and `LowestLatency` read) and reports
//! [`Deployment::observe_latency`] (the peak-EWMA estimate behind `LowestLatency`).
//!
//! The hot path takes no locks: live state is atomics, and [`Group::order`] allocates only
//! the returned `Vec` (sort keys live on the stack for groups of up to 32 deployments).

mod deployment;
mod latency;

#[cfg(test)]
mod tests;

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

pub use deployment::{Deployment, DeploymentHealth, DeploymentSnapshot, DeploymentSpec, InFlight};
pub use latency::LatencyConfig;

/// How a group orders its deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Weighted random permutation: each position is drawn by weight from the deployments
    /// not yet placed. Weight 0 comes first only if nothing else is available.
    #[default]
    Weighted,
    /// Rotate the start by one on every call, across the available deployments.
    RoundRobin,
    /// Fewest requests in flight first; ties in random order.
    LeastInFlight,
    /// Power of two choices over the peak-EWMA load (`latency * (in_flight + 1)`): two
    /// random deployments, the cheaper first, then the rest by load.
    LowestLatency,
    /// Cheapest `cost_per_million` first, unknown prices last; ties weighted random.
    LowestCost,
    /// Lowest `priority` number first; ties weighted random.
    Priority,
}

/// The deployments serving one model name.
#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub strategy: Strategy,
    deployments: Vec<Arc<Deployment>>,
    /// Round-robin position: one step per `order` call.
    next: AtomicUsize,
}

/// Groups up to this size keep their sort keys on the stack.
const INLINE_KEYS: usize = 32;

impl Group {
    /// A group with the default latency estimator settings.
    pub fn new(name: impl Into<String>, strategy: Strategy, specs: Vec<DeploymentSpec>) -> Self {
        Self::with_latency(name, strategy, specs, LatencyConfig::default())
    }

    /// A group whose deployments estimate latency with `latency` (each with health of its
    /// own, and a default breaker).
    pub fn with_latency(
        name: impl Into<String>,
        strategy: Strategy,
        specs: Vec<DeploymentSpec>,
        latency: LatencyConfig,
    ) -> Self {
        Self::with_health(name, strategy, specs, |spec| {
            Arc::new(DeploymentHealth::new(
                format!("{}/{}", spec.provider, spec.upstream_model),
                crate::breaker::BreakerConfig::default(),
                latency,
            ))
        })
    }

    /// A group whose deployments take their live health from `health` (which may hand the
    /// same health to several groups: one breaker per deployment, wherever it is listed).
    pub fn with_health(
        name: impl Into<String>,
        strategy: Strategy,
        specs: Vec<DeploymentSpec>,
        health: impl Fn(&DeploymentSpec) -> Arc<DeploymentHealth>,
    ) -> Self {
        let mut seen = HashSet::with_capacity(specs.len());
        let deployments = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                // The same provider/model twice is legitimate (two keys under one provider
                // name); suffix repeats so ids stay unique for logs and side tables.
                let base = format!("{}/{}", spec.provider, spec.upstream_model);
                let mut id = base.clone();
                let mut n = 1;
                while !seen.insert(id.clone()) {
                    n += 1;
                    id = format!("{base}#{n}");
                }
                let health = health(&spec);
                Arc::new(Deployment::new(index, id, spec, health))
            })
            .collect();
        Self {
            name: name.into(),
            strategy,
            deployments,
            next: AtomicUsize::new(0),
        }
    }

    /// All deployments, in config order (`deployments()[i].index == i`).
    pub fn deployments(&self) -> &[Arc<Deployment>] {
        &self.deployments
    }

    /// The deployment with this id.
    pub fn deployment(&self, id: &str) -> Option<&Arc<Deployment>> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// Live state of every deployment, in config order.
    pub fn snapshot(&self) -> Vec<DeploymentSnapshot> {
        self.deployments.iter().map(|d| d.snapshot()).collect()
    }

    /// The order in which to try the deployments for one request: each exactly once, the
    /// preferred first by [`Self::strategy`], the ones `available` rejects at the end in
    /// their own strategy order. `available` is called once per deployment.
    pub fn order(
        &self,
        rng: &mut fastrand::Rng,
        available: impl Fn(&Deployment) -> bool,
    ) -> Vec<Arc<Deployment>> {
        let n = self.deployments.len();
        let mut inline = [Key::default(); INLINE_KEYS];
        let mut spilled;
        let keys: &mut [Key] = if n <= INLINE_KEYS {
            &mut inline[..n]
        } else {
            spilled = vec![Key::default(); n];
            &mut spilled
        };
        for (key, d) in keys.iter_mut().zip(&self.deployments) {
            key.unavailable = !available(d);
            key.tie = rng.u64(..);
        }
        self.fill_keys(keys, rng);

        let mut order = self.deployments.clone();
        // Keys are computed once above, so the comparison is a total order even while
        // in-flight counts and estimates move underneath.
        order.sort_unstable_by(|a, b| keys[a.index].cmp(&keys[b.index]));
        order
    }

    fn fill_keys(&self, keys: &mut [Key], rng: &mut fastrand::Rng) {
        let deployments = &self.deployments;
        match self.strategy {
            Strategy::Weighted => {
                for (key, d) in keys.iter_mut().zip(deployments) {
                    key.primary = race(rng, d.spec.weight);
                }
            }
            Strategy::RoundRobin => {
                let step = self.next.fetch_add(1, Ordering::Relaxed);
                let on_size = keys.iter().filter(|k| !k.unavailable).count();
                let off_size = keys.len() - on_size;
                let (mut on, mut off) = (0usize, 0usize);
                // Rotate within each part separately, so an unavailable deployment does not
                // hand its turn to its neighbour and skew the shares.
                for key in keys.iter_mut() {
                    let (part, size) = if key.unavailable {
                        (&mut off, off_size)
                    } else {
                        (&mut on, on_size)
                    };
                    // `size` counts this key, so it is at least 1.
                    let start = step % size;
                    key.primary = ((*part + size - start) % size) as f64;
                    *part += 1;
                }
            }
            Strategy::LeastInFlight => {
                for (key, d) in keys.iter_mut().zip(deployments) {
                    key.primary = f64::from(d.in_flight());
                }
            }
            Strategy::LowestLatency => {
                for (key, d) in keys.iter_mut().zip(deployments) {
                    key.primary = d.load();
                }
                power_of_two_choices(keys, rng);
            }
            Strategy::LowestCost => {
                for (key, d) in keys.iter_mut().zip(deployments) {
                    key.primary = d.price_key();
                    key.secondary = race(rng, d.spec.weight);
                }
            }
            Strategy::Priority => {
                for (key, d) in keys.iter_mut().zip(deployments) {
                    key.primary = f64::from(d.spec.priority);
                    key.secondary = race(rng, d.spec.weight);
                }
            }
        }
    }
}

/// Where one deployment sorts in one `order` call; smaller comes first.
#[derive(Debug, Clone, Copy, Default)]
struct Key {
    unavailable: bool,
    primary: f64,
    secondary: f64,
    /// Uniform random, so remaining ties fall in random order rather than config order.
    tie: u64,
}

impl Key {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.unavailable
            .cmp(&other.unavailable)
            .then(self.primary.total_cmp(&other.primary))
            .then(self.secondary.total_cmp(&other.secondary))
            .then(self.tie.cmp(&other.tie))
    }
}

/// Efraimidis–Spirakis in log form: each deployment draws an exponential arrival time with
/// rate `weight`, and sorting by arrival samples a permutation without replacement with
/// probabilities proportional to weight (`-ln(u) / w` orders like `u^(1/w)` reversed, but
/// keeps precision for large weights). Weight 0 never arrives.
fn race(rng: &mut fastrand::Rng, weight: u32) -> f64 {
    if weight == 0 {
        return f64::INFINITY;
    }
    // 1 - [0, 1) is (0, 1], so the logarithm is finite.
    -(1.0 - rng.f64()).ln() / f64::from(weight)
}

/// Draw two distinct available deployments and put the one with the lower load first; the
/// rest keep their load order.
fn power_of_two_choices(keys: &mut [Key], rng: &mut fastrand::Rng) {
    let available = keys.iter().filter(|k| !k.unavailable).count();
    if available < 2 {
        return;
    }
    let first = rng.usize(..available);
    let mut second = rng.usize(..available - 1);
    if second >= first {
        second += 1;
    }
    let nth_available = |keys: &[Key], n: usize| {
        keys.iter()
            .enumerate()
            .filter(|(_, k)| !k.unavailable)
            .nth(n)
            .map(|(i, _)| i)
    };
    let (Some(a), Some(b)) = (nth_available(keys, first), nth_available(keys, second)) else {
        return;
    };
    let winner = if keys[a].cmp(&keys[b]).is_le() { a } else { b };
    keys[winner].primary = f64::NEG_INFINITY;
}
