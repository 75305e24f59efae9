//! `ledger:`: how long the usage ledger keeps calls one by one (`roll_up_after`), and at all
//! (`retention`), and how often the gateway sweeps it (`sweep_every`).
//!
//! Both ages are optional: unset, calls are kept one by one forever. Each is at least a day,
//! since roll-ups fold whole UTC days, and the ledger answers budgets whose shortest period is
//! a day. A retention must be longer than the roll-up age, or calls would be deleted before
//! being rolled up and the roll-up would never have anything to do.

use std::time::Duration;

use super::raw::RawLedger;
use super::validate::Checker;

/// The shortest age either setting takes.
const DAY: Duration = Duration::from_secs(86_400);
/// `sweep_every` when unset.
const DEFAULT_SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// The ledger's upkeep, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Delete calls, and daily totals of days, older than this; `None`: keep them forever.
    pub retention: Option<Duration>,
    /// Fold calls older than this (whole UTC days) into daily totals; `None`: never.
    pub roll_up_after: Option<Duration>,
    /// How often the gateway sweeps (and once at start).
    pub sweep_every: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            retention: None,
            roll_up_after: None,
            sweep_every: DEFAULT_SWEEP_EVERY,
        }
    }
}

impl LedgerConfig {
    /// Whether there is anything to sweep.
    pub fn sweeps(&self) -> bool {
        self.retention.is_some() || self.roll_up_after.is_some()
    }
}

pub(super) fn ledger(c: &mut Checker<'_>, raw: &RawLedger) -> LedgerConfig {
    let age = |c: &mut Checker<'_>, name: &str, value: Option<&str>| {
        let path = format!("ledger.{name}");
        // Not a duration: reported by `duration`, which then returns this default.
        let unreadable = Duration::MAX;
        let parsed = c.duration(&path, value, unreadable);
        match value {
            None => None,
            Some(_) if parsed == unreadable => None,
            Some(text) if parsed < DAY => {
                c.problem(
                    path,
                    format!(
                        "`{text}` is shorter than a day: the ledger rolls up whole days and \
                         budgets read at least a day back; write e.g. `30d` or `90d`"
                    ),
                );
                None
            }
            Some(_) => Some(parsed),
        }
    };
    let retention = age(c, "retention", raw.retention.as_deref());
    let roll_up_after = age(c, "roll_up_after", raw.roll_up_after.as_deref());
    if let (Some(keep), Some(fold)) = (retention, roll_up_after)
        && keep <= fold
    {
        c.problem(
            "ledger.retention",
            format!(
                "the retention ({}) must be longer than roll_up_after ({}): calls would be \
                 deleted before they are rolled up; raise retention or lower roll_up_after",
                humantime::format_duration(keep),
                humantime::format_duration(fold)
            ),
        );
    }
    let sweep_every = c.duration(
        "ledger.sweep_every",
        raw.sweep_every.as_deref(),
        DEFAULT_SWEEP_EVERY,
    );
    if sweep_every < Duration::from_secs(1) {
        c.problem(
            "ledger.sweep_every",
            "must be at least 1s; the default, 1h, suits most ledgers",
        );
    }
    LedgerConfig {
        retention,
        roll_up_after,
        sweep_every: sweep_every.max(Duration::from_secs(1)),
    }
}
