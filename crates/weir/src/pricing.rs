//! The pricing table and cost computation.
//!
//! Prices are decimal dollars per million tokens, so costs are exact (no float drift when
//! summed over millions of calls). A bundled table covers common OpenAI and Anthropic models;
//! config entries override or extend it.
//!
//! Lookup tries, in order: the full `provider/model` name, the upstream model name, the model
//! name with a vendor prefix stripped (OpenRouter's `openai/gpt-4o`), and finally the longest
//! bundled name that prefixes it, so dated snapshots (`gpt-4o-2024-08-06`,
//! `claude-sonnet-4-5-20250929`) price like their family.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use weir_types::chat::Usage;

/// Prices of one model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input: Decimal,
    /// Output tokens (reasoning included).
    pub output: Decimal,
    /// Input tokens read from a prompt cache; defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Decimal>,
    /// Input tokens written to a prompt cache (Anthropic); defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Decimal>,
}

impl ModelPrice {
    /// The cost of one call with this usage, in dollars.
    pub fn cost(&self, usage: &Usage) -> Decimal {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let written = usage
            .cache_creation_tokens()
            .min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let per_token = |tokens: u64, price: Decimal| Decimal::from(tokens) * price;
        let total = per_token(fresh, self.input)
            + per_token(cached, self.cached_input.unwrap_or(self.input))
            + per_token(written, self.cache_write.unwrap_or(self.input))
            + per_token(usage.completion_tokens, self.output);
        total / Decimal::from(1_000_000u32)
    }
}

/// Model name -> price, bundled entries plus config overrides.
#[derive(Debug, Clone, Default)]
pub struct PricingTable {
    prices: HashMap<String, ModelPrice>,
}

/// (model, input, output, cached input, cache write), dollars per million tokens, as the
/// providers publish them.
const BUNDLED: &[(&str, &str, &str, &str, Option<&str>)] = &[
    ("gpt-5", "1.25", "10.00", "0.125", None),
    ("gpt-5-mini", "0.25", "2.00", "0.025", None),
    ("gpt-5-nano", "0.05", "0.40", "0.005", None),
    ("gpt-4.1", "2.00", "8.00", "0.50", None),
    ("gpt-4.1-mini", "0.40", "1.60", "0.10", None),
    ("gpt-4.1-nano", "0.10", "0.40", "0.025", None),
    ("gpt-4o", "2.50", "10.00", "1.25", None),
    ("gpt-4o-mini", "0.15", "0.60", "0.075", None),
    ("gpt-4-turbo", "10.00", "30.00", "10.00", None),
    ("gpt-3.5-turbo", "0.50", "1.50", "0.50", None),
    ("o1", "15.00", "60.00", "7.50", None),
    ("o3", "2.00", "8.00", "0.50", None),
    ("o3-mini", "1.10", "4.40", "0.55", None),
    ("o4-mini", "1.10", "4.40", "0.275", None),
    ("text-embedding-3-small", "0.02", "0", "0.02", None),
    ("text-embedding-3-large", "0.13", "0", "0.13", None),
    ("text-embedding-ada-002", "0.10", "0", "0.10", None),
    ("claude-opus-4-5", "5.00", "25.00", "0.50", Some("6.25")),
    ("claude-opus-4-1", "15.00", "75.00", "1.50", Some("18.75")),
    ("claude-opus-4", "15.00", "75.00", "1.50", Some("18.75")),
    ("claude-sonnet-4-5", "3.00", "15.00", "0.30", Some("3.75")),
    ("claude-sonnet-4", "3.00", "15.00", "0.30", Some("3.75")),
    ("claude-3-7-sonnet", "3.00", "15.00", "0.30", Some("3.75")),
    ("claude-haiku-4-5", "1.00", "5.00", "0.10", Some("1.25")),
    ("claude-3-5-haiku", "0.80", "4.00", "0.08", Some("1.00")),
    ("claude-3-haiku", "0.25", "1.25", "0.03", Some("0.30")),
    // The mock is free; tests that need a price configure one.
    ("mock/echo", "0", "0", "0", None),
    ("mock/lorem", "0", "0", "0", None),
];

impl PricingTable {
    /// The bundled table.
    pub fn bundled() -> Self {
        let mut prices = HashMap::with_capacity(BUNDLED.len());
        for (model, input, output, cached, write) in BUNDLED {
            // The table is a constant checked by a unit test, so a parse failure cannot happen
            // at run time; skipping is still safer than panicking.
            let parse = |s: &str| Decimal::from_str(s).ok();
            if let (Some(input), Some(output)) = (parse(input), parse(output)) {
                prices.insert(
                    (*model).to_owned(),
                    ModelPrice {
                        input,
                        output,
                        cached_input: parse(cached),
                        cache_write: write.and_then(parse),
                    },
                );
            }
        }
        Self { prices }
    }

    /// Add or replace one model's price.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model.into(), price);
    }

    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price of a model served by `provider` as `upstream_model`.
    pub fn lookup(&self, provider: &str, upstream_model: &str) -> Option<&ModelPrice> {
        let full = crate::client::route::join_qualified(provider, upstream_model);
        if let Some(p) = self
            .prices
            .get(&full)
            .or_else(|| self.prices.get(upstream_model))
        {
            return Some(p);
        }
        let bare = upstream_model
            .rsplit_once('/')
            .map_or(upstream_model, |(_, m)| m);
        if let Some(p) = self.prices.get(bare) {
            return Some(p);
        }
        // Longest known name that prefixes the model at a `-` boundary: dated snapshots.
        self.prices
            .iter()
            .filter(|(name, _)| {
                bare.len() > name.len()
                    && bare.starts_with(name.as_str())
                    && bare.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| p)
    }

    /// The cost of a call, or `None` when the model has no known price.
    pub fn cost(&self, provider: &str, upstream_model: &str, usage: &Usage) -> Option<Decimal> {
        self.lookup(provider, upstream_model).map(|p| p.cost(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::chat::PromptTokensDetails;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap_or_default()
    }

    #[test]
    fn bundled_table_parses_completely() {
        assert_eq!(PricingTable::bundled().len(), BUNDLED.len());
    }

    #[test]
    fn prices_plain_usage_exactly() {
        let t = PricingTable::bundled();
        // 1000 in at $2.50/M + 500 out at $10/M = 0.0025 + 0.005
        let cost = t.cost("openai", "gpt-4o", &Usage::new(1000, 500));
        assert_eq!(cost, Some(d("0.0075")));
    }

    #[test]
    fn prices_cached_and_cache_write_tokens() {
        let t = PricingTable::bundled();
        let mut u = Usage::new(10_000, 1_000);
        u.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(6_000),
            cache_creation_tokens: Some(2_000),
            audio_tokens: None,
        });
        // 2000 fresh * 3 + 6000 * 0.30 + 2000 * 3.75 + 1000 * 15, per million
        let expected = (d("6000") + d("1800") + d("7500") + d("15000")) / d("1000000");
        assert_eq!(t.cost("anthropic", "claude-sonnet-4-5", &u), Some(expected));
    }

    #[test]
    fn dated_snapshots_and_vendor_prefixes_resolve() {
        let t = PricingTable::bundled();
        let base = t.lookup("openai", "gpt-4o-mini").copied();
        assert!(base.is_some());
        assert_eq!(t.lookup("openai", "gpt-4o-mini-2024-07-18").copied(), base);
        assert_eq!(t.lookup("openrouter", "openai/gpt-4o-mini").copied(), base);
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-5-20250929").copied(),
            t.lookup("anthropic", "claude-sonnet-4-5").copied()
        );
        assert!(t.lookup("local", "llama3").is_none());
    }

    #[test]
    fn overrides_win() {
        let mut t = PricingTable::bundled();
        t.set(
            "local/llama3",
            ModelPrice {
                input: d("0.1"),
                output: d("0.2"),
                cached_input: None,
                cache_write: None,
            },
        );
        assert_eq!(
            t.cost("local", "llama3", &Usage::new(1_000_000, 0)),
            Some(d("0.1"))
        );
    }
}
