//! [`Client`]: the one entry point of the library, shared by the gateway and the CLI.
//!
//! A client owns the validated config, a registry of providers (`Arc<dyn Provider>`, one pooled
//! HTTP client each) with their key pools, the deployment groups with their circuit breakers,
//! one retry budget, and the counters behind `/status`. Cloning is cheap (an `Arc`).
//!
//! Each call follows one lifecycle ([`crate::pipeline`]): open it in its [`CallContext`]
//! (request hooks, admissions) -> the cache ([`cached`]) -> the engine ([`engine`]), which
//! tries deployments within one deadline (breakers, key reservations, retries, failover,
//! hedging, fallbacks) -> end it once ([`ops`]): settle the key reservation, price, count,
//! one usage event. Streams are retried only before their first chunk; once a chunk is out, a
//! failure ends the stream with an error item, and the accounting still happens when the
//! stream ends or is dropped.

mod blocking;
mod cached;
mod engine;
mod messages;
mod ops;
pub mod route;
mod stats;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use serde::Serialize;
use std::future::Future;
use tokio::time::Instant;
use weir_types::chat::{ChatRequest, ChatResponse, Usage};
use weir_types::embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use weir_types::models::Model;

pub use crate::cache::tiered::CacheStats;
pub use blocking::BlockingClient;
pub use cached::{CacheDirectives, CacheStatus};
pub use messages::{MessagesOutcome, MessagesStream};
pub use route::Route;
pub use stats::ModelTotals;
pub use stream::{ChatStream, StreamSummary};

use crate::breaker::BreakerSnapshot;
use crate::budgets::Budgets;
use crate::config::{Config, ProviderKind};
use crate::error::{Error, Result};
use crate::limits::InboundLimits;
use crate::pipeline::{
    Admission, AttemptObserver, CallContext, CallHook, CallRequest, Operation, Seams, Tags,
    UsageSink,
};
use crate::pool::{Demand, KeyPool, PooledKey};
use crate::provider::anthropic::AnthropicProvider;
use crate::provider::mock::MockProvider;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{RateLimitSnapshot, RawBody, SharedProvider};
use crate::retry::RetryBudget;
use crate::router::DeploymentSnapshot;
use engine::{DemandEstimate, Groups};
use stats::Stats;

/// Output tokens reserved on a key when the request sets no cap; settled to the real count.
const DEFAULT_OUTPUT_RESERVATION: u64 = 1024;

/// What weir knows about one answered call.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseMeta {
    /// The model name the caller asked for (an alias stays an alias here).
    pub requested_model: String,
    pub provider: String,
    pub upstream_model: String,
    pub request_id: String,
    /// Time inside the upstream call, retries included (for streams: to the first chunk; for
    /// a cache hit: the whole call). Serialised as `latency_ms`, in milliseconds.
    #[serde(with = "duration_ms", rename = "latency_ms")]
    pub latency: Duration,
    /// Attempts made, 1 when the first succeeded.
    pub attempts: u32,
    pub usage: Option<Usage>,
    /// Dollars, from the pricing table; `None` when the model has no known price.
    pub cost_usd: Option<Decimal>,
    /// The label of the upstream key used (never the key itself).
    pub key_id: Option<String>,
    pub rate_limit: Option<RateLimitSnapshot>,
    /// Where the caller stands against its tightest inbound rate limit (weir's own limits,
    /// not the upstream's), when any applies.
    pub quota: Option<crate::pipeline::Quota>,
    /// Whether the cache answered (`hit`), was looked up (`miss`) or did not apply.
    pub cache: CacheStatus,
    /// `true` when this call shared an identical in-flight call's upstream answer.
    pub coalesced: bool,
    /// The call's tags (from its context, and any a response hook added).
    pub tags: Tags,
    /// Budgets that crossed a warning threshold with this call (the gateway sends each as
    /// an `x-weir-budget-warning` header). Usually empty, and then not serialised.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub budget_warnings: Vec<String>,
}

mod duration_ms {
    use serde::Serializer;
    pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

/// A complete chat answer and its metadata.
#[derive(Debug, Clone)]
pub struct Completion {
    pub response: ChatResponse,
    pub meta: ResponseMeta,
    /// `response` as JSON exactly as weir received it (from the upstream or the cache), when
    /// it has one.
    received: Option<RawBody>,
}

impl Completion {
    pub(crate) fn new(
        response: ChatResponse,
        meta: ResponseMeta,
        received: Option<RawBody>,
    ) -> Self {
        Self {
            response,
            meta,
            received,
        }
    }

    /// `response` serialised as JSON, exactly as weir received it (from the upstream or the
    /// cache) when it did, so a gateway forwards the bytes instead of re-encoding them. `None`
    /// when there are no such bytes (a translated answer, the mock): serialise `response`.
    ///
    /// The bytes describe the answer as received: a caller that changes `response` must
    /// serialise it itself.
    pub fn received_json(&self) -> Option<&bytes::Bytes> {
        self.received.as_ref().map(|b| &b.0)
    }
}

/// Embeddings and their metadata.
#[derive(Debug, Clone)]
pub struct EmbeddingsOutcome {
    pub response: EmbeddingsResponse,
    pub meta: ResponseMeta,
}

/// Everything `/status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub uptime_seconds: f64,
    pub models: Vec<ModelTotals>,
    /// Each provider key: in flight, limits and what remains, limited or not, queue length.
    pub keys: Vec<crate::pool::KeyStatus>,
    /// Each deployment (`provider/model`): breaker state, in flight, latency estimate, and
    /// the groups that list it.
    pub deployments: Vec<DeploymentStatus>,
    /// The inbound rate limiter's backend and health; `None` without one.
    pub limits: Option<crate::limits::LimitsHealth>,
    /// The spend budgets' backend and health (their spend: [`Budgets::status`]); `None`
    /// without budgets.
    pub budgets: Option<crate::limits::LimitsHealth>,
}

/// One deployment's health, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    /// The configured groups (and aliases) that route to it.
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub deployment: DeploymentSnapshot,
    pub breaker: BreakerSnapshot,
}

/// One provider in the registry.
#[derive(Debug)]
struct Registered {
    provider: SharedProvider,
    pool: KeyPool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: Config,
    providers: HashMap<String, Registered>,
    groups: Groups,
    budget: RetryBudget,
    pub(crate) policy: crate::metrics::PolicyCounters,
    pub(crate) stats: Stats,
    started: std::time::Instant,
    cache: Option<cached::CacheLayer>,
    pub(crate) seams: Seams,
    /// The inbound rate limiter the builder registered (also the first admission).
    limits: Option<Arc<InboundLimits>>,
    /// The spend budgets the builder registered (the admission after the limiter).
    budgets: Option<Arc<Budgets>>,
    /// Models called without a price, each warned about once.
    unpriced: crate::pricing::UnpricedModels,
}

/// The weir client. Cheap to clone.
///
/// ```
/// use weir::{Client, Config};
/// use weir_types::chat::{ChatRequest, Message};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let rt = tokio::runtime::Runtime::new()?;
/// # rt.block_on(async {
/// let client = Client::new(Config::from_yaml("", &|_: &str| None)?)?;
/// let done = client.chat(ChatRequest::new("mock/echo", vec![Message::user("hello")])).await?;
/// assert_eq!(done.response.text(), "hello");
/// assert_eq!(done.meta.provider, "mock");
/// # Ok::<(), weir::Error>(())
/// # })?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// Builds a [`Client`] from config, optionally with custom providers.
#[derive(Debug)]
pub struct ClientBuilder {
    config: Config,
    custom: Vec<(String, SharedProvider)>,
    seams: Seams,
    /// Register the inbound limiter even when the config sets no limit.
    always_limit: bool,
    /// Budgets given by the caller (else built from the config's, if it has any).
    budgets: Option<Arc<Budgets>>,
}

fn pool_for(pc: &crate::config::ProviderConfig) -> KeyPool {
    let keys = pc
        .keys
        .iter()
        .map(|k| PooledKey {
            id: k.id.clone(),
            secret: Some(k.secret.clone()),
            limits: k.limits,
        })
        .collect();
    KeyPool::new(&pc.name, keys, pc.pool)
}

impl ClientBuilder {
    /// Register (or replace) a provider under `name`; models `name/...` go to it.
    pub fn provider(mut self, name: impl Into<String>, provider: SharedProvider) -> Self {
        self.custom.push((name.into(), provider));
        self
    }

    /// Send every call's usage event to `sink` too (after the `/status` counters).
    pub fn usage_sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.seams.sinks.push(sink);
        self
    }

    /// Ask `admission` before every call, and settle with it after (in registration order).
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.seams.admissions.push(admission);
        self
    }

    /// Show every upstream attempt to `observer`.
    pub fn attempt_observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        self.seams.observers.push(observer);
        self
    }

    /// Run `hook` first and last on every call (in registration order).
    pub fn hook(mut self, hook: Arc<dyn CallHook>) -> Self {
        self.seams.hooks.push(hook);
        self
    }

    /// Register the inbound rate limiter even when the config sets no limit: for a gateway
    /// whose stored keys carry limits of their own ([`Principal::limits`]). Without it, the
    /// limiter is registered only when `limits:` sets some limit, and a client without one
    /// pays nothing for it.
    ///
    /// [`Principal::limits`]: crate::Principal::limits
    pub fn with_inbound_limits(mut self) -> Self {
        self.always_limit = true;
        self
    }

    /// Hold calls to these spend budgets (instead of building them from `budgets:` in the
    /// config): for a gateway that seeds them, changes them at run time, or shows their
    /// status. They run right after the inbound rate limiter.
    pub fn budgets(mut self, budgets: Arc<Budgets>) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Whether the built client needs an inbound limiter.
    fn wants_limits(&self) -> bool {
        self.always_limit || self.config.limits.any()
    }

    /// Build the client. Redis needs a connection first: use [`ClientBuilder::build_async`]
    /// when `cache.redis` is configured, or `redis:` with inbound limits or budgets.
    pub fn build(mut self) -> Result<Client> {
        if cfg!(feature = "redis") && self.config.cache.enabled && self.config.cache.redis.is_some()
        {
            return Err(Error::config(
                "cache.redis",
                "a Redis tier is connected asynchronously: build the client with `build_async().await`",
            ));
        }
        let limits = if !self.wants_limits() {
            None
        } else if self.config.redis.is_some() {
            return Err(Error::config(
                "redis",
                "rate limits in Redis are connected asynchronously: build the client with `build_async().await`",
            ));
        } else {
            Some(InboundLimits::in_memory(&self.config.limits))
        };
        let budgets = match self.budgets.take() {
            Some(b) => Some(b),
            None if !self.config.budgets.any() => None,
            None if self.config.redis.is_some() => {
                return Err(Error::config(
                    "redis",
                    "budgets in Redis are connected asynchronously: build the client with `build_async().await`",
                ));
            }
            None => Some(Arc::new(Budgets::in_memory(&self.config)?)),
        };
        self.build_with(None, limits, budgets)
    }

    /// Build the client, connecting the shared Redis cache tier and the Redis of inbound
    /// limits and budgets if they are configured.
    pub async fn build_async(mut self) -> Result<Client> {
        let redis = cached::CacheLayer::connect_redis(&self.config.cache).await?;
        let limits = if self.wants_limits() {
            Some(InboundLimits::new(&self.config.limits, self.config.redis.as_ref()).await?)
        } else {
            None
        };
        let budgets = match self.budgets.take() {
            Some(b) => Some(b),
            None if self.config.budgets.any() => Some(Arc::new(Budgets::new(&self.config).await?)),
            None => None,
        };
        self.build_with(redis, limits, budgets)
    }

    fn build_with(
        mut self,
        redis: Option<crate::cache::redis::RedisStore>,
        limits: Option<InboundLimits>,
        budgets: Option<Arc<Budgets>>,
    ) -> Result<Client> {
        let limits = limits.map(Arc::new);
        if let Some(l) = &limits {
            // First: a caller over its limit is refused before any other admission reserves.
            let admission: Arc<dyn Admission> = l.clone();
            self.seams.admissions.insert(0, admission);
        }
        if let Some(b) = &budgets {
            // Right after the limiter: a call the limiter refuses never holds budget money.
            let admission: Arc<dyn Admission> = b.clone();
            self.seams
                .admissions
                .insert(usize::from(limits.is_some()), admission);
        }
        crate::provider::http::install_crypto_provider();
        let mut config = self.config;
        let mut providers = HashMap::new();
        for pc in &config.providers {
            let provider: SharedProvider = match pc.kind {
                ProviderKind::Mock => {
                    Arc::new(MockProvider::new(pc.name.clone(), config.mock.clone()))
                }
                ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(pc)?),
                ProviderKind::Anthropic => {
                    Arc::new(AnthropicProvider::new(pc, config.defaults.max_tokens)?)
                }
            };
            providers.insert(
                pc.name.clone(),
                Registered {
                    provider,
                    pool: pool_for(pc),
                },
            );
        }
        for (name, provider) in self.custom {
            if config.provider(&name).is_none() {
                // Make routing aware of it, as if configured with no keys.
                let mut pc = config.providers[0].clone();
                pc.name = name.clone();
                pc.keys.clear();
                pc.models.clear();
                config.providers.push(pc);
            }
            let pc = config.provider(&name).cloned();
            let pool = pc.as_ref().map_or_else(
                || KeyPool::new(&name, Vec::new(), Default::default()),
                pool_for,
            );
            providers.insert(name.clone(), Registered { provider, pool });
        }
        let groups = Groups::from_config(&config);
        let budget = engine::budget(&config);
        let cache = cached::CacheLayer::open(&config.cache, redis)?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                providers,
                groups,
                budget,
                policy: crate::metrics::PolicyCounters::default(),
                stats: Stats::default(),
                started: std::time::Instant::now(),
                cache,
                seams: self.seams,
                limits,
                budgets,
                unpriced: crate::pricing::UnpricedModels::default(),
            }),
        })
    }
}

impl Client {
    /// A client for this configuration.
    pub fn new(config: Config) -> Result<Self> {
        Self::builder(config).build()
    }

    /// A client from the embedded defaults and the environment (no config file).
    pub fn from_env() -> Result<Self> {
        Self::new(Config::from_env()?)
    }

    pub fn builder(config: Config) -> ClientBuilder {
        ClientBuilder {
            config,
            custom: Vec::new(),
            seams: Seams::default(),
            always_limit: false,
            budgets: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The inbound rate limiter the builder registered (for `/status` and `/ready`: see
    /// [`InboundLimits::health`]); `None` when the config sets no limit.
    pub fn inbound_limits(&self) -> Option<&Arc<InboundLimits>> {
        self.inner.limits.as_ref()
    }

    /// The spend budgets the builder registered (to change them at run time, seed them, or
    /// read their status); `None` when the config has none and none were given.
    pub fn budgets(&self) -> Option<&Arc<Budgets>> {
        self.inner.budgets.as_ref()
    }

    /// Where a model name would be sent first (a group's first deployment).
    pub fn resolve(&self, model: &str) -> Result<Route> {
        route::resolve(&self.inner.config, self.model_or_default(model))
    }

    /// The model a call asks for: the one it names, else `defaults.model`.
    pub(crate) fn model_or_default<'a>(&'a self, named: &'a str) -> &'a str {
        if named.is_empty() {
            &self.inner.config.defaults.model
        } else {
            named
        }
    }

    /// What a call cost upstream; `None` (never zero) for a model without a price, which is
    /// warned about once.
    pub(crate) fn price(&self, route: &Route, usage: &Usage) -> Option<Decimal> {
        let cost = self
            .inner
            .config
            .pricing
            .cost(&route.provider, &route.upstream_model, usage);
        if cost.is_none() {
            self.inner
                .unpriced
                .note(&route.provider, &route.upstream_model);
        }
        cost
    }

    /// The models called so far that have no price (`provider/model`, sorted).
    pub fn unpriced_models(&self) -> Vec<String> {
        self.inner.unpriced.models()
    }

    /// A complete chat completion.
    pub async fn chat(&self, req: ChatRequest) -> Result<Completion> {
        self.chat_with(req, CallContext::default()).await
    }

    /// A complete chat completion in a call context: from the cache when it holds the
    /// answer, else from the upstream (shared with identical requests in flight).
    //
    // Not an `async fn`: an async fn keeps its arguments beside every state of its future,
    // and this future is moved whole into the server's per-request box. Opening the call
    // (hooks, which are synchronous) first leaves only the request and the call in it.
    pub fn chat_with(
        &self,
        mut req: ChatRequest,
        context: CallContext,
    ) -> impl Future<Output = Result<Completion>> + Send + '_ {
        let opened = self.open(Operation::Chat, CallRequest::Chat(&mut req), context);
        async move {
            let call = self.admit_chat(opened?, &req).await?;
            self.chat_cached(req, call).await
        }
    }

    /// A streamed chat completion. Returns once an upstream has answered, so errors before
    /// the first chunk (after retries and failover) come back as `Err` here.
    pub async fn chat_stream(&self, req: ChatRequest) -> Result<ChatStream> {
        self.chat_stream_with(req, CallContext::default()).await
    }

    pub async fn chat_stream_with(
        &self,
        mut req: ChatRequest,
        context: CallContext,
    ) -> Result<ChatStream> {
        let call = self.open(Operation::ChatStream, CallRequest::Chat(&mut req), context)?;
        let call = self.admit_chat(call, &req).await?;
        self.chat_stream_cached(req, call).await
    }

    /// Run many requests with at most `max_concurrency` in flight. Results come back in input
    /// order, one per request; a failure affects only its own slot.
    pub async fn batch(
        &self,
        requests: Vec<ChatRequest>,
        max_concurrency: usize,
    ) -> Vec<Result<Completion>> {
        futures::stream::iter(requests)
            .map(|r| self.chat(r))
            .buffered(max_concurrency.max(1))
            .collect()
            .await
    }

    /// Embeddings.
    pub async fn embed(&self, req: EmbeddingsRequest) -> Result<EmbeddingsOutcome> {
        self.embed_with(req, CallContext::default()).await
    }

    pub async fn embed_with(
        &self,
        mut req: EmbeddingsRequest,
        context: CallContext,
    ) -> Result<EmbeddingsOutcome> {
        let mut call = self.open(
            Operation::Embeddings,
            CallRequest::Embeddings(&mut req),
            context,
        )?;
        let texts = req.input.texts();
        let demand = Demand {
            input_tokens: texts.iter().map(|t| crate::tokens::count_tokens(t)).sum(),
            output_tokens: 0,
        };
        if let Err(e) = call.admit(demand.input_tokens, 0).await {
            return Err(call.fail(e));
        }
        let req = &req;
        let (up, meta) = self
            .complete(
                call,
                DemandEstimate::fixed(demand),
                |p, ctx| async move {
                    // The provider is given the upstream model name through the request.
                    let mut req = req.clone();
                    req.model = ctx.upstream_model.clone();
                    p.embed(&req, &ctx).await
                },
                |body| Some(Usage::new(body.usage.prompt_tokens, 0)),
            )
            .await?;
        Ok(EmbeddingsOutcome {
            response: up.body,
            meta,
        })
    }

    /// The configured models (`provider/model` for each provider's `models` list), aliases
    /// and groups. Offline: this does not ask the upstreams.
    pub fn models(&self) -> Vec<Model> {
        let mut out = Vec::new();
        for pc in &self.inner.config.providers {
            for m in &pc.models {
                out.push(Model::new(format!("{}/{m}", pc.name), pc.name.clone()));
            }
        }
        for (name, group) in &self.inner.config.groups {
            let owner = group.primary().map_or("weir", |d| d.provider.as_str());
            out.push(Model::new(name.clone(), owner));
        }
        out
    }

    /// One model by id: a listed model or group, or a name that routes to a provider which
    /// lists no models of its own (so any name it is given may be valid). A provider that
    /// lists its models (the mock always does) knows the rest are not there.
    pub fn model(&self, id: &str) -> Option<Model> {
        if let Some(m) = self.models().into_iter().find(|m| m.id == id) {
            return Some(m);
        }
        let route = self.resolve(id).ok()?;
        let pc = self.inner.config.provider(&route.provider)?;
        pc.models.is_empty().then(|| Model::new(id, route.provider))
    }

    /// Ask one provider which models it offers upstream.
    pub async fn upstream_models(&self, provider: &str) -> Result<Vec<Model>> {
        let reg = self
            .inner
            .providers
            .get(provider)
            .ok_or_else(|| Error::ModelNotFound {
                model: provider.to_owned(),
                hint: format!("provider `{provider}` is not configured"),
            })?;
        let deadline = Instant::now() + self.inner.config.defaults.request_timeout;
        let lease = reg
            .pool
            .acquire(Demand::default(), 0, deadline, &[])
            .await?;
        let ctx = crate::provider::UpstreamContext {
            api_key: lease.secret().cloned(),
            deadline: Some(deadline),
            ..crate::provider::UpstreamContext::new(String::new())
        };
        reg.provider.models(&ctx).await
    }

    /// Uptime, totals per model, each key's pool state and each deployment's health.
    pub fn status(&self) -> Status {
        let mut keys: Vec<crate::pool::KeyStatus> = self
            .inner
            .providers
            .values()
            .flat_map(|r| r.pool.status())
            .collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let mut by_id: HashMap<String, DeploymentStatus> = HashMap::new();
        for g in self.inner.groups.all() {
            for d in g.group.deployments() {
                let entry = by_id
                    .entry(d.health.id.clone())
                    .or_insert_with(|| DeploymentStatus {
                        groups: Vec::new(),
                        deployment: d.snapshot(),
                        breaker: d.health.breaker.snapshot(),
                    });
                if g.name != d.health.id {
                    entry.groups.push(g.name.clone());
                }
            }
        }
        let mut deployments: Vec<DeploymentStatus> = by_id.into_values().collect();
        for d in &mut deployments {
            d.groups.sort();
        }
        deployments.sort_by(|a, b| a.deployment.id.cmp(&b.deployment.id));
        Status {
            uptime_seconds: self.inner.started.elapsed().as_secs_f64(),
            models: self.inner.stats.snapshot(),
            keys,
            deployments,
            limits: self.inner.limits.as_ref().map(|l| l.health()),
            budgets: self.inner.budgets.as_ref().map(|b| b.health()),
        }
    }

    /// Close circuit breakers by hand: all of them, or those of deployments whose id
    /// (`provider/model`) or group name matches. Returns how many were reset (each
    /// deployment once, however many groups list it).
    pub fn reset_circuits(&self, matching: Option<&str>) -> usize {
        let mut reset: Vec<&str> = Vec::new();
        let groups = self.inner.groups.all();
        for g in &groups {
            for d in g.group.deployments() {
                let id = d.health.id.as_str();
                if matching.is_none_or(|m| m == id || m == d.id || m == g.name)
                    && !reset.contains(&id)
                {
                    d.health.breaker.reset();
                    reset.push(id);
                }
            }
        }
        reset.len()
    }

    /// How many groups the client keeps state for (configured, and direct names in use).
    pub fn group_count(&self) -> usize {
        self.inner.groups.len()
    }
}

/// Wait for a stream's first item before calling the attempt a success, so an upstream that
/// answers 200 and then fails or stalls before its first event is retried or failed over like
/// any other failure: nothing has reached the client yet.
pub(crate) async fn with_first_item<T: Send + 'static>(
    mut up: crate::provider::UpstreamStream<T>,
    provider: &str,
) -> Result<crate::provider::UpstreamStream<T>> {
    match up.stream.next().await {
        Some(Ok(first)) => {
            up.stream = futures::stream::once(async move { Ok(first) })
                .chain(up.stream)
                .boxed();
            Ok(up)
        }
        Some(Err(e)) => Err(e),
        None => Err(Error::StreamInterrupted {
            provider: provider.to_owned(),
            message: "the stream ended before its first event".into(),
        }),
    }
}

/// End a stream with a timeout error if it runs past the request's deadline.
fn bound_by_deadline<T: Send + 'static>(
    stream: BoxStream<'static, Result<T>>,
    route: &Route,
    started: Instant,
    deadline: Instant,
) -> BoxStream<'static, Result<T>> {
    let expired = Error::Timeout {
        provider: route.provider.clone(),
        phase: crate::error::TimeoutPhase::Total,
        after: deadline.saturating_duration_since(started),
    };
    let timer = tokio::time::sleep_until(deadline);
    futures::stream::unfold(
        (stream, Box::pin(timer), Some(expired)),
        |(mut stream, mut timer, mut expired)| async move {
            expired.as_ref()?;
            tokio::select! {
                item = stream.next() => {
                    let item = item?;
                    Some((item, (stream, timer, expired)))
                }
                () = &mut timer => {
                    let e = expired.take()?;
                    Some((Err(e), (stream, timer, None)))
                }
            }
        },
    )
    .boxed()
}

/// Checks every provider needs; the rest is the upstream's business.
fn validate_chat(req: &ChatRequest) -> Result<()> {
    if req.messages.is_empty() {
        return Err(Error::invalid_param(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == weir_types::chat::Role::Tool && m.tool_call_id.is_none() {
            return Err(Error::invalid_param(
                &format!("messages[{i}].tool_call_id"),
                format!("messages[{i}] has role `tool` but no `tool_call_id`"),
            ));
        }
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Error::invalid_param(
            "temperature",
            format!("temperature {t} is outside 0..=2"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
