//! What the ledger suite (`tests/ledger.rs`) shares: fresh stores on both backends, a fixture
//! of calls covering every kind of value, and an in-memory model of what totals must be.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rust_decimal::Decimal;
use weir_store::ledger::{DAY_MS, HOUR_MS};
use weir_store::{Dimension, LedgerRecord, LedgerStore, StoreLocation, UsageQuery, UsageRow};
use weir_test_support::postgres::PostgresServer;

/// A fresh store location, removed (SQLite) when dropped.
pub struct Fresh {
    pub location: StoreLocation,
    dir: Option<PathBuf>,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn sqlite(name: &str) -> Fresh {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-ledger-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Fresh {
        location: StoreLocation::Sqlite(dir.join("weir.db")),
        dir: Some(dir),
    }
}

/// `None` (skip) when Postgres is not installed and not required.
pub fn postgres(name: &str) -> Option<Fresh> {
    let server = PostgresServer::shared().expect("start the shared postgres server")?;
    let url = server
        .create_unique_database(name)
        .expect("create a fresh database");
    Some(Fresh {
        location: StoreLocation::Postgres(url),
        dir: None,
    })
}

pub async fn open(location: &StoreLocation) -> Arc<dyn LedgerStore> {
    weir_store::open_store(location)
        .await
        .expect("open the store")
        .ledger
}

pub fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// 2026-11-05T00:00:00Z.
pub const D0: i64 = 1_793_836_800_000;
/// 2026-11-06T00:00:00Z.
pub const D1: i64 = D0 + DAY_MS;
/// 2026-11-07T00:00:00Z.
pub const D2: i64 = D1 + DAY_MS;

pub fn day_of(ms: i64) -> String {
    format!("2026-11-{:02}", 5 + (ms - D0).div_euclid(DAY_MS))
}

pub fn hour_of(ms: i64) -> String {
    let day = day_of(ms);
    format!("{day}T{:02}:00:00Z", (ms - D0).rem_euclid(DAY_MS) / HOUR_MS)
}

/// A successful, priced call with every optional field empty.
pub fn call(at_ms: i64, request_id: &str, model: &str) -> LedgerRecord {
    LedgerRecord {
        at_ms,
        request_id: request_id.into(),
        key_id: None,
        user: None,
        team: None,
        project: None,
        tags: Vec::new(),
        operation: "chat".into(),
        model: model.into(),
        provider: None,
        upstream_model: None,
        status: 200,
        outcome: "success".into(),
        error_kind: None,
        attempts: 1,
        cache: "bypass".into(),
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: Some(Decimal::ZERO),
        saved_usd: None,
        latency_us: 1_000,
        upstream_us: None,
        first_token_us: None,
        prompt_fingerprint: None,
    }
}

/// `call` with the attribution fields set (`None` where given as "").
#[allow(clippy::too_many_arguments)]
pub fn attributed(
    at_ms: i64,
    id: &str,
    key: &str,
    user: &str,
    team: &str,
    project: &str,
    model: &str,
    provider: &str,
) -> LedgerRecord {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    LedgerRecord {
        key_id: some(key),
        user: some(user),
        team: some(team),
        project: some(project),
        provider: some(provider),
        upstream_model: some(provider).map(|_| format!("{model}-2026")),
        ..call(at_ms, id, model)
    }
}

/// Six calls over two days, covering every kind of value and outcome.
pub fn fixture() -> Vec<LedgerRecord> {
    let mut r1 = attributed(
        D0 + HOUR_MS,
        "r1",
        "k1",
        "alice",
        "t1",
        "p1",
        "gpt-4o",
        "openai",
    );
    r1.cost_usd = Some(dec("0.01"));
    r1.input_tokens = 100;
    r1.output_tokens = 10;
    r1.cache = "miss".into();
    let mut r2 = attributed(
        D0 + HOUR_MS + 300_000,
        "r2",
        "k1",
        "alice",
        "t1",
        "p1",
        "gpt-4o",
        "openai",
    );
    r2.cost_usd = Some(dec("0.02"));
    r2.input_tokens = 200;
    r2.output_tokens = 20;
    r2.reasoning_tokens = 5;
    r2.outcome = "failure".into();
    r2.status = 502;
    r2.error_kind = Some("upstream".into());
    let mut r3 = attributed(
        D0 + 2 * HOUR_MS,
        "r3",
        "k2",
        "bob",
        "t1",
        "p2",
        "claude",
        "anthropic",
    );
    r3.cache = "hit".into();
    r3.attempts = 0;
    r3.input_tokens = 1000;
    r3.cached_input_tokens = 1000;
    r3.saved_usd = Some(dec("0.5"));
    let mut r4 = attributed(
        D0 + 2 * HOUR_MS + 1_800_000,
        "r4",
        "k2",
        "",
        "t2",
        "",
        "claude",
        "anthropic",
    );
    r4.cost_usd = None;
    r4.input_tokens = 50;
    let mut r5 = attributed(
        D1 + 3 * HOUR_MS,
        "r5",
        "k1",
        "alice",
        "t1",
        "p1",
        "gpt-4o",
        "azure",
    );
    r5.cache = "coalesced".into();
    r5.saved_usd = Some(dec("1.25"));
    r5.output_tokens = 7;
    let mut r6 = attributed(
        D1 + 3 * HOUR_MS,
        "r6",
        "",
        "carol",
        "",
        "p2",
        "local-llama",
        "",
    );
    r6.cost_usd = None;
    r6.outcome = "disconnected".into();
    r6.status = 499;
    vec![r1, r2, r3, r4, r5, r6]
}

pub async fn stored_fixture(location: &StoreLocation) -> Arc<dyn LedgerStore> {
    let store = open(location).await;
    store.append(&fixture(), None).await.expect("append");
    store
}

/// The value of a dimension for a record, as groups show it.
pub fn value_of(record: &LedgerRecord, d: Dimension) -> Option<String> {
    match d {
        Dimension::Key => record.key_id.clone(),
        Dimension::User => record.user.clone(),
        Dimension::Team => record.team.clone(),
        Dimension::Project => record.project.clone(),
        Dimension::Model => Some(record.model.clone()),
        Dimension::Provider => record.provider.clone(),
        Dimension::Day => Some(day_of(record.at_ms)),
        Dimension::Hour => Some(hour_of(record.at_ms)),
    }
}

/// What `usage` must answer, computed in memory.
pub fn model(records: &[LedgerRecord], query: &UsageQuery) -> Vec<UsageRow> {
    let mut groups: BTreeMap<Vec<Option<String>>, UsageRow> = BTreeMap::new();
    let empty = |group: Vec<(Dimension, Option<String>)>| UsageRow {
        group,
        requests: 0,
        errors: 0,
        cache_hits: 0,
        input_tokens: 0,
        output_tokens: 0,
        cached_input_tokens: 0,
        reasoning_tokens: 0,
        cost_usd: Decimal::ZERO,
        saved_usd: Decimal::ZERO,
        unpriced_calls: 0,
    };
    if query.group_by.is_empty() {
        groups.insert(Vec::new(), empty(Vec::new()));
    }
    for r in records {
        if r.at_ms < query.from_ms || r.at_ms >= query.to_ms {
            continue;
        }
        let matches = Dimension::ALL.iter().all(|d| {
            let wanted: Vec<&String> = query
                .filters
                .iter()
                .filter(|(fd, _)| fd == d)
                .map(|(_, v)| v)
                .collect();
            wanted.is_empty() || value_of(r, *d).is_some_and(|v| wanted.contains(&&v))
        });
        if !matches {
            continue;
        }
        let key: Vec<Option<String>> = query.group_by.iter().map(|d| value_of(r, *d)).collect();
        let row = groups
            .entry(key.clone())
            .or_insert_with(|| empty(query.group_by.iter().copied().zip(key).collect()));
        row.requests += 1;
        row.errors += u64::from(r.outcome == "failure");
        row.cache_hits += u64::from(r.cache == "hit" || r.cache == "coalesced");
        row.input_tokens += r.input_tokens;
        row.output_tokens += r.output_tokens;
        row.cached_input_tokens += r.cached_input_tokens;
        row.reasoning_tokens += r.reasoning_tokens;
        row.cost_usd += r.cost_usd.unwrap_or_default();
        row.saved_usd += r.saved_usd.unwrap_or_default();
        row.unpriced_calls += u64::from(r.cost_usd.is_none());
    }
    groups.into_values().collect()
}

pub fn query(group_by: &[Dimension], filters: &[(Dimension, &str)]) -> UsageQuery {
    UsageQuery {
        from_ms: D0,
        to_ms: D2,
        group_by: group_by.to_vec(),
        filters: filters.iter().map(|(d, v)| (*d, v.to_string())).collect(),
    }
}
