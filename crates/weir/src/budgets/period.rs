//! Budget periods: where the period holding an instant starts, and when it resets.
//!
//! Daily, weekly (weeks start on Monday) and monthly periods start at local midnight in the
//! budget's time zone, found with jiff's bundled time-zone database (no system files, so it
//! behaves the same on every machine). A day is not always 24 hours: across a daylight-saving
//! change a New York day lasts 23 or 25. Where midnight does not exist (a zone that springs
//! forward at midnight), the period starts at the first instant of the day.
//! Rolling periods are back-to-back windows counted from the Unix epoch.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use super::spec::{BudgetPeriod, BudgetSpec};
use crate::error::{Error, Result};

/// The start of the period of `spec` that holds `now`, and when it resets (the next period's
/// start). Fails only on a time zone jiff does not know (a spec that was never validated) or
/// on dates at the very edge of jiff's range.
pub fn period_bounds(spec: &BudgetSpec, now: Timestamp) -> Result<(Timestamp, Timestamp)> {
    let tz = zone(spec)?;
    bounds(spec.period, &tz, now).map_err(|e| {
        Error::invalid_request(format!(
            "the period of budget `{}` around {now} cannot be computed: {e}",
            spec.id
        ))
    })
}

/// The spec's time zone.
pub(crate) fn zone(spec: &BudgetSpec) -> Result<TimeZone> {
    TimeZone::get(&spec.time_zone).map_err(|e| {
        Error::invalid_request(format!(
            "budget `{}`: `{}` is not a known time zone ({e}); use an IANA name such as \
             `America/New_York`",
            spec.id, spec.time_zone
        ))
    })
}

/// [`period_bounds`] with the zone already found.
pub(crate) fn bounds(
    period: BudgetPeriod,
    tz: &TimeZone,
    now: Timestamp,
) -> std::result::Result<(Timestamp, Timestamp), jiff::Error> {
    let start_of = |d: Date| d.to_zoned_datetime(tz.clone()).map(|z| z.timestamp());
    let today = now.to_zoned_datetime(tz.clone()).date();
    let (first, next) = match period {
        BudgetPeriod::Daily => (today, today.tomorrow()?),
        BudgetPeriod::Weekly => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today.checked_sub(Span::new().days(back))?;
            (monday, monday.checked_add(Span::new().days(7))?)
        }
        BudgetPeriod::Monthly => {
            let first = today.first_of_month();
            (first, first.last_of_month().tomorrow()?)
        }
        BudgetPeriod::Rolling(length) => {
            let len = i64::try_from(length.as_millis()).unwrap_or(i64::MAX).max(1);
            let start = now.as_millisecond().div_euclid(len) * len;
            return Ok((
                Timestamp::from_millisecond(start)?,
                Timestamp::from_millisecond(start.saturating_add(len))?,
            ));
        }
    };
    Ok((start_of(first)?, start_of(next)?))
}
