//! [`BudgetStatus`]: where one budget stands in its current period, with a forecast.

use jiff::Timestamp;
use jiff::civil::Date;
use rust_decimal::Decimal;
use serde::Serialize;

use super::forecast::{ForecastInput, ForecastMethod, forecast};
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
    /// The spend this period will reach by its reset, by `forecast_method` (see
    /// [`forecast`](super::forecast)). `None` for a linear forecast before any spend.
    pub forecast_usd: Option<Decimal>,
    /// When the limit runs out at that rate, if it does before the period resets (the
    /// current time when it already has). `None` when it will last.
    pub runs_out_at: Option<Timestamp>,
    /// How the forecast was made: `linear` until [`with_history`](Self::with_history) gives
    /// the scope's daily spend.
    pub forecast_method: ForecastMethod,
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
        let mut status = Self {
            spec: slot.spec.clone(),
            period_start: counter.start,
            resets_at: counter.reset,
            spent_usd: money::to_usd(spent),
            reserved_usd: money::to_usd(reserved),
            remaining_usd: money::to_usd(remaining),
            percent,
            forecast_usd: None,
            runs_out_at: None,
            forecast_method: ForecastMethod::Linear,
        };
        status.with_history(now, &[]);
        status
    }

    /// Forecast again at `now` with the scope's spend per UTC day (from the ledger): by its
    /// weekday pattern or its recent daily mean when the history is long enough, else
    /// linearly.
    pub fn with_history(&mut self, now: Timestamp, history: &[(Date, Decimal)]) -> &mut Self {
        let f = forecast(&ForecastInput {
            now,
            period_start: self.period_start,
            resets_at: self.resets_at,
            spent: self.spent_usd,
            remaining: self.remaining_usd,
            history,
        });
        self.forecast_usd = f.forecast_usd;
        self.runs_out_at = f.runs_out_at;
        self.forecast_method = f.method;
        self
    }
}
