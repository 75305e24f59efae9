//! The pricing table and cost computation.
//!
//! Prices are decimal dollars per million tokens, so costs are exact (no float drift when
//! summed over millions of calls). A bundled table ([`bundled`]) covers the OpenAI, Anthropic
//! and Google models and the popular ones OpenRouter serves; config entries override or extend
//! it.
//!
//! A price has up to three dimensions beyond plain input and output:
//! - **token kinds**: input read from a prompt cache, input written to one, and reasoning
//!   tokens (each defaulting to the plain price of its side);
//! - **long context**: some models charge more for every token of a call whose prompt is above
//!   a threshold (Anthropic's Sonnet 4 above 200k input tokens, Gemini 2.5 Pro likewise);
//! - **tier**: [`PriceTier::Batch`] calls (the providers' asynchronous batch APIs) cost a
//!   fraction of the standard price.
//!
//! Lookup tries, in order: the full `provider/model` name, the upstream model name, the model
//! name with a vendor prefix and an OpenRouter variant suffix (`:beta`, `:thinking`) stripped
//! (`openai/gpt-4o`), the same with OpenRouter's dotted versions dashed
//! (`anthropic/claude-3.5-sonnet` prices as `claude-3-5-sonnet`), and finally the longest
//! bundled name that prefixes it, so dated snapshots (`gpt-4o-2024-08-06`,
//! `claude-sonnet-4-5-20250929`) price like their family. OpenRouter's `:free` variants cost
//! nothing.
//!
//! A model with no price is priced `None`, never zero: the ledger records it as unpriced, and
//! [`UnpricedModels`] warns once per model so the operator can add a `pricing:` entry.

mod bundled;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use weir_types::chat::Usage;

/// Which price list a call is billed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PriceTier {
    /// An ordinary, synchronous call.
    #[default]
    Standard,
    /// A call made through a provider's batch API: the standard price times the model's
    /// `batch_multiplier` (OpenAI, Anthropic and Google charge half), or the standard price
    /// when the model has none.
    Batch,
}

/// Per-token prices of one tier of a model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rates {
    input: Decimal,
    output: Decimal,
    cached_input: Option<Decimal>,
    cache_write: Option<Decimal>,
    reasoning: Option<Decimal>,
}

impl Rates {
    /// The cost in dollars of `usage` at these rates.
    fn cost(&self, usage: &Usage) -> Decimal {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let written = usage
            .cache_creation_tokens()
            .min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        // Providers count reasoning inside the completion tokens.
        let reasoning = usage.reasoning_tokens().min(usage.completion_tokens);
        let answer = usage.completion_tokens - reasoning;
        let per_token = |tokens: u64, price: Decimal| Decimal::from(tokens) * price;
        let total = per_token(fresh, self.input)
            + per_token(cached, self.cached_input.unwrap_or(self.input))
            + per_token(written, self.cache_write.unwrap_or(self.input))
            + per_token(answer, self.output)
            + per_token(reasoning, self.reasoning.unwrap_or(self.output));
        total / Decimal::from(1_000_000u32)
    }

    /// The dearest input and output prices a token may pay at these rates.
    fn dearest(&self) -> (Decimal, Decimal) {
        let input = [self.cached_input, self.cache_write]
            .into_iter()
            .flatten()
            .fold(self.input, Decimal::max);
        let output = self.reasoning.map_or(self.output, |r| r.max(self.output));
        (input, output)
    }

    fn all(&self) -> impl Iterator<Item = Decimal> {
        [self.input, self.output]
            .into_iter()
            .chain(self.cached_input)
            .chain(self.cache_write)
            .chain(self.reasoning)
    }
}

/// The prices a model charges for every token of a call whose prompt is above a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextPrice {
    /// Calls with more input tokens than this (cached and cache-written included) pay these
    /// prices for all their tokens.
    pub above_input_tokens: u64,
    pub input: Decimal,
    pub output: Decimal,
    /// Defaults to this tier's `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Decimal>,
    /// Defaults to this tier's `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Decimal>,
    /// Defaults to this tier's `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Decimal>,
}

impl LongContextPrice {
    fn rates(&self) -> Rates {
        Rates {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
            reasoning: self.reasoning,
        }
    }
}

/// Prices of one model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input: Decimal,
    /// Output tokens (reasoning too, unless `reasoning` is set).
    pub output: Decimal,
    /// Input tokens read from a prompt cache; defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<Decimal>,
    /// Input tokens written to a prompt cache (Anthropic); defaults to `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<Decimal>,
    /// Reasoning tokens, when the usage reports them; defaults to `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Decimal>,
    /// Dearer prices for calls with a long prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContextPrice>,
    /// What a [`PriceTier::Batch`] call pays as a fraction of the standard price (`0.5`: half);
    /// none: batch calls pay the standard price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_multiplier: Option<Decimal>,
}

impl ModelPrice {
    /// A model charging `input` and `output` dollars per million tokens, with no discounts.
    pub fn new(input: Decimal, output: Decimal) -> Self {
        Self {
            input,
            output,
            cached_input: None,
            cache_write: None,
            reasoning: None,
            long_context: None,
            batch_multiplier: None,
        }
    }

    const FREE: ModelPrice = ModelPrice {
        input: Decimal::ZERO,
        output: Decimal::ZERO,
        cached_input: None,
        cache_write: None,
        reasoning: None,
        long_context: None,
        batch_multiplier: None,
    };

    fn base(&self) -> Rates {
        Rates {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
            cache_write: self.cache_write,
            reasoning: self.reasoning,
        }
    }

    /// The rates a call with `prompt_tokens` input tokens pays.
    fn rates_for(&self, prompt_tokens: u64) -> Rates {
        match &self.long_context {
            Some(long) if prompt_tokens > long.above_input_tokens => long.rates(),
            _ => self.base(),
        }
    }

    /// The cost of one standard call with this usage, in dollars.
    pub fn cost(&self, usage: &Usage) -> Decimal {
        self.cost_in(usage, PriceTier::Standard)
    }

    /// The cost of one call with this usage in `tier`, in dollars.
    pub fn cost_in(&self, usage: &Usage, tier: PriceTier) -> Decimal {
        let cost = self.rates_for(usage.prompt_tokens).cost(usage);
        match (tier, self.batch_multiplier) {
            (PriceTier::Batch, Some(multiplier)) => cost * multiplier,
            _ => cost,
        }
    }

    /// The dearest input and output prices any token of a standard call may pay (long context
    /// and cache writes included): what a worst-case reservation uses.
    pub fn dearest(&self) -> (Decimal, Decimal) {
        let (input, output) = self.base().dearest();
        match &self.long_context {
            Some(long) => {
                let (li, lo) = long.rates().dearest();
                (input.max(li), output.max(lo))
            }
            None => (input, output),
        }
    }

    /// Why this price cannot be used, if it cannot: a problem for the config's checker.
    pub fn problem(&self) -> Option<String> {
        let long = self.long_context.as_ref();
        let negative = self
            .base()
            .all()
            .chain(
                long.into_iter()
                    .flat_map(|l| l.rates().all().collect::<Vec<_>>()),
            )
            .chain(self.batch_multiplier)
            .any(|d| d.is_sign_negative() && !d.is_zero());
        if negative {
            return Some("prices must not be negative".into());
        }
        if self.batch_multiplier.is_some_and(|m| m > Decimal::ONE) {
            return Some(
                "batch_multiplier is the fraction of the standard price a batch call pays: \
                 write a number from 0 to 1, e.g. 0.5 for half price"
                    .into(),
            );
        }
        if long.is_some_and(|l| l.above_input_tokens == 0) {
            return Some(
                "long_context.above_input_tokens must be above 0 (the prompt size past which \
                 the long-context prices apply, e.g. 200000)"
                    .into(),
            );
        }
        None
    }
}

/// Model name -> price, bundled entries plus config overrides.
#[derive(Debug, Clone, Default)]
pub struct PricingTable {
    prices: HashMap<String, ModelPrice>,
}

impl PricingTable {
    /// The bundled table.
    pub fn bundled() -> Self {
        Self {
            prices: bundled::prices(),
        }
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
        // OpenRouter's variants: `:free` costs nothing, the others (`:beta`, `:thinking`,
        // `:online`) price like the model.
        let bare = match bare.split_once(':') {
            Some((_, "free")) => return Some(&ModelPrice::FREE),
            Some((model, _)) => model,
            None => bare,
        };
        if let Some(p) = self.prices.get(bare) {
            return Some(p);
        }
        let dashed = dash_versions(bare);
        if let Some(p) = dashed.as_ref().and_then(|(d, _)| self.prices.get(d)) {
            return Some(p);
        }
        self.by_prefix(bare, 0).or_else(|| {
            // A dashed name must match past its first version (`claude-3-5-sonnet`, not
            // `claude-3`), or `gpt-4.5` would price as `gpt-4`.
            let (dashed, first_dot) = dashed.as_ref()?;
            self.by_prefix(dashed, first_dot + 1)
        })
    }

    /// The longest known name of at least `min_len` that prefixes `name` at a `-` boundary:
    /// dated snapshots and `-latest` aliases.
    fn by_prefix(&self, name: &str, min_len: usize) -> Option<&ModelPrice> {
        self.prices
            .iter()
            .filter(|(known, _)| {
                known.len() >= min_len
                    && name.len() > known.len()
                    && name.starts_with(known.as_str())
                    && name.as_bytes()[known.len()] == b'-'
            })
            .max_by_key(|(known, _)| known.len())
            .map(|(_, p)| p)
    }

    /// The cost of a standard call, or `None` when the model has no known price.
    pub fn cost(&self, provider: &str, upstream_model: &str, usage: &Usage) -> Option<Decimal> {
        self.cost_for(provider, upstream_model, usage, PriceTier::Standard)
    }

    /// The cost of a call in `tier`, or `None` when the model has no known price.
    pub fn cost_for(
        &self,
        provider: &str,
        upstream_model: &str,
        usage: &Usage,
        tier: PriceTier,
    ) -> Option<Decimal> {
        self.lookup(provider, upstream_model)
            .map(|p| p.cost_in(usage, tier))
    }
}

/// `name` with each `.` between two digits made a `-` (OpenRouter writes `claude-3.5-sonnet`
/// where Anthropic writes `claude-3-5-sonnet`), and the position of the first; `None` when it
/// has none.
fn dash_versions(name: &str) -> Option<(String, usize)> {
    let bytes = name.as_bytes();
    let is_version_dot = |i: usize| {
        bytes[i] == b'.'
            && i > 0
            && bytes[i - 1].is_ascii_digit()
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
    };
    let first = (0..bytes.len()).find(|&i| is_version_dot(i))?;
    let dashed: String = name
        .char_indices()
        .map(|(i, c)| if is_version_dot(i) { '-' } else { c })
        .collect();
    Some((dashed, first))
}

/// The most distinct unpriced model names remembered; past it, new names are not warned about
/// (the ledger still records their calls as unpriced), so a caller inventing names cannot grow
/// memory.
const MAX_UNPRICED: usize = 1024;

/// The models seen without a price, so each is warned about once per process.
#[derive(Debug, Default)]
pub struct UnpricedModels {
    seen: Mutex<HashSet<String>>,
}

impl UnpricedModels {
    /// Note a call to `provider/upstream_model`, which has no price: logs a warning the first
    /// time the model is seen and returns whether it did.
    pub fn note(&self, provider: &str, upstream_model: &str) -> bool {
        let model = crate::client::route::join_qualified(provider, upstream_model);
        let first = match self.seen.lock() {
            Ok(mut seen) if seen.len() < MAX_UNPRICED => seen.insert(model.clone()),
            // Full, or poisoned by a panic elsewhere: stay quiet rather than warn per call.
            _ => false,
        };
        if first {
            tracing::warn!(
                model = %model,
                "no price is known for {model}: its calls are recorded with their tokens and no cost (reported as unpriced, never as free); add a `pricing:` entry for it, e.g. `pricing: {{ {model}: {{ input: 1.00, output: 2.00 }} }}` (dollars per million tokens)"
            );
        }
        first
    }

    /// The models warned about so far, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .seen
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}
