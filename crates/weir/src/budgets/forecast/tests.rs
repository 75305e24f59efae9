#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use jiff::ToSpan;

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn date(s: &str) -> Date {
    s.parse().unwrap()
}

/// `days` days before `last` (included), oldest first, each costing `cost(date)`.
fn series(last: &str, days: i64, cost: impl Fn(Date) -> Decimal) -> Vec<(Date, Decimal)> {
    let last = date(last);
    (0..days)
        .rev()
        .map(|back| {
            let day = last.checked_sub(back.days()).unwrap();
            (day, cost(day))
        })
        .collect()
}

fn input<'a>(
    now: &str,
    period: (&str, &str),
    spent: &str,
    remaining: &str,
    history: &'a [(Date, Decimal)],
) -> ForecastInput<'a> {
    ForecastInput {
        now: ts(now),
        period_start: ts(period.0),
        resets_at: ts(period.1),
        spent: d(spent),
        remaining: d(remaining),
        history,
    }
}

const NOV_12: (&str, &str) = ("2026-11-12T00:00:00Z", "2026-11-13T00:00:00Z");
const NOVEMBER: (&str, &str) = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");

#[test]
fn without_history_the_period_is_extended_linearly() {
    // $0.5 in 10 hours: $1.2 by the end of the day; the other $0.5 lasts 10 more hours.
    let f = forecast(&input("2026-11-12T10:00:00Z", NOV_12, "0.5", "0.5", &[]));
    assert_eq!(f.method, ForecastMethod::Linear);
    assert_eq!(f.forecast_usd, Some(d("1.2")));
    assert_eq!(f.runs_out_at, Some(ts("2026-11-12T20:00:00Z")));

    let nothing = forecast(&input("2026-11-12T10:00:00Z", NOV_12, "0", "1", &[]));
    assert_eq!((nothing.forecast_usd, nothing.runs_out_at), (None, None));
    // Spent up: it ran out now.
    let out = forecast(&input("2026-11-12T10:00:00Z", NOV_12, "1", "0", &[]));
    assert_eq!(out.runs_out_at, Some(ts("2026-11-12T10:00:00Z")));
}

#[test]
fn less_than_a_week_of_history_stays_linear() {
    // Spend from Nov 6 on: six full days before Nov 12.
    let history = series("2026-11-11", 6, |_| d("10"));
    let f = forecast(&input(
        "2026-11-12T00:00:00Z",
        NOVEMBER,
        "60",
        "40",
        &history,
    ));
    assert_eq!(f.method, ForecastMethod::Linear);
    // $60 over 11 days, extended to 30.
    assert_eq!(
        f.forecast_usd,
        Some((d("60") * d("30") / d("11")).round_dp(9))
    );
}

#[test]
fn a_week_of_history_projects_its_daily_mean() {
    // Ten days at $10 before Nov 12 (and today's spend, which is not a full day, ignored).
    let mut history = series("2026-11-11", 10, |_| d("10"));
    history.push((date("2026-11-12"), d("1000")));
    let f = forecast(&input(
        "2026-11-12T00:00:00Z",
        NOVEMBER,
        "110",
        "90",
        &history,
    ));
    assert_eq!(f.method, ForecastMethod::RecentDaily);
    // 19 days left at $10: $300 by December; the $90 left lasts 9 days.
    assert_eq!(f.forecast_usd, Some(d("300")));
    assert_eq!(f.runs_out_at, Some(ts("2026-11-21T00:00:00Z")));
}

#[test]
fn four_weeks_of_history_follow_the_weekday_pattern() {
    // Five weeks of $10 on working days and nothing at weekends.
    let workdays = |day: Date| {
        if day.weekday().to_monday_zero_offset() < 5 {
            d("10")
        } else {
            d("0")
        }
    };
    let history = series("2026-11-15", 35, workdays);
    let week = ("2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z");
    // Monday morning, nothing spent yet: a linear forecast knows nothing.
    let f = forecast(&input("2026-11-16T00:00:00Z", week, "0", "25", &history));
    assert_eq!(f.method, ForecastMethod::Weekday);
    // Mean $50/7 a day, a working day's share 1.4: $10 each working day, $0 at the weekend.
    assert_eq!(f.forecast_usd, Some(d("50")));
    // $25 lasts Monday, Tuesday and half of Wednesday.
    assert_eq!(f.runs_out_at, Some(ts("2026-11-18T12:00:00Z")));

    // Friday noon, the week went as usual ($45 spent): half a Friday ($5) to come, and a
    // quiet weekend.
    let to_thursday = series("2026-11-19", 35, workdays);
    let friday = forecast(&input(
        "2026-11-20T12:00:00Z",
        week,
        "45",
        "55",
        &to_thursday,
    ));
    assert_eq!(friday.forecast_usd, Some(d("50")));
    assert_eq!(friday.runs_out_at, None, "the weekend spends nothing");

    // The same series without a weekday pattern (every day alike) projects $50/7 a day.
    let flat = series("2026-11-15", 35, |_| d("10"));
    let f = forecast(&input("2026-11-16T00:00:00Z", week, "0", "1000", &flat));
    assert_eq!(f.forecast_usd, Some(d("70")));
}

#[test]
fn repeated_days_add_up_and_a_quiet_week_forecasts_no_more_spend() {
    let mut history = series("2026-11-11", 10, |_| d("5"));
    history.extend(series("2026-11-11", 10, |_| d("5")));
    let f = forecast(&input(
        "2026-11-12T00:00:00Z",
        NOVEMBER,
        "0",
        "500",
        &history,
    ));
    assert_eq!(f.forecast_usd, Some(d("190")), "19 days at $10");

    // Spend stopped a week ago: the recent mean is zero, and nothing more is expected.
    let stopped: Vec<_> = series("2026-11-11", 20, |day| {
        if day < date("2026-11-05") {
            d("10")
        } else {
            d("0")
        }
    });
    let f = forecast(&input(
        "2026-11-12T00:00:00Z",
        NOVEMBER,
        "80",
        "20",
        &stopped,
    ));
    assert_eq!(f.forecast_usd, Some(d("80")));
    assert_eq!(f.runs_out_at, None);
}
