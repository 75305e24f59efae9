//! The bundled price table: list prices as the providers publish them, in dollars per million
//! tokens, for standard (synchronous) calls.
//!
//! Models are grouped by vendor because a vendor's batch discount applies to all its models.
//! Names are the vendors' own (`claude-3-5-sonnet`, `gemini-2.5-pro`); OpenRouter's names
//! (`anthropic/claude-3.5-sonnet`) resolve to them by the lookup rules of [`super`]. A dated
//! snapshot priced like its family needs no row; one priced differently does
//! (`gpt-4o-2024-05-13`).
//!
//! Audio and realtime models are left out on purpose: they price audio tokens apart from
//! text, which the usage weir records does not split, so a row would under-count them. Their
//! calls are reported as unpriced until a `pricing:` entry prices them.

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::{LongContextPrice, ModelPrice};

/// (model, input, output, cached input, cache write); `""`: the provider has no such price
/// (those tokens pay the input price).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// OpenAI: batch calls pay half.
const OPENAI: &[Row] = &[
    ("gpt-5.2", "1.75", "14.00", "0.175", ""),
    ("gpt-5.2-pro", "21.00", "168.00", "", ""),
    ("gpt-5.1", "1.25", "10.00", "0.125", ""),
    ("gpt-5.1-chat", "1.25", "10.00", "0.125", ""),
    ("gpt-5.1-codex", "1.25", "10.00", "0.125", ""),
    ("gpt-5.1-codex-mini", "0.25", "2.00", "0.025", ""),
    ("gpt-5", "1.25", "10.00", "0.125", ""),
    ("gpt-5-chat", "1.25", "10.00", "0.125", ""),
    ("gpt-5-codex", "1.25", "10.00", "0.125", ""),
    ("gpt-5-pro", "15.00", "120.00", "", ""),
    ("gpt-5-mini", "0.25", "2.00", "0.025", ""),
    ("gpt-5-nano", "0.05", "0.40", "0.005", ""),
    ("gpt-4.1", "2.00", "8.00", "0.50", ""),
    ("gpt-4.1-mini", "0.40", "1.60", "0.10", ""),
    ("gpt-4.1-nano", "0.10", "0.40", "0.025", ""),
    ("gpt-4o", "2.50", "10.00", "1.25", ""),
    ("gpt-4o-2024-05-13", "5.00", "15.00", "", ""),
    ("chatgpt-4o", "5.00", "15.00", "", ""),
    ("gpt-4o-mini", "0.15", "0.60", "0.075", ""),
    ("gpt-4-turbo", "10.00", "30.00", "", ""),
    ("gpt-4-1106-preview", "10.00", "30.00", "", ""),
    ("gpt-4-0125-preview", "10.00", "30.00", "", ""),
    ("gpt-4-vision-preview", "10.00", "30.00", "", ""),
    ("gpt-4", "30.00", "60.00", "", ""),
    ("gpt-4-32k", "60.00", "120.00", "", ""),
    ("gpt-3.5-turbo", "0.50", "1.50", "", ""),
    ("gpt-3.5-turbo-1106", "1.00", "2.00", "", ""),
    ("gpt-3.5-turbo-0613", "1.50", "2.00", "", ""),
    ("gpt-3.5-turbo-0301", "1.50", "2.00", "", ""),
    ("gpt-3.5-turbo-16k", "3.00", "4.00", "", ""),
    ("gpt-3.5-turbo-instruct", "1.50", "2.00", "", ""),
    ("o1", "15.00", "60.00", "7.50", ""),
    ("o1-preview", "15.00", "60.00", "7.50", ""),
    ("o1-mini", "1.10", "4.40", "0.55", ""),
    ("o1-pro", "150.00", "600.00", "", ""),
    ("o3", "2.00", "8.00", "0.50", ""),
    ("o3-pro", "20.00", "80.00", "", ""),
    ("o3-mini", "1.10", "4.40", "0.55", ""),
    ("o3-deep-research", "10.00", "40.00", "2.50", ""),
    ("o4-mini", "1.10", "4.40", "0.275", ""),
    ("o4-mini-deep-research", "2.00", "8.00", "0.50", ""),
    ("codex-mini", "1.50", "6.00", "0.375", ""),
    ("text-embedding-3-small", "0.02", "0", "", ""),
    ("text-embedding-3-large", "0.13", "0", "", ""),
    ("text-embedding-ada-002", "0.10", "0", "", ""),
];

/// Anthropic (cache writes at the 5-minute rate): batch calls pay half.
const ANTHROPIC: &[Row] = &[
    ("claude-opus-4-5", "5.00", "25.00", "0.50", "6.25"),
    ("claude-opus-4-1", "15.00", "75.00", "1.50", "18.75"),
    ("claude-opus-4", "15.00", "75.00", "1.50", "18.75"),
    ("claude-sonnet-4-5", "3.00", "15.00", "0.30", "3.75"),
    ("claude-sonnet-4", "3.00", "15.00", "0.30", "3.75"),
    ("claude-haiku-4-5", "1.00", "5.00", "0.10", "1.25"),
    ("claude-3-7-sonnet", "3.00", "15.00", "0.30", "3.75"),
    ("claude-3-5-sonnet", "3.00", "15.00", "0.30", "3.75"),
    ("claude-3-5-haiku", "0.80", "4.00", "0.08", "1.00"),
    ("claude-3-opus", "15.00", "75.00", "1.50", "18.75"),
    ("claude-3-sonnet", "3.00", "15.00", "", ""),
    ("claude-3-haiku", "0.25", "1.25", "0.03", "0.30"),
    ("claude-2.1", "8.00", "24.00", "", ""),
    ("claude-2.0", "8.00", "24.00", "", ""),
    ("claude-instant-1.2", "0.80", "2.40", "", ""),
];

/// Google Gemini (as served directly and through OpenRouter): batch calls pay half.
const GOOGLE: &[Row] = &[
    ("gemini-3-pro-preview", "2.00", "12.00", "0.20", ""),
    ("gemini-2.5-pro", "1.25", "10.00", "0.125", ""),
    ("gemini-2.5-flash", "0.30", "2.50", "0.03", ""),
    ("gemini-2.5-flash-lite", "0.10", "0.40", "0.01", ""),
    ("gemini-2.0-flash", "0.10", "0.40", "0.025", ""),
    ("gemini-2.0-flash-lite", "0.075", "0.30", "", ""),
];

/// Other vendors OpenRouter serves, at their first-party prices; no batch discount is
/// assumed.
const OTHERS: &[Row] = &[
    ("grok-4", "3.00", "15.00", "0.75", ""),
    ("grok-4-fast", "0.20", "0.50", "0.05", ""),
    ("grok-3", "3.00", "15.00", "0.75", ""),
    ("grok-3-mini", "0.30", "0.50", "0.075", ""),
    ("grok-code-fast-1", "0.20", "1.50", "0.02", ""),
    ("deepseek-chat", "0.28", "0.42", "0.028", ""),
    ("deepseek-reasoner", "0.28", "0.42", "0.028", ""),
    ("mistral-large", "2.00", "6.00", "", ""),
    ("mistral-medium-3", "0.40", "2.00", "", ""),
    ("mistral-small", "0.10", "0.30", "", ""),
    ("codestral", "0.30", "0.90", "", ""),
    // The mock is free; tests that need a price configure one.
    ("mock/echo", "0", "0", "", ""),
    ("mock/lorem", "0", "0", "", ""),
];

/// (model, above input tokens, input, output, cached input, cache write): the long-context
/// tier of models in the tables above.
const LONG_CONTEXT: &[(&str, u64, &str, &str, &str, &str)] = &[
    (
        "claude-sonnet-4-5",
        200_000,
        "6.00",
        "22.50",
        "0.60",
        "7.50",
    ),
    ("claude-sonnet-4", 200_000, "6.00", "22.50", "0.60", "7.50"),
    ("gemini-3-pro-preview", 200_000, "4.00", "18.00", "0.40", ""),
    ("gemini-2.5-pro", 200_000, "2.50", "15.00", "0.25", ""),
    ("grok-4", 128_000, "6.00", "30.00", "1.50", ""),
    ("grok-4-fast", 128_000, "0.40", "1.00", "0.05", ""),
];

/// Every table with its vendor's batch multiplier.
fn tables() -> [(&'static [Row], Option<&'static str>); 4] {
    [
        (OPENAI, Some("0.5")),
        (ANTHROPIC, Some("0.5")),
        (GOOGLE, Some("0.5")),
        (OTHERS, None),
    ]
}

/// How many rows the tables hold (each model once).
pub(super) fn rows() -> usize {
    tables().iter().map(|(t, _)| t.len()).sum()
}

/// The long-context rows, for tests.
#[cfg(test)]
pub(super) fn long_context_models() -> impl Iterator<Item = &'static str> {
    LONG_CONTEXT.iter().map(|row| row.0)
}

/// A price as written in a table: `""` is none. The tables are constants checked by a unit
/// test, so a parse failure cannot happen at run time; a row that failed would be skipped
/// (its model unpriced) rather than panic.
fn parse(text: &str) -> Option<Decimal> {
    (!text.is_empty())
        .then(|| Decimal::from_str(text).ok())
        .flatten()
}

/// The bundled prices by model name.
pub(super) fn prices() -> HashMap<String, ModelPrice> {
    let mut prices = HashMap::with_capacity(rows());
    for (table, batch) in tables() {
        for (model, input, output, cached, write) in table {
            let (Some(input), Some(output)) = (parse(input), parse(output)) else {
                continue;
            };
            let mut price = ModelPrice::new(input, output);
            price.cached_input = parse(cached);
            price.cache_write = parse(write);
            price.batch_multiplier = batch.and_then(parse);
            prices.insert((*model).to_owned(), price);
        }
    }
    for (model, above, input, output, cached, write) in LONG_CONTEXT {
        let (Some(input), Some(output)) = (parse(input), parse(output)) else {
            continue;
        };
        if let Some(price) = prices.get_mut(*model) {
            price.long_context = Some(LongContextPrice {
                above_input_tokens: *above,
                input,
                output,
                cached_input: parse(cached),
                cache_write: parse(write),
                reasoning: None,
            });
        }
    }
    prices
}
