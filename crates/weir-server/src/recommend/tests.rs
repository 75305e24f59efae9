#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn call(provider: &str, model: &str, output: u64, cost: &str) -> LedgerRecord {
    let mut r = LedgerRecord::new(1, "req", "chat", model);
    r.provider = Some(provider.into());
    r.upstream_model = Some(model.into());
    r.input_tokens = 1000;
    r.output_tokens = output;
    r.cost_usd = Some(d(cost));
    r
}

fn finish(calls: &[LedgerRecord]) -> Vec<Recommendation> {
    let mut a = LedgerAnalysis::default();
    for c in calls {
        a.add(c);
    }
    a.finish(&PricingTable::bundled(), Thresholds::default())
}

#[test]
fn short_answers_on_a_costly_model_suggest_its_cheaper_sibling() {
    // gpt-4o: 1000 in, 50 out = $0.003; gpt-4o-mini: $0.00018.
    let calls: Vec<_> = (0..20)
        .map(|_| call("openai", "gpt-4o", 50, "0.003"))
        .collect();
    let items = finish(&calls);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].kind, "cheaper_model");
    assert_eq!(items[0].figures["cheaper_model"], "gpt-4o-mini");
    assert_eq!(items[0].saving_usd.as_deref(), Some("0.0564"));
    assert!(items[0].message.contains("median answer of 50"));

    // Too few calls, long answers, or already the cheap one: nothing.
    assert!(finish(&calls[..19]).is_empty());
    let long: Vec<_> = (0..20)
        .map(|_| call("openai", "gpt-4o", 900, "0.0115"))
        .collect();
    assert!(finish(&long).is_empty());
    let mini: Vec<_> = (0..20)
        .map(|_| call("openai", "gpt-4o-mini", 50, "0.00018"))
        .collect();
    assert!(finish(&mini).is_empty());
}

#[test]
fn paid_repeats_of_a_prompt_suggest_caching() {
    let mut calls = Vec::new();
    for (fp, cache_status) in [("a", "miss"), ("a", "bypass"), ("a", "hit"), ("a", "miss")] {
        let mut c = call("openai", "gpt-4o", 500, "0.01");
        c.prompt_fingerprint = Some(fp.into());
        c.cache = cache_status.into();
        if cache_status == "hit" {
            c.cost_usd = Some(Decimal::ZERO);
        }
        calls.push(c);
    }
    let mut other = call("openai", "gpt-4o", 500, "0.01");
    other.prompt_fingerprint = Some("b".into());
    calls.push(other);
    let items = finish(&calls);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].kind, "cache_repeats");
    assert_eq!(items[0].figures["repeats"], 2);
    assert_eq!(items[0].figures["prompts"], 1);
    assert_eq!(items[0].saving_usd.as_deref(), Some("0.02"));
}

#[test]
fn frequent_retries_are_reported_without_a_saving() {
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut c = call("anthropic", "claude-haiku-4-5", 500, "0.0035");
            c.attempts = if i < 2 { 3 } else { 1 };
            c
        })
        .collect();
    let items = finish(&calls);
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].kind, "retries");
    assert_eq!(items[0].figures["retried_percent"], "10");
    assert_eq!(items[0].saving_usd, None);
    assert!(finish(&calls[1..]).is_empty(), "1 in 19 is under 10%");
}

fn key(id: &str, created: i64, used: Option<i64>, expires: Option<i64>) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        name: id.into(),
        hint: "wk-…".into(),
        user: None,
        team: None,
        project: None,
        models: Vec::new(),
        limits: weir_store::KeyLimits::default(),
        allow_user_override: false,
        enabled: true,
        expires_at: expires,
        revoked_at: None,
        metadata: serde_json::Map::new(),
        created_at: created,
        updated_at: created,
        last_used_at: used,
    }
}

#[test]
fn idle_and_expired_keys_are_reported_once_each() {
    let day = 86_400;
    let now = 1_000 * day;
    let keys_now = [
        key("busy", now - 90 * day, Some(now - day), None),
        key("idle", now - 90 * day, Some(now - 31 * day), None),
        key("never", now - 40 * day, None, None),
        key(
            "expired",
            now - 90 * day,
            Some(now - 40 * day),
            Some(now - 2 * day),
        ),
    ];
    let items = keys(&keys_now, now, Thresholds::default());
    let kinds: Vec<_> = items
        .iter()
        .map(|r| (r.kind, r.figures["key_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("idle_key", "idle"),
            ("idle_key", "never"),
            ("expired_key", "expired")
        ]
    );
    assert!(items[2].message.contains("weir keys revoke expired"));
}

#[test]
fn sorting_puts_the_largest_saving_first() {
    let r = |s: Option<&str>| Recommendation::new("x", String::new(), Value::Null, s.map(d));
    let mut items = vec![r(None), r(Some("1")), r(Some("5"))];
    sort(&mut items);
    let order: Vec<_> = items.iter().map(|i| i.saving_usd.clone()).collect();
    assert_eq!(order, [Some("5".into()), Some("1".into()), None]);
}
