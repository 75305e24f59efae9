//! Unit tests of the pricing table: the bundled rows, lookup, token kinds, tiers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use weir_types::chat::{CompletionTokensDetails, PromptTokensDetails};

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

fn per_million(n: &str) -> Decimal {
    d(n) / d("1000000")
}

fn usage(prompt: u64, completion: u64, cached: u64, written: u64, reasoning: u64) -> Usage {
    let mut u = Usage::new(prompt, completion);
    u.prompt_tokens_details = Some(PromptTokensDetails {
        cached_tokens: Some(cached),
        cache_creation_tokens: Some(written),
        audio_tokens: None,
    });
    u.completion_tokens_details = Some(CompletionTokensDetails {
        reasoning_tokens: Some(reasoning),
        ..CompletionTokensDetails::default()
    });
    u
}

#[test]
fn bundled_table_parses_completely() {
    let t = PricingTable::bundled();
    assert_eq!(
        t.len(),
        bundled::rows(),
        "a row failed to parse or is repeated"
    );
    for model in bundled::long_context_models() {
        let price = t.prices.get(model);
        assert!(
            price.is_some_and(|p| p.long_context.is_some()),
            "long-context row {model} names no model of the tables"
        );
    }
    for (model, price) in &t.prices {
        assert_eq!(price.problem(), None, "{model}");
    }
}

#[test]
fn bundled_table_covers_current_and_older_models() {
    let t = PricingTable::bundled();
    for (provider, model) in [
        ("openai", "gpt-5.1"),
        ("openai", "gpt-5.1-chat-latest"),
        ("openai", "gpt-5-chat-latest"),
        ("openai", "gpt-5.2"),
        ("openai", "gpt-4"),
        ("openai", "gpt-4-0613"),
        ("openai", "gpt-4-32k"),
        ("openai", "gpt-4-turbo-2024-04-09"),
        ("openai", "gpt-3.5-turbo-0125"),
        ("openai", "gpt-3.5-turbo-16k-0613"),
        ("openai", "o1-mini-2024-09-12"),
        ("openai", "o1-pro"),
        ("openai", "o3-pro-2025-06-10"),
        ("openai", "codex-mini-latest"),
        ("anthropic", "claude-3-opus-20240229"),
        ("anthropic", "claude-3-sonnet-20240229"),
        ("anthropic", "claude-3-haiku-20240307"),
        ("anthropic", "claude-3-5-sonnet-latest"),
        ("anthropic", "claude-3-5-haiku-20241022"),
        ("anthropic", "claude-3-7-sonnet-20250219"),
        ("anthropic", "claude-opus-4-5-20251101"),
        ("anthropic", "claude-haiku-4-5"),
        ("openrouter", "google/gemini-2.5-pro"),
        ("openrouter", "google/gemini-2.5-flash"),
        ("openrouter", "x-ai/grok-4"),
        ("openrouter", "deepseek/deepseek-chat"),
        ("openrouter", "mistralai/mistral-large"),
    ] {
        assert!(t.lookup(provider, model).is_some(), "{provider}/{model}");
    }
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
    let u = usage(10_000, 1_000, 6_000, 2_000, 0);
    // 2000 fresh * 3 + 6000 * 0.30 + 2000 * 3.75 + 1000 * 15, per million
    let expected = per_million("6000") + per_million("1800") + per_million("7500");
    let expected = expected + per_million("15000");
    assert_eq!(t.cost("anthropic", "claude-sonnet-4-5", &u), Some(expected));
}

#[test]
fn reasoning_tokens_pay_the_output_price_unless_priced() {
    let t = PricingTable::bundled();
    // o3: reasoning is output, so 1000 completion tokens of which 800 reasoning cost the same
    // as 1000 plain ones.
    let plain = t.cost("openai", "o3", &Usage::new(0, 1000));
    let reasoned = t.cost("openai", "o3", &usage(0, 1000, 0, 0, 800));
    assert_eq!(plain, reasoned);
    assert_eq!(plain, Some(per_million("8000")));

    let mut price = ModelPrice::new(d("1"), d("2"));
    price.reasoning = Some(d("5"));
    // 200 answer tokens at 2 + 800 reasoning at 5; reasoning beyond completion is clamped.
    assert_eq!(price.cost(&usage(0, 1000, 0, 0, 800)), per_million("4400"));
    assert_eq!(price.cost(&usage(0, 100, 0, 0, 900)), per_million("500"));
}

#[test]
fn long_context_prices_every_token_of_a_long_call() {
    let t = PricingTable::bundled();
    let sonnet = |prompt| t.cost("anthropic", "claude-sonnet-4-5", &Usage::new(prompt, 1000));
    // At the threshold: standard ($3 in, $15 out).
    assert_eq!(
        sonnet(200_000),
        Some(per_million("600000") + per_million("15000"))
    );
    // One token above: every token at $6 in, $22.50 out.
    assert_eq!(
        sonnet(200_001),
        Some(per_million("1200006") + per_million("22500"))
    );
    // Cached tokens count towards the threshold and pay the long tier's cached price.
    let u = usage(250_000, 0, 200_000, 0, 0);
    assert_eq!(
        t.cost("anthropic", "claude-sonnet-4", &u),
        Some(per_million("300000") + per_million("120000"))
    );
    // Gemini through OpenRouter, same rule.
    let gemini = t.cost(
        "openrouter",
        "google/gemini-2.5-pro",
        &Usage::new(300_000, 0),
    );
    assert_eq!(gemini, Some(per_million("750000")));
}

#[test]
fn long_context_tier_defaults_its_cache_prices_to_its_input() {
    let mut price = ModelPrice::new(d("1"), d("2"));
    price.long_context = Some(LongContextPrice {
        above_input_tokens: 10,
        input: d("3"),
        output: d("4"),
        cached_input: None,
        cache_write: None,
        reasoning: None,
    });
    assert_eq!(
        price.cost(&usage(20, 10, 5, 5, 0)),
        per_million("60") + per_million("40")
    );
    assert_eq!(price.dearest(), (d("3"), d("4")));
}

#[test]
fn batch_tier_applies_the_multiplier() {
    let t = PricingTable::bundled();
    let u = Usage::new(1_000_000, 1_000_000);
    let standard = t.cost_for("openai", "gpt-4o", &u, PriceTier::Standard);
    let batch = t.cost_for("openai", "gpt-4o", &u, PriceTier::Batch);
    assert_eq!(standard, Some(d("12.5")));
    assert_eq!(batch, Some(d("6.25")));
    let claude = t.cost_for("anthropic", "claude-opus-4-5", &u, PriceTier::Batch);
    assert_eq!(claude, Some(d("15")));
    // No batch discount known: the standard price.
    let grok = |tier| t.cost_for("xai", "grok-3", &u, tier);
    assert_eq!(grok(PriceTier::Batch), grok(PriceTier::Standard));
    // Long context and batch stack.
    let long = t.cost_for(
        "anthropic",
        "claude-sonnet-4-5",
        &Usage::new(1_000_000, 0),
        PriceTier::Batch,
    );
    assert_eq!(long, Some(d("3")));
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
    // A snapshot priced apart from its family.
    assert_eq!(
        t.lookup("openai", "gpt-4o-2024-05-13").map(|p| p.input),
        Some(d("5"))
    );
    assert_eq!(
        t.lookup("openai", "gpt-4-0125-preview").map(|p| p.input),
        Some(d("10"))
    );
    assert!(t.lookup("local", "llama3").is_none());
}

#[test]
fn openrouter_dotted_names_and_variants_resolve() {
    let t = PricingTable::bundled();
    let same = |a: (&str, &str), b: (&str, &str)| {
        let (x, y) = (t.lookup(a.0, a.1).copied(), t.lookup(b.0, b.1).copied());
        assert!(x.is_some(), "{a:?}");
        assert_eq!(x, y, "{a:?} vs {b:?}");
    };
    let or = "openrouter";
    same(
        (or, "anthropic/claude-3.5-sonnet"),
        ("anthropic", "claude-3-5-sonnet"),
    );
    same(
        (or, "anthropic/claude-sonnet-4.5"),
        ("anthropic", "claude-sonnet-4-5"),
    );
    same(
        (or, "anthropic/claude-3.7-sonnet:thinking"),
        ("anthropic", "claude-3-7-sonnet"),
    );
    same(
        (or, "anthropic/claude-3.5-sonnet-20240620"),
        ("anthropic", "claude-3-5-sonnet"),
    );
    same(
        (or, "anthropic/claude-3.5-haiku"),
        ("anthropic", "claude-3-5-haiku"),
    );
    same((or, "openai/gpt-4.1-mini"), ("openai", "gpt-4.1-mini"));
    same((or, "openai/gpt-5.1"), ("openai", "gpt-5.1"));
    // A free variant costs nothing.
    assert_eq!(
        t.cost(or, "deepseek/deepseek-chat:free", &Usage::new(1000, 1000)),
        Some(Decimal::ZERO)
    );
    // A dashed name must match past its first version: gpt-4.5 is not gpt-4.
    assert!(t.lookup(or, "openai/gpt-4.5-preview").is_none());
    assert!(t.lookup(or, "meta-llama/llama-3.1-70b-instruct").is_none());
}

#[test]
fn overrides_win() {
    let mut t = PricingTable::bundled();
    t.set("local/llama3", ModelPrice::new(d("0.1"), d("0.2")));
    assert_eq!(
        t.cost("local", "llama3", &Usage::new(1_000_000, 0)),
        Some(d("0.1"))
    );
}

#[test]
fn config_prices_parse_with_tiers() {
    let price: ModelPrice = serde_json::from_value(serde_json::json!({
        "input": 1, "output": 2, "reasoning": 3, "batch_multiplier": 0.5,
        "long_context": { "above_input_tokens": 128000, "input": 2, "output": 4 }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(price.problem(), None);
    assert_eq!(
        price.long_context.map(|l| l.above_input_tokens),
        Some(128_000)
    );

    let bad = |json: serde_json::Value| {
        let price: ModelPrice = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        price.problem().unwrap_or_default()
    };
    assert!(bad(serde_json::json!({"input": -1, "output": 2})).contains("negative"));
    assert!(
        bad(serde_json::json!({"input": 1, "output": 2, "batch_multiplier": 2})).contains("0 to 1")
    );
    assert!(
        bad(serde_json::json!({"input": 1, "output": 2,
            "long_context": {"above_input_tokens": 0, "input": 1, "output": 2}}))
        .contains("above 0")
    );
    assert!(
        bad(serde_json::json!({"input": 1, "output": 2,
            "long_context": {"above_input_tokens": 5, "input": 1, "output": -2}}))
        .contains("negative")
    );
    let unknown = serde_json::from_value::<ModelPrice>(serde_json::json!({
        "input": 1, "output": 2, "long_context": {"above": 5, "input": 1, "output": 2}
    }));
    assert!(unknown.is_err());
}

#[test]
fn unpriced_models_are_noted_once_each() {
    let unpriced = UnpricedModels::default();
    assert!(unpriced.note("local", "llama3"));
    assert!(!unpriced.note("local", "llama3"));
    assert!(unpriced.note("local", "qwen"));
    assert_eq!(unpriced.models(), ["local/llama3", "local/qwen"]);
    for i in 0..MAX_UNPRICED + 10 {
        unpriced.note("p", &format!("m{i}"));
    }
    assert_eq!(unpriced.models().len(), MAX_UNPRICED, "bounded");
}

/// Counts the warnings naming a model, as a log subscriber sees them.
struct WarnCounter {
    model: &'static str,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{value:?} "));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        if *event.metadata().level() == tracing::Level::WARN
            && text.0.contains(self.model)
            && text.0.contains("pricing:")
        {
            self.count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_unpriced_warning_is_logged_once_per_model() {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let subscriber = WarnCounter {
        model: "local/llama3",
        count: std::sync::Arc::clone(&count),
    };
    let unpriced = UnpricedModels::default();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..5 {
            unpriced.note("local", "llama3");
        }
        unpriced.note("local", "other");
    });
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
}
