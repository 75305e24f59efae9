//! Validation of `models:` (aliases and deployment groups), `retry:` and `circuit_breaker:`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::{DeploymentConfig, GroupConfig, HedgeConfig};
use super::raw::{RawBreaker, RawDeployment, RawGroup, RawModel, RawRetry};
use super::validate::Checker;
use crate::breaker::BreakerConfig;
use crate::retry::{RetryPolicy, StrategyKind};
use crate::router::Strategy;

/// `provider/model` split, checked against the configured providers.
fn target(
    c: &mut Checker<'_>,
    path: &str,
    text: &str,
    providers: &[&str],
) -> Option<(String, String)> {
    match text.split_once('/') {
        Some((provider, model)) if !model.is_empty() => {
            if providers.contains(&provider) {
                Some((provider.to_owned(), model.to_owned()))
            } else {
                c.problem(
                    path,
                    format!(
                        "provider `{provider}` is not configured (known: {})",
                        providers.join(", ")
                    ),
                );
                None
            }
        }
        _ => {
            c.problem(
                path,
                format!("`{text}` must be `provider/model`, e.g. `openai/gpt-4o-mini`"),
            );
            None
        }
    }
}

fn strategy(c: &mut Checker<'_>, path: &str, text: Option<&str>) -> Strategy {
    let Some(text) = text else {
        return Strategy::default();
    };
    match serde_json::from_value::<Strategy>(serde_json::Value::String(text.to_owned())) {
        Ok(s) => s,
        Err(_) => {
            c.problem(
                path,
                format!(
                    "`{text}` is not a strategy: use weighted, round_robin, least_in_flight, lowest_latency, lowest_cost or priority"
                ),
            );
            Strategy::default()
        }
    }
}

pub(super) fn groups(
    c: &mut Checker<'_>,
    raw: &BTreeMap<String, RawModel>,
    providers: &[&str],
) -> BTreeMap<String, GroupConfig> {
    let mut out = BTreeMap::new();
    for (name, model) in raw {
        let path = format!("models.{name}");
        if let Some((p, _)) = name.split_once('/')
            && providers.contains(&p)
        {
            c.problem(
                &path,
                "a model name must not shadow a `provider/model` name",
            );
            continue;
        }
        let group = match model {
            RawModel::Alias(t) => {
                target(c, &path, t, providers).map(|(p, m)| GroupConfig::alias(&p, &m))
            }
            RawModel::Group(g) => group(c, &path, g, providers),
        };
        if let Some(g) = group {
            out.insert(name.clone(), g);
        }
    }
    // Fallbacks must name something that resolves: a group or a `provider/model`.
    let names: Vec<String> = out.keys().cloned().collect();
    for (name, g) in &out {
        for (field, list) in [
            ("fallbacks", &g.fallbacks),
            ("context_window_fallbacks", &g.context_window_fallbacks),
            ("content_policy_fallbacks", &g.content_policy_fallbacks),
        ] {
            for (i, f) in list.iter().enumerate() {
                let known = names.contains(f)
                    || f.split_once('/')
                        .is_some_and(|(p, m)| !m.is_empty() && providers.contains(&p));
                if !known {
                    c.problem(
                        format!("models.{name}.{field}[{i}]"),
                        format!("`{f}` is neither a configured model nor a `provider/model` of a configured provider"),
                    );
                } else if f == name {
                    c.problem(
                        format!("models.{name}.{field}[{i}]"),
                        "a model cannot fall back to itself",
                    );
                }
            }
        }
    }
    out
}

fn group(c: &mut Checker<'_>, path: &str, g: &RawGroup, providers: &[&str]) -> Option<GroupConfig> {
    if g.deployments.is_empty() {
        c.problem(
            format!("{path}.deployments"),
            "a group needs at least one deployment",
        );
        return None;
    }
    let mut deployments = Vec::new();
    for (i, d) in g.deployments.iter().enumerate() {
        let dpath = format!("{path}.deployments[{i}]");
        let (model, weight, priority) = match d {
            RawDeployment::Model(m) => (m.as_str(), 1, 0),
            RawDeployment::Full(f) => (
                f.model.as_str(),
                f.weight.unwrap_or(1),
                f.priority.unwrap_or(0),
            ),
        };
        if let Some((provider, upstream_model)) = target(c, &dpath, model, providers) {
            if deployments.iter().any(|d: &DeploymentConfig| {
                d.provider == provider && d.upstream_model == upstream_model
            }) {
                c.problem(&dpath, format!("`{model}` is listed twice"));
                continue;
            }
            deployments.push(DeploymentConfig {
                provider,
                upstream_model,
                weight,
                priority,
            });
        }
    }
    let hedge = g.hedge.as_ref().and_then(|h| {
        let min = c.duration(
            &format!("{path}.hedge.min"),
            h.min.as_deref(),
            Duration::from_millis(50),
        );
        match h.after.as_deref().map(str::trim) {
            None => {
                c.problem(
                    format!("{path}.hedge.after"),
                    "missing: a duration such as `500ms`, or `p95`",
                );
                None
            }
            Some("p95") => Some(HedgeConfig::P95 { min }),
            Some(d) => Some(HedgeConfig::After(c.duration(
                &format!("{path}.hedge.after"),
                Some(d),
                Duration::from_secs(1),
            ))),
        }
    });
    Some(GroupConfig {
        strategy: strategy(c, &format!("{path}.strategy"), g.strategy.as_deref()),
        deployments,
        fallbacks: g.fallbacks.clone(),
        context_window_fallbacks: g.context_window_fallbacks.clone(),
        content_policy_fallbacks: g.content_policy_fallbacks.clone(),
        hedge,
    })
}

pub(super) fn retry(c: &mut Checker<'_>, r: &RawRetry) -> RetryPolicy {
    let d = RetryPolicy::default();
    let strategy = match r.strategy.as_deref() {
        None => d.strategy,
        Some(text) => serde_json::from_value::<StrategyKind>(serde_json::Value::String(text.to_owned()))
            .unwrap_or_else(|_| {
                c.problem(
                    "retry.strategy",
                    format!(
                        "`{text}` is not a strategy: use exponential_jitter, decorrelated_jitter, linear, fibonacci or constant"
                    ),
                );
                d.strategy
            }),
    };
    let mut p = RetryPolicy {
        strategy,
        base_delay: c.duration("retry.base_delay", r.base_delay.as_deref(), d.base_delay),
        factor: r.factor.unwrap_or(d.factor),
        max_delay: c.duration("retry.max_delay", r.max_delay.as_deref(), d.max_delay),
        max_retries: r.max_retries.unwrap_or(d.max_retries),
        retry_on: r.retry_on.clone().unwrap_or_else(|| d.retry_on.clone()),
        budget_ratio: r.budget.ratio.unwrap_or(d.budget_ratio),
        budget_min_per_second: r.budget.min_per_second.unwrap_or(d.budget_min_per_second),
    };
    if let Some(n) = c.env_parse::<u32>("LLM_MAX_RETRIES", "a whole number") {
        p.max_retries = n;
    }
    if let Some(f) = c.env_parse::<f64>("LLM_RETRY_BACKOFF_BASE", "a number") {
        p.factor = f;
    }
    if !(p.factor.is_finite() && p.factor >= 1.0) {
        c.problem(
            "retry.factor",
            format!("{} must be a number >= 1", p.factor),
        );
    }
    if !(p.budget_ratio.is_finite() && p.budget_ratio >= 0.0) {
        c.problem(
            "retry.budget.ratio",
            format!("{} must be a number >= 0", p.budget_ratio),
        );
    }
    for (i, s) in p.retry_on.iter().enumerate() {
        if !(100..=599).contains(s) {
            c.problem(
                format!("retry.retry_on[{i}]"),
                format!("{s} is not an HTTP status"),
            );
        }
    }
    p
}

pub(super) fn breaker(c: &mut Checker<'_>, r: &RawBreaker) -> BreakerConfig {
    let d = BreakerConfig::default();
    let b = BreakerConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        consecutive_failures: r.consecutive_failures.unwrap_or(d.consecutive_failures),
        failure_ratio: r.failure_ratio.unwrap_or(d.failure_ratio),
        window: c.duration("circuit_breaker.window", r.window.as_deref(), d.window),
        min_requests: r.min_requests.unwrap_or(d.min_requests),
        cooldown: c.duration(
            "circuit_breaker.cooldown",
            r.cooldown.as_deref(),
            d.cooldown,
        ),
        max_cooldown: c.duration(
            "circuit_breaker.max_cooldown",
            r.max_cooldown.as_deref(),
            d.max_cooldown,
        ),
        half_open_probes: r.half_open_probes.unwrap_or(d.half_open_probes),
        success_threshold: r.success_threshold.unwrap_or(d.success_threshold),
        ..d
    };
    if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
        c.problem("circuit_breaker.failure_ratio", "must be in (0, 1]");
    }
    if b.half_open_probes == 0 || b.success_threshold == 0 || b.consecutive_failures == 0 {
        c.problem(
            "circuit_breaker",
            "consecutive_failures, half_open_probes and success_threshold must be at least 1",
        );
    }
    if b.max_cooldown < b.cooldown {
        c.problem(
            "circuit_breaker.max_cooldown",
            "must not be shorter than cooldown",
        );
    }
    b
}
