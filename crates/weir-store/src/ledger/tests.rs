//! Unit tests of the ledger's pure parts: money conversion, dimensions, time buckets, SQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use rust_decimal::Decimal;

use super::sql::{self, Dialect, Param};
use super::*;

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

#[test]
fn picodollars_round_trip_exactly() {
    for (usd, picos) in [
        ("0", 0),
        ("0.000000075", 75_000),
        ("1", 1_000_000_000_000),
        ("-2.5", -2_500_000_000_000),
        ("0.000000000001", 1),
        ("9223372.036854775807", i64::MAX),
        ("-9223372.036854775808", i64::MIN),
    ] {
        assert_eq!(usd_to_picodollars(dec(usd)).unwrap(), picos, "{usd}");
        assert_eq!(picodollars_to_usd(picos), dec(usd), "{usd}");
    }
    // Shown without trailing zeros.
    assert_eq!(picodollars_to_usd(75_000).to_string(), "0.000000075");
}

#[test]
fn picodollars_round_half_to_even_past_twelve_decimals() {
    assert_eq!(usd_to_picodollars(dec("0.0000000000005")).unwrap(), 0);
    assert_eq!(usd_to_picodollars(dec("0.0000000000015")).unwrap(), 2);
    assert_eq!(usd_to_picodollars(dec("0.0000000000025")).unwrap(), 2);
    assert_eq!(usd_to_picodollars(dec("0.00000000000251")).unwrap(), 3);
    assert_eq!(usd_to_picodollars(dec("-0.0000000000025")).unwrap(), -2);
}

#[test]
fn picodollars_refuse_what_does_not_fit() {
    for usd in ["9223372.036854775808", "-9223372.036854775809", "1e20"] {
        let err = usd_to_picodollars(dec(usd)).unwrap_err();
        assert!(matches!(err, StoreError::InvalidData(_)), "{usd}: {err}");
        assert!(err.to_string().contains("Postgres store"), "{err}");
    }
    assert!(usd_to_picodollars(Decimal::MAX).is_err());
}

#[test]
fn dimensions_parse_and_serialise_by_name() {
    for d in Dimension::ALL {
        assert_eq!(Dimension::from_str(d.as_str()), Ok(d));
        assert_eq!(d.to_string(), d.as_str());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d.as_str()));
        assert_eq!(serde_json::from_str::<Dimension>(&json).unwrap(), d);
    }
    assert_eq!(Dimension::from_str(" Model "), Ok(Dimension::Model));
    let err = Dimension::from_str("tenant").unwrap_err();
    assert!(err.to_string().contains("key, user, team"), "{err}");
}

#[test]
fn buckets_format_and_parse_back() {
    // 2026-11-05T13:45:12.345Z
    let ms = 1_793_886_312_345;
    let day = bucket_start(ms, DAY_MS);
    let hour = bucket_start(ms, HOUR_MS);
    assert_eq!(format_bucket(Dimension::Day, day), "2026-11-05");
    assert_eq!(format_bucket(Dimension::Hour, hour), "2026-11-05T13:00:00Z");
    assert_eq!(
        parse_bucket(Dimension::Day, "2026-11-05").unwrap(),
        (day, DAY_MS)
    );
    for text in ["2026-11-05T13:00:00Z", "2026-11-05T13", "2026-11-05T13:00"] {
        assert_eq!(
            parse_bucket(Dimension::Hour, text).unwrap(),
            (hour, HOUR_MS),
            "{text}"
        );
    }
    // Before 1970 the bucket still floors.
    assert_eq!(bucket_start(-1, DAY_MS), -DAY_MS);
    assert_eq!(format_bucket(Dimension::Day, -DAY_MS), "1969-12-31");
    assert_eq!(format_bucket(Dimension::Day, 0), "1970-01-01");
    assert_eq!(
        parse_bucket(Dimension::Day, "2024-02-29").map(|(s, _)| format_bucket(Dimension::Day, s)),
        Ok("2024-02-29".to_string())
    );
}

#[test]
fn every_day_of_four_centuries_round_trips() {
    let start = parse_bucket(Dimension::Day, "1900-01-01").unwrap().0 / DAY_MS;
    for days in start..start + 146_097 {
        let text = format_bucket(Dimension::Day, days * DAY_MS);
        assert_eq!(
            parse_bucket(Dimension::Day, &text).unwrap().0,
            days * DAY_MS,
            "{text}"
        );
    }
}

#[test]
fn bad_buckets_say_how_to_write_them() {
    for (d, text) in [
        (Dimension::Day, "2026-02-30"),
        (Dimension::Day, "yesterday"),
        (Dimension::Day, "2026-13-01"),
        (Dimension::Hour, "2026-11-05"),
        (Dimension::Hour, "2026-11-05T24:00:00Z"),
        (Dimension::Hour, "2026-11-05T13:30:00Z"),
        (Dimension::Model, "2026-11-05"),
    ] {
        let err = parse_bucket(d, text).unwrap_err();
        assert!(err.to_string().contains("2026-11-05T13:00:00Z"), "{err}");
    }
}

#[test]
fn queries_are_checked() {
    let twice = UsageQuery {
        from_ms: 0,
        to_ms: 1,
        group_by: vec![Dimension::Model, Dimension::Model],
        filters: vec![],
    };
    let err = check_query(&twice).unwrap_err();
    assert!(
        err.to_string().contains("name each dimension once"),
        "{err}"
    );
    let bad_day = UsageQuery {
        filters: vec![(Dimension::Day, "monday".into())],
        ..UsageQuery::default()
    };
    assert!(check_query(&bad_day).is_err());
}

#[test]
fn usage_sql_shares_parameters_between_both_tables() {
    let query = UsageQuery {
        from_ms: 10,
        to_ms: 20,
        group_by: vec![Dimension::Model, Dimension::Day],
        filters: vec![
            (Dimension::Key, "k1".into()),
            (Dimension::Key, "k2".into()),
            (Dimension::Hour, "1970-01-01T01:00:00Z".into()),
        ],
    };
    let statement = sql::usage(Dialect::Postgres, &query).unwrap();
    assert_eq!(
        statement.params,
        vec![
            Param::Int(10),
            Param::Int(20),
            Param::Text("k1".into()),
            Param::Text("k2".into()),
            Param::Int(HOUR_MS),
            Param::Int(2 * HOUR_MS),
        ]
    );
    let sql = &statement.sql;
    assert_eq!(sql.matches("key_id IN ($3, $4)").count(), 2, "{sql}");
    assert!(sql.contains("(at_ms >= $5 AND at_ms < $6)"), "{sql}");
    assert!(sql.contains("(day_ms >= $5 AND day_ms < $6)"), "{sql}");
    assert!(sql.ends_with("GROUP BY g0, g1"), "{sql}");
    let sqlite = sql::usage(Dialect::Sqlite, &query).unwrap().sql;
    assert!(sqlite.contains("key_id IN (?3, ?4)") && sqlite.contains("cost_pusd"));
}

#[test]
fn spend_filters_name_the_set_fields() {
    let filter = SpendFilter {
        team: Some("ml".into()),
        model: Some("gpt-4o".into()),
        ..SpendFilter::default()
    };
    assert_eq!(
        filter.to_filters(),
        vec![
            (Dimension::Team, "ml".to_string()),
            (Dimension::Model, "gpt-4o".to_string())
        ]
    );
    assert!(SpendFilter::default().to_filters().is_empty());
}

#[test]
fn spool_offsets_pack_segment_and_byte() {
    use super::spool::{join_offset, split_offset};
    let offset = join_offset(7, 1234);
    assert_eq!(offset, (7 << 32) | 1234);
    assert_eq!(split_offset(offset), (7, 1234));
    assert!(join_offset((1 << 31) - 1, u64::from(u32::MAX)) <= i64::MAX as u64);
}
