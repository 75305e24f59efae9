//! The execution engine: how one request becomes upstream attempts.
//!
//! ```text
//! request ─▶ plan: the model's group (or a one-deployment group for `provider/model`)
//!    │         then, if it fails: its fallbacks / context-window / content-policy fallbacks
//!    ▼
//!  for each group in the plan, within ONE deadline:
//!    order = group.order(strategy, open breakers last)
//!    loop over attempts:
//!      deployment's breaker ──open──▶ skip to the next deployment (no upstream call)
//!      provider's key pool: reserve the estimated tokens (may queue; 429 if it can't)
//!      call (hedged: after a delay with no first byte, race a second deployment)
//!      ok  ─▶ breaker success, latency sample, learn rate-limit headers ─▶ done
//!      err ─▶ breaker verdict; a 429 marks the key limited and moves to another key;
//!             context-window / content-policy errors jump to their own fallbacks;
//!             permanent errors return at once;
//!             retryable: another deployment at once, or the same after the backoff
//!             (or the upstream's Retry-After when it fits the deadline), while retries
//!             and the retry budget allow
//! ```
//!
//! Every extra upstream call (retry, failover, hedge) withdraws from one retry budget shared
//! by the client, so retries cannot amplify an outage. Skipping an open breaker costs no
//! budget: nothing is sent.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use weir_types::chat::ChatRequest;

use super::Client;
use super::route::{Route, Target};
use crate::breaker::{CircuitBreaker, Permit};
use crate::config::{Config, GroupConfig, HedgeConfig};
use crate::error::{Error, Result};
use crate::pool::{Demand, KeyPool, Lease};
use crate::provider::{CallContext, SharedProvider, UpstreamMeta};
use crate::retry::{self, RetryBudget, Schedule};
use crate::router::{Deployment, DeploymentSpec, Group};

/// TTFB samples kept per deployment for `hedge: { after: p95 }`.
const TTFB_SAMPLES: usize = 128;
/// How many fallback groups one request may visit: a config loop cannot spin forever.
const MAX_FALLBACK_GROUPS: usize = 8;

/// A group with its per-deployment side tables.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) name: String,
    pub(crate) group: Group,
    /// Index-aligned with `group.deployments()`.
    pub(crate) breakers: Vec<CircuitBreaker>,
    ttfb: Vec<Mutex<VecDeque<Duration>>>,
    pub(crate) config: GroupConfig,
}

impl GroupState {
    fn new(name: &str, config: GroupConfig, full: &Config) -> Self {
        let specs = config
            .deployments
            .iter()
            .map(|d| {
                let mut spec = DeploymentSpec::new(d.provider.clone(), d.upstream_model.clone());
                spec.weight = d.weight;
                spec.priority = d.priority;
                spec.cost_per_million = full
                    .pricing
                    .lookup(&d.provider, &d.upstream_model)
                    .map(|p| p.input + p.output);
                spec
            })
            .collect();
        let group = Group::new(name, config.strategy, specs);
        let n = group.deployments().len();
        Self {
            name: name.to_owned(),
            breakers: (0..n)
                .map(|_| CircuitBreaker::new(full.breaker.clone()))
                .collect(),
            ttfb: (0..n).map(|_| Mutex::new(VecDeque::new())).collect(),
            group,
            config,
        }
    }

    fn record_ttfb(&self, index: usize, d: Duration) {
        if !matches!(self.config.hedge, Some(HedgeConfig::P95 { .. })) {
            return;
        }
        if let Some(ring) = self.ttfb.get(index)
            && let Ok(mut ring) = ring.lock()
        {
            if ring.len() == TTFB_SAMPLES {
                ring.pop_front();
            }
            ring.push_back(d);
        }
    }

    /// When to hedge a first attempt on deployment `index`.
    fn hedge_delay(&self, index: usize) -> Option<Duration> {
        match self.config.hedge? {
            HedgeConfig::After(d) => Some(d),
            HedgeConfig::P95 { min } => {
                let ring = self.ttfb.get(index)?.lock().ok()?;
                // Too few samples to know a p95: hedge late rather than double the load.
                if ring.len() < 20 {
                    return None;
                }
                let mut v: Vec<Duration> = ring.iter().copied().collect();
                v.sort_unstable();
                let p95 = v[(v.len() * 95 / 100).min(v.len() - 1)];
                Some(p95.max(min))
            }
        }
    }
}

/// The groups a client routes to: configured ones at start, `provider/model` ones on first use
/// (their breakers and latency must outlive a single request).
#[derive(Debug, Default)]
pub(crate) struct Groups {
    map: RwLock<HashMap<String, Arc<GroupState>>>,
}

impl Groups {
    pub(crate) fn from_config(config: &Config) -> Self {
        let map = config
            .groups
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    Arc::new(GroupState::new(name, g.clone(), config)),
                )
            })
            .collect();
        Self {
            map: RwLock::new(map),
        }
    }

    fn get_or_create(
        &self,
        key: &str,
        route: Option<&Route>,
        config: &Config,
    ) -> Option<Arc<GroupState>> {
        if let Ok(map) = self.map.read()
            && let Some(g) = map.get(key)
        {
            return Some(Arc::clone(g));
        }
        let route = route?;
        let state = Arc::new(GroupState::new(
            key,
            GroupConfig::alias(&route.provider, &route.upstream_model),
            config,
        ));
        let mut map = self.map.write().ok()?;
        Some(Arc::clone(map.entry(key.to_owned()).or_insert(state)))
    }

    pub(crate) fn all(&self) -> Vec<Arc<GroupState>> {
        self.map
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The outcome of a successful execution.
pub(crate) struct Served<T> {
    pub(crate) value: T,
    pub(crate) route: Route,
    pub(crate) attempts: u32,
    pub(crate) key_id: Option<String>,
    /// The key reservation, to settle against the real usage when it is known.
    pub(crate) lease: Option<Lease>,
}

/// Answers that carry what the upstream said besides the body.
pub(crate) trait HasUpstreamMeta {
    fn upstream_meta(&self) -> &UpstreamMeta;
}

impl<T> HasUpstreamMeta for crate::provider::Upstream<T> {
    fn upstream_meta(&self) -> &UpstreamMeta {
        &self.meta
    }
}

impl<T> HasUpstreamMeta for crate::provider::UpstreamStream<T> {
    fn upstream_meta(&self) -> &UpstreamMeta {
        &self.meta
    }
}

/// One attempt's bookkeeping, dropped (cancelling nothing but counting nothing) if it loses.
struct Attempt<T> {
    result: Result<T>,
    deployment: Arc<Deployment>,
    permit: Permit,
    lease: Lease,
    started: Instant,
}

/// Why a group was left.
enum Exit {
    /// Try the group's general fallbacks.
    Fallback,
    ContextWindow,
    ContentPolicy,
}

/// What a request will take from a key, as [`Client::execute`] sees it.
///
/// Counting input tokens exactly costs a tokenizer pass (tens of microseconds for a short
/// chat), and it only matters when a key is close to its limit. So a request may start with a
/// cheap upper bound (each o200k token is at least one byte, so the text's byte length bounds
/// its token count) and a way to count exactly: the bound is reserved when a key has room for
/// it (settled to the real usage afterwards, like any estimate), and the exact count is taken
/// only when no key has room for the bound.
pub(crate) struct JobDemand<'a> {
    initial: Demand,
    exact: std::sync::OnceLock<Demand>,
    /// The request to count, when `initial` is a bound.
    request: Option<&'a ChatRequest>,
}

impl<'a> JobDemand<'a> {
    /// A demand that is already as exact as it will get.
    pub(crate) fn fixed(demand: Demand) -> Self {
        Self {
            initial: demand,
            exact: std::sync::OnceLock::new(),
            request: None,
        }
    }

    /// An upper bound on the demand of `request`, whose input is counted if need be.
    pub(crate) fn bounded(bound: Demand, request: &'a ChatRequest) -> Self {
        Self {
            initial: bound,
            exact: std::sync::OnceLock::new(),
            request: Some(request),
        }
    }

    /// The exact input count, if admission needed one.
    pub(crate) fn exact_input(&self) -> Option<u64> {
        self.exact.get().map(|d| d.input_tokens)
    }

    /// The demand to reserve now.
    pub(crate) fn current(&self) -> Demand {
        self.exact.get().copied().unwrap_or(self.initial)
    }

    /// Whether the demand is as exact as it will get: only then is it worth queueing for.
    fn settled(&self) -> bool {
        self.request.is_none() || self.exact.get().is_some()
    }

    /// Count exactly, if that has not happened yet and can. True when it just did, so a key
    /// that had no room for the bound is worth asking again.
    fn refine(&self) -> bool {
        let Some(request) = self.request else {
            return false;
        };
        if self.exact.get().is_some() {
            return false;
        }
        let _ = self.exact.set(Demand {
            input_tokens: crate::tokens::count_request_tokens(request),
            ..self.initial
        });
        true
    }
}

/// Per-request inputs of [`Client::execute`].
pub(crate) struct Job<'a> {
    pub(crate) model: &'a str,
    pub(crate) demand: JobDemand<'a>,
    pub(crate) priority: u8,
    pub(crate) request_id: &'a str,
    pub(crate) deadline: Instant,
    pub(crate) started: Instant,
}

impl Client {
    /// The groups a model name starts with.
    fn primary_group(&self, model: &str) -> Result<Arc<GroupState>> {
        let config = &self.inner.config;
        let target = super::route::resolve_target(config, model)?;
        let (key, route) = match &target {
            Target::Group(name) => (name.clone(), None),
            Target::Direct(route) => (route.qualified(), Some(route)),
        };
        self.inner
            .groups
            .get_or_create(&key, route, config)
            .ok_or_else(|| Error::ModelNotFound {
                model: model.to_owned(),
                hint: "the model's group could not be created".into(),
            })
    }

    /// Resolve a fallback name (a group or `provider/model`) to its group.
    fn fallback_group(&self, name: &str) -> Option<Arc<GroupState>> {
        self.primary_group(name).ok()
    }

    /// Run one request through its plan. `call` makes one upstream call on a provider with a
    /// context; it may be called several times (retries, failover, hedges).
    pub(crate) async fn execute<T, F, Fut>(&self, job: &Job<'_>, call: F) -> Result<Served<T>>
    where
        T: HasUpstreamMeta,
        F: Fn(SharedProvider, CallContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let budget = &self.inner.budget;
        budget.deposit();
        let primary = self.primary_group(job.model)?;
        let mut queue: VecDeque<Arc<GroupState>> = VecDeque::from([Arc::clone(&primary)]);
        let mut visited: Vec<String> = Vec::new();
        let mut attempts = 0u32;
        let mut last_err: Option<Error> = None;
        while let Some(group) = queue.pop_front() {
            if visited.len() >= MAX_FALLBACK_GROUPS || visited.contains(&group.name) {
                continue;
            }
            visited.push(group.name.clone());
            match self.run_group(&group, job, &call, &mut attempts).await {
                Ok(served) => return Ok(served),
                Err((err, exit)) => {
                    let list = match exit {
                        None => return Err(err),
                        Some(Exit::Fallback) => &primary.config.fallbacks,
                        Some(Exit::ContextWindow) => &primary.config.context_window_fallbacks,
                        Some(Exit::ContentPolicy) => &primary.config.content_policy_fallbacks,
                    };
                    // Special fallbacks only come from the primary group; general ones too,
                    // queued once.
                    for name in list {
                        if let Some(g) = self.fallback_group(name)
                            && !visited.contains(&g.name)
                            && !queue.iter().any(|q| q.name == g.name)
                        {
                            queue.push_back(g);
                        }
                    }
                    if !queue.is_empty() {
                        tracing::debug!(group = %group.name, error = %err, "falling back");
                    }
                    last_err = Some(err);
                }
            }
            if Instant::now() >= job.deadline {
                break;
            }
        }
        Err(last_err.unwrap_or_else(|| deadline_error("weir", job)))
    }

    /// Try one group's deployments. `Err((e, Some(exit)))` means "this group is done, look at
    /// the fallbacks"; `Err((e, None))` means "stop: the request itself failed".
    async fn run_group<T, F, Fut>(
        &self,
        gs: &GroupState,
        job: &Job<'_>,
        call: &F,
        attempts: &mut u32,
    ) -> std::result::Result<Served<T>, (Error, Option<Exit>)>
    where
        T: HasUpstreamMeta,
        F: Fn(SharedProvider, CallContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = &self.inner.config.retry;
        let mut rng = fastrand::Rng::new();
        let order = gs.group.order(&mut rng, |d| {
            gs.breakers
                .get(d.index)
                .is_none_or(CircuitBreaker::is_available)
        });
        let mut schedule = Schedule::new(policy);
        let mut excluded_keys: Vec<String> = Vec::new();
        let mut pos = 0usize;
        let mut last_sent: Option<usize> = None;
        // Deployments skipped in a row without an upstream call: open breaker, or no key with
        // capacity right now. Keys are first asked without waiting, so a request moves on to a
        // deployment with capacity instead of queueing behind a benched key; only when a whole
        // round found no capacity does it queue (patiently) for a key.
        let mut skipped = 0usize;
        let mut skipped_for_keys = 0usize;
        let mut patient = order.len() == 1;
        let mut last_err: Option<Error> = None;
        loop {
            if Instant::now() >= job.deadline {
                let e = last_err.unwrap_or_else(|| deadline_error(&gs.name, job));
                return Err((e, None));
            }
            if skipped >= order.len() {
                if skipped_for_keys > 0 && job.demand.refine() {
                    // No key had room for the bound: ask again with the exact count.
                    skipped = 0;
                    skipped_for_keys = 0;
                } else if skipped_for_keys > 0 && !patient {
                    patient = true;
                    skipped = 0;
                    skipped_for_keys = 0;
                } else {
                    // Nothing in this group can take the request now.
                    let e = last_err.unwrap_or_else(|| deadline_error(&gs.name, job));
                    return Err((e, Some(Exit::Fallback)));
                }
            }
            let dep = Arc::clone(&order[pos % order.len()]);
            // Budget is spent on re-sending to a deployment that just failed (or hedging), not
            // on failing over: another deployment's load is not amplified by this one's outage.
            let is_extra = last_sent == Some(dep.index) && *attempts > 0;
            // Queue for a key only with an exact demand: a bound that does not fit now is
            // counted first (below), and may fit at once.
            let key_deadline = if patient && job.demand.settled() {
                job.deadline
            } else {
                Instant::now()
            };
            let first = self
                .start_attempt(gs, &dep, job, call, &excluded_keys, is_extra, key_deadline)
                .await;
            let attempt = match first {
                Ok(a) => a,
                Err(SkipReason::Open(e)) => {
                    last_err = Some(e);
                    skipped += 1;
                    pos += 1;
                    continue;
                }
                Err(SkipReason::NoKey(e)) => {
                    // A request too large for any key will never fit: say so now (once it
                    // is counted exactly; the bound may be what did not fit).
                    if matches!(e, Error::InvalidRequest { .. }) {
                        if job.demand.refine() {
                            continue;
                        }
                        return Err((e, None));
                    }
                    last_err = Some(e);
                    skipped += 1;
                    skipped_for_keys += 1;
                    pos += 1;
                    continue;
                }
                Err(SkipReason::Budget(e)) => return Err((e, None)),
            };
            last_sent = Some(dep.index);
            skipped = 0;
            *attempts += 1;
            // Hedge the first call of the request when the group asks for it.
            let attempt = if *attempts == 1
                && let Some(delay) = gs.hedge_delay(dep.index)
                && order.len() > 1
            {
                // Boxed: a hedge holds two attempts and a timer, and the future of every
                // request (hedged or not) would otherwise be sized for that.
                Box::pin(self.hedged(
                    gs,
                    &order,
                    pos,
                    attempt,
                    delay,
                    job,
                    call,
                    &excluded_keys,
                    attempts,
                ))
                .await
            } else {
                self.finish(attempt).await
            };
            let Attempt {
                result,
                deployment,
                permit,
                lease,
                started,
            } = attempt;
            match result {
                Ok(value) => {
                    permit.success();
                    let elapsed = started.elapsed();
                    deployment.observe_latency(elapsed);
                    gs.record_ttfb(deployment.index, elapsed);
                    let key_id = lease.key_id().to_owned();
                    if let Some(snap) = &value.upstream_meta().rate_limit
                        && let Some(pool) = self.pool(&deployment.spec.provider)
                    {
                        pool.observe(&key_id, snap);
                    }
                    return Ok(Served {
                        value,
                        route: Route {
                            provider: deployment.spec.provider.clone(),
                            upstream_model: deployment.spec.upstream_model.clone(),
                        },
                        attempts: *attempts,
                        key_id: Some(key_id).filter(|k| !k.is_empty()),
                        lease: Some(lease),
                    });
                }
                Err(e) => {
                    permit.record_error(&e);
                    let key_id = lease.key_id().to_owned();
                    drop(lease);
                    tracing::debug!(deployment = %deployment.id, attempt = *attempts, error = %e, "attempt failed");
                    let mut same_deployment = false;
                    if let Error::RateLimited { retry_after, .. } = &e
                        && let Some(pool) = self.pool(&deployment.spec.provider)
                    {
                        // The key is out of quota: park it and use another key if there is one.
                        pool.mark_limited(&key_id, retry_after.unwrap_or(Duration::from_secs(1)));
                        if pool.status().len() > excluded_keys.len() + 1 {
                            excluded_keys.push(key_id);
                            same_deployment = true;
                        }
                    }
                    if retry::is_context_window_error(&e) {
                        return Err((e, Some(Exit::ContextWindow)));
                    }
                    if retry::is_content_policy_error(&e) {
                        return Err((e, Some(Exit::ContentPolicy)));
                    }
                    if !retry::is_retryable(policy, &e) {
                        return Err((e, None));
                    }
                    if !schedule.retries_left() {
                        return Err((e, Some(Exit::Fallback)));
                    }
                    let others = order.len() > 1;
                    let wait = if same_deployment || others {
                        // Another key or deployment: no reason to wait.
                        schedule.next_delay();
                        Duration::ZERO
                    } else {
                        match e.retry_after() {
                            Some(hint) if Instant::now() + hint < job.deadline => {
                                schedule.next_delay();
                                hint
                            }
                            // The upstream's wait does not fit: fail over, or fail fast with it.
                            Some(_) => return Err((e, Some(Exit::Fallback))),
                            None => schedule.next_delay(),
                        }
                    };
                    if Instant::now() + wait >= job.deadline {
                        return Err((e, Some(Exit::Fallback)));
                    }
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    if !same_deployment {
                        pos += 1;
                    }
                    last_err = Some(e);
                }
            }
        }
    }

    fn pool(&self, provider: &str) -> Option<&KeyPool> {
        self.inner.providers.get(provider).map(|r| &r.pool)
    }

    /// Admission for one attempt: breaker, retry budget, key reservation.
    #[allow(clippy::too_many_arguments)]
    async fn start_attempt<T, F, Fut>(
        &self,
        gs: &GroupState,
        dep: &Arc<Deployment>,
        job: &Job<'_>,
        call: &F,
        excluded_keys: &[String],
        is_extra: bool,
        key_deadline: Instant,
    ) -> std::result::Result<Pending<T, Fut>, SkipReason>
    where
        F: Fn(SharedProvider, CallContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(breaker) = gs.breakers.get(dep.index) else {
            return Err(SkipReason::Open(deadline_error(&gs.name, job)));
        };
        let permit = breaker.try_acquire().map_err(|wait| {
            SkipReason::Open(Error::CircuitOpen {
                deployment: dep.id.clone(),
                retry_after: Some(wait),
            })
        })?;
        let Some(reg) = self.inner.providers.get(&dep.spec.provider) else {
            return Err(SkipReason::Open(Error::ModelNotFound {
                model: dep.id.clone(),
                hint: format!("provider `{}` is not configured", dep.spec.provider),
            }));
        };
        if is_extra && !self.inner.budget.try_withdraw() {
            return Err(SkipReason::Budget(Error::Upstream {
                provider: dep.spec.provider.clone(),
                status: 503,
                message: "retry budget exhausted: too many requests are failing, so weir is not retrying (retry.budget)".into(),
                body_excerpt: String::new(),
                retry_after: Some(Duration::from_secs(1)),
            }));
        }
        let lease = reg
            .pool
            .acquire(
                job.demand.current(),
                job.priority,
                key_deadline,
                excluded_keys,
            )
            .await
            .map_err(SkipReason::NoKey)?;
        let ctx = CallContext {
            upstream_model: dep.spec.upstream_model.clone(),
            api_key: lease.secret().cloned(),
            request_id: job.request_id.to_owned(),
            deadline: Some(job.deadline),
        };
        let in_flight = dep.begin();
        Ok(Pending {
            future: call(Arc::clone(&reg.provider), ctx),
            deployment: Arc::clone(dep),
            permit,
            lease,
            started: Instant::now(),
            deadline: job.deadline,
            provider: dep.spec.provider.clone(),
            _in_flight: in_flight,
        })
    }

    /// Await one attempt, bounded by the request's deadline.
    async fn finish<T, Fut>(&self, p: Pending<T, Fut>) -> Attempt<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let Pending {
            future,
            deployment,
            permit,
            lease,
            started,
            deadline,
            provider,
            _in_flight,
        } = p;
        let result = match tokio::time::timeout_at(deadline, future).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                provider,
                phase: crate::error::TimeoutPhase::Total,
                after: deadline.saturating_duration_since(started),
            }),
        };
        Attempt {
            result,
            deployment,
            permit,
            lease,
            started,
        }
    }

    /// Race the first attempt against a second one on the next deployment, started after
    /// `delay` without an answer. The first success wins; the loser is dropped, which cancels
    /// its upstream request.
    #[allow(clippy::too_many_arguments)]
    async fn hedged<T, F, Fut>(
        &self,
        gs: &GroupState,
        order: &[Arc<Deployment>],
        pos: usize,
        first: Pending<T, Fut>,
        delay: Duration,
        job: &Job<'_>,
        call: &F,
        excluded_keys: &[String],
        attempts: &mut u32,
    ) -> Attempt<T>
    where
        F: Fn(SharedProvider, CallContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let a = self.finish(first);
        tokio::pin!(a);
        tokio::select! {
            done = &mut a => return done,
            () = tokio::time::sleep(delay) => {}
        }
        // Find a second deployment that admits a request.
        let mut second = None;
        for k in 1..order.len() {
            let dep = &order[(pos + k) % order.len()];
            if let Ok(p) = self
                .start_attempt(gs, dep, job, call, excluded_keys, true, Instant::now())
                .await
            {
                second = Some(p);
                break;
            }
        }
        let Some(second) = second else {
            return a.await;
        };
        *attempts += 1;
        tracing::debug!(group = %gs.name, after = ?delay, "hedging");
        let b = self.finish(second);
        tokio::pin!(b);
        tokio::select! {
            done = &mut a => {
                if done.result.is_ok() { done } else { (&mut b).await }
            }
            done = &mut b => {
                if done.result.is_ok() { done } else { (&mut a).await }
            }
        }
    }
}

/// An admitted attempt, not yet awaited.
struct Pending<T, Fut: Future<Output = Result<T>>> {
    future: Fut,
    deployment: Arc<Deployment>,
    permit: Permit,
    lease: Lease,
    started: Instant,
    deadline: Instant,
    provider: String,
    _in_flight: crate::router::InFlight,
}

enum SkipReason {
    /// The breaker is open (or the deployment's provider is gone).
    Open(Error),
    /// No key could be reserved in time.
    NoKey(Error),
    /// The retry budget says stop.
    Budget(Error),
}

fn deadline_error(what: &str, job: &Job<'_>) -> Error {
    Error::Timeout {
        provider: what.to_owned(),
        phase: crate::error::TimeoutPhase::Total,
        after: job.deadline.saturating_duration_since(job.started),
    }
}

/// The shared retry budget from the policy.
pub(crate) fn budget(config: &Config) -> RetryBudget {
    RetryBudget::from_policy(&config.retry)
}
