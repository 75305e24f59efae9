//! The usage-ledger behaviour every backend must have, run against both: SQLite in a fresh
//! temporary file, Postgres in a fresh database on one throwaway server per test binary.
//!
//! Each scenario is an `async fn(&StoreLocation)`; the `suite!` macro makes a `sqlite::NAME`
//! and a `postgres::NAME` test of it. Totals are checked against a plain in-memory model of
//! the same records, for every dimension and filter, plus hand-checked figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ledger_support;

use rust_decimal::Decimal;
use weir_store::ledger::HOUR_MS;
use weir_store::{
    Dimension, LedgerRecord, LedgerStore, Savings, Spend, SpendFilter, SpoolRange, StoreError,
    StoreLocation, UsageQuery,
};
use weir_test_support::postgres::PostgresServer;

use ledger_support::*;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = crate::ledger_support::sqlite(stringify!($name));
                    crate::$name(&fresh.location).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(fresh) = crate::ledger_support::postgres(stringify!($name)) else {
                        eprintln!("postgres not installed: skipping");
                        return;
                    };
                    crate::$name(&fresh.location).await;
                }
            )*
        }
    };
}

suite!(
    records_round_trip,
    append_and_offset_move_together,
    a_failed_append_moves_nothing,
    usage_groups_by_each_dimension,
    usage_filters_by_each_dimension,
    usage_with_nothing_matching,
    spend_for_each_filter_kind,
    decimal_sums_are_exact,
    unpriced_calls_are_not_free,
    out_of_range_costs_are_refused,
    retention_deletes_calls_and_ended_days,
    roll_up_keeps_totals,
    roll_up_twice_adds_late_calls,
    savings_split_hits_and_coalesced_calls,
    savings_survive_a_roll_up,
    concurrent_sweeps_change_no_total,
);

async fn records_round_trip(location: &StoreLocation) {
    let store = open(location).await;
    let mut full = fixture().remove(0);
    full.tags = vec![
        ("env".into(), "prod".into()),
        ("team".into(), "a \"b\"".into()),
    ];
    full.cache_write_tokens = 12;
    full.tokens_estimated = true;
    full.saved_usd = Some(dec("0.000000000001"));
    full.upstream_us = Some(900);
    full.first_token_us = Some(120);
    full.prompt_fingerprint = Some("fp-3f9a".into());
    full.status = u16::MAX;
    full.attempts = u32::MAX;
    full.input_tokens = i64::MAX as u64;
    let bare = call(D0, "bare", "m");
    store
        .append(&[full.clone(), bare.clone()], None)
        .await
        .unwrap();
    let back = store.records(D0, D2, 10).await.unwrap();
    assert_eq!(back, vec![bare.clone(), full.clone()], "oldest first");
    assert_eq!(store.records(D0, D2, 1).await.unwrap(), vec![bare]);
    assert_eq!(
        store.records(D0 + 1, D0 + HOUR_MS, 10).await.unwrap(),
        vec![]
    );
    assert_eq!(store.count().await.unwrap(), 2);
}

async fn append_and_offset_move_together(location: &StoreLocation) {
    let store = open(location).await;
    assert_eq!(store.spool_offset("sp-a").await.unwrap(), 0, "never seen");
    let batch = fixture();
    let a = |from, to| Some(SpoolRange::new("sp-a", from, to));
    store.append(&batch[..2], a(0, 100)).await.unwrap();
    assert_eq!(store.spool_offset("sp-a").await.unwrap(), 100);
    assert_eq!(store.count().await.unwrap(), 2);

    // A repeat (ending where the spool is, or before) is a no-op, not a second copy.
    store.append(&batch[..2], a(0, 100)).await.unwrap();
    store.append(&batch[..1], a(0, 40)).await.unwrap();
    store.append(&batch[..1], a(40, 100)).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    assert_eq!(store.spool_offset("sp-a").await.unwrap(), 100);

    // A batch that overlaps what is stored, or leaves a gap, is out of step: nothing moves.
    for (from, to) in [(50, 150), (120, 150)] {
        let err = store.append(&batch[..1], a(from, to)).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("stored up to offset 100"), "{err}");
    }
    assert_eq!(store.count().await.unwrap(), 2);
    assert_eq!(store.spool_offset("sp-a").await.unwrap(), 100);

    // Spools are independent; an empty append moves the offset alone.
    let b = Some(SpoolRange::new("sp-b", 0, 7));
    store.append(&batch[2..], b).await.unwrap();
    store.append(&[], a(100, 150)).await.unwrap();
    assert_eq!(store.spool_offset("sp-a").await.unwrap(), 150);
    assert_eq!(store.spool_offset("sp-b").await.unwrap(), 7);
    assert_eq!(store.count().await.unwrap(), 6);

    // Without a spool, records just go in.
    store.append(&batch[..1], None).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 7);

    // Offsets up to 2^63 - 1 are kept; beyond, or backwards, is refused before anything is
    // written.
    let max = i64::MAX as u64;
    let c = |from, to| Some(SpoolRange::new("sp-c", from, to));
    store.append(&[], c(0, max)).await.unwrap();
    assert_eq!(store.spool_offset("sp-c").await.unwrap(), max);
    for (from, to) in [(max, max + 1), (5, 4), (5, 5)] {
        let err = store.append(&batch[..1], c(from, to)).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
    }
    assert_eq!(store.count().await.unwrap(), 7);
}

async fn a_failed_append_moves_nothing(location: &StoreLocation) {
    let store = open(location).await;
    let sp = |from, to| Some(SpoolRange::new("sp", from, to));
    store.append(&fixture()[..1], sp(0, 10)).await.unwrap();
    // Make the database refuse one record mid-transaction, after the offset has moved.
    match location {
        StoreLocation::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(
                "CREATE TRIGGER boom BEFORE INSERT ON weir_ledger \
                 WHEN NEW.request_id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;",
            )
            .unwrap();
        }
        StoreLocation::Postgres(url) => {
            let server = PostgresServer::shared().unwrap().unwrap();
            let db = url.rsplit('/').next().unwrap();
            server
                .execute(
                    db,
                    "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN \
                     IF NEW.request_id = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql; \
                     CREATE TRIGGER boom BEFORE INSERT ON weir_ledger FOR EACH ROW \
                     EXECUTE FUNCTION boom();",
                )
                .unwrap();
        }
    }
    let batch = vec![call(D0, "fine", "m"), call(D0, "boom", "m")];
    let err = store.append(&batch, sp(10, 20)).await.unwrap_err();
    assert!(matches!(err, StoreError::Query { .. }), "{err}");
    assert!(err.to_string().contains("appending usage records"), "{err}");
    assert_eq!(store.count().await.unwrap(), 1, "no record of the batch");
    assert_eq!(
        store.spool_offset("sp").await.unwrap(),
        10,
        "offset unmoved"
    );
    // The same batch without the poison goes in, once.
    store.append(&batch[..1], sp(10, 20)).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 2);
    assert_eq!(store.spool_offset("sp").await.unwrap(), 20);
}

async fn usage_groups_by_each_dimension(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let records = fixture();
    let mut groupings: Vec<Vec<Dimension>> = vec![vec![]];
    groupings.extend(Dimension::ALL.iter().map(|d| vec![*d]));
    groupings.push(vec![Dimension::Model, Dimension::Day]);
    groupings.push(vec![Dimension::Hour, Dimension::Provider, Dimension::User]);
    groupings.push(Dimension::ALL.to_vec());
    for group_by in groupings {
        let q = query(&group_by, &[]);
        assert_eq!(
            store.usage(&q).await.unwrap(),
            model(&records, &q),
            "{group_by:?}"
        );
    }

    // Hand-checked: by model.
    let rows = store.usage(&query(&[Dimension::Model], &[])).await.unwrap();
    let claude = &rows[0];
    assert_eq!(
        claude.group,
        vec![(Dimension::Model, Some("claude".into()))]
    );
    assert_eq!(
        (claude.requests, claude.cache_hits, claude.unpriced_calls),
        (2, 1, 1)
    );
    assert_eq!((claude.cost_usd, claude.saved_usd), (dec("0"), dec("0.5")));
    let gpt = &rows[1];
    assert_eq!((gpt.requests, gpt.errors, gpt.cache_hits), (3, 1, 1));
    assert_eq!(
        (gpt.input_tokens, gpt.output_tokens, gpt.reasoning_tokens),
        (300, 37, 5)
    );
    assert_eq!((gpt.cost_usd, gpt.saved_usd), (dec("0.03"), dec("1.25")));
    // Calls without a value group under None, first.
    let by_user = store.usage(&query(&[Dimension::User], &[])).await.unwrap();
    assert_eq!(by_user[0].group, vec![(Dimension::User, None)]);
    let by_hour = store.usage(&query(&[Dimension::Hour], &[])).await.unwrap();
    let hours: Vec<_> = by_hour
        .iter()
        .map(|r| r.group[0].1.clone().unwrap())
        .collect();
    assert_eq!(
        hours,
        [
            "2026-11-05T01:00:00Z",
            "2026-11-05T02:00:00Z",
            "2026-11-06T03:00:00Z"
        ]
    );
    // A range that cuts the day.
    let q = UsageQuery {
        from_ms: D0 + 2 * HOUR_MS,
        to_ms: D1 + 3 * HOUR_MS,
        ..query(&[Dimension::Key], &[])
    };
    assert_eq!(store.usage(&q).await.unwrap(), model(&records, &q));
    let err = store
        .usage(&query(&[Dimension::Day, Dimension::Day], &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
}

async fn usage_filters_by_each_dimension(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let records = fixture();
    for d in Dimension::ALL {
        let mut values: Vec<String> = records.iter().filter_map(|r| value_of(r, d)).collect();
        values.sort();
        values.dedup();
        values.push("nobody".into());
        for value in &values {
            if matches!(d, Dimension::Day | Dimension::Hour) && value == "nobody" {
                continue;
            }
            let q = query(&[Dimension::Team], &[(d, value)]);
            assert_eq!(
                store.usage(&q).await.unwrap(),
                model(&records, &q),
                "{d}={value}"
            );
        }
    }
    // Same dimension: any value; different dimensions: all.
    for filters in [
        vec![
            (Dimension::Model, "claude"),
            (Dimension::Model, "local-llama"),
        ],
        vec![(Dimension::Key, "k1"), (Dimension::Provider, "azure")],
        vec![
            (Dimension::Day, "2026-11-06"),
            (Dimension::User, "alice"),
            (Dimension::User, "carol"),
        ],
        vec![
            (Dimension::Hour, "2026-11-05T01:00:00Z"),
            (Dimension::Hour, "2026-11-06T03:00:00Z"),
        ],
    ] {
        let q = query(&[Dimension::Model], &filters);
        let rows = store.usage(&q).await.unwrap();
        assert!(!rows.is_empty(), "{filters:?}");
        assert_eq!(rows, model(&records, &q), "{filters:?}");
    }
    let err = store
        .usage(&query(&[], &[(Dimension::Day, "Tuesday")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2026-11-05"), "{err}");
}

async fn usage_with_nothing_matching(location: &StoreLocation) {
    let store = open(location).await;
    let totals = store.usage(&query(&[], &[])).await.unwrap();
    assert_eq!(totals, model(&[], &query(&[], &[])));
    assert_eq!(totals.len(), 1, "one row of zeros");
    assert_eq!(totals[0].cost_usd, Decimal::ZERO);
    assert!(
        store
            .usage(&query(&[Dimension::Key], &[]))
            .await
            .unwrap()
            .is_empty()
    );
    let backwards = UsageQuery {
        from_ms: D2,
        to_ms: D0,
        ..query(&[Dimension::Key], &[])
    };
    store.append(&fixture(), None).await.unwrap();
    assert!(store.usage(&backwards).await.unwrap().is_empty());
}

async fn spend_for_each_filter_kind(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let spend = |cost: &str, calls, unpriced_calls| Spend {
        cost_usd: dec(cost),
        calls,
        unpriced_calls,
    };
    let f = |key: &str, user: &str, team: &str, project: &str, model: &str| {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        SpendFilter {
            key_id: some(key),
            user: some(user),
            team: some(team),
            project: some(project),
            model: some(model),
        }
    };
    for (filter, expected) in [
        (f("", "", "", "", ""), spend("0.03", 6, 2)),
        (f("k1", "", "", "", ""), spend("0.03", 3, 0)),
        (f("k2", "", "", "", ""), spend("0", 2, 1)),
        (f("", "alice", "", "", ""), spend("0.03", 3, 0)),
        (f("", "", "t1", "", ""), spend("0.03", 4, 0)),
        (f("", "", "", "p2", ""), spend("0", 2, 1)),
        (f("", "", "", "", "claude"), spend("0", 2, 1)),
        (f("k1", "", "", "", "claude"), spend("0", 0, 0)),
        (f("nobody", "", "", "", ""), spend("0", 0, 0)),
    ] {
        assert_eq!(
            store.spend(&filter, D0, D2).await.unwrap(),
            expected,
            "{filter:?}"
        );
    }
    // The range bounds: [from, to).
    let all = f("", "", "", "", "");
    assert_eq!(store.spend(&all, D1, D2).await.unwrap(), spend("0", 2, 1));
    assert_eq!(
        store
            .spend(&all, D0 + HOUR_MS, D0 + HOUR_MS + 300_000)
            .await
            .unwrap(),
        spend("0.01", 1, 0)
    );
    assert_eq!(
        store
            .spend(&all, D0 + HOUR_MS, D0 + HOUR_MS + 300_001)
            .await
            .unwrap(),
        spend("0.03", 2, 0)
    );
}

async fn decimal_sums_are_exact(location: &StoreLocation) {
    let store = open(location).await;
    let records: Vec<LedgerRecord> = (0..1000)
        .map(|i| {
            let mut r = call(D0 + i, &format!("r{i}"), "tiny");
            r.key_id = Some("k".into());
            r.cost_usd = Some(dec("0.000000075"));
            r.saved_usd = Some(dec("0.1"));
            r
        })
        .collect();
    for chunk in records.chunks(100) {
        store.append(chunk, None).await.unwrap();
    }
    let all = SpendFilter::default();
    let spend = store.spend(&all, D0, D2).await.unwrap();
    assert_eq!(spend.cost_usd, dec("0.000075"));
    assert_eq!(spend.cost_usd.to_string(), "0.000075");
    assert_eq!(spend.calls, 1000);
    let rows = store.usage(&query(&[Dimension::Key], &[])).await.unwrap();
    assert_eq!(
        (rows[0].cost_usd, rows[0].saved_usd),
        (dec("0.000075"), dec("100"))
    );

    // Twelve decimals kept; a thirteenth rounds half to even, the same on both backends.
    let mut fine = call(D1, "fine", "m");
    fine.cost_usd = Some(dec("0.123456789012"));
    let mut half = call(D1, "half", "m");
    half.cost_usd = Some(dec("0.0000000000025"));
    store.append(&[fine, half], None).await.unwrap();
    let back = store.records(D1, D2, 10).await.unwrap();
    assert_eq!(back[0].cost_usd, Some(dec("0.123456789012")));
    assert_eq!(back[1].cost_usd, Some(dec("0.000000000002")));
    let day = store.spend(&all, D1, D2).await.unwrap();
    assert_eq!(day.cost_usd, dec("0.123456789014"));

    // Large amounts sum exactly too (within SQLite's bound).
    let big: Vec<LedgerRecord> = (0..3)
        .map(|i| {
            let mut r = call(D1 + HOUR_MS + i, &format!("big{i}"), "big");
            r.cost_usd = Some(dec("3000000.000000000001"));
            r
        })
        .collect();
    store.append(&big, None).await.unwrap();
    let q = query(&[], &[(Dimension::Model, "big")]);
    assert_eq!(
        store.usage(&q).await.unwrap()[0].cost_usd,
        dec("9000000.000000000003")
    );
}

async fn unpriced_calls_are_not_free(location: &StoreLocation) {
    let store = open(location).await;
    let mut priced = call(D0, "priced", "m");
    priced.cost_usd = Some(dec("0.5"));
    let mut unpriced = call(D0 + 1, "unpriced", "m");
    unpriced.cost_usd = None;
    let mut free = call(D0 + 2, "free", "m");
    free.cost_usd = Some(Decimal::ZERO);
    store.append(&[priced, unpriced, free], None).await.unwrap();
    let spend = store.spend(&SpendFilter::default(), D0, D2).await.unwrap();
    assert_eq!(
        (spend.cost_usd, spend.calls, spend.unpriced_calls),
        (dec("0.5"), 3, 1)
    );
    let rows = store.usage(&query(&[Dimension::Model], &[])).await.unwrap();
    assert_eq!((rows[0].requests, rows[0].unpriced_calls), (3, 1));
    let back = store.records(D0, D2, 10).await.unwrap();
    assert_eq!(back[1].cost_usd, None);
    assert_eq!(back[2].cost_usd, Some(Decimal::ZERO));
}

async fn out_of_range_costs_are_refused(location: &StoreLocation) {
    let store = open(location).await;
    let mut costly = call(D0, "costly", "m");
    costly.cost_usd = Some(dec("10000000"));
    let range = Some(SpoolRange::new("sp", 0, 5));
    let result = store.append(&[costly.clone()], range).await;
    match location {
        // Beyond ±9.2 million dollars in picodollars.
        StoreLocation::Sqlite(_) => {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
            assert!(err.to_string().contains("Postgres store"), "{err}");
            assert_eq!(store.count().await.unwrap(), 0);
            assert_eq!(store.spool_offset("sp").await.unwrap(), 0);
        }
        StoreLocation::Postgres(_) => {
            result.unwrap();
            assert_eq!(
                store.records(D0, D2, 1).await.unwrap(),
                vec![costly.clone()]
            );
        }
    }
    // Sums too: two calls of 9 million dollars fit a row each, not SQLite's sum.
    let mut nine = call(D1, "nine-a", "nine");
    nine.cost_usd = Some(dec("9000000"));
    let other = LedgerRecord {
        request_id: "nine-b".into(),
        ..nine.clone()
    };
    store.append(&[nine, other], None).await.unwrap();
    let q = query(&[], &[(Dimension::Model, "nine")]);
    match location {
        StoreLocation::Sqlite(_) => {
            let err = store.usage(&q).await.unwrap_err();
            assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
            assert!(err.to_string().contains("shorter range"), "{err}");
        }
        StoreLocation::Postgres(_) => {
            assert_eq!(store.usage(&q).await.unwrap()[0].cost_usd, dec("18000000"));
        }
    }
    costly.cost_usd = Some(dec("1e27"));
    let err = store.append(&[costly], None).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
}

async fn retention_deletes_calls_and_ended_days(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    assert_eq!(store.delete_before(D0 + 2 * HOUR_MS).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 4);
    let left: Vec<_> = store
        .records(D0, D2, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(left, ["r3", "r4", "r5", "r6"]);

    // Daily totals go only once their whole day is before the cut.
    store.append(&fixture()[..2], None).await.unwrap();
    assert_eq!(store.roll_up_days_before(D1).await.unwrap(), 4);
    assert_eq!(
        store.delete_before(D1 - 1).await.unwrap(),
        0,
        "day not over"
    );
    let before = store.spend(&SpendFilter::default(), D0, D2).await.unwrap();
    assert_eq!(before.calls, 6);
    let gone = store.delete_before(D1).await.unwrap();
    assert!(gone >= 1, "the day's totals");
    assert_eq!(
        store.spend(&SpendFilter::default(), D0, D2).await.unwrap(),
        Spend {
            cost_usd: dec("0"),
            calls: 2,
            unpriced_calls: 1,
        }
    );
    assert_eq!(store.delete_before(D2).await.unwrap(), 2);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// Every total that must survive a roll-up: whole days, any grouping but by hour.
async fn whole_day_totals(store: &dyn LedgerStore) -> Vec<(String, String)> {
    let mut groupings: Vec<Vec<Dimension>> = vec![vec![]];
    groupings.extend(
        Dimension::ALL
            .iter()
            .filter(|d| **d != Dimension::Hour)
            .map(|d| vec![*d]),
    );
    groupings.push(
        Dimension::ALL
            .iter()
            .copied()
            .filter(|d| *d != Dimension::Hour)
            .collect(),
    );
    let mut out = Vec::new();
    for group_by in groupings {
        for filters in [
            vec![],
            vec![(Dimension::Team, "t1")],
            vec![(Dimension::Day, "2026-11-05")],
        ] {
            let q = query(&group_by, &filters);
            out.push((
                format!("{group_by:?} {filters:?}"),
                format!("{:?}", store.usage(&q).await.unwrap()),
            ));
        }
    }
    for filter in [
        SpendFilter::default(),
        SpendFilter {
            key_id: Some("k1".into()),
            ..SpendFilter::default()
        },
        SpendFilter {
            project: Some("p2".into()),
            ..SpendFilter::default()
        },
        SpendFilter {
            model: Some("claude".into()),
            ..SpendFilter::default()
        },
    ] {
        let spend = store.spend(&filter, D0, D2).await.unwrap();
        out.push((format!("{filter:?}"), format!("{spend:?}")));
    }
    out
}

async fn roll_up_keeps_totals(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let before = whole_day_totals(&*store).await;
    // Mid-day: only the whole day before it is folded.
    assert_eq!(
        store.roll_up_days_before(D1 + 5 * HOUR_MS).await.unwrap(),
        4
    );
    assert_eq!(store.count().await.unwrap(), 2);
    let after = whole_day_totals(&*store).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a);
    }
    let left: Vec<_> = store
        .records(D0, D2, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(left, ["r5", "r6"]);
    // Rolled-up calls count at their day's first hour.
    let by_hour = store.usage(&query(&[Dimension::Hour], &[])).await.unwrap();
    assert_eq!(
        by_hour[0].group[0].1.as_deref(),
        Some("2026-11-05T00:00:00Z")
    );
    assert_eq!(by_hour[0].requests, 4);
    let q = query(&[], &[(Dimension::Hour, "2026-11-05T00:00:00Z")]);
    assert_eq!(store.usage(&q).await.unwrap()[0].requests, 4);
    // Folding everything, and again (nothing left), changes no total.
    assert_eq!(store.roll_up_days_before(D2).await.unwrap(), 2);
    assert_eq!(store.roll_up_days_before(D2).await.unwrap(), 0);
    assert_eq!(store.count().await.unwrap(), 0);
    assert_eq!(whole_day_totals(&*store).await, before);
}

async fn roll_up_twice_adds_late_calls(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    store.roll_up_days_before(D1).await.unwrap();
    // Calls for an already rolled-up day arrive late (a spool replayed after an outage).
    let late = fixture()[..2].to_vec();
    store.append(&late, None).await.unwrap();
    assert_eq!(store.roll_up_days_before(D1).await.unwrap(), 2);
    let mut all = fixture();
    all.extend(late);
    for group_by in [vec![Dimension::Key, Dimension::Model], vec![Dimension::Day]] {
        let q = query(&group_by, &[]);
        assert_eq!(
            store.usage(&q).await.unwrap(),
            model(&all, &q),
            "{group_by:?}"
        );
    }
    assert_eq!(
        store.spend(&SpendFilter::default(), D0, D1).await.unwrap(),
        Spend {
            cost_usd: dec("0.06"),
            calls: 6,
            unpriced_calls: 1
        }
    );
}

/// A call answered without an upstream call: `cache` is `hit` or `coalesced`.
fn free_call(at_ms: i64, id: &str, cache: &str, saved: Option<&str>) -> LedgerRecord {
    LedgerRecord {
        cache: cache.into(),
        attempts: 0,
        saved_usd: saved.map(dec),
        ..call(at_ms, id, "gpt-4o")
    }
}

async fn savings_split_hits_and_coalesced_calls(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let none = store.savings(0, i64::MAX).await.unwrap();
    let calls = [
        free_call(D0 + HOUR_MS, "h1", "hit", Some("0.25")),
        free_call(D0 + 2 * HOUR_MS, "h2", "hit", Some("0.000000000001")),
        // A hit on a model without a price saved an unknown amount: counted, adds nothing.
        free_call(D0 + 3 * HOUR_MS, "h3", "hit", None),
        free_call(D1 + HOUR_MS, "c1", "coalesced", Some("1.5")),
    ];
    store.append(&calls, None).await.unwrap();
    let all = store.savings(0, i64::MAX).await.unwrap();
    assert_eq!(
        all.cache_hits,
        none.cache_hits + 3,
        "the fixture's own hits count too"
    );
    assert_eq!(
        all.cache_hit_saved_usd - none.cache_hit_saved_usd,
        dec("0.250000000001")
    );
    assert_eq!(all.coalesced, none.coalesced + 1);
    assert_eq!(
        all.coalesced_saved_usd - none.coalesced_saved_usd,
        dec("1.5")
    );
    assert_eq!(all.rolled_up, 0);
    assert_eq!(all.saved_usd() - none.saved_usd(), dec("1.750000000001"));
    // The range is half-open, like every other total.
    let second_day = store.savings(D1, D2).await.unwrap();
    assert_eq!(second_day.coalesced, 1 + none.coalesced);
    assert_eq!(
        store.savings(D2, D2 + DAY).await.unwrap(),
        Savings::default()
    );
}

const DAY: i64 = weir_store::ledger::DAY_MS;

async fn savings_survive_a_roll_up(location: &StoreLocation) {
    let store = open(location).await;
    store
        .append(
            &[
                free_call(D0 + HOUR_MS, "h1", "hit", Some("0.5")),
                free_call(D0 + HOUR_MS, "c1", "coalesced", Some("0.25")),
                free_call(D1 + HOUR_MS, "h2", "hit", Some("2")),
            ],
            None,
        )
        .await
        .unwrap();
    let before = store.savings(0, i64::MAX).await.unwrap();
    assert_eq!(before.calls(), 3);
    assert_eq!(store.roll_up_days_before(D1).await.unwrap(), 2);
    let after = store.savings(0, i64::MAX).await.unwrap();
    assert_eq!(after.saved_usd(), before.saved_usd());
    assert_eq!(after.calls(), 3);
    // Rolled-up days keep hits and coalesced calls together.
    assert_eq!(
        after,
        Savings {
            cache_hits: 1,
            cache_hit_saved_usd: dec("2"),
            coalesced: 0,
            coalesced_saved_usd: dec("0"),
            rolled_up: 2,
            rolled_up_saved_usd: dec("0.75"),
        }
    );
    // Retention removes them with their day.
    store.delete_before(D1).await.unwrap();
    assert_eq!(store.savings(0, i64::MAX).await.unwrap().calls(), 1);
}

/// Replicas sharing a store may all sweep it at once: roll-ups and deletions racing each other
/// leave the totals a single sweep leaves.
async fn concurrent_sweeps_change_no_total(location: &StoreLocation) {
    let store = stored_fixture(location).await;
    let before = whole_day_totals(&*store).await;
    let sweep = |store: std::sync::Arc<dyn LedgerStore>| async move {
        let folded = store.roll_up_days_before(D2).await.unwrap();
        let deleted = store.delete_before(D0).await.unwrap();
        (folded, deleted)
    };
    let runs = futures::future::join_all((0..4).map(|_| sweep(store.clone()))).await;
    let folded: u64 = runs.iter().map(|(f, _)| f).sum();
    assert_eq!(folded, 6, "each call folded exactly once: {runs:?}");
    assert_eq!(store.count().await.unwrap(), 0);
    assert_eq!(whole_day_totals(&*store).await, before);
}
