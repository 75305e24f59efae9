//! Validation of `limits:` (inbound rate limits) and `redis:` (the state gateway instances
//! share, with `WEIR_REDIS_URL` winning over the file's URL).

use secrecy::SecretString;

use super::model::RedisConfig;
use super::raw::{RawConfig, RawRate};
use super::validate::Checker;
use crate::limits::{LimitsConfig, OnStoreError, RateLimit};

/// The key prefix when `redis.prefix` is not set.
const DEFAULT_PREFIX: &str = "weir";

pub(super) fn limits(c: &mut Checker<'_>, raw: &RawConfig) -> LimitsConfig {
    let r = &raw.limits;
    let d = LimitsConfig::default();
    let on_store_error = match r.on_store_error.as_deref().map(str::trim) {
        None | Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => {
            c.problem(
                "limits.on_store_error",
                format!("`{other}` is not one of allow, deny"),
            );
            d.on_store_error
        }
    };
    let store_timeout = c.duration(
        "limits.store_timeout",
        r.store_timeout.as_deref(),
        d.store_timeout,
    );
    if store_timeout.is_zero() {
        c.problem(
            "limits.store_timeout",
            "must be longer than zero; write e.g. `250ms`",
        );
    }
    LimitsConfig {
        per_key: rate(c, "limits.per_key", r.per_key),
        per_user: rate(c, "limits.per_user", r.per_user),
        per_team: rate(c, "limits.per_team", r.per_team),
        per_ip: rate(c, "limits.per_ip", r.per_ip),
        on_store_error,
        store_timeout: if store_timeout.is_zero() {
            d.store_timeout
        } else {
            store_timeout
        },
    }
}

fn rate(c: &mut Checker<'_>, path: &str, raw: RawRate) -> RateLimit {
    let mut at_least_one = |field: &str, value: Option<u64>| match value {
        Some(0) => {
            c.problem(
                format!("{path}.{field}"),
                "must be at least 1; leave it out for no limit",
            );
            None
        }
        v => v,
    };
    RateLimit {
        rpm: at_least_one("rpm", raw.rpm),
        tpm: at_least_one("tpm", raw.tpm),
    }
}

pub(super) fn redis(c: &mut Checker<'_>, raw: &RawConfig) -> Option<RedisConfig> {
    let from_env = c.env.var("WEIR_REDIS_URL").filter(|u| !u.trim().is_empty());
    let (url, path) = match (from_env, raw.redis.as_ref().and_then(|r| r.url.clone())) {
        (Some(url), _) => (url, "env WEIR_REDIS_URL"),
        (None, Some(url)) => (url, "redis.url"),
        (None, None) => {
            if raw.redis.is_some() {
                c.problem(
                    "redis.url",
                    "missing: set the Redis URL (redis://host:6379/) or WEIR_REDIS_URL",
                );
            }
            return None;
        }
    };
    let url = url.trim().to_owned();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        // The URL may hold a password: never repeat it.
        c.problem(path, "must start with redis:// or rediss://");
        return None;
    }
    let prefix = raw
        .redis
        .as_ref()
        .and_then(|r| r.prefix.clone())
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if prefix.is_empty() || prefix.chars().any(char::is_whitespace) {
        c.problem("redis.prefix", "must be non-empty, with no spaces");
        return None;
    }
    Some(RedisConfig {
        url: SecretString::from(url),
        prefix,
    })
}
