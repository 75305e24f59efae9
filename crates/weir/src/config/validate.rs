//! Phase two of loading: raw file values plus environment -> validated [`Config`].
//!
//! Every check pushes a [`Problem`] and carries on with a default, so the user sees all
//! problems at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::model::*;
use super::raw::{RawConfig, RawKey, RawLimits, RawProvider, RawSize};
use super::{Env, Problem};
use crate::pool::{KeyLimits, PoolConfig};
use crate::pricing::PricingTable;

/// The documented default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4100";
/// The default request body limit: 8 MiB, room for a few images as data URIs.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// `anthropic-version` sent when the config sets none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Providers that switch on from the environment: (name, key var, base URL var, default URL).
const ENV_PROVIDERS: &[(&str, &str, &str, &str)] = &[
    (
        "openai",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
    ),
    (
        "anthropic",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "https://api.anthropic.com/v1",
    ),
    (
        "openrouter",
        "OPENROUTER_API_KEY",
        "OPENROUTER_BASE_URL",
        "https://openrouter.ai/api/v1",
    ),
];

pub(super) struct Checker<'a> {
    problems: Vec<Problem>,
    pub(super) env: &'a dyn Env,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => {
                match humantime::parse_duration(text.trim()) {
                    Ok(d) => d,
                    Err(e) => {
                        self.problem(path, format!("`{text}` is not a duration ({e}); write e.g. `250ms`, `30s` or `2m`"));
                        default
                    }
                }
            }
        }
    }

    pub(super) fn env_parse<T: FromStr>(&mut self, name: &str, what: &str) -> Option<T> {
        let text = self.env.var(name)?;
        match text.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(format!("env {name}"), format!("`{text}` is not {what}"));
                None
            }
        }
    }

    fn env_bool(&mut self, name: &str) -> Option<bool> {
        let text = self.env.var(name)?;
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" | "" => Some(false),
            _ => {
                self.problem(
                    format!("env {name}"),
                    format!("`{text}` is not a boolean (use 1/0 or true/false)"),
                );
                None
            }
        }
    }
}

pub(super) fn validate(raw: RawConfig, env: &dyn Env) -> Result<Config, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
        env,
    };

    let server = server(&mut c, &raw);
    let providers = providers(&mut c, &raw.providers);
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();

    let groups = super::groups::groups(&mut c, &raw.models, &names);

    let default_provider = c.env.var("LLM_PROVIDER").or(raw.defaults.provider.clone());
    if let Some(p) = &default_provider
        && !names.contains(&p.as_str())
    {
        c.problem(
            "defaults.provider",
            format!(
                "provider `{p}` is not configured (known: {})",
                names.join(", ")
            ),
        );
    }
    let force_mock = c
        .env_bool("LLM_FORCE_MOCK")
        .or(raw.defaults.force_mock)
        .unwrap_or(false);
    let defaults = Defaults {
        model: c
            .env
            .var("WEIR_DEFAULT_MODEL")
            .or(raw.defaults.model.clone())
            .unwrap_or_else(|| "mock/echo".to_owned()),
        provider: default_provider,
        force_mock,
        max_tokens: raw.defaults.max_tokens.unwrap_or(4096),
        request_timeout: c.duration(
            "defaults.request_timeout",
            raw.defaults.request_timeout.as_deref(),
            Duration::from_secs(600),
        ),
    };
    if defaults.max_tokens == 0 {
        c.problem("defaults.max_tokens", "must be at least 1");
    }

    let retry = super::groups::retry(&mut c, &raw.retry);
    let breaker = super::groups::breaker(&mut c, &raw.circuit_breaker);

    let mut pricing = PricingTable::bundled();
    for (model, price) in &raw.pricing {
        if let Some(problem) = price.problem() {
            c.problem(format!("pricing.{model}"), problem);
            continue;
        }
        pricing.set(model.clone(), *price);
    }

    let mock = mock(&mut c, &raw);
    let cache = cache(&mut c, &raw);
    let store = store(&mut c, &raw);
    let limits = super::inbound::limits(&mut c, &raw);
    let redis = super::inbound::redis(&mut c, &raw);
    let budgets = super::budgets::budgets(&mut c, &raw);
    let ledger = super::ledger::ledger(&mut c, &raw.ledger);
    let telemetry = super::telemetry::telemetry(&mut c, &raw.telemetry);

    if c.problems.is_empty() {
        Ok(Config {
            server,
            defaults,
            providers,
            groups,
            retry,
            breaker,
            cache,
            pricing,
            mock,
            store,
            limits,
            redis,
            budgets,
            ledger,
            telemetry,
        })
    } else {
        Err(c.problems)
    }
}

fn server(c: &mut Checker<'_>, raw: &RawConfig) -> ServerConfig {
    let listen_text = c
        .env
        .var("WEIR_LISTEN")
        .or(raw.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            c.problem(
                "server.listen",
                format!("`{listen_text}` is not an address such as 127.0.0.1:4100"),
            );
            SocketAddr::from(([127, 0, 0, 1], 4100))
        }
    };
    let mut keys: Vec<String> = raw.server.api_keys.clone();
    if let Some(list) = c.env.var("WEIR_API_KEYS") {
        keys = list.split(',').map(|k| k.trim().to_owned()).collect();
    }
    keys.retain(|k| !k.is_empty());
    let body_limit = match &raw.server.body_limit {
        None => DEFAULT_BODY_LIMIT,
        Some(RawSize::Bytes(b)) => usize::try_from(*b).unwrap_or(usize::MAX),
        Some(RawSize::Text(t)) => parse_size(t).unwrap_or_else(|| {
            c.problem(
                "server.body_limit",
                format!("`{t}` is not a size; write e.g. `4MiB`, `512KiB` or a byte count"),
            );
            DEFAULT_BODY_LIMIT
        }),
    };
    if body_limit < 1024 {
        c.problem("server.body_limit", "must be at least 1KiB");
    }
    let log_bodies = c
        .env_bool("WEIR_LOG_BODIES")
        .or(raw.server.log_bodies)
        .unwrap_or(false);
    ServerConfig {
        listen,
        api_keys: keys.into_iter().map(SecretString::from).collect(),
        body_limit,
        shutdown_grace: c.duration(
            "server.shutdown_grace",
            raw.server.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        ),
        log_bodies,
        admin_key: c
            .env
            .var("WEIR_ADMIN_KEY")
            .or(raw.server.admin_key.clone())
            .filter(|k| !k.trim().is_empty())
            .map(SecretString::from),
    }
}

fn store(c: &mut Checker<'_>, raw: &RawConfig) -> StoreConfig {
    let postgres = c
        .env
        .var("WEIR_POSTGRES_URL")
        .filter(|u| !u.is_empty())
        .or_else(|| raw.store.postgres.as_ref().map(|p| p.url.clone()));
    if let Some(url) = &postgres
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        c.problem(
            "store.postgres.url",
            "must start with postgres:// or postgresql://",
        );
    }
    let sqlite = raw.store.sqlite.as_ref().map(|s| s.path.clone());
    if sqlite.as_deref().is_some_and(str::is_empty) {
        c.problem("store.sqlite.path", "must not be empty");
    }
    StoreConfig {
        sqlite: sqlite.map(std::path::PathBuf::from),
        postgres: postgres.map(SecretString::from),
        spool_dir: raw.store.spool_dir.as_ref().map(std::path::PathBuf::from),
    }
}

/// `4MiB`, `512KiB`, `4MB`, `1000`.
fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1_000_000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn providers(c: &mut Checker<'_>, raw: &BTreeMap<String, RawProvider>) -> Vec<ProviderConfig> {
    let mut out = Vec::new();
    // Mock first: it is always there, and a file may tune it under `providers.mock`.
    if !raw.contains_key("mock") {
        out.push(mock_provider());
    }
    for (name, p) in raw {
        if let Some(cfg) = provider(c, name, p) {
            out.push(cfg);
        }
    }
    for (name, key_var, url_var, default_url) in ENV_PROVIDERS {
        if raw.contains_key(*name) {
            continue;
        }
        let Some(key) = c.env.var(key_var).filter(|k| !k.trim().is_empty()) else {
            continue;
        };
        let raw = RawProvider {
            api_key: Some(key),
            base_url: Some(env_base_url(c.env, name, url_var, default_url)),
            ..RawProvider::default()
        };
        if let Some(cfg) = provider(c, name, &raw) {
            out.push(cfg);
        }
    }
    out
}

/// The base URL from `*_BASE_URL`, normalised as the official SDKs read it: Anthropic's SDK
/// takes the host without `/v1`, OpenAI's includes it.
fn env_base_url(env: &dyn Env, name: &str, var: &str, default: &str) -> String {
    match env.var(var).filter(|v| !v.trim().is_empty()) {
        None => default.to_owned(),
        Some(url) => {
            let url = url.trim().trim_end_matches('/').to_owned();
            if name == "anthropic" && !url.ends_with("/v1") {
                format!("{url}/v1")
            } else {
                url
            }
        }
    }
}

fn mock_provider() -> ProviderConfig {
    ProviderConfig {
        name: "mock".into(),
        kind: ProviderKind::Mock,
        base_url: mock_url(),
        keys: Vec::new(),
        headers: Vec::new(),
        organization: None,
        project: None,
        anthropic_version: DEFAULT_ANTHROPIC_VERSION.into(),
        timeouts: Timeouts::default(),
        models: vec!["echo".into(), "lorem".into()],
        pool: PoolConfig::default(),
    }
}

#[expect(clippy::expect_used, reason = "a constant URL that always parses")]
fn mock_url() -> Url {
    Url::parse("mock://local").expect("constant URL")
}

fn provider(c: &mut Checker<'_>, name: &str, p: &RawProvider) -> Option<ProviderConfig> {
    let path = format!("providers.{name}");
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        c.problem(
            &path,
            "a provider name must be non-empty, with no `/` or spaces",
        );
        return None;
    }
    let kind = match p.kind.as_deref() {
        Some("openai") => ProviderKind::OpenAi,
        Some("anthropic") => ProviderKind::Anthropic,
        Some("mock") => ProviderKind::Mock,
        Some(other) => {
            c.problem(
                format!("{path}.kind"),
                format!("`{other}` is not one of openai, anthropic, mock"),
            );
            return None;
        }
        None => {
            match name {
                "openai" | "openrouter" => ProviderKind::OpenAi,
                "anthropic" => ProviderKind::Anthropic,
                "mock" => ProviderKind::Mock,
                _ => {
                    c.problem(format!("{path}.kind"), "missing: set `kind: openai` for an OpenAI-compatible server, or `anthropic`");
                    return None;
                }
            }
        }
    };
    let default_url = ENV_PROVIDERS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|(n, _, var, url)| env_base_url(c.env, n, var, url));
    let url_text = match (&p.base_url, default_url, kind) {
        (Some(u), _, _) => u.clone(),
        (None, Some(u), _) => u,
        (None, None, ProviderKind::Mock) => "mock://local".to_owned(),
        (None, None, _) => {
            c.problem(
                format!("{path}.base_url"),
                "missing: set the server's base URL, e.g. http://localhost:8000/v1",
            );
            return None;
        }
    };
    let base_url = match Url::parse(url_text.trim_end_matches('/')) {
        Ok(u) if kind == ProviderKind::Mock || matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => {
            c.problem(
                format!("{path}.base_url"),
                format!("scheme `{}` is not http or https", u.scheme()),
            );
            return None;
        }
        Err(e) => {
            c.problem(
                format!("{path}.base_url"),
                format!("`{url_text}` is not a URL: {e}"),
            );
            return None;
        }
    };
    // (secret, label, limits); provider-level limits apply where a key sets none.
    let default_limits = limits(&p.limits);
    let mut secrets: Vec<(String, Option<String>, KeyLimits)> = p
        .api_key
        .iter()
        .map(|k| (k.clone(), None, default_limits))
        .collect();
    for k in &p.api_keys {
        match k {
            RawKey::Secret(s) => secrets.push((s.clone(), None, default_limits)),
            RawKey::Full(f) => {
                let mut l = limits(&f.limits);
                l.requests_per_minute =
                    l.requests_per_minute.or(default_limits.requests_per_minute);
                l.input_tokens_per_minute = l
                    .input_tokens_per_minute
                    .or(default_limits.input_tokens_per_minute);
                l.output_tokens_per_minute = l
                    .output_tokens_per_minute
                    .or(default_limits.output_tokens_per_minute);
                secrets.push((f.key.clone(), f.name.clone(), l));
            }
        }
    }
    secrets.retain(|(k, ..)| !k.trim().is_empty());
    if kind == ProviderKind::OpenAi
        && secrets.is_empty()
        && name == "openai"
        && let Some(k) = c.env.var("OPENAI_API_KEY").filter(|k| !k.is_empty())
    {
        secrets.push((k, None, default_limits));
    }
    if kind == ProviderKind::Anthropic && secrets.is_empty() {
        if let Some(k) = c.env.var("ANTHROPIC_API_KEY").filter(|k| !k.is_empty()) {
            secrets.push((k, None, default_limits));
        } else {
            c.problem(
                format!("{path}.api_key"),
                "missing: Anthropic needs an API key (set ANTHROPIC_API_KEY or api_key)",
            );
        }
    }
    let keys = secrets
        .into_iter()
        .enumerate()
        .map(|(i, (s, label, limits))| ApiKey {
            id: label.map_or_else(|| format!("{name}#{i}"), |l| format!("{name}#{l}")),
            secret: SecretString::from(s.trim().to_owned()),
            limits,
        })
        .collect();
    let pool = PoolConfig {
        acquire_timeout: c.duration(
            &format!("{path}.pool.acquire_timeout"),
            p.pool.acquire_timeout.as_deref(),
            PoolConfig::default().acquire_timeout,
        ),
    };
    let mut headers = Vec::new();
    for (k, v) in &p.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || http::HeaderValue::from_str(v).is_err()
        {
            c.problem(
                format!("{path}.headers.{k}"),
                "not a valid HTTP header name and value",
            );
        } else {
            headers.push((k.clone(), v.clone()));
        }
    }
    let d = Timeouts::default();
    let timeouts = Timeouts {
        connect: c.duration(
            &format!("{path}.timeouts.connect"),
            p.timeouts.connect.as_deref(),
            d.connect,
        ),
        first_byte: c.duration(
            &format!("{path}.timeouts.first_byte"),
            p.timeouts.first_byte.as_deref(),
            d.first_byte,
        ),
        total: c.duration(
            &format!("{path}.timeouts.total"),
            p.timeouts.total.as_deref(),
            d.total,
        ),
    };
    let models = if p.models.is_empty() && kind == ProviderKind::Mock {
        vec!["echo".into(), "lorem".into()]
    } else {
        p.models.clone()
    };
    Some(ProviderConfig {
        name: name.to_owned(),
        kind,
        base_url,
        keys,
        headers,
        organization: p.organization.clone(),
        project: p.project.clone(),
        anthropic_version: p
            .anthropic_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_owned()),
        timeouts,
        models,
        pool,
    })
}

fn limits(raw: &RawLimits) -> KeyLimits {
    KeyLimits {
        requests_per_minute: raw.requests_per_minute,
        input_tokens_per_minute: raw.input_tokens_per_minute,
        output_tokens_per_minute: raw.output_tokens_per_minute,
    }
}

fn mock(c: &mut Checker<'_>, raw: &RawConfig) -> MockConfig {
    let m = &raw.mock;
    let d = MockConfig::default();
    let f = &m.faults;
    let error_rate = f.error_rate.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&error_rate) {
        c.problem(
            "mock.faults.error_rate",
            format!("{error_rate} is not between 0 and 1"),
        );
    }
    let error_status = f.error_status.unwrap_or(500);
    if !(400..=599).contains(&error_status) {
        c.problem(
            "mock.faults.error_status",
            format!("{error_status} is not an error status (400-599)"),
        );
    }
    MockConfig {
        latency: c.duration("mock.latency", m.latency.as_deref(), d.latency),
        time_to_first_token: c.duration(
            "mock.time_to_first_token",
            m.time_to_first_token.as_deref(),
            d.time_to_first_token,
        ),
        inter_token_delay: c.duration(
            "mock.inter_token_delay",
            m.inter_token_delay.as_deref(),
            d.inter_token_delay,
        ),
        lorem_tokens: m.lorem_tokens.unwrap_or(d.lorem_tokens),
        faults: MockFaults {
            error_rate,
            error_status,
            retry_after: f
                .retry_after
                .as_deref()
                .map(|t| c.duration("mock.faults.retry_after", Some(t), Duration::ZERO)),
            hang: f.hang.unwrap_or(false),
            cut_stream_after: f.cut_stream_after,
        },
    }
}

fn cache(c: &mut Checker<'_>, raw: &RawConfig) -> CacheConfig {
    let r = &raw.cache;
    let mut enabled = r.enabled.unwrap_or(true);
    if let Some(on) = c.env_bool("LLM_CACHE_ENABLED") {
        enabled = on;
    }
    let mut ttl = c.duration("cache.ttl", r.ttl.as_deref(), Duration::from_secs(3600));
    if let Some(secs) = c.env_parse::<u64>("LLM_CACHE_TTL", "a number of seconds") {
        ttl = Duration::from_secs(secs);
    }
    let size = |c: &mut Checker<'_>, path: &str, v: &Option<RawSize>, default: u64| -> u64 {
        match v {
            None => default,
            Some(RawSize::Bytes(b)) => *b,
            Some(RawSize::Text(t)) => parse_size(t).map_or_else(
                || {
                    c.problem(path, format!("`{t}` is not a size; write e.g. `64MiB`"));
                    default
                },
                |n| n as u64,
            ),
        }
    };
    let memory_bytes = if r.memory.enabled.unwrap_or(true) {
        Some(size(
            c,
            "cache.memory.max_bytes",
            &r.memory.max_bytes,
            64 * 1024 * 1024,
        ))
    } else {
        None
    };
    let sqlite = r.sqlite.as_ref().map(|s| {
        let bytes = size(
            c,
            "cache.sqlite.max_bytes",
            &s.max_bytes,
            1024 * 1024 * 1024,
        );
        (std::path::PathBuf::from(&s.path), bytes)
    });
    let redis = r.redis.as_ref().and_then(|rd| {
        if !(rd.url.starts_with("redis://") || rd.url.starts_with("rediss://")) {
            c.problem("cache.redis.url", "must start with redis:// or rediss://");
            return None;
        }
        Some((
            SecretString::from(rd.url.clone()),
            rd.prefix.clone().unwrap_or_else(|| "weir".to_owned()),
        ))
    });
    let semantic = r.semantic.as_ref().map(|s| {
        let threshold = s.threshold.unwrap_or(0.95);
        if !(threshold > 0.0 && threshold <= 1.0) {
            c.problem("cache.semantic.threshold", "must be in (0, 1]");
        }
        SemanticCacheConfig {
            model: s.model.clone(),
            threshold,
            max_entries: s.max_entries.unwrap_or(10_000),
        }
    });
    CacheConfig {
        enabled,
        ttl,
        cache_sampled: r.cache_sampled.unwrap_or(false),
        per_tenant: r.per_tenant.unwrap_or(true),
        memory_bytes,
        sqlite,
        redis,
        cleanup_interval: c.duration(
            "cache.cleanup_interval",
            r.cleanup_interval.as_deref(),
            Duration::from_secs(60),
        ),
        semantic,
        replay_pace: r
            .replay_pace
            .as_deref()
            .map(|p| c.duration("cache.replay_pace", Some(p), Duration::ZERO)),
    }
}
