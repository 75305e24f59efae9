//! [`BudgetStatus`]: where one budget stands in its current period, with a forecast.

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use serde::Serialize;

use super::memory::Counter;
use super::money;
use super::spec::BudgetSpec;
use super::table::Slot;

/// One budget in its current period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub spec: BudgetSpec,
    pub period_start: Timestamp,
    /// When the spend starts again from zero.
    pub resets_at: Timestamp,
    /// Settled spend this period.
    pub spent_usd: Decimal,
    /// Held by calls in flight (their worst-case cost, until they settle).
    pub reserved_usd: Decimal,
    /// The limit less the spend and the reservations; never below zero.
    pub remaining_usd: Decimal,
    /// The settled spend as a percentage of the limit (past 100 when over).
    pub percent: Decimal,
    /// The spend this period will reach at the current rate: the spend so far extrapolated
    /// linearly over the whole period (spend ÷ time elapsed × period length). A plain
    /// first estimate: it knows nothing of daily cycles. `None` before any spend.
    pub forecast_usd: Option<Decimal>,
    /// When the limit runs out at that same rate, if it does before the period resets (the
    /// current time when it already has). `None` before any spend, or when it will last.
    pub runs_out_at: Option<Timestamp>,
}

impl BudgetStatus {
    pub(crate) fn new(
        slot: &Slot,
        counter: &Counter,
        now: Timestamp,
        spent: i64,
        reserved: i64,
    ) -> Self {
        let remaining = (slot.limit - spent - reserved).max(0);
        let percent = if slot.limit > 0 {
            (Decimal::from(spent) * Decimal::ONE_HUNDRED / Decimal::from(slot.limit)).round_dp(2)
        } else {
            Decimal::ZERO
        };
        // Rate in nanodollars per millisecond, over at least one second.
        let elapsed_ms = (now.as_millisecond() - counter.start.as_millisecond()).max(1000);
        let period_ms = (counter.reset.as_millisecond() - counter.start.as_millisecond()).max(1);
        let (forecast_usd, runs_out_at) = if spent <= 0 {
            (None, None)
        } else {
            let forecast =
                Decimal::from(spent) * Decimal::from(period_ms) / Decimal::from(elapsed_ms);
            let forecast_usd = (forecast / Decimal::from(1_000_000_000u32)).round_dp(9);
            let runs_out = if remaining == 0 {
                Some(now)
            } else {
                let ms_left = i128::from(remaining) * i128::from(elapsed_ms) / i128::from(spent);
                i64::try_from(ms_left)
                    .ok()
                    .and_then(|ms| now.checked_add(SignedDuration::from_millis(ms)).ok())
                    .filter(|at| *at < counter.reset)
            };
            (Some(forecast_usd), runs_out)
        };
        Self {
            spec: slot.spec.clone(),
            period_start: counter.start,
            resets_at: counter.reset,
            spent_usd: money::to_usd(spent),
            reserved_usd: money::to_usd(reserved),
            remaining_usd: money::to_usd(remaining),
            percent,
            forecast_usd,
            runs_out_at,
        }
    }
}
