//! Counters since start: calls, errors, tokens and cost per model, for `/status`.
//!
//! Counters are atomics behind a read-mostly map: the write lock is taken only the first time
//! a model is seen. Costs are summed as integer nanodollars, so totals are exact (every bundled
//! price is a whole number of nanodollars per token).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use weir_types::chat::Usage;

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    cost_nanodollars: AtomicU64,
}

/// Per-model totals as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelTotals {
    pub model: String,
    pub calls: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// Dollars, exact to the nanodollar.
    pub cost_usd: Decimal,
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
            Ok(mut map) => Arc::clone(map.entry(model.to_owned()).or_default()),
            // A poisoned lock means a panic elsewhere; counting into a detached cell keeps
            // requests flowing.
            Err(_) => Arc::new(Counters::default()),
        }
    }

    /// Count one successful call.
    pub fn record_success(&self, model: &str, usage: Option<&Usage>, cost: Option<Decimal>) {
        let c = self.counters(model);
        c.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(u) = usage {
            c.prompt_tokens
                .fetch_add(u.prompt_tokens, Ordering::Relaxed);
            c.completion_tokens
                .fetch_add(u.completion_tokens, Ordering::Relaxed);
            c.cached_tokens
                .fetch_add(u.cached_tokens(), Ordering::Relaxed);
        }
        if let Some(cost) = cost {
            let nanos = (cost * Decimal::from(1_000_000_000u64))
                .round()
                .to_u64()
                .unwrap_or(0);
            c.cost_nanodollars.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Count one failed call.
    pub fn record_error(&self, model: &str) {
        let c = self.counters(model);
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.errors.fetch_add(1, Ordering::Relaxed);
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
                prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
                completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
                cached_tokens: c.cached_tokens.load(Ordering::Relaxed),
                cost_usd: Decimal::from(c.cost_nanodollars.load(Ordering::Relaxed))
                    / Decimal::from(1_000_000_000u64),
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
    fn sums_exactly() {
        let s = Stats::default();
        let cost = Decimal::from_str("0.000000075").unwrap_or_default();
        for _ in 0..1000 {
            s.record_success("openai/gpt-4o-mini", Some(&Usage::new(1, 0)), Some(cost));
        }
        s.record_error("openai/gpt-4o-mini");
        let t = &s.snapshot()[0];
        assert_eq!(t.calls, 1001);
        assert_eq!(t.errors, 1);
        assert_eq!(t.prompt_tokens, 1000);
        assert_eq!(
            t.cost_usd,
            Decimal::from_str("0.000075").unwrap_or_default()
        );
    }
}
