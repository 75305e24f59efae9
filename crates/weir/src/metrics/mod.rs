//! Prometheus metrics: counters and histograms recorded from every call's
//! [`UsageEvent`](crate::UsageEvent) and every upstream attempt, and a text rendering that
//! adds the gauges read at scrape time (breakers, upstream keys, cache, budgets, process).
//!
//! Recording is on the request path, so it is atomic adds into arrays sized once at start:
//! every label value comes from the config (model groups and their deployments, providers),
//! found with one hash lookup of a borrowed name; a name a caller made up lands under
//! `other`. No lock, no allocation per call. The `gen_ai_*` families follow the
//! OpenTelemetry GenAI metric conventions (names, labels and bucket boundaries); the
//! `weir_*` families are weir's own.
//!
//! ```
//! use std::sync::Arc;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Runtime::new()?;
//! # rt.block_on(async {
//! let config = weir::Config::from_yaml("", &|_: &str| None)?;
//! let metrics = Arc::new(weir::metrics::Metrics::new(&config));
//! let client = weir::Client::builder(config)
//!     .usage_sink(metrics.clone())
//!     .attempt_observer(metrics.clone())
//!     .build()?;
//! let text = metrics.render(&client).await.finish();
//! assert!(text.contains("# TYPE weir_requests_total counter"));
//! # Ok::<(), weir::Error>(())
//! # })?;
//! # Ok(())
//! # }
//! ```

mod histogram;
mod policy;
mod render;
mod text;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

pub use policy::{PolicyCounters, PolicySnapshot};
pub use text::{CONTENT_TYPE, Exposition};

use crate::config::Config;
use crate::error::ErrorKind;
use crate::pipeline::{
    AttemptInfo, AttemptObserver, AttemptOutcome, CacheOutcome, Operation, UsageEvent, UsageSink,
};
use histogram::Histogram;

/// The label for names that are not configured.
pub const OTHER: &str = "other";
/// The provider label of a call that reached no deployment.
pub const NO_PROVIDER: &str = "none";

const OPERATIONS: [Operation; 5] = [
    Operation::Chat,
    Operation::ChatStream,
    Operation::Embeddings,
    Operation::Messages,
    Operation::MessagesStream,
];
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];
const CACHE: [CacheOutcome; 4] = [
    CacheOutcome::Bypass,
    CacheOutcome::Hit,
    CacheOutcome::Miss,
    CacheOutcome::Coalesced,
];
/// Every [`ErrorKind`], in declaration order (so `kind as usize` indexes it).
const KINDS: [ErrorKind; 16] = [
    ErrorKind::InvalidRequest,
    ErrorKind::Authentication,
    ErrorKind::Permission,
    ErrorKind::ModelNotFound,
    ErrorKind::RateLimited,
    ErrorKind::Timeout,
    ErrorKind::Upstream,
    ErrorKind::InvalidResponse,
    ErrorKind::Connection,
    ErrorKind::StreamInterrupted,
    ErrorKind::CircuitOpen,
    ErrorKind::BudgetExceeded,
    ErrorKind::PoolExhausted,
    ErrorKind::Unsupported,
    ErrorKind::Rejected,
    ErrorKind::Config,
];
/// `weir_tokens_total`'s `type` label values.
const TOKEN_TYPES: [&str; 5] = [
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
];
/// The GenAI conventions' operation names: every chat-like operation is `chat`.
const GEN_AI_OPS: [&str; 2] = ["chat", "embeddings"];
const ATTEMPT_OUTCOMES: [&str; 3] = ["success", "failed", "cancelled"];

/// Configured names and their positions, with a last slot for everything else.
#[derive(Debug)]
struct Index {
    names: Vec<String>,
    map: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl Index {
    fn new(names: impl IntoIterator<Item = String>, rest: &str) -> Self {
        let mut out = Self {
            names: Vec::new(),
            map: HashMap::default(),
        };
        for n in names {
            if n != rest && !out.map.contains_key(&n) {
                out.map.insert(n.clone(), out.names.len());
                out.names.push(n);
            }
        }
        out.names.push(rest.to_owned());
        out
    }

    fn get(&self, name: &str) -> usize {
        self.map.get(name).copied().unwrap_or(self.names.len() - 1)
    }

    fn len(&self) -> usize {
        self.names.len()
    }
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

fn histograms(n: usize) -> Box<[Histogram]> {
    (0..n).map(|_| Histogram::default()).collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn bump(cells: &[AtomicU64], i: usize, by: u64) {
    if by > 0
        && let Some(c) = cells.get(i)
    {
        c.fetch_add(by, Ordering::Relaxed);
    }
}

/// The gateway's metrics: a [`UsageSink`] and an [`AttemptObserver`] to register on the
/// [`ClientBuilder`](crate::ClientBuilder), and [`Metrics::render`] for `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    models: Index,
    providers: Index,
    deployments: Index,
    /// operation × model × provider × status class × cache outcome.
    requests: Box<[AtomicU64]>,
    /// provider × error kind, per call.
    errors: Box<[AtomicU64]>,
    /// model × provider × token type.
    tokens: Box<[AtomicU64]>,
    /// model × provider, in nanodollars (exact for every bundled price).
    cost_nanos: Box<[AtomicU64]>,
    /// model × provider: calls whose cost is unknown.
    unpriced: Box<[AtomicU64]>,
    /// GenAI op × provider × model.
    duration: Box<[Histogram]>,
    /// GenAI op × provider × model × (input, output).
    token_usage: Box<[Histogram]>,
    /// provider × model.
    first_token: Box<[Histogram]>,
    /// provider × model.
    per_token: Box<[Histogram]>,
    /// provider.
    upstream: Box<[Histogram]>,
    /// operation.
    overhead: Box<[Histogram]>,
    /// deployment × attempt outcome.
    attempts: Box<[AtomicU64]>,
    /// deployment × error kind, per attempt.
    attempt_errors: Box<[AtomicU64]>,
    hedges: AtomicU64,
    streams_open: AtomicI64,
}

impl Metrics {
    /// Pre-register every label value the config names.
    pub fn new(config: &Config) -> Self {
        let mut models: Vec<String> = Vec::new();
        let mut deployments: Vec<String> = Vec::new();
        for (name, group) in &config.groups {
            models.push(name.clone());
            for d in &group.deployments {
                let id = crate::client::route::join_qualified(&d.provider, &d.upstream_model);
                models.push(id.clone());
                deployments.push(id);
            }
        }
        let models = Index::new(models, OTHER);
        let providers = Index::new(config.providers.iter().map(|p| p.name.clone()), NO_PROVIDER);
        let deployments = Index::new(deployments, OTHER);
        let (m, p, d) = (models.len(), providers.len(), deployments.len());
        let k = KINDS.len();
        Self {
            requests: counters(OPERATIONS.len() * m * p * STATUS_CLASSES.len() * CACHE.len()),
            errors: counters(p * k),
            tokens: counters(m * p * TOKEN_TYPES.len()),
            cost_nanos: counters(m * p),
            unpriced: counters(m * p),
            duration: histograms(GEN_AI_OPS.len() * p * m),
            token_usage: histograms(GEN_AI_OPS.len() * p * m * 2),
            first_token: histograms(p * m),
            per_token: histograms(p * m),
            upstream: histograms(p),
            overhead: histograms(OPERATIONS.len()),
            attempts: counters(d * ATTEMPT_OUTCOMES.len()),
            attempt_errors: counters(d * k),
            hedges: AtomicU64::new(0),
            streams_open: AtomicI64::new(0),
            models,
            providers,
            deployments,
        }
    }

    /// A stream started reaching a client: counted in `weir_streams_open` until the guard
    /// drops.
    pub fn stream_opened(&self) -> StreamGuard<'_> {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
        StreamGuard(&self.streams_open)
    }

    /// An owned [`stream_opened`](Self::stream_opened), for a stream that outlives the borrow.
    pub fn stream_opened_owned(self: &std::sync::Arc<Self>) -> OwnedStreamGuard {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
        OwnedStreamGuard(std::sync::Arc::clone(self))
    }
}

/// Counts a stream as open until dropped.
#[derive(Debug)]
pub struct StreamGuard<'a>(&'a AtomicI64);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`StreamGuard`] holding the metrics.
#[derive(Debug)]
pub struct OwnedStreamGuard(std::sync::Arc<Metrics>);

impl Drop for OwnedStreamGuard {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn op_index(op: Operation) -> usize {
    match op {
        Operation::Chat => 0,
        Operation::ChatStream => 1,
        Operation::Embeddings => 2,
        Operation::Messages => 3,
        Operation::MessagesStream => 4,
    }
}

fn gen_ai_op(op: Operation) -> usize {
    usize::from(op == Operation::Embeddings)
}

fn status_class(status: u16) -> usize {
    match status {
        0..400 => 0,
        400..500 => 1,
        _ => 2,
    }
}

fn cache_index(c: CacheOutcome) -> usize {
    match c {
        CacheOutcome::Bypass => 0,
        CacheOutcome::Hit => 1,
        CacheOutcome::Miss => 2,
        CacheOutcome::Coalesced => 3,
    }
}

fn kind_index(k: ErrorKind) -> usize {
    (k as usize).min(KINDS.len() - 1)
}

impl UsageSink for Metrics {
    fn record(&self, event: &UsageEvent) {
        let (m_len, p_len) = (self.models.len(), self.providers.len());
        let m = self.models.get(&event.context.model);
        let p = event
            .route
            .as_ref()
            .map_or(p_len - 1, |r| self.providers.get(&r.provider));
        let op = op_index(event.operation);
        let i = (((op * m_len + m) * p_len + p) * STATUS_CLASSES.len()
            + status_class(event.status))
            * CACHE.len()
            + cache_index(event.cache);
        bump(&self.requests, i, 1);
        if let Some(kind) = event.error {
            bump(&self.errors, p * KINDS.len() + kind_index(kind), 1);
        }
        let mp = m * p_len + p;
        let t = &event.tokens;
        let base = mp * TOKEN_TYPES.len();
        for (j, n) in [
            t.input,
            t.output,
            t.cached_input,
            t.cache_write,
            t.reasoning,
        ]
        .into_iter()
        .enumerate()
        {
            bump(&self.tokens, base + j, n);
        }
        match event.cost_usd {
            Some(cost) if !cost.is_zero() => {
                let n = (cost * Decimal::from(1_000_000_000u64))
                    .round()
                    .to_u64()
                    .unwrap_or(0);
                bump(&self.cost_nanos, mp, n);
            }
            Some(_) => {}
            None => bump(&self.unpriced, mp, 1),
        }
        let g = gen_ai_op(event.operation);
        let pm = p * m_len + m;
        let lat = &event.latency;
        if let Some(h) = self.duration.get(g * p_len * m_len + pm) {
            h.record(&histogram::DURATION, nanos(lat.total));
        }
        if event.route.is_some() && (t.input > 0 || t.output > 0) {
            let base = (g * p_len * m_len + pm) * 2;
            for (j, n) in [t.input, t.output].into_iter().enumerate() {
                if let Some(h) = self.token_usage.get(base + j) {
                    h.record(&histogram::TOKENS, n);
                }
            }
        }
        if let Some(ft) = lat.first_token {
            if let Some(h) = self.first_token.get(pm) {
                h.record(&histogram::FIRST_TOKEN, nanos(ft));
            }
            if t.output > 1
                && let Some(h) = self.per_token.get(pm)
            {
                let after = lat.total.saturating_sub(ft);
                h.record(&histogram::PER_TOKEN, nanos(after) / (t.output - 1));
            }
        }
        if !lat.upstream.is_zero()
            && let Some(h) = self.upstream.get(p)
        {
            h.record(&histogram::DURATION, nanos(lat.upstream));
        }
        // A stream's total runs to its last event, the client's reading included: only whole
        // answers say what weir itself took. A call that failed upstream reports no upstream
        // time, so its total (attempts and backoffs) is not weir's either.
        let weirs_own = !lat.upstream.is_zero() || event.attempts == 0;
        if !event.operation.is_stream()
            && weirs_own
            && let Some(h) = self.overhead.get(op)
        {
            h.record(
                &histogram::OVERHEAD,
                nanos(lat.total.saturating_sub(lat.upstream)),
            );
        }
    }
}

impl AttemptObserver for Metrics {
    fn attempt_started(&self, attempt: &AttemptInfo<'_>) {
        if attempt.hedge {
            self.hedges.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn attempt_ended(&self, attempt: &AttemptInfo<'_>, outcome: AttemptOutcome, _: Duration) {
        let d = self.deployments.get(attempt.deployment);
        let o = match outcome {
            AttemptOutcome::Success => 0,
            AttemptOutcome::Failed { kind, .. } => {
                bump(&self.attempt_errors, d * KINDS.len() + kind_index(kind), 1);
                1
            }
            AttemptOutcome::Cancelled => 2,
        };
        bump(&self.attempts, d * ATTEMPT_OUTCOMES.len() + o, 1);
    }
}

#[cfg(test)]
mod tests;
