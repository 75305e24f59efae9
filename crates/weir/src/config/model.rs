//! The validated configuration: what the rest of weir reads.
//!
//! Produced from the raw file form by [`super::load`]; every field here has been checked, URLs
//! parsed and secrets wrapped, so consumers never re-validate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::pricing::PricingTable;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub defaults: Defaults,
    /// Every configured provider, in file order; `mock` is always present.
    pub providers: Vec<ProviderConfig>,
    /// Named models: an alias (a group of one deployment) or a group of deployments.
    pub groups: BTreeMap<String, GroupConfig>,
    pub retry: crate::retry::RetryPolicy,
    pub breaker: crate::breaker::BreakerConfig,
    pub cache: CacheConfig,
    pub pricing: PricingTable,
    pub mock: MockConfig,
    /// Inbound rate limits per gateway key, user, team and client address.
    pub limits: crate::limits::LimitsConfig,
    /// Shared state for several gateway instances (rate limits and budgets live here when
    /// it is set).
    pub redis: Option<RedisConfig>,
    /// Spend budgets (`budgets:`, and `LLM_DAILY_BUDGET` / `LLM_MONTHLY_BUDGET`).
    pub budgets: crate::budgets::BudgetsConfig,
    pub store: StoreConfig,
    /// The usage ledger's retention and roll-up (`ledger:`).
    pub ledger: super::LedgerConfig,
    /// Trace export (`telemetry:`).
    pub telemetry: super::TelemetryConfig,
}

/// The Redis that gateway instances share state through (`redis:`, or `WEIR_REDIS_URL`).
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`, possibly with a password: never shown.
    pub url: SecretString,
    /// Every key weir writes starts with `{prefix}:`.
    pub prefix: String,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"[redacted]")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Where the gateway keeps its state (gateway keys): embedded SQLite for one instance, or
/// Postgres shared by every replica. Neither set: the embedding program chooses (`weir serve`
/// uses a file in its data directory), or there is no store.
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// `store.sqlite.path`.
    pub sqlite: Option<std::path::PathBuf>,
    /// `store.postgres.url` (env `WEIR_POSTGRES_URL`): wins over `sqlite`.
    pub postgres: Option<SecretString>,
    /// `store.spool_dir`: where calls wait, durably, for the ledger writer. Default: a
    /// `spool` directory beside the SQLite file; with Postgres, set it (each replica its own).
    pub spool_dir: Option<std::path::PathBuf>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("sqlite", &self.sqlite)
            .field("postgres", &self.postgres.as_ref().map(|_| "[redacted]"))
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// The gateway's own settings (used by `weir serve`).
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Gateway keys clients must present. Empty means no auth, loopback only.
    pub api_keys: Vec<SecretString>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long in-flight requests get to finish after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Log request and response bodies at debug level. Off by default: bodies hold prompts.
    pub log_bodies: bool,
    /// The key that guards `/admin/*` and the cache's admin routes (env `WEIR_ADMIN_KEY`).
    /// Without one, those routes answer only to loopback clients.
    pub admin_key: Option<SecretString>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("body_limit", &self.body_limit)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("log_bodies", &self.log_bodies)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Defaults applied to every request.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Used when a request names no model (the CLI without `--model`).
    pub model: String,
    /// Provider assumed for a model name without a `provider/` prefix (`LLM_PROVIDER`).
    pub provider: Option<String>,
    /// Send every request to the mock provider (LLM_FORCE_MOCK, `--mock`).
    pub force_mock: bool,
    /// `max_tokens` for upstreams that require one (Anthropic) when the request has none.
    pub max_tokens: u32,
    /// Whole-request deadline, retries included.
    pub request_timeout: Duration,
}

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI and any OpenAI-compatible server (OpenRouter, vLLM, Ollama, llama.cpp, LM Studio).
    OpenAi,
    Anthropic,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
        }
    }
}

/// One upstream API key.
#[derive(Clone)]
pub struct ApiKey {
    /// A stable, non-secret label (`openai#0` or the configured name), used in status and logs.
    pub id: String,
    pub secret: SecretString,
    /// The key's upstream limits as configured (learned from headers at run time otherwise).
    pub limits: crate::pool::KeyLimits,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Timeouts of one upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// From sending the request to the response headers (and, for streams, the first event).
    pub first_byte: Duration,
    /// The whole call, body included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

/// One configured provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The name models are prefixed with: `openai` in `openai/gpt-4o`.
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL including the version path: `https://api.openai.com/v1`,
    /// `https://api.anthropic.com/v1`, `http://localhost:11434/v1`.
    pub base_url: Url,
    /// Keys used in turn; may be empty for local servers that need none.
    pub keys: Vec<ApiKey>,
    /// Extra headers on every request (OpenRouter's `HTTP-Referer` and `X-Title`).
    pub headers: Vec<(String, String)>,
    /// OpenAI `OpenAI-Organization`.
    pub organization: Option<String>,
    /// OpenAI `OpenAI-Project`.
    pub project: Option<String>,
    /// Anthropic `anthropic-version`.
    pub anthropic_version: String,
    pub timeouts: Timeouts,
    /// Models advertised by `/v1/models` for this provider (upstream names, without prefix).
    pub models: Vec<String>,
    /// How requests wait for a key with capacity.
    pub pool: crate::pool::PoolConfig,
}

/// A named model served by one or more deployments.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub strategy: crate::router::Strategy,
    pub deployments: Vec<DeploymentConfig>,
    /// Models tried, in order, when every deployment failed.
    pub fallbacks: Vec<String>,
    /// Models tried when the prompt does not fit the context window.
    pub context_window_fallbacks: Vec<String>,
    /// Models tried when the upstream refused on content policy.
    pub content_policy_fallbacks: Vec<String>,
    pub hedge: Option<HedgeConfig>,
}

impl GroupConfig {
    /// An alias: one deployment, default strategy, no fallbacks.
    pub fn alias(provider: &str, upstream_model: &str) -> Self {
        Self {
            strategy: crate::router::Strategy::default(),
            deployments: vec![DeploymentConfig {
                provider: provider.to_owned(),
                upstream_model: upstream_model.to_owned(),
                weight: 1,
                priority: 0,
            }],
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            hedge: None,
        }
    }

    /// `provider/model` of the first deployment, for listings.
    pub fn primary(&self) -> Option<&DeploymentConfig> {
        self.deployments.first()
    }
}

/// One way to serve a group's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentConfig {
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
}

/// When to send a second attempt to another deployment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeConfig {
    /// After a fixed delay without a first byte.
    After(Duration),
    /// After the first deployment's observed p95 time to first byte, at least `min`.
    P95 { min: Duration },
}

/// Response caching.
///
/// On by default for deterministic requests only: a request that samples (temperature above
/// 0, or unset, which providers treat as 1) asked for variety, so it is neither served from nor
/// written to the cache unless `cache_sampled` is on.
#[derive(Clone)]
pub struct CacheConfig {
    /// The global switch (LLM_CACHE_ENABLED).
    pub enabled: bool,
    /// Default time to live (LLM_CACHE_TTL, seconds); `x-weir-cache-ttl` overrides per request.
    pub ttl: Duration,
    pub cache_sampled: bool,
    /// A separate namespace per gateway key, so tenants never read each other's entries.
    pub per_tenant: bool,
    /// L1 size in bytes; `None` = no memory tier.
    pub memory_bytes: Option<u64>,
    /// L2 on SQLite (the embedded choice).
    pub sqlite: Option<(std::path::PathBuf, u64)>,
    /// L2 on Redis, shared by gateway instances (wins over SQLite when both are set).
    pub redis: Option<(SecretString, String)>,
    pub cleanup_interval: Duration,
    pub semantic: Option<SemanticCacheConfig>,
    pub replay_pace: Option<Duration>,
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfig")
            .field("enabled", &self.enabled)
            .field("ttl", &self.ttl)
            .field("cache_sampled", &self.cache_sampled)
            .field("per_tenant", &self.per_tenant)
            .field("memory_bytes", &self.memory_bytes)
            .field("sqlite", &self.sqlite)
            .field(
                "redis",
                &self
                    .redis
                    .as_ref()
                    .map(|(_, prefix)| ("[url redacted]", prefix)),
            )
            .field("semantic", &self.semantic)
            .finish_non_exhaustive()
    }
}

/// The opt-in semantic cache.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticCacheConfig {
    pub model: String,
    pub threshold: f32,
    pub max_entries: usize,
}

/// The mock provider's behaviour. Per-request overrides come in the request's `mock` field.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Delay before a non-streamed answer.
    pub latency: Duration,
    /// Delay before the first streamed chunk.
    pub time_to_first_token: Duration,
    /// Delay between streamed chunks.
    pub inter_token_delay: Duration,
    /// Tokens `mock/lorem` produces when the request sets no `max_tokens`.
    pub lorem_tokens: u32,
    /// Injected faults.
    pub faults: MockFaults,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            time_to_first_token: Duration::ZERO,
            inter_token_delay: Duration::ZERO,
            lorem_tokens: 32,
            faults: MockFaults::default(),
        }
    }
}

/// Faults the mock injects, for testing weir's resilience.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MockFaults {
    /// Fraction of calls (0.0..=1.0) that fail with `error_status`.
    pub error_rate: f64,
    /// The status of injected errors (default 500).
    pub error_status: u16,
    /// `Retry-After` of injected errors.
    pub retry_after: Option<Duration>,
    /// Never answer (until the caller's timeout fires).
    pub hang: bool,
    /// Cut streams after this many chunks with an interruption error.
    pub cut_stream_after: Option<u32>,
}
