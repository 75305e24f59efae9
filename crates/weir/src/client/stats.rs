//! Counters since start: calls, errors, cache hits, tokens and cost per deployment, for
//! `/status`. The first consumer of every call's [`UsageEvent`].
//!
//! A call is counted under the deployment that answered it (or failed last): `provider/model`,
//! whatever name the caller used. A call that reached no deployment is counted under its
//! configured group or alias, or under `other`: names a caller makes up never add a row, and
//! past [`MAX_ROWS`] rows everything new lands in `other` too.
//!
//! Counters are atomics behind a read-mostly map: the write lock is taken only the first time
//! a name is seen. Costs are summed as integer nanodollars, so totals are exact (every bundled
//! price is a whole number of nanodollars per token).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use crate::config::Config;
use crate::pipeline::{Outcome, Tokens, UsageEvent};

/// Rows the counters keep at most; later names fold into [`OTHER`].
pub(crate) const MAX_ROWS: usize = 1024;
/// The row for calls that name nothing configured.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    cache_hits: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    cost_nanodollars: AtomicU64,
    unpriced_calls: AtomicU64,
}

/// Per-model totals as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelTotals {
    pub model: String,
    pub calls: u64,
    pub errors: u64,
    /// Calls answered by the response cache or by an identical call in flight (counted in
    /// `calls` too, at no cost).
    pub cache_hits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// Dollars, exact to the nanodollar, of the priced calls.
    pub cost_usd: Decimal,
    /// Calls whose cost is unknown (a model without a price): in `calls`, not in `cost_usd`.
    pub unpriced_calls: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    models: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Stats {
    fn counters(&self, model: &str) -> Arc<Counters> {
        if let Ok(map) = self.models.read()
            && let Some(c) = map.get(model)
        {
            return Arc::clone(c);
        }
        match self.models.write() {
            Ok(mut map) => {
                let name = if map.len() < MAX_ROWS { model } else { OTHER };
                Arc::clone(map.entry(name.to_owned()).or_default())
            }
            // A poisoned lock means a panic elsewhere; counting into a detached cell keeps
            // requests flowing.
            Err(_) => Arc::new(Counters::default()),
        }
    }

    /// Count one call from its event.
    pub(crate) fn record(&self, event: &UsageEvent, config: &Config) {
        let c = match &event.route {
            Some(r) => self.counters(&r.deployment()),
            None if config.groups.contains_key(event.context.model.as_str()) => {
                self.counters(&event.context.model)
            }
            None => self.counters(OTHER),
        };
        c.calls.fetch_add(1, Ordering::Relaxed);
        if event.outcome == Outcome::Failure {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        if event.cache.is_free() {
            c.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        c.add(&event.tokens, event.cost_usd);
    }
}

impl Counters {
    fn add(&self, tokens: &Tokens, cost: Option<Decimal>) {
        let c = self;
        c.prompt_tokens.fetch_add(tokens.input, Ordering::Relaxed);
        c.completion_tokens
            .fetch_add(tokens.output, Ordering::Relaxed);
        c.cached_tokens
            .fetch_add(tokens.cached_input, Ordering::Relaxed);
        let Some(cost) = cost else {
            c.unpriced_calls.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let nanos = (cost * Decimal::from(1_000_000_000u64))
            .round()
            .to_u64()
            .unwrap_or(0);
        c.cost_nanodollars.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Stats {
    /// How many rows the counters hold.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> usize {
        self.models.read().map_or(0, |m| m.len())
    }

    /// Totals per model, sorted by name.
    pub fn snapshot(&self) -> Vec<ModelTotals> {
        let Ok(map) = self.models.read() else {
            return Vec::new();
        };
        let mut out: Vec<ModelTotals> = map
            .iter()
            .map(|(model, c)| ModelTotals {
                model: model.clone(),
                calls: c.calls.load(Ordering::Relaxed),
                errors: c.errors.load(Ordering::Relaxed),
                cache_hits: c.cache_hits.load(Ordering::Relaxed),
                prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
                completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
                cached_tokens: c.cached_tokens.load(Ordering::Relaxed),
                cost_usd: Decimal::from(c.cost_nanodollars.load(Ordering::Relaxed))
                    / Decimal::from(1_000_000_000u64),
                unpriced_calls: c.unpriced_calls.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by(|a, b| a.model.cmp(&b.model));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn sums_exactly_and_folds_names_past_the_cap() {
        let s = Stats::default();
        let cost = Decimal::from_str("0.000000075").unwrap_or_default();
        let tokens = Tokens {
            input: 1,
            ..Tokens::default()
        };
        for _ in 0..1000 {
            s.counters("openai/gpt-4o-mini").add(&tokens, Some(cost));
        }
        let t = &s.snapshot()[0];
        assert_eq!(t.prompt_tokens, 1000);
        assert_eq!(
            t.cost_usd,
            Decimal::from_str("0.000075").unwrap_or_default()
        );
        for i in 0..MAX_ROWS + 10 {
            s.counters(&format!("p/m{i}"));
        }
        assert_eq!(s.rows(), MAX_ROWS + 1, "the cap, plus `other`");
    }
}
