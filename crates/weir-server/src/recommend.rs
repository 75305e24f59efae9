//! Recommendations: what the ledger, the budgets and the keys say could be cheaper or
//! cleaner, each with its figures and (when it can be priced) the dollars it would save.
//!
//! Kinds, and when each fires:
//! - `cache_repeats`: calls to a model that repeated a prompt already sent in the window
//!   (the same prompt fingerprint) and paid for it, the cache bypassed or missed, at least
//!   [`MIN_REPEATS`] times. Saving: what the repeats cost.
//! - `cheaper_model`: a deployment whose successful calls (at least `min_calls`) had a
//!   median answer under [`SHORT_OUTPUT_TOKENS`] output tokens, when a cheaper model of the
//!   same family ([`CHEAPER`], priced from the pricing table) would have cost less for the
//!   same tokens. Saving: the difference.
//! - `retries`: a deployment where at least [`RETRY_SHARE_PERCENT`]% of its calls (at least
//!   `min_calls`) needed more than one attempt (retries or failover). No saving is claimed.
//! - `budget_runs_out`: a budget forecast to run out before its period resets.
//! - `idle_key`: a gateway key, neither revoked nor expired, unused for `idle_days` days
//!   (never used: since it was made).
//! - `expired_key`: a gateway key past its expiry but not revoked.
//!
//! The ledger part is [`LedgerAnalysis`], fed the window's calls one by one (the route
//! pages through them), so it is tested on plain records.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use weir::budgets::BudgetStatus;
use weir::pricing::PricingTable;
use weir::types::chat::{PromptTokensDetails, Usage};
use weir_store::ledger::{cache, outcome};
use weir_store::{KeyRecord, LedgerRecord};

/// Days of ledger a report reads unless `days` says otherwise.
pub const DEFAULT_DAYS: i64 = 7;
/// The longest window a report may read.
pub const MAX_DAYS: i64 = 90;
/// Calls a deployment needs in the window before its answers or retries are judged.
pub const DEFAULT_MIN_CALLS: u64 = 20;
/// Days without use after which a key is reported idle, unless `idle_days` says otherwise.
pub const DEFAULT_IDLE_DAYS: i64 = 30;
/// A median answer shorter than this (output tokens) is a short answer.
pub const SHORT_OUTPUT_TOKENS: u64 = 200;
/// The share of calls with more than one attempt, in percent, from which a deployment is
/// reported.
pub const RETRY_SHARE_PERCENT: u64 = 10;
/// Paid repeats of prompts for one model before caching is recommended.
pub const MIN_REPEATS: u64 = 2;

/// A model family's cheaper member, by name as the pricing table knows it: calls to a model
/// named like the first (exactly, or followed by `-`) could go to the second. The first
/// entry that matches is used; a model already named like the cheaper one is skipped.
pub const CHEAPER: &[(&str, &str)] = &[
    ("gpt-4o", "gpt-4o-mini"),
    ("gpt-4.1", "gpt-4.1-mini"),
    ("gpt-4-turbo", "gpt-4o-mini"),
    ("gpt-5", "gpt-5-mini"),
    ("o1", "o3-mini"),
    ("o3", "o4-mini"),
    ("claude-opus", "claude-sonnet-4-5"),
    ("claude-sonnet", "claude-haiku-4-5"),
    ("claude-3-7-sonnet", "claude-haiku-4-5"),
];

/// One recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// What kind (see the module docs).
    pub kind: &'static str,
    /// A sentence a person can act on.
    pub message: String,
    /// The numbers behind it.
    pub figures: Value,
    /// Dollars it would have saved over the window, as a decimal string; `None` when the
    /// saving cannot be priced.
    pub saving_usd: Option<String>,
}

impl Recommendation {
    fn new(kind: &'static str, message: String, figures: Value, saving: Option<Decimal>) -> Self {
        Self {
            kind,
            message,
            figures,
            saving_usd: saving.map(usd),
        }
    }

    fn saving(&self) -> Decimal {
        self.saving_usd
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(Decimal::MIN)
    }
}

/// Dollars as a short exact string.
fn usd(amount: Decimal) -> String {
    amount.round_dp(6).normalize().to_string()
}

/// Most saving first; unpriced ones after, in the order given.
pub fn sort(items: &mut [Recommendation]) {
    items.sort_by_key(|r| std::cmp::Reverse(r.saving()));
}

/// The thresholds of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub days: i64,
    pub min_calls: u64,
    pub idle_days: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            days: DEFAULT_DAYS,
            min_calls: DEFAULT_MIN_CALLS,
            idle_days: DEFAULT_IDLE_DAYS,
        }
    }
}

#[derive(Debug, Default)]
struct Repeats {
    /// Prompts seen, and whether each was repeated.
    seen: HashMap<String, bool>,
    repeats: u64,
    cost: Decimal,
}

#[derive(Debug, Default)]
struct Deployment {
    calls: u64,
    retried: u64,
    failures: u64,
    max_attempts: u32,
    /// Successful paid calls: their answers' lengths and tokens, and what they cost.
    outputs: Vec<u64>,
    input: u64,
    output: u64,
    cached: u64,
    cache_write: u64,
    cost: Decimal,
}

/// The ledger's part of a report, fed the window's calls oldest first. See the module docs.
#[derive(Debug, Default)]
pub struct LedgerAnalysis {
    /// By requested model.
    repeats: HashMap<String, Repeats>,
    /// By (provider, upstream model).
    deployments: HashMap<(String, String), Deployment>,
    calls: u64,
}

impl LedgerAnalysis {
    /// Calls read so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Count one call.
    pub fn add(&mut self, call: &LedgerRecord) {
        self.calls += 1;
        let paid = !(call.cache == cache::HIT || call.cache == cache::COALESCED);
        if let Some(fingerprint) = &call.prompt_fingerprint {
            let model = self.repeats.entry(call.model.clone()).or_default();
            match model.seen.get_mut(fingerprint) {
                Some(repeated) if paid && call.outcome == outcome::SUCCESS => {
                    *repeated = true;
                    model.repeats += 1;
                    model.cost += call.cost_usd.unwrap_or_default();
                }
                Some(_) => {}
                None => {
                    model.seen.insert(fingerprint.clone(), false);
                }
            }
        }
        let (Some(provider), Some(upstream)) = (&call.provider, &call.upstream_model) else {
            return;
        };
        let d = self
            .deployments
            .entry((provider.clone(), upstream.clone()))
            .or_default();
        if call.attempts == 0 {
            // Answered without the upstream: says nothing of the deployment.
            return;
        }
        d.calls += 1;
        d.retried += u64::from(call.attempts > 1);
        d.failures += u64::from(call.outcome == outcome::FAILURE);
        d.max_attempts = d.max_attempts.max(call.attempts);
        if paid
            && call.outcome == outcome::SUCCESS
            && let Some(cost) = call.cost_usd
        {
            d.outputs.push(call.output_tokens);
            d.input += call.input_tokens;
            d.output += call.output_tokens;
            d.cached += call.cached_input_tokens;
            d.cache_write += call.cache_write_tokens;
            d.cost += cost;
        }
    }

    /// The recommendations the calls support.
    pub fn finish(self, pricing: &PricingTable, t: Thresholds) -> Vec<Recommendation> {
        let mut out = Vec::new();
        let mut models: Vec<_> = self.repeats.into_iter().collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        for (model, r) in models {
            if r.repeats < MIN_REPEATS {
                continue;
            }
            let prompts = r.seen.values().filter(|repeated| **repeated).count();
            out.push(Recommendation::new(
                "cache_repeats",
                format!(
                    "{} calls to {model} in the last {} days repeated one of {prompts} prompts \
                     already sent and paid again (cache bypassed or missed): cache them, with \
                     `cache.cache_sampled: true` or a request's `x-weir-cache-ttl` for sampled \
                     calls, or a longer `cache.ttl` for misses",
                    r.repeats, t.days
                ),
                json!({"model": model, "repeats": r.repeats, "prompts": prompts,
                       "repeat_cost_usd": usd(r.cost)}),
                Some(r.cost),
            ));
        }
        let mut deployments: Vec<_> = self.deployments.into_iter().collect();
        deployments.sort_by(|a, b| a.0.cmp(&b.0));
        for ((provider, upstream), d) in deployments {
            if d.calls < t.min_calls {
                continue;
            }
            if d.retried * 100 >= d.calls * RETRY_SHARE_PERCENT {
                let share = Decimal::from(d.retried * 100) / Decimal::from(d.calls);
                out.push(Recommendation::new(
                    "retries",
                    format!(
                        "{}% of the {} calls to {provider}/{upstream} in the last {} days \
                         needed more than one attempt (retries or failover; {} failed): check \
                         its rate limits and health, or move it down the fallback order",
                        share.round_dp(1).normalize(),
                        d.calls,
                        t.days,
                        d.failures
                    ),
                    json!({"provider": provider, "model": upstream, "calls": d.calls,
                           "retried": d.retried, "failures": d.failures,
                           "retried_percent": share.round_dp(1).normalize().to_string(),
                           "max_attempts": d.max_attempts}),
                    None,
                ));
            }
            if let Some(item) = cheaper(pricing, &provider, &upstream, d, t) {
                out.push(item);
            }
        }
        out
    }
}

/// The `cheaper_model` recommendation for one deployment, if it qualifies.
fn cheaper(
    pricing: &PricingTable,
    provider: &str,
    upstream: &str,
    mut d: Deployment,
    t: Thresholds,
) -> Option<Recommendation> {
    let paid = u64::try_from(d.outputs.len()).unwrap_or(u64::MAX);
    if paid < t.min_calls {
        return None;
    }
    d.outputs.sort_unstable();
    let median = d.outputs[d.outputs.len() / 2];
    if median >= SHORT_OUTPUT_TOKENS {
        return None;
    }
    let bare = upstream.rsplit_once('/').map_or(upstream, |(_, m)| m);
    let alternative = CHEAPER.iter().find_map(|(family, cheaper)| {
        let member = bare == *family
            || bare
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('-'));
        (member && !bare.starts_with(cheaper)).then_some(*cheaper)
    })?;
    let price = pricing.lookup(provider, alternative)?;
    let mut usage = Usage::new(d.input, d.output);
    usage.prompt_tokens_details = Some(PromptTokensDetails {
        cached_tokens: Some(d.cached),
        cache_creation_tokens: Some(d.cache_write),
        audio_tokens: None,
    });
    let instead = price.cost(&usage);
    let saving = d.cost - instead;
    if saving <= Decimal::ZERO {
        return None;
    }
    Some(Recommendation::new(
        "cheaper_model",
        format!(
            "{paid} calls to {provider}/{upstream} in the last {} days had a median answer of \
             {median} output tokens; {alternative} from the same family would have cost ${} \
             instead of ${}: send short tasks to it (an alias, or the calling keys' models)",
            t.days,
            usd(instead),
            usd(d.cost)
        ),
        json!({"provider": provider, "model": upstream, "calls": paid,
               "median_output_tokens": median, "cheaper_model": alternative,
               "cost_usd": usd(d.cost), "cheaper_cost_usd": usd(instead)}),
        Some(saving),
    ))
}

/// `budget_runs_out` for each budget forecast to run out before it resets.
pub fn budgets(statuses: &[BudgetStatus]) -> Vec<Recommendation> {
    statuses
        .iter()
        .filter_map(|s| {
            let at = s.runs_out_at?;
            let forecast = s.forecast_usd.map(usd);
            Some(Recommendation::new(
                "budget_runs_out",
                format!(
                    "budget `{}` ({}) is forecast to run out at {at}, before it resets at {} \
                     (${} of ${} spent, {} forecast by the {} method): raise its limit, or move \
                     its traffic to a cheaper model before then",
                    s.spec.id,
                    s.spec.scope,
                    s.resets_at,
                    usd(s.spent_usd),
                    usd(s.spec.limit_usd),
                    forecast
                        .as_deref()
                        .map_or_else(|| "nothing".into(), |f| format!("${f}")),
                    s.forecast_method.as_str(),
                ),
                json!({"budget": s.spec.id, "scope": s.spec.scope.to_string(),
                       "limit_usd": usd(s.spec.limit_usd), "spent_usd": usd(s.spent_usd),
                       "forecast_usd": forecast, "forecast_method": s.forecast_method,
                       "runs_out_at": at.to_string(), "resets_at": s.resets_at.to_string()}),
                None,
            ))
        })
        .collect()
}

/// `idle_key` and `expired_key` for the stored keys, at `now` (unix seconds).
pub fn keys(keys: &[KeyRecord], now: i64, t: Thresholds) -> Vec<Recommendation> {
    let mut out = Vec::new();
    for k in keys.iter().filter(|k| k.revoked_at.is_none()) {
        let figures = json!({"key_id": k.id, "name": k.name, "created_at": k.created_at,
                             "last_used_at": k.last_used_at, "expires_at": k.expires_at,
                             "enabled": k.enabled});
        if let Some(expired) = k.expires_at.filter(|at| *at <= now) {
            out.push(Recommendation::new(
                "expired_key",
                format!(
                    "gateway key `{}` ({}) expired {} days ago but is not revoked: revoke it \
                     with `weir keys revoke {}`, or extend it with `weir keys update {} \
                     --expires-in 30d` if it is still needed",
                    k.id,
                    k.name,
                    (now - expired) / 86_400,
                    k.id,
                    k.id
                ),
                figures,
                None,
            ));
            continue;
        }
        let since = k.last_used_at.unwrap_or(k.created_at);
        let idle = (now - since) / 86_400;
        if idle >= t.idle_days {
            let what = if k.last_used_at.is_some() {
                "has not been used"
            } else {
                "was made and never used"
            };
            out.push(Recommendation::new(
                "idle_key",
                format!(
                    "gateway key `{}` ({}) {what} for {idle} days: revoke it with `weir keys \
                     revoke {}` if nothing needs it",
                    k.id, k.name, k.id
                ),
                figures,
                None,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
