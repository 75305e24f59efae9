//! The configuration file as written: serde structs, every field optional, unknown keys refused.
//!
//! Nothing here is validated beyond its type; [`super::load`] turns it into [`super::Config`].
//! Durations and sizes stay strings here so that a bad value is reported with its key path
//! by the validation phase instead of failing the whole parse.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pricing::ModelPrice;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub defaults: RawDefaults,
    pub providers: BTreeMap<String, RawProvider>,
    /// Aliases (`fast: openai/gpt-4o-mini`) and deployment groups.
    pub models: BTreeMap<String, RawModel>,
    pub retry: RawRetry,
    pub circuit_breaker: RawBreaker,
    pub cache: RawCache,
    pub pricing: BTreeMap<String, ModelPrice>,
    pub mock: RawMock,
    /// Where gateway state (keys) lives.
    pub store: RawStore,
    pub limits: RawInboundLimits,
    pub redis: Option<RawRedis>,
    pub budgets: Option<RawBudgets>,
    /// The usage ledger's retention and roll-up.
    pub ledger: RawLedger,
    /// Trace export.
    pub telemetry: RawTelemetry,
}

/// `telemetry:`: trace export (`otlp`), the service name and content capture.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    pub otlp: RawOtlp,
    pub service_name: Option<String>,
    pub capture_content: bool,
}

/// `telemetry.otlp:`: the collector's OTLP/HTTP traces URL, the export timeout and queue.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlp {
    pub endpoint: Option<String>,
    pub timeout: Option<String>,
    pub queue_size: Option<usize>,
}

/// `budgets:`: a list of budget specs, or a map of them by id that may also hold the
/// settings `on_store_error` and `store_timeout`. Each spec stays a JSON value here, so the
/// validation phase reports a bad one with its own path and carries on with the rest.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawBudgets {
    List(Vec<serde_json::Value>),
    Map(BTreeMap<String, serde_json::Value>),
}

/// `ledger:`: the usage ledger's retention and roll-up, as durations (`90d`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLedger {
    pub retention: Option<String>,
    pub roll_up_after: Option<String>,
    pub sweep_every: Option<String>,
}

/// `limits:`: inbound rate limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInboundLimits {
    pub per_key: RawRate,
    pub per_user: RawRate,
    pub per_team: RawRate,
    pub per_ip: RawRate,
    /// `allow` or `deny`.
    pub on_store_error: Option<String>,
    pub store_timeout: Option<String>,
}

/// Requests and tokens per minute.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRate {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// `redis:`: the Redis gateway instances share state through.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    /// Required unless `WEIR_REDIS_URL` is set.
    pub url: Option<String>,
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub api_keys: Vec<String>,
    /// Bytes, or a size such as `4MiB`.
    pub body_limit: Option<RawSize>,
    pub shutdown_grace: Option<String>,
    pub log_bodies: Option<bool>,
    /// Guards `/admin/*` and the cache's admin routes.
    pub admin_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub sqlite: Option<RawStoreSqlite>,
    pub postgres: Option<RawPostgres>,
    /// Where the usage ledger's spool lives.
    pub spool_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreSqlite {
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    pub url: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDefaults {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub force_mock: Option<bool>,
    pub max_tokens: Option<u32>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    /// `openai`, `anthropic` or `mock`; inferred from well-known provider names.
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_keys: Vec<RawKey>,
    /// Default limits of every key of this provider (a key's own `limits` win).
    pub limits: RawLimits,
    pub pool: RawPool,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub anthropic_version: Option<String>,
    pub timeouts: RawTimeouts,
    pub models: Vec<String>,
}

/// A key: the secret alone, or with a label and its upstream limits.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawKey {
    Secret(String),
    Full(RawKeyFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyFull {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub requests_per_minute: Option<u32>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPool {
    pub acquire_timeout: Option<String>,
}

/// A model entry: an alias to one `provider/model`, or a group of deployments.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawModel {
    Alias(String),
    Group(RawGroup),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGroup {
    pub strategy: Option<String>,
    pub deployments: Vec<RawDeployment>,
    pub fallbacks: Vec<String>,
    pub context_window_fallbacks: Vec<String>,
    pub content_policy_fallbacks: Vec<String>,
    pub hedge: Option<RawHedge>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDeployment {
    Model(String),
    Full(RawDeploymentFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploymentFull {
    pub model: String,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHedge {
    /// A duration (`300ms`) or `p95`: the deployment's observed 95th percentile time to
    /// first byte.
    pub after: Option<String>,
    /// Lower bound of the delay when `after: p95` (so a fast deployment is not hedged at once).
    pub min: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    pub enabled: Option<bool>,
    pub consecutive_failures: Option<u32>,
    pub failure_ratio: Option<f64>,
    pub window: Option<String>,
    pub min_requests: Option<u32>,
    pub cooldown: Option<String>,
    pub max_cooldown: Option<String>,
    pub half_open_probes: Option<u32>,
    pub success_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub total: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub strategy: Option<String>,
    pub max_retries: Option<u32>,
    pub base_delay: Option<String>,
    pub factor: Option<f64>,
    pub max_delay: Option<String>,
    /// HTTP statuses worth another try.
    pub retry_on: Option<Vec<u16>>,
    pub budget: RawBudget,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBudget {
    /// Retries (and hedges) allowed as a fraction of requests, e.g. 0.2.
    pub ratio: Option<f64>,
    /// Retries per second always allowed, whatever the ratio.
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMock {
    pub latency: Option<String>,
    pub time_to_first_token: Option<String>,
    pub inter_token_delay: Option<String>,
    pub lorem_tokens: Option<u32>,
    pub faults: RawFaults,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFaults {
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub retry_after: Option<String>,
    pub hang: Option<bool>,
    pub cut_stream_after: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub ttl: Option<String>,
    /// Also cache requests that sample (temperature > 0 or unset).
    pub cache_sampled: Option<bool>,
    /// A namespace per gateway key.
    pub per_tenant: Option<bool>,
    pub memory: RawMemoryCache,
    pub sqlite: Option<RawSqliteCache>,
    pub redis: Option<RawRedisCache>,
    pub cleanup_interval: Option<String>,
    pub semantic: Option<RawSemanticCache>,
    /// Delay between replayed chunks of a cached stream.
    pub replay_pace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMemoryCache {
    pub enabled: Option<bool>,
    pub max_bytes: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSqliteCache {
    pub path: String,
    #[serde(default)]
    pub max_bytes: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisCache {
    pub url: String,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemanticCache {
    /// The embeddings model (`provider/model` or a named model).
    pub model: String,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub max_entries: Option<usize>,
}
