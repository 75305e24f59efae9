//! [`Client`]: the one entry point of the library, shared by the gateway and the CLI.
//!
//! A client owns the validated config, a registry of providers (`Arc<dyn Provider>`, one pooled
//! HTTP client each), the per-key rate-limit state last seen, and the counters behind `/status`.
//! Cloning is cheap (an `Arc`).
//!
//! Each call: resolve the model (alias, `provider/model`, default provider) -> pick the next key
//! of the provider -> call it within one deadline (`defaults.request_timeout`), retrying
//! retryable failures with exponential backoff and full jitter, honouring the upstream's
//! Retry-After when it fits the deadline -> price the usage -> count it.
//! Streams are retried only before the first chunk; once a chunk is out, a failure ends the
//! stream with an error item.

mod blocking;
mod keys;
mod messages;
mod retry;
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

pub use blocking::BlockingClient;
pub use keys::KeyStatus;
pub use messages::{MessagesOutcome, MessagesStream};
pub use route::Route;
pub use stats::ModelTotals;
pub use stream::{ChatStream, StreamSummary};

use crate::config::{Config, ProviderKind};
use crate::error::{Error, Result};
use crate::provider::anthropic::AnthropicProvider;
use crate::provider::mock::MockProvider;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{
    CallContext, RateLimitSnapshot, SharedProvider, Upstream, UpstreamMeta, UpstreamStream,
};
use keys::KeyRing;
use stats::Stats;

/// What weir knows about one answered call.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseMeta {
    /// The model name the caller asked for (an alias stays an alias here).
    pub requested_model: String,
    pub provider: String,
    pub upstream_model: String,
    pub request_id: String,
    /// From the call to the complete answer (for streams: to the first chunk).
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Attempts made, 1 when the first succeeded.
    pub attempts: u32,
    pub usage: Option<Usage>,
    /// Dollars, from the pricing table; `None` when the model has no known price.
    pub cost_usd: Option<Decimal>,
    /// The label of the upstream key used (never the key itself).
    pub key_id: Option<String>,
    pub rate_limit: Option<RateLimitSnapshot>,
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
}

/// Embeddings and their metadata.
#[derive(Debug, Clone)]
pub struct EmbeddingsOutcome {
    pub response: EmbeddingsResponse,
    pub meta: ResponseMeta,
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Correlation id, forwarded upstream; generated when absent.
    pub request_id: Option<String>,
    /// Overrides `defaults.request_timeout` for this call.
    pub timeout: Option<Duration>,
}

/// Everything `/status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub uptime_seconds: f64,
    pub models: Vec<ModelTotals>,
    pub keys: Vec<KeyStatus>,
}

/// One provider in the registry.
#[derive(Debug)]
struct Registered {
    provider: SharedProvider,
    keys: KeyRing,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    providers: HashMap<String, Registered>,
    stats: Stats,
    started: std::time::Instant,
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
    inner: Arc<Inner>,
}

/// Builds a [`Client`] from config, optionally with custom providers.
#[derive(Debug)]
pub struct ClientBuilder {
    config: Config,
    custom: Vec<(String, SharedProvider)>,
}

impl ClientBuilder {
    /// Register (or replace) a provider under `name`; models `name/...` go to it.
    pub fn provider(mut self, name: impl Into<String>, provider: SharedProvider) -> Self {
        self.custom.push((name.into(), provider));
        self
    }

    pub fn build(self) -> Result<Client> {
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
                    keys: KeyRing::new(&pc.name, &pc.keys),
                },
            );
        }
        for (name, provider) in self.custom {
            if config.provider(&name).is_none() {
                // Make routing aware of it, as if configured with no keys.
                let mut pc = crate::config::ProviderConfig {
                    name: name.clone(),
                    ..config.providers[0].clone()
                };
                pc.keys.clear();
                pc.models.clear();
                config.providers.push(pc);
            }
            providers.insert(
                name.clone(),
                Registered {
                    provider,
                    keys: KeyRing::new(&name, &[]),
                },
            );
        }
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                providers,
                stats: Stats::default(),
                started: std::time::Instant::now(),
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
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Where a model name would be sent.
    pub fn resolve(&self, model: &str) -> Result<Route> {
        let model = if model.is_empty() {
            &self.inner.config.defaults.model
        } else {
            model
        };
        route::resolve(&self.inner.config, model)
    }

    fn registered(&self, route: &Route) -> Result<&Registered> {
        self.inner
            .providers
            .get(&route.provider)
            .ok_or_else(|| Error::ModelNotFound {
                model: route.qualified(),
                hint: format!("provider `{}` is not configured", route.provider),
            })
    }

    fn context(
        &self,
        route: &Route,
        reg: &Registered,
        opts: &CallOptions,
        deadline: Instant,
    ) -> (CallContext, Option<String>) {
        let key = reg.keys.next();
        let ctx = CallContext {
            upstream_model: route.upstream_model.clone(),
            api_key: key.map(|k| k.secret.clone()),
            request_id: opts.request_id.clone().unwrap_or_default(),
            deadline: Some(deadline),
        };
        (ctx, key.map(|k| k.id.clone()))
    }

    fn deadline(&self, opts: &CallOptions) -> Instant {
        Instant::now()
            + opts
                .timeout
                .unwrap_or(self.inner.config.defaults.request_timeout)
    }

    fn price(&self, route: &Route, usage: Option<&Usage>) -> Option<Decimal> {
        usage.and_then(|u| {
            self.inner
                .config
                .pricing
                .cost(&route.provider, &route.upstream_model, u)
        })
    }

    /// Call the provider until success, a permanent error, no retries left, or the deadline.
    /// Returns the upstream's answer, the attempts made and the label of the key used.
    async fn with_retries<T, F, Fut>(
        &self,
        route: &Route,
        reg: &Registered,
        opts: &CallOptions,
        started: Instant,
        deadline: Instant,
        call: F,
    ) -> Result<(T, u32, Option<String>)>
    where
        T: HasUpstreamMeta,
        F: Fn(CallContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = retry::Backoff::new(self.inner.config.retry);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (ctx, key_id) = self.context(route, reg, opts, deadline);
            let result = match tokio::time::timeout_at(deadline, call(ctx)).await {
                Ok(r) => r,
                Err(_) => Err(deadline_error(route, started, deadline)),
            };
            match result {
                Ok(answer) => {
                    reg.keys
                        .observe(key_id.as_deref(), answer.upstream_meta().rate_limit.clone());
                    return Ok((answer, attempts, key_id));
                }
                Err(e) => {
                    reg.keys.observe_error(key_id.as_deref(), &e);
                    match policy.next_wait(&e, attempts, deadline) {
                        Some(wait) => {
                            tracing::debug!(provider = %route.provider, attempt = attempts, error = %e, ?wait, "retrying");
                            tokio::time::sleep(wait).await;
                        }
                        None => {
                            self.inner.stats.record_error(&route.qualified());
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn meta(
        &self,
        requested_model: String,
        route: &Route,
        opts: &CallOptions,
        started: Instant,
        attempts: u32,
        usage: Option<Usage>,
        key_id: Option<String>,
        rate_limit: Option<RateLimitSnapshot>,
    ) -> ResponseMeta {
        let cost = self.price(route, usage.as_ref());
        ResponseMeta {
            requested_model,
            provider: route.provider.clone(),
            upstream_model: route.upstream_model.clone(),
            request_id: opts.request_id.clone().unwrap_or_default(),
            latency: started.elapsed(),
            attempts,
            usage,
            cost_usd: cost,
            key_id,
            rate_limit,
        }
    }

    /// A complete chat completion.
    pub async fn chat(&self, req: ChatRequest) -> Result<Completion> {
        self.chat_with(req, &CallOptions::default()).await
    }

    /// A complete chat completion with per-call options.
    pub async fn chat_with(&self, mut req: ChatRequest, opts: &CallOptions) -> Result<Completion> {
        validate_chat(&req)?;
        let route = self.resolve(&req.model)?;
        let reg = self.registered(&route)?;
        let requested_model = std::mem::replace(&mut req.model, route.upstream_model.clone());
        req.stream = None;
        req.stream_options = None;
        let started = Instant::now();
        let deadline = self.deadline(opts);
        let req = &req;
        let (up, attempts, key_id) = self
            .with_retries(&route, reg, opts, started, deadline, |ctx| async move {
                reg.provider.chat(req, &ctx).await
            })
            .await?;
        let usage = up.body.usage.clone();
        let meta = self.meta(
            requested_model,
            &route,
            opts,
            started,
            attempts,
            usage,
            key_id,
            up.meta.rate_limit,
        );
        self.inner
            .stats
            .record_success(&route.qualified(), meta.usage.as_ref(), meta.cost_usd);
        Ok(Completion {
            response: up.body,
            meta,
        })
    }

    /// A streamed chat completion. Returns once the upstream has answered, so errors before
    /// the first chunk (after retries) come back as `Err` here.
    pub async fn chat_stream(&self, req: ChatRequest) -> Result<ChatStream> {
        self.chat_stream_with(req, &CallOptions::default()).await
    }

    pub async fn chat_stream_with(
        &self,
        mut req: ChatRequest,
        opts: &CallOptions,
    ) -> Result<ChatStream> {
        validate_chat(&req)?;
        let route = self.resolve(&req.model)?;
        let reg = self.registered(&route)?;
        let requested_model = std::mem::replace(&mut req.model, route.upstream_model.clone());
        let client_wants_usage = req.wants_stream_usage();
        req.stream = Some(true);
        let started = Instant::now();
        let deadline = self.deadline(opts);
        let prompt_estimate = crate::tokens::estimate_prompt_tokens(&req);
        let req = &req;
        let (upstream, attempts, key_id) = self
            .with_retries(&route, reg, opts, started, deadline, |ctx| async move {
                reg.provider.chat_stream(req, &ctx).await
            })
            .await?;
        let meta = self.meta(
            requested_model,
            &route,
            opts,
            started,
            attempts,
            None,
            key_id,
            upstream.meta.rate_limit.clone(),
        );
        let stream = bound_by_deadline(upstream.stream, &route, started, deadline);
        Ok(ChatStream::new(
            stream,
            meta,
            client_wants_usage,
            stream::Accounting {
                client: self.clone(),
                route,
                prompt_estimate,
            },
        ))
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
        self.embed_with(req, &CallOptions::default()).await
    }

    pub async fn embed_with(
        &self,
        mut req: EmbeddingsRequest,
        opts: &CallOptions,
    ) -> Result<EmbeddingsOutcome> {
        let route = self.resolve(&req.model)?;
        let reg = self.registered(&route)?;
        let requested_model = std::mem::replace(&mut req.model, route.upstream_model.clone());
        let started = Instant::now();
        let deadline = self.deadline(opts);
        let req = &req;
        let (up, attempts, key_id) = self
            .with_retries(&route, reg, opts, started, deadline, |ctx| async move {
                reg.provider.embed(req, &ctx).await
            })
            .await?;
        let usage = Usage::new(up.body.usage.prompt_tokens, 0);
        let meta = self.meta(
            requested_model,
            &route,
            opts,
            started,
            attempts,
            Some(usage),
            key_id,
            up.meta.rate_limit,
        );
        self.inner
            .stats
            .record_success(&route.qualified(), meta.usage.as_ref(), meta.cost_usd);
        Ok(EmbeddingsOutcome {
            response: up.body,
            meta,
        })
    }

    /// The configured models (`provider/model` for each provider's `models` list) and aliases.
    /// Offline: this does not ask the upstreams.
    pub fn models(&self) -> Vec<Model> {
        let mut out = Vec::new();
        for pc in &self.inner.config.providers {
            for m in &pc.models {
                out.push(Model::new(format!("{}/{m}", pc.name), pc.name.clone()));
            }
        }
        for (alias, target) in &self.inner.config.aliases {
            let owner = target.split('/').next().unwrap_or_default();
            out.push(Model::new(alias.clone(), owner));
        }
        out
    }

    /// One model by id, if configured (or resolvable).
    pub fn model(&self, id: &str) -> Option<Model> {
        if let Some(m) = self.models().into_iter().find(|m| m.id == id) {
            return Some(m);
        }
        self.resolve(id).ok().map(|r| Model::new(id, r.provider))
    }

    /// Ask one provider which models it offers upstream.
    pub async fn upstream_models(&self, provider: &str) -> Result<Vec<Model>> {
        let route = Route {
            provider: provider.to_owned(),
            upstream_model: String::new(),
        };
        let reg = self.registered(&route)?;
        let deadline = self.deadline(&CallOptions::default());
        let (ctx, _) = self.context(&route, reg, &CallOptions::default(), deadline);
        reg.provider.models(&ctx).await
    }

    /// Uptime, totals per model, and each key's rate-limit state as last seen.
    pub fn status(&self) -> Status {
        let mut keys: Vec<KeyStatus> = self
            .inner
            .providers
            .values()
            .flat_map(|r| r.keys.status())
            .collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        Status {
            uptime_seconds: self.inner.started.elapsed().as_secs_f64(),
            models: self.inner.stats.snapshot(),
            keys,
        }
    }

    pub(crate) fn record_stream_end(
        &self,
        route: &Route,
        usage: Option<&Usage>,
        failed: bool,
    ) -> Option<Decimal> {
        let qualified = route.qualified();
        if failed && usage.is_none() {
            self.inner.stats.record_error(&qualified);
            return None;
        }
        let cost = self.price(route, usage);
        self.inner.stats.record_success(&qualified, usage, cost);
        cost
    }
}

/// Answers that carry what the upstream said besides the body.
trait HasUpstreamMeta {
    fn upstream_meta(&self) -> &UpstreamMeta;
}

impl<T> HasUpstreamMeta for Upstream<T> {
    fn upstream_meta(&self) -> &UpstreamMeta {
        &self.meta
    }
}

impl<T> HasUpstreamMeta for UpstreamStream<T> {
    fn upstream_meta(&self) -> &UpstreamMeta {
        &self.meta
    }
}

/// End a stream with a timeout error if it runs past the request's deadline.
fn bound_by_deadline<T: Send + 'static>(
    stream: BoxStream<'static, Result<T>>,
    route: &Route,
    started: Instant,
    deadline: Instant,
) -> BoxStream<'static, Result<T>> {
    let expired = deadline_error(route, started, deadline);
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

fn deadline_error(route: &Route, started: Instant, deadline: Instant) -> Error {
    Error::Timeout {
        provider: route.provider.clone(),
        phase: crate::error::TimeoutPhase::Total,
        after: deadline.saturating_duration_since(started),
    }
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
