//! Money as budgets count it, and the worst-case price of a call.
//!
//! # Units
//!
//! Counters hold whole **nanodollars** (10⁻⁹ USD) in `i64`: every price weir ships is a
//! whole number of nanodollars per token (the cheapest, $0.005 per million, is 5), and an
//! `i64` counts past a billion dollars. Dollars are `Decimal` at the edges (config, status,
//! messages). Reservations round **up** to the next nanodollar, so a reservation never
//! undercounts; settlements round to the **nearest** nanodollar (exact for every bundled
//! price).
//!
//! # Worst case
//!
//! A call reserves what it could cost at most: its input tokens (an upper bound or an
//! estimate, see [`AdmissionRequest`](crate::pipeline::AdmissionRequest)) and its output
//! cap, at the dearest per-token prices of every deployment it may reach: a group's
//! deployments and those of every fallback (general, context-window and content-policy) it
//! lists; a direct `provider/model`, its own price. Input is priced at the highest of the
//! input, cached-input and cache-write prices (a cache write costs more than plain input).

use std::collections::HashMap;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::Config;
use crate::pricing::ModelPrice;

/// Nanodollars per dollar.
pub(crate) const UNITS_PER_USD: i64 = 1_000_000_000;
/// The largest budget limit weir counts, in dollars.
pub(crate) const MAX_USD: i64 = 1_000_000_000;

/// Dollars to nanodollars, rounded up; `None` past [`MAX_USD`] or below zero.
pub(crate) fn to_units_up(usd: Decimal) -> Option<i64> {
    to_units(usd, RoundingStrategy::ToPositiveInfinity)
}

/// Dollars to nanodollars, rounded to the nearest; `None` past [`MAX_USD`] or below zero.
pub(crate) fn to_units_nearest(usd: Decimal) -> Option<i64> {
    to_units(usd, RoundingStrategy::MidpointAwayFromZero)
}

fn to_units(usd: Decimal, rounding: RoundingStrategy) -> Option<i64> {
    if usd.is_sign_negative() || usd > Decimal::from(MAX_USD) {
        return None;
    }
    let units = usd
        .checked_mul(Decimal::from(UNITS_PER_USD))?
        .round_dp_with_strategy(0, rounding);
    i64::try_from(units).ok()
}

/// Nanodollars to dollars, exactly, without trailing zeros.
pub(crate) fn to_usd(units: i64) -> Decimal {
    (Decimal::from(units) / Decimal::from(UNITS_PER_USD)).normalize()
}

/// The dearest per-token prices a call may pay, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    input: Decimal,
    output: Decimal,
}

impl Rate {
    fn of(price: &ModelPrice) -> Self {
        let (input, output) = price.dearest();
        Self { input, output }
    }

    fn max(self, other: Self) -> Self {
        Self {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
        }
    }

    /// The cost of this many tokens, in nanodollars rounded up (saturating).
    pub(crate) fn cost_units(self, input_tokens: u64, output_tokens: u64) -> i64 {
        let per_million = Decimal::from(input_tokens)
            .checked_mul(self.input)
            .zip(Decimal::from(output_tokens).checked_mul(self.output))
            .and_then(|(i, o)| i.checked_add(o));
        // Dollars per million tokens: a thousand nanodollars per token at $1 per million.
        per_million
            .and_then(|d| d.checked_mul(Decimal::from(1000)))
            .map(|d| d.round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity))
            .and_then(|d| i64::try_from(d).ok())
            .unwrap_or(i64::MAX)
    }
}

/// The worst-case rate of every model name a call may ask for.
#[derive(Debug)]
pub(crate) struct Prices {
    config: Config,
    /// Configured groups (and aliases): the dearest of every deployment they may reach;
    /// `None` when none of them has a price.
    groups: HashMap<String, Option<Rate>>,
}

impl Prices {
    pub(crate) fn new(config: &Config) -> Self {
        let mut groups = HashMap::with_capacity(config.groups.len());
        for (name, group) in &config.groups {
            let direct =
                |provider: &str, model: &str| config.pricing.lookup(provider, model).map(Rate::of);
            let mut rate: Option<Rate> = None;
            let mut add = |r: Option<Rate>| {
                rate = match (rate, r) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            };
            for d in &group.deployments {
                add(direct(&d.provider, &d.upstream_model));
            }
            let fallbacks = group
                .fallbacks
                .iter()
                .chain(&group.context_window_fallbacks)
                .chain(&group.content_policy_fallbacks);
            for fallback in fallbacks {
                match config.groups.get(fallback) {
                    Some(g) => {
                        for d in &g.deployments {
                            add(direct(&d.provider, &d.upstream_model));
                        }
                    }
                    None => add(crate::client::route::resolve(config, fallback)
                        .ok()
                        .and_then(|r| direct(&r.provider, &r.upstream_model))),
                }
            }
            groups.insert(name.clone(), rate);
        }
        Self {
            config: config.clone(),
            groups,
        }
    }

    /// The dearest rate a call asking for `model` may pay; `None` when unpriced (or the
    /// name does not resolve: the call will fail before any upstream spend).
    pub(crate) fn rate(&self, model: &str) -> Option<Rate> {
        if !self.config.defaults.force_mock
            && let Some(rate) = self.groups.get(model.trim())
        {
            return *rate;
        }
        let route = crate::client::route::resolve(&self.config, model).ok()?;
        self.config
            .pricing
            .lookup(&route.provider, &route.upstream_model)
            .map(Rate::of)
    }
}
