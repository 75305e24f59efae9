//! The execution engine: how one request becomes upstream attempts.
//!
//! ```text
//! request ─▶ its group (configured, or one deployment for `provider/model`)
//!    │         then, if it fails: its fallbacks / context-window / content-policy fallbacks
//!    ▼
//!  for each group in the plan, within ONE deadline, a GroupRun walks the deployments:
//!    deployment's breaker ──open──▶ skip to the next deployment (no upstream call)
//!    provider's key pool: reserve the estimated tokens (may queue; 429 if it can't)
//!    call (hedged: after a delay with no first byte, race a second deployment)
//!    ok  ─▶ breaker success, latency sample, learn rate-limit headers ─▶ done
//!    err ─▶ breaker verdict; the GroupRun decides: another key, another deployment, the
//!           same after a backoff, the fallbacks, or stop
//! ```
//!
//! Health (breaker, latency, in flight, first-byte samples) belongs to the deployment, not
//! the group: one record per `provider/model`, shared by every group listing it
//! ([`groups`]). Every extra upstream call (retry, hedge) withdraws from one retry budget
//! shared by the client, so retries cannot amplify an outage; skipping an open breaker costs
//! no budget. Each attempt is seen by the client's [`AttemptObserver`]s and has its own
//! tracing span.

mod demand;
mod group_run;
pub(crate) mod groups;

use crate::metrics::PolicyCounters;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::Client;
use super::route::Route;
use crate::breaker::Permit;
use crate::error::{Error, Result};
use crate::pipeline::{AttemptInfo, AttemptObserver, AttemptOutcome, CallContext};
use crate::pool::Lease;
use crate::provider::{SharedProvider, UpstreamContext, UpstreamMeta};
use crate::retry::RetryBudget;
use crate::router::Deployment;
pub(crate) use demand::DemandEstimate;
use group_run::{Exit, GroupRun, Next, Skip};
use groups::GroupState;
pub(crate) use groups::Groups;

/// How many fallback groups one request may visit: a config loop cannot spin forever.
const MAX_FALLBACK_GROUPS: usize = 8;

/// What the engine needs of one request besides the upstream call itself.
pub(crate) struct Dispatch<'a> {
    pub(crate) context: &'a CallContext,
    pub(crate) demand: &'a DemandEstimate<'a>,
    pub(crate) deadline: Instant,
    /// The call's operation, for its attempts' spans.
    pub(crate) operation: crate::pipeline::Operation,
}

/// A successful execution: the answer and how it was reached.
pub(crate) struct Routed<T> {
    pub(crate) value: T,
    pub(crate) route: Route,
    pub(crate) attempts: u32,
    pub(crate) key_label: Option<String>,
    /// The key reservation, to settle against the real usage when it is known.
    pub(crate) lease: Option<Lease>,
    /// From the engine's start to the answer (retries included).
    pub(crate) upstream: Duration,
}

/// A failed execution: the error and how far it got.
pub(crate) struct Unrouted {
    pub(crate) error: Error,
    /// The deployment tried last, if any was.
    pub(crate) route: Option<Route>,
    pub(crate) attempts: u32,
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

fn route_of(d: &Deployment) -> Route {
    Route {
        provider: d.spec.provider.clone(),
        upstream_model: d.spec.upstream_model.clone(),
    }
}

impl Client {
    /// Run one request through its plan. `call` makes one upstream call on a provider with a
    /// context; it may be called several times (retries, failover, hedges).
    pub(crate) async fn execute<T, F, Fut>(
        &self,
        dispatch: &Dispatch<'_>,
        call: F,
    ) -> std::result::Result<Routed<T>, Unrouted>
    where
        T: HasUpstreamMeta,
        F: Fn(SharedProvider, UpstreamContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut run = Run {
            client: self,
            dispatch,
            call: &call,
            started: Instant::now(),
            attempts: 0,
            last_tried: None,
        };
        let result = run.plan().await;
        result.map_err(|error| Unrouted {
            error,
            route: run.last_tried.as_deref().map(route_of),
            attempts: run.attempts,
        })
    }

    pub(crate) fn retry_budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    /// Retries the retry budget would allow now.
    pub fn retry_budget_available(&self) -> u64 {
        self.inner.budget.available()
    }

    /// Retries, failovers, fallbacks and breaker rejections since start.
    pub fn policy_counters(&self) -> crate::metrics::PolicySnapshot {
        self.inner.policy.snapshot()
    }
}

/// One request's execution: what every step of it shares.
struct Run<'r, 'a, F> {
    client: &'r Client,
    dispatch: &'r Dispatch<'a>,
    call: &'r F,
    started: Instant,
    attempts: u32,
    last_tried: Option<Arc<Deployment>>,
}

impl<'r, F, Fut, T> Run<'r, '_, F>
where
    T: HasUpstreamMeta,
    F: Fn(SharedProvider, UpstreamContext) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    fn timeout(&self, what: &str) -> Error {
        Error::Timeout {
            provider: what.to_owned(),
            phase: crate::error::TimeoutPhase::Total,
            after: self
                .dispatch
                .deadline
                .saturating_duration_since(self.started),
        }
    }

    /// The primary group, then the fallbacks its failures point to.
    async fn plan(&mut self) -> Result<Routed<T>> {
        let client = self.client;
        client.retry_budget().deposit();
        let config = &client.inner.config;
        let primary = client
            .inner
            .groups
            .resolve(&self.dispatch.context.model, config)?;
        let mut queue: VecDeque<Arc<GroupState>> = VecDeque::from([Arc::clone(&primary)]);
        let mut visited: Vec<String> = Vec::new();
        let mut last_err: Option<Error> = None;
        while let Some(group) = queue.pop_front() {
            if visited.len() >= MAX_FALLBACK_GROUPS || visited.contains(&group.name) {
                continue;
            }
            visited.push(group.name.clone());
            let (err, exit) = match self.run_group(&group).await {
                Ok(routed) => return Ok(routed),
                Err(failed) => failed,
            };
            let list = match exit {
                Exit::Stop => return Err(err),
                Exit::Fallback => &primary.config.fallbacks,
                Exit::ContextWindow => &primary.config.context_window_fallbacks,
                Exit::ContentPolicy => &primary.config.content_policy_fallbacks,
            };
            // Special fallbacks only come from the primary group; general ones too, queued
            // once.
            for name in list {
                if let Ok(g) = client.inner.groups.resolve(name, config)
                    && !visited.contains(&g.name)
                    && !queue.iter().any(|q| q.name == g.name)
                {
                    queue.push_back(g);
                }
            }
            if !queue.is_empty() {
                PolicyCounters::add(&client.inner.policy.fallbacks);
                let next: Vec<&str> = queue.iter().map(|g| g.name.as_str()).collect();
                tracing::warn!(
                    request_id = %self.dispatch.context.request_id,
                    group = %group.name,
                    fallback = %next.join(","),
                    reason = %err,
                    "model group failed; falling back"
                );
            }
            last_err = Some(err);
            if Instant::now() >= self.dispatch.deadline {
                break;
            }
        }
        Err(last_err.unwrap_or_else(|| self.timeout("weir")))
    }

    /// Try one group's deployments, as its [`GroupRun`] directs.
    async fn run_group(
        &mut self,
        gs: &GroupState,
    ) -> std::result::Result<Routed<T>, (Error, Exit)> {
        let inner = &self.client.inner;
        let policy = &inner.config.retry;
        let mut rng = fastrand::Rng::new();
        let order = gs
            .group
            .order(&mut rng, |d| d.health.breaker.is_available());
        let mut walk = GroupRun::new(order, policy);
        let demand = self.dispatch.demand;
        loop {
            let next = walk.next(demand, self.attempts, self.dispatch.deadline, || {
                self.timeout(&gs.name)
            });
            let (deployment, is_extra, key_deadline) = match next {
                Next::Try {
                    deployment,
                    is_extra,
                    key_deadline,
                } => (deployment, is_extra, key_deadline),
                Next::Leave(e, exit) => return Err((e, exit)),
            };
            let pending = match self
                .start_attempt(
                    &deployment,
                    &walk.excluded_keys,
                    is_extra,
                    key_deadline,
                    false,
                )
                .await
            {
                Ok(p) => p,
                Err(skip) => match walk.on_skip(skip, demand) {
                    Some(e) => return Err((e, Exit::Stop)),
                    None => continue,
                },
            };
            walk.on_sent(deployment.index);
            // Hedge the first call of the request when the group asks for it.
            let attempt = match gs.hedge_delay(&deployment.health) {
                Some(delay) if self.attempts == 1 && walk.order.len() > 1 => {
                    // Boxed: a hedge holds two attempts and a timer, and the future of
                    // every request (hedged or not) would otherwise be sized for that.
                    Box::pin(self.hedged(&walk, pending, delay)).await
                }
                _ => finish(pending).await,
            };
            let Attempt {
                result,
                deployment,
                permit,
                lease,
                started,
                watch,
            } = attempt;
            match result {
                Ok(value) => {
                    permit.success();
                    watch.end(AttemptOutcome::Success);
                    let elapsed = started.elapsed();
                    deployment.observe_latency(elapsed);
                    if gs.samples_ttfb() {
                        deployment.health.record_ttfb(elapsed);
                    }
                    let key_label = lease.key_id().to_owned();
                    if let Some(snap) = &value.upstream_meta().rate_limit
                        && let Some(pool) = self.client.pool(&deployment.spec.provider)
                    {
                        pool.observe(&key_label, snap);
                    }
                    return Ok(Routed {
                        value,
                        route: route_of(&deployment),
                        attempts: self.attempts,
                        key_label: Some(key_label).filter(|k| !k.is_empty()),
                        lease: Some(lease),
                        upstream: self.started.elapsed(),
                    });
                }
                Err(e) => {
                    permit.record_error(&e);
                    watch.end(AttemptOutcome::Failed {
                        kind: e.kind(),
                        status: e.http_status(),
                    });
                    let key_label = lease.key_id().to_owned();
                    drop(lease);
                    let reason = e.to_string();
                    let other_key = self.park_limited_key(&deployment, &e, key_label, &walk);
                    match walk.on_failure(e, other_key, policy, self.dispatch.deadline) {
                        Ok(wait) => {
                            self.log_next(&walk, &deployment, wait, &reason);
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                            }
                        }
                        Err((e, exit)) => {
                            tracing::debug!(
                                request_id = %self.dispatch.context.request_id,
                                deployment = %deployment.id,
                                attempt = self.attempts,
                                error = %e,
                                "attempt failed; leaving the group"
                            );
                            return Err((e, exit));
                        }
                    }
                }
            }
        }
    }

    /// A failed attempt is followed by another: count it as a retry (the same deployment) or
    /// a failover (another), and say so at `warn`, with the wait and the reason, since these
    /// decisions are what an operator looks for when latency or spend jumps.
    fn log_next(&self, walk: &GroupRun, failed: &Deployment, wait: Duration, reason: &str) {
        let next = &walk.order[walk.pos() % walk.order.len()];
        let request_id = &self.dispatch.context.request_id;
        if next.index == failed.index {
            PolicyCounters::add(&self.client.inner.policy.retries);
            tracing::warn!(
                request_id = %request_id,
                deployment = %failed.id,
                attempt = self.attempts,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "upstream attempt failed; retrying the same deployment after backoff"
            );
        } else {
            PolicyCounters::add(&self.client.inner.policy.failovers);
            tracing::warn!(
                request_id = %request_id,
                deployment = %failed.id,
                next = %next.id,
                attempt = self.attempts,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "upstream attempt failed; failing over to another deployment"
            );
        }
    }

    /// After a 429: park the key, and name it for exclusion when the deployment's pool has
    /// another key to try.
    fn park_limited_key(
        &self,
        deployment: &Deployment,
        e: &Error,
        key_label: String,
        walk: &GroupRun,
    ) -> Option<String> {
        let Error::RateLimited { retry_after, .. } = e else {
            return None;
        };
        let pool = self.client.pool(&deployment.spec.provider)?;
        pool.mark_limited(&key_label, retry_after.unwrap_or(Duration::from_secs(1)));
        (pool.status().len() > walk.excluded_keys.len() + 1).then_some(key_label)
    }

    /// Admission for one attempt: breaker, retry budget, key reservation.
    async fn start_attempt(
        &mut self,
        dep: &Arc<Deployment>,
        excluded_keys: &[String],
        is_extra: bool,
        key_deadline: Instant,
        hedge: bool,
    ) -> std::result::Result<Pending<'r, Fut>, Skip> {
        let client: &'r Client = self.client;
        let inner = &client.inner;
        let permit = dep.health.breaker.try_acquire().map_err(|wait| {
            PolicyCounters::add(&inner.policy.breaker_rejections);
            Skip::Open(Error::CircuitOpen {
                deployment: dep.id.clone(),
                retry_after: Some(wait),
            })
        })?;
        let Some(reg) = inner.providers.get(&dep.spec.provider) else {
            return Err(Skip::Open(Error::ModelNotFound {
                model: dep.id.clone(),
                hint: format!("provider `{}` is not configured", dep.spec.provider),
            }));
        };
        if is_extra && !inner.budget.try_withdraw() {
            PolicyCounters::add(&inner.policy.budget_exhausted);
            return Err(Skip::Budget(Error::Upstream {
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
                self.dispatch.demand.current(),
                self.dispatch.context.priority,
                key_deadline,
                excluded_keys,
            )
            .await
            .map_err(Skip::NoKey)?;
        self.attempts += 1;
        self.last_tried = Some(Arc::clone(dep));
        let ctx = UpstreamContext {
            upstream_model: dep.spec.upstream_model.clone(),
            api_key: lease.secret().cloned(),
            request_id: self.dispatch.context.request_id.clone(),
            deadline: Some(self.dispatch.deadline),
            forwarded: self.dispatch.context.upstream_headers.clone(),
        };
        let watch = AttemptWatch::start(
            &inner.seams.observers,
            &self.dispatch.context.request_id,
            dep,
            lease.key_id(),
            self.attempts,
            hedge,
        );
        // Disabled (the default level is info), the span is a no-op: nothing is formatted.
        let span = tracing::debug_span!(
            "weir.attempt",
            otel.name = tracing::field::Empty,
            otel.kind = "client",
            request_id = %self.dispatch.context.request_id,
            gen_ai.operation.name = crate::telemetry::attrs::operation_name(self.dispatch.operation),
            gen_ai.provider.name = %dep.spec.provider,
            gen_ai.request.model = %dep.spec.upstream_model,
            weir.deployment = %dep.id,
            weir.attempt = i64::from(self.attempts),
            weir.hedge = hedge,
            weir.key_label = lease.key_id(),
            error.type = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::attrs::name(&span, self.dispatch.operation, &dep.spec.upstream_model);
        let in_flight = dep.begin();
        Ok(Pending {
            future: (self.call)(Arc::clone(&reg.provider), ctx).instrument(span),
            deployment: Arc::clone(dep),
            permit,
            lease,
            started: Instant::now(),
            deadline: self.dispatch.deadline,
            watch,
            _in_flight: in_flight,
        })
    }

    /// Race the first attempt against a second one on the next deployment, started after
    /// `delay` without an answer. The first success wins; the loser is dropped, which cancels
    /// its upstream request.
    async fn hedged(
        &mut self,
        walk: &GroupRun,
        first: Pending<'r, Fut>,
        delay: Duration,
    ) -> Attempt<'r, T> {
        let a = finish(first);
        tokio::pin!(a);
        tokio::select! {
            done = &mut a => return done,
            () = tokio::time::sleep(delay) => {}
        }
        // Find a second deployment that admits a request.
        let order = &walk.order;
        let mut second = None;
        for k in 1..order.len() {
            let dep = &order[(walk.pos() + k) % order.len()];
            if let Ok(p) = self
                .start_attempt(dep, &walk.excluded_keys, true, Instant::now(), true)
                .await
            {
                second = Some(p);
                break;
            }
        }
        let Some(second) = second else {
            return a.await;
        };
        tracing::debug!(after = ?delay, "hedging");
        let b = finish(second);
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

impl Client {
    fn pool(&self, provider: &str) -> Option<&crate::pool::KeyPool> {
        self.inner.providers.get(provider).map(|r| &r.pool)
    }
}

/// Reports one attempt to the client's observers: started now, ended once (a drop without
/// an end, such as a lost hedge, is a cancellation). Holds nothing when no one observes.
struct AttemptWatch<'o> {
    observers: &'o [Arc<dyn AttemptObserver>],
    /// Owned copies of what the observers are shown; `None` when there are no observers.
    info: Option<Box<WatchInfo>>,
    started: Instant,
}

struct WatchInfo {
    request_id: String,
    deployment: String,
    provider: String,
    key_label: String,
    number: u32,
    hedge: bool,
}

impl WatchInfo {
    fn view(&self) -> AttemptInfo<'_> {
        AttemptInfo {
            request_id: &self.request_id,
            deployment: &self.deployment,
            provider: &self.provider,
            key_label: &self.key_label,
            number: self.number,
            hedge: self.hedge,
        }
    }
}

impl<'o> AttemptWatch<'o> {
    fn start(
        observers: &'o [Arc<dyn AttemptObserver>],
        request_id: &str,
        dep: &Deployment,
        key_label: &str,
        number: u32,
        hedge: bool,
    ) -> Self {
        let info = (!observers.is_empty()).then(|| {
            let info = Box::new(WatchInfo {
                request_id: request_id.to_owned(),
                deployment: dep.health.id.clone(),
                provider: dep.spec.provider.clone(),
                key_label: key_label.to_owned(),
                number,
                hedge,
            });
            for o in observers {
                o.attempt_started(&info.view());
            }
            info
        });
        Self {
            observers,
            info,
            started: Instant::now(),
        }
    }

    fn end(mut self, outcome: AttemptOutcome) {
        self.report(outcome);
    }

    fn report(&mut self, outcome: AttemptOutcome) {
        if let Some(info) = self.info.take() {
            let latency = self.started.elapsed();
            for o in self.observers {
                o.attempt_ended(&info.view(), outcome, latency);
            }
        }
    }
}

impl Drop for AttemptWatch<'_> {
    fn drop(&mut self) {
        self.report(AttemptOutcome::Cancelled);
    }
}

/// An admitted attempt, not yet awaited.
struct Pending<'o, Fut> {
    future: tracing::instrument::Instrumented<Fut>,
    deployment: Arc<Deployment>,
    permit: Permit,
    lease: Lease,
    started: Instant,
    deadline: Instant,
    watch: AttemptWatch<'o>,
    _in_flight: crate::router::InFlight,
}

/// One attempt's result and bookkeeping, dropped (counting nothing) if it loses a hedge.
struct Attempt<'o, T> {
    result: Result<T>,
    deployment: Arc<Deployment>,
    permit: Permit,
    lease: Lease,
    started: Instant,
    watch: AttemptWatch<'o>,
}

/// Await one attempt, bounded by the request's deadline.
async fn finish<'o, T, Fut>(p: Pending<'o, Fut>) -> Attempt<'o, T>
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
        watch,
        _in_flight,
    } = p;
    // Kept to record the attempt's outcome on it: a no-op clone when tracing is off.
    let span = future.span().clone();
    let result = match tokio::time::timeout_at(deadline, future).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            provider: deployment.spec.provider.clone(),
            phase: crate::error::TimeoutPhase::Total,
            after: deadline.saturating_duration_since(started),
        }),
    };
    crate::telemetry::attrs::attempt_end(&span, &result);
    Attempt {
        result,
        deployment,
        permit,
        lease,
        started,
        watch,
    }
}

/// The shared retry budget from the policy.
pub(crate) fn budget(config: &crate::config::Config) -> RetryBudget {
    RetryBudget::from_policy(&config.retry)
}
