#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rust_decimal::Decimal;

use super::*;
use crate::pipeline::{
    CacheOutcome, CallContext, Latencies, Operation, Outcome, Principal, Tokens, UsageEvent,
};

/// mock/echo: $1 per million input tokens and $2 per million output tokens, so 100 in and
/// 100 out cost $0.0003. `smart` reaches mock/lorem ($0.5/$1) and falls back to mock/echo.
const CONFIG: &str = "
pricing:
  mock/echo: { input: 1, output: 2 }
  mock/lorem: { input: 0.5, output: 1 }
  mock/tiny: { input: 0.0001, output: 0 }
models:
  cheap: mock/lorem
  smart:
    deployments: [mock/lorem]
    fallbacks: [mock/echo]
";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn config() -> Config {
    Config::from_yaml(CONFIG, &|_: &str| None).unwrap()
}

fn budgets_at(now: &str, specs: Vec<BudgetSpec>) -> Budgets {
    let budgets = Budgets::in_memory(&config())
        .unwrap()
        .starting_at(ts(now))
        .unwrap();
    for spec in specs {
        budgets.set(spec).unwrap();
    }
    budgets
}

fn spec(id: &str, scope: BudgetScope, limit: &str, period: BudgetPeriod) -> BudgetSpec {
    BudgetSpec::new(id, scope, d(limit), period)
}

fn context(model: &str, team: Option<&str>) -> CallContext {
    CallContext {
        model: model.into(),
        principal: Principal {
            team: team.map(Into::into),
            ..Principal::default()
        },
        ..CallContext::default()
    }
}

fn request(context: &CallContext, input: u64, output: u64) -> AdmissionRequest<'_> {
    AdmissionRequest {
        context,
        operation: Operation::Chat,
        input_tokens: input,
        max_output_tokens: output,
    }
}

fn event(cost: Option<&str>, cache: CacheOutcome) -> UsageEvent {
    UsageEvent {
        context: Arc::new(CallContext::default()),
        operation: Operation::Chat,
        outcome: Outcome::Success,
        status: 200,
        error: None,
        route: None,
        attempts: 1,
        tokens: Tokens::default(),
        tokens_estimated: false,
        cost_usd: cost.map(d),
        cache,
        latency: Latencies::default(),
        prompt_fingerprint: None,
    }
}

async fn status_of(budgets: &Budgets, id: &str) -> BudgetStatus {
    budgets
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.spec.id == id)
        .unwrap()
}

fn bounds(spec: &BudgetSpec, now: &str) -> (String, String) {
    let (start, reset) = period_bounds(spec, ts(now)).unwrap();
    (start.to_string(), reset.to_string())
}

fn global(period: BudgetPeriod) -> BudgetSpec {
    spec("g", BudgetScope::Global, "1", period)
}

#[test]
fn daily_periods_run_from_midnight_to_midnight_in_utc() {
    let daily = global(BudgetPeriod::Daily);
    assert_eq!(
        bounds(&daily, "2026-11-12T15:30:00Z"),
        ("2026-11-12T00:00:00Z".into(), "2026-11-13T00:00:00Z".into())
    );
    // Midnight itself starts a period.
    assert_eq!(
        bounds(&daily, "2026-11-13T00:00:00Z").0,
        "2026-11-13T00:00:00Z"
    );
}

#[test]
fn new_york_days_follow_daylight_saving_time() {
    let daily = global(BudgetPeriod::Daily).time_zone("America/New_York");
    // A winter day: midnight EST is 05:00Z.
    assert_eq!(
        bounds(&daily, "2026-01-15T12:00:00Z"),
        ("2026-01-15T05:00:00Z".into(), "2026-01-16T05:00:00Z".into())
    );
    // Clocks spring forward on 2026-03-08: that day lasts 23 hours.
    let (start, reset) = period_bounds(&daily, ts("2026-03-08T12:00:00Z")).unwrap();
    assert_eq!(start.to_string(), "2026-03-08T05:00:00Z");
    assert_eq!(reset.to_string(), "2026-03-09T04:00:00Z");
    assert_eq!(reset.duration_since(start).as_hours(), 23);
    // They fall back on 2026-11-01: that day lasts 25 hours.
    let (start, reset) = period_bounds(&daily, ts("2026-11-01T12:00:00Z")).unwrap();
    assert_eq!(start.to_string(), "2026-11-01T04:00:00Z");
    assert_eq!(reset.to_string(), "2026-11-02T05:00:00Z");
    assert_eq!(reset.duration_since(start).as_hours(), 25);
    // 03:00Z on 2026-11-02 is still the evening of 2026-11-01 in New York.
    assert_eq!(
        bounds(&daily, "2026-11-02T03:00:00Z").0,
        "2026-11-01T04:00:00Z"
    );
}

#[test]
fn weeks_start_on_monday_and_months_on_the_first() {
    let weekly = global(BudgetPeriod::Weekly);
    // 2026-11-12 is a Thursday; 2026-11-09 the Monday before.
    assert_eq!(
        bounds(&weekly, "2026-11-12T08:00:00Z"),
        ("2026-11-09T00:00:00Z".into(), "2026-11-16T00:00:00Z".into())
    );
    // A Sunday belongs to the week that started six days before.
    assert_eq!(
        bounds(&weekly, "2026-11-15T23:59:59Z").0,
        "2026-11-09T00:00:00Z"
    );
    let monthly = global(BudgetPeriod::Monthly);
    assert_eq!(
        bounds(&monthly, "2026-12-31T23:00:00Z"),
        ("2026-12-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
    );
    assert_eq!(
        bounds(&monthly, "2028-02-29T10:00:00Z"),
        ("2028-02-01T00:00:00Z".into(), "2028-03-01T00:00:00Z".into())
    );
    let tokyo = monthly.time_zone("Asia/Tokyo");
    // 20:00Z on the 31st is already the 1st in Tokyo (UTC+9).
    assert_eq!(
        bounds(&tokyo, "2026-10-31T20:00:00Z"),
        ("2026-10-31T15:00:00Z".into(), "2026-11-30T15:00:00Z".into())
    );
}

#[test]
fn rolling_periods_are_back_to_back_windows_from_the_epoch() {
    let week = global(BudgetPeriod::Rolling(Duration::from_secs(7 * 24 * 3600)));
    // The epoch was a Thursday: seven-day windows start on Thursdays at 00:00Z.
    assert_eq!(
        bounds(&week, "2026-11-12T08:00:00Z"),
        ("2026-11-12T00:00:00Z".into(), "2026-11-19T00:00:00Z".into())
    );
    let hours = global(BudgetPeriod::Rolling(Duration::from_secs(6 * 3600)));
    assert_eq!(
        bounds(&hours, "2026-11-12T13:59:00Z"),
        ("2026-11-12T12:00:00Z".into(), "2026-11-12T18:00:00Z".into())
    );
}

#[test]
fn specs_are_checked_field_by_field() {
    let mut bad = spec(
        "bad id!",
        BudgetScope::Team(String::new()),
        "0",
        BudgetPeriod::Daily,
    )
    .time_zone("Mars/Olympus");
    bad.thresholds = vec![0.5, -1.0];
    let fields: Vec<&str> = bad.problems().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        ["id", "scope", "limit_usd", "time_zone", "thresholds"]
    );
    let err = Budgets::in_memory(&config()).unwrap().set(bad).unwrap_err();
    assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    let short = global(BudgetPeriod::Rolling(Duration::from_secs(1)));
    assert_eq!(short.problems()[0].0, "period.rolling");
}

#[test]
fn a_call_reserves_its_worst_case_on_the_dearest_deployment_it_may_reach() {
    let prices = Prices::new(&config());
    // mock/echo directly: 100 in at $1/M + 100 out at $2/M = 300_000 nanodollars.
    assert_eq!(
        prices.rate("mock/echo").unwrap().cost_units(100, 100),
        300_000
    );
    // `smart` may fall back to mock/echo: priced as mock/echo, not mock/lorem.
    assert_eq!(prices.rate("smart").unwrap().cost_units(100, 100), 300_000);
    assert_eq!(prices.rate("cheap").unwrap().cost_units(100, 100), 150_000);
    assert_eq!(prices.rate("cheap").unwrap().cost_units(1, 0), 500);
    // A fraction of a nanodollar (0.1 here) rounds up.
    assert_eq!(prices.rate("mock/tiny").unwrap().cost_units(1, 0), 1);
    // Unpriced: nothing known.
    assert!(prices.rate("nobody/knows").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_hard_budget_refuses_with_a_402_naming_its_limit_spend_and_reset() {
    let budgets = budgets_at(
        "2026-11-12T15:00:00Z",
        vec![spec(
            "team-daily",
            BudgetScope::Team("search".into()),
            "0.001",
            BudgetPeriod::Daily,
        )],
    );
    let ctx = context("mock/echo", Some("search"));
    // Three calls of $0.0003 fit in $0.001; the fourth could pass it.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(budgets.reserve(&request(&ctx, 100, 100)).await.unwrap());
    }
    let err = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap_err();
    let Error::Rejected {
        status,
        code,
        message,
        retry_after,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        (*status, *code, *retry_after),
        (402, "budget_exceeded", None)
    );
    for part in [
        "budget `team-daily`",
        "team search",
        "hard $0.001 daily",
        "$0 spent so far",
        "$0.0009 reserved by calls in flight",
        "could cost up to $0.0003",
        "resets at 2026-11-13T00:00:00Z",
    ] {
        assert!(message.contains(part), "`{part}` not in: {message}");
    }
    assert_eq!(err.http_status(), 402);
    // Other teams are not counted by it.
    let other = context("mock/echo", Some("ads"));
    budgets.reserve(&request(&other, 100, 100)).await.unwrap();
    // Settling the three at their real cost makes room again.
    for admitted in held {
        budgets.settle(
            admitted.reservation,
            &event(Some("0.0001"), CacheOutcome::Miss),
        );
    }
    let status = status_of(&budgets, "team-daily").await;
    assert_eq!(
        (status.spent_usd, status.reserved_usd, status.remaining_usd),
        (d("0.0003"), d("0"), d("0.0007"))
    );
    assert_eq!(status.percent, d("30"));
    budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn settle_replaces_the_reservation_with_the_real_cost_and_release_gives_it_back() {
    let budgets = budgets_at(
        "2026-11-12T15:00:00Z",
        vec![spec("all", BudgetScope::Global, "1", BudgetPeriod::Monthly)],
    );
    let ctx = context("mock/echo", None);
    let a = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    let b = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    let c = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    let status = status_of(&budgets, "all").await;
    assert_eq!(
        (status.spent_usd, status.reserved_usd),
        (d("0"), d("0.0009"))
    );
    budgets.settle(
        a.reservation,
        &event(Some("0.000123456789"), CacheOutcome::Miss),
    );
    budgets.release(b.reservation);
    // A cache hit spent nothing, whatever its event says.
    budgets.settle(c.reservation, &event(Some("5"), CacheOutcome::Hit));
    let status = status_of(&budgets, "all").await;
    assert_eq!(
        (status.spent_usd, status.reserved_usd),
        (d("0.000123457"), d("0"))
    );
    // Unpriced calls reserve nothing and spend nothing.
    let unpriced = context("nobody/knows", None);
    let u = budgets
        .reserve(&request(&unpriced, 100, 100))
        .await
        .unwrap();
    budgets.settle(u.reservation, &event(None, CacheOutcome::Miss));
    assert_eq!(status_of(&budgets, "all").await.spent_usd, d("0.000123457"));
}

#[tokio::test(start_paused = true)]
async fn a_reservation_never_settled_stops_counting_after_its_deadline() {
    let budgets = budgets_at(
        "2026-11-12T15:00:00Z",
        vec![spec(
            "all",
            BudgetScope::Global,
            "0.0005",
            BudgetPeriod::Daily,
        )],
    );
    let mut ctx = context("mock/echo", None);
    ctx.timeout = Some(Duration::from_secs(30));
    let lost = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    assert!(budgets.reserve(&request(&ctx, 100, 100)).await.is_err());
    // The call's 30 s plus the minute's margin: still held just before.
    tokio::time::advance(Duration::from_secs(89)).await;
    assert!(budgets.reserve(&request(&ctx, 100, 100)).await.is_err());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(status_of(&budgets, "all").await.reserved_usd, d("0"));
    let next = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    // The lost call settles after all: its cost counts, its expired hold gives nothing back.
    budgets.settle(lost.reservation, &event(Some("0.0001"), CacheOutcome::Miss));
    let status = status_of(&budgets, "all").await;
    assert_eq!(
        (status.spent_usd, status.reserved_usd),
        (d("0.0001"), d("0.0003"))
    );
    budgets.release(next.reservation);
    assert_eq!(status_of(&budgets, "all").await.reserved_usd, d("0"));
}

#[tokio::test(start_paused = true)]
async fn a_soft_budget_admits_everything_and_warns_once_per_threshold_per_period() {
    let soft = spec(
        "soft",
        BudgetScope::Model("mock/echo".into()),
        "0.001",
        BudgetPeriod::Daily,
    )
    .mode(BudgetMode::Soft);
    let budgets = budgets_at("2026-11-12T23:00:00Z", vec![soft]);
    let ctx = context("mock/echo", None);
    let mut warnings = Vec::new();
    // $0.0003 a call: 30%, 60% (crosses 50%), 90% (80%), 120% (100%), 150%.
    for _ in 0..5 {
        let admitted = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
        warnings.push(admitted.warnings.clone());
        budgets.settle(
            admitted.reservation,
            &event(Some("0.0003"), CacheOutcome::Miss),
        );
    }
    let counts: Vec<usize> = warnings.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 1, 1, 1, 0]);
    assert!(
        warnings[1][0].contains("budget `soft`"),
        "{:?}",
        warnings[1]
    );
    assert!(warnings[1][0].contains("reached 50%"), "{:?}", warnings[1]);
    assert!(warnings[2][0].contains("reached 80%"), "{:?}", warnings[2]);
    assert!(
        warnings[3][0].contains("reached 100%") && warnings[3][0].contains("2026-11-13T00:00:00Z"),
        "{:?}",
        warnings[3]
    );
    let status = status_of(&budgets, "soft").await;
    assert_eq!((status.spent_usd, status.percent), (d("0.0015"), d("150")));
    // A new day: counters start at zero, and the warnings can come again.
    tokio::time::advance(Duration::from_secs(3600)).await;
    let status = status_of(&budgets, "soft").await;
    assert_eq!(status.period_start.to_string(), "2026-11-13T00:00:00Z");
    assert_eq!(status.spent_usd, d("0"));
    let mut again = Vec::new();
    for _ in 0..2 {
        let admitted = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
        again.extend(admitted.warnings);
        budgets.settle(
            admitted.reservation,
            &event(Some("0.0003"), CacheOutcome::Miss),
        );
    }
    assert_eq!(again.len(), 1, "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn set_keeps_the_spend_of_a_budget_it_only_changes_and_remove_forgets_it() {
    let budgets = budgets_at(
        "2026-11-12T10:00:00Z",
        vec![spec("all", BudgetScope::Global, "1", BudgetPeriod::Daily)],
    );
    let ctx = context("mock/echo", None);
    let a = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    budgets.settle(a.reservation, &event(Some("0.25"), CacheOutcome::Miss));
    // A lower limit applies to the spend already counted.
    budgets
        .set(spec(
            "all",
            BudgetScope::Global,
            "0.25",
            BudgetPeriod::Daily,
        ))
        .unwrap();
    assert_eq!(budgets.list().len(), 1);
    assert_eq!(budgets.list()[0].limit_usd, d("0.25"));
    assert_eq!(status_of(&budgets, "all").await.remaining_usd, d("0"));
    assert!(budgets.reserve(&request(&ctx, 100, 100)).await.is_err());
    // Another period: counting starts again.
    budgets
        .set(spec(
            "all",
            BudgetScope::Global,
            "0.25",
            BudgetPeriod::Weekly,
        ))
        .unwrap();
    assert_eq!(status_of(&budgets, "all").await.spent_usd, d("0"));
    assert!(budgets.remove("all").unwrap());
    assert!(!budgets.remove("all").unwrap());
    assert!(budgets.list().is_empty());
    let free = budgets.reserve(&request(&ctx, 100, 100)).await.unwrap();
    assert!(free.reservation.downcast_ref::<Nothing>().is_some());
}

#[tokio::test(start_paused = true)]
async fn seed_starts_the_current_period_from_the_ledgers_spend() {
    let budgets = budgets_at(
        "2026-11-12T10:00:00Z",
        vec![spec("all", BudgetScope::Global, "1", BudgetPeriod::Daily)],
    );
    let today = ts("2026-11-12T00:00:00Z");
    assert!(budgets.seed("all", today, d("0.4")).await.unwrap());
    // Seeding again replaces the seed; another period is not this one.
    assert!(budgets.seed("all", today, d("0.5")).await.unwrap());
    assert!(
        !budgets
            .seed("all", ts("2026-11-11T00:00:00Z"), d("9"))
            .await
            .unwrap()
    );
    assert!(budgets.seed("nope", today, d("1")).await.is_err());
    let status = status_of(&budgets, "all").await;
    assert_eq!((status.spent_usd, status.percent), (d("0.5"), d("50")));
    // $0.5 in 10 hours: $1.2 by the end of the day; the rest runs out 10 hours in.
    assert_eq!(status.forecast_usd, Some(d("1.2")));
    assert_eq!(
        status.runs_out_at.map(|t| t.to_string()),
        Some("2026-11-12T20:00:00Z".into())
    );
}

#[test]
fn money_converts_to_nanodollars_rounding_as_documented() {
    assert_eq!(money::to_units_up(d("0.0000000001")), Some(1));
    assert_eq!(money::to_units_nearest(d("0.0000000001")), Some(0));
    assert_eq!(money::to_units_nearest(d("0.0000000015")), Some(2));
    assert_eq!(money::to_units_up(d("-1")), None);
    assert_eq!(money::to_units_up(d("1000000001")), None);
    assert_eq!(money::to_usd(1_500_000_000), d("1.5"));
}
