//! The budget table: every budget ([`Slot`]) and an index from a call's principal and
//! model to the budgets that count it, replaced whole when a budget is set or removed.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::memory::Counter;
use super::spec::{BudgetMode, BudgetScope, BudgetSpec};
use super::{money, period};
use crate::error::{Error, Result};
use crate::pipeline::CallContext;

/// Thresholds one budget may have: one bit each in a counter's warnings.
pub(crate) const MAX_THRESHOLDS: usize = 32;

/// One budget, ready to count.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) spec: BudgetSpec,
    tz: TimeZone,
    /// The limit in nanodollars.
    pub(crate) limit: i64,
    /// Thresholds in ascending order, as (fraction, nanodollars).
    thresholds: Vec<(f64, i64)>,
    /// The same, in nanodollars alone: what the Redis backend sends.
    threshold_units: Vec<i64>,
    /// The current period's counter (memory backend; for Redis, only its bounds are read).
    /// Shared with the slot this one replaced when the period is the same.
    counter: Arc<ArcSwap<Counter>>,
}

impl Slot {
    /// A budget counting from `now`, keeping `previous`'s counter if it counts the same
    /// periods.
    pub(crate) fn new(spec: BudgetSpec, now: Timestamp, previous: Option<&Slot>) -> Result<Self> {
        let tz = period::zone(&spec)?;
        let limit = money::to_units_up(spec.limit_usd).ok_or_else(|| {
            Error::invalid_request(format!(
                "budget `{}`: limit {} is outside 0 to {} dollars",
                spec.id,
                spec.limit_usd,
                money::MAX_USD
            ))
        })?;
        let mut fractions = spec.thresholds.clone();
        fractions.sort_by(f64::total_cmp);
        fractions.dedup();
        if fractions.len() > MAX_THRESHOLDS {
            return Err(Error::invalid_request(format!(
                "budget `{}` has {} thresholds; give at most {MAX_THRESHOLDS}",
                spec.id,
                fractions.len()
            )));
        }
        let thresholds: Vec<(f64, i64)> = fractions
            .into_iter()
            .map(|f| {
                let units = rust_decimal::Decimal::from_f64_retain(f)
                    .and_then(|d| d.checked_mul(spec.limit_usd))
                    .and_then(money::to_units_up)
                    .unwrap_or(i64::MAX);
                (f, units)
            })
            .collect();
        let same_periods =
            previous.filter(|p| p.spec.period == spec.period && p.spec.time_zone == spec.time_zone);
        let counter = match same_periods {
            Some(p) => Arc::clone(&p.counter),
            None => {
                let (start, reset) = period::bounds(spec.period, &tz, now).map_err(|e| {
                    Error::invalid_request(format!(
                        "budget `{}`: its period around {now} cannot be computed: {e}",
                        spec.id
                    ))
                })?;
                Arc::new(ArcSwap::from_pointee(Counter::new(start, reset)))
            }
        };
        Ok(Self {
            threshold_units: thresholds.iter().map(|(_, u)| *u).collect(),
            spec,
            tz,
            limit,
            thresholds,
            counter,
        })
    }

    /// The limit to enforce: `None` for a soft budget.
    pub(crate) fn hard_limit(&self) -> Option<i64> {
        match self.spec.mode {
            BudgetMode::Hard => Some(self.limit),
            BudgetMode::Soft => None,
        }
    }

    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only the Redis backend sends them")
    )]
    pub(crate) fn threshold_units(&self) -> &[i64] {
        &self.threshold_units
    }

    /// The counter of the period holding `now`: a fresh one once the period rolled over.
    pub(crate) fn current(&self, now: Timestamp) -> Arc<Counter> {
        loop {
            let counter = self.counter.load_full();
            // A clock that stepped back keeps counting in the period it is in.
            if counter.holds(now) || now < counter.start {
                return counter;
            }
            let Ok((start, reset)) = period::bounds(self.spec.period, &self.tz, now) else {
                return counter;
            };
            let fresh = Arc::new(Counter::new(start, reset));
            let previous = self.counter.compare_and_swap(&counter, Arc::clone(&fresh));
            if Arc::ptr_eq(&previous, &counter) {
                return fresh;
            }
        }
    }

    /// The thresholds a committed total crossed going from `before` to `after`.
    pub(crate) fn crossed(&self, before: i64, after: i64) -> impl Iterator<Item = usize> + '_ {
        self.thresholds
            .iter()
            .enumerate()
            .filter(move |(_, (_, t))| before < *t && after >= *t)
            .map(|(i, _)| i)
    }

    /// The warning for threshold `index`, logged once (the caller makes sure of that).
    pub(crate) fn warning(&self, index: usize, counter: &Counter) -> String {
        let fraction = self.thresholds.get(index).map_or(1.0, |(f, _)| *f);
        let spec = &self.spec;
        tracing::warn!(
            budget = %spec.id,
            scope = %spec.scope,
            mode = spec.mode.as_str(),
            limit_usd = %spec.limit_usd,
            threshold = fraction,
            resets_at = %counter.reset,
            "budget threshold crossed"
        );
        format!(
            "budget `{}` ({}, {} ${} {}) reached {:.0}% of its limit (spend and calls in \
             flight); it resets at {}",
            spec.id,
            spec.scope,
            spec.mode.as_str(),
            spec.limit_usd,
            spec.period,
            fraction * 100.0,
            counter.reset
        )
    }
}

/// Every budget, indexed by what it counts.
#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Arc<Slot>>,
    global: Vec<usize>,
    /// key, user, team, project, model.
    scoped: [HashMap<String, Vec<usize>>; 5],
}

impl Table {
    pub(crate) fn new(slots: Vec<Arc<Slot>>) -> Self {
        let mut table = Self::default();
        for (i, slot) in slots.iter().enumerate() {
            let (index, value) = match &slot.spec.scope {
                BudgetScope::Global => {
                    table.global.push(i);
                    continue;
                }
                BudgetScope::Key(v) => (0, v),
                BudgetScope::User(v) => (1, v),
                BudgetScope::Team(v) => (2, v),
                BudgetScope::Project(v) => (3, v),
                BudgetScope::Model(v) => (4, v),
            };
            table.scoped[index]
                .entry(value.clone())
                .or_default()
                .push(i);
        }
        table.slots = slots;
        table
    }

    pub(crate) fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Arc<Slot>> {
        self.slots.iter().find(|s| s.spec.id == id)
    }

    /// The budgets that count a call, in table order. Empty (and no allocation) when none.
    pub(crate) fn matching(&self, context: &CallContext) -> Vec<Arc<Slot>> {
        if self.slots.is_empty() {
            return Vec::new();
        }
        let p = &context.principal;
        let values = [
            p.key_id.as_deref(),
            p.user.as_deref(),
            p.team.as_deref(),
            p.project.as_deref(),
            Some(context.model.as_str()),
        ];
        let mut indexes: Vec<usize> = self.global.clone();
        for (map, value) in self.scoped.iter().zip(values) {
            if let Some(found) = value.and_then(|v| map.get(v)) {
                indexes.extend_from_slice(found);
            }
        }
        indexes.sort_unstable();
        indexes
            .into_iter()
            .filter_map(|i| self.slots.get(i).cloned())
            .collect()
    }
}
