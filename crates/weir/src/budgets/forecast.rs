//! Budget forecasts: the spend a budget's period will reach by its reset, and when the limit
//! runs out, from the period's spend so far and (when the ledger has it) the recent daily
//! spend of the budget's scope.
//!
//! [`forecast`] is a pure function of its [`ForecastInput`] (no clock, no store), so each
//! method is tested on synthetic daily series. Three methods, the first whose history is
//! there:
//!
//! - [`ForecastMethod::Weekday`], with at least [`PATTERN_DAYS`] full days of history: each
//!   day still to come is expected to cost the mean of the last [`RECENT_DAYS`] full days,
//!   scaled by its weekday's share of the last [`PATTERN_DAYS`] days' spend (a Monday that
//!   usually costs twice the average is expected to again), so a weekday-heavy team's
//!   monthly budget is not judged by a quiet weekend;
//! - [`ForecastMethod::RecentDaily`], with at least [`RECENT_DAYS`] full days: the same mean
//!   for every day;
//! - [`ForecastMethod::Linear`] otherwise: the period's spend so far extended at its average
//!   rate (spend ÷ time elapsed × period length).
//!
//! Days are UTC days, as the ledger keeps them; "full" days are those before today (UTC).
//! History starts at the first day with any spend, so a scope that is new, or new to the
//! ledger, is forecast linearly until it has a week behind it.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Full days whose mean spend is the expected daily spend.
pub const RECENT_DAYS: i64 = 7;
/// Full days whose spend by weekday gives each weekday's share: four whole weeks, so each
/// weekday counts four times.
pub const PATTERN_DAYS: i64 = 28;

const DAY_MS: i64 = 86_400_000;
/// Decimal places a forecast keeps (nanodollars, as budgets count).
const SCALE: u32 = 9;

/// How a forecast was made. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    /// The period's spend so far at its average rate.
    Linear,
    /// The mean of the last 7 full days, every day alike.
    RecentDaily,
    /// The mean of the last 7 full days, scaled by each weekday's share of the last 28.
    Weekday,
}

impl ForecastMethod {
    /// `linear`, `recent_daily` or `weekday`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::RecentDaily => "recent_daily",
            Self::Weekday => "weekday",
        }
    }
}

/// What a forecast is made from.
#[derive(Debug, Clone, Copy)]
pub struct ForecastInput<'a> {
    pub now: Timestamp,
    pub period_start: Timestamp,
    pub resets_at: Timestamp,
    /// Settled spend this period, dollars.
    pub spent: Decimal,
    /// What is left before the limit (less reservations in flight), dollars, never negative.
    pub remaining: Decimal,
    /// The scope's spend per UTC day, in any order (a day may appear more than once: its
    /// amounts add up). Days from today on are ignored; missing days spent nothing.
    pub history: &'a [(Date, Decimal)],
}

/// A forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    /// The spend the period will reach by its reset. `None` only for a linear forecast with
    /// no spend yet (there is no rate to extend).
    pub forecast_usd: Option<Decimal>,
    /// When the limit runs out, if before the reset (`now` when it already has).
    pub runs_out_at: Option<Timestamp>,
    pub method: ForecastMethod,
}

/// The forecast for `input`. See the module docs.
pub fn forecast(input: &ForecastInput<'_>) -> Forecast {
    let today = day_number(input.now.as_millisecond());
    let mut days: BTreeMap<i64, Decimal> = BTreeMap::new();
    for (date, usd) in input.history {
        let day = date_number(*date);
        if day < today {
            *days.entry(day).or_default() += *usd;
        }
    }
    let first = days
        .iter()
        .find(|(_, usd)| **usd > Decimal::ZERO)
        .map(|(day, _)| *day);
    let full_days = first.map_or(0, |first| today - first);
    if full_days < RECENT_DAYS {
        return linear(input);
    }
    let sum = |from: i64| -> Decimal { days.range(from..today).map(|(_, usd)| *usd).sum() };
    let mean = sum(today - RECENT_DAYS) / Decimal::from(RECENT_DAYS);
    let (method, factors) = if full_days >= PATTERN_DAYS {
        let mut by_weekday = [Decimal::ZERO; 7];
        for (day, usd) in days.range(today - PATTERN_DAYS..today) {
            by_weekday[weekday(*day)] += *usd;
        }
        let total: Decimal = by_weekday.iter().sum();
        let factors = if total > Decimal::ZERO {
            by_weekday.map(|w| w * Decimal::from(7) / total)
        } else {
            [Decimal::ONE; 7]
        };
        (ForecastMethod::Weekday, factors)
    } else {
        (ForecastMethod::RecentDaily, [Decimal::ONE; 7])
    };
    project(input, method, |day| mean * factors[weekday(day)])
}

/// Walk from now to the reset a UTC day at a time, at `per_day(day)` dollars a day.
fn project(
    input: &ForecastInput<'_>,
    method: ForecastMethod,
    per_day: impl Fn(i64) -> Decimal,
) -> Forecast {
    let end = input.resets_at.as_millisecond();
    let mut at = input.now.as_millisecond();
    let mut projected = Decimal::ZERO;
    let mut runs_out_at = (input.remaining <= Decimal::ZERO).then_some(input.now);
    // Bounded by the longest period (a year of rolling window) plus a day.
    for _ in 0..400 {
        if at >= end {
            break;
        }
        let day = day_number(at);
        let segment_end = ((day + 1) * DAY_MS).min(end);
        let per_ms = per_day(day) / Decimal::from(DAY_MS);
        let cost = per_ms * Decimal::from(segment_end - at);
        if runs_out_at.is_none() && per_ms > Decimal::ZERO {
            let need = input.remaining - projected;
            if cost >= need {
                // To the nearest millisecond: the rates are repeating decimals.
                let ms = (need / per_ms).round();
                runs_out_at = i64::try_from(ms)
                    .ok()
                    .and_then(|ms| Timestamp::from_millisecond(at.saturating_add(ms)).ok())
                    .filter(|t| *t < input.resets_at);
            }
        }
        projected += cost;
        at = segment_end;
    }
    Forecast {
        forecast_usd: Some((input.spent + projected).round_dp(SCALE)),
        runs_out_at,
        method,
    }
}

/// The period's spend so far at its average rate, over at least a second.
fn linear(input: &ForecastInput<'_>) -> Forecast {
    let method = ForecastMethod::Linear;
    if input.spent <= Decimal::ZERO {
        return Forecast {
            forecast_usd: None,
            runs_out_at: None,
            method,
        };
    }
    let start = input.period_start.as_millisecond();
    let elapsed = (input.now.as_millisecond() - start).max(1000);
    let period = (input.resets_at.as_millisecond() - start).max(1);
    let forecast = input.spent * Decimal::from(period) / Decimal::from(elapsed);
    let runs_out_at = if input.remaining <= Decimal::ZERO {
        Some(input.now)
    } else {
        let ms_left = (input.remaining * Decimal::from(elapsed) / input.spent).trunc();
        i64::try_from(ms_left)
            .ok()
            .and_then(|ms| input.now.checked_add(SignedDuration::from_millis(ms)).ok())
            .filter(|at| *at < input.resets_at)
    };
    Forecast {
        forecast_usd: Some(forecast.round_dp(SCALE)),
        runs_out_at,
        method,
    }
}

/// Days since 1970-01-01 (UTC) of the day holding `ms`.
fn day_number(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// Days since 1970-01-01 of a date.
fn date_number(date: Date) -> i64 {
    date.duration_since(Date::constant(1970, 1, 1)).as_secs() / 86_400
}

/// 0 for Monday .. 6 for Sunday (1970-01-01 was a Thursday).
fn weekday(day: i64) -> usize {
    usize::try_from((day + 3).rem_euclid(7)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
