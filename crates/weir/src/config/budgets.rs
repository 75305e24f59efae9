//! Validation of `budgets:` (spend budgets), plus the global budgets `LLM_DAILY_BUDGET` and
//! `LLM_MONTHLY_BUDGET` add.
//!
//! ```yaml
//! budgets:                       # a list of specs...
//!   - { id: all-daily, scope: global, limit_usd: 100, period: daily }
//! budgets:                       # ...or a map by id, with the settings beside them
//!   on_store_error: deny         # allow (default) or deny, when Redis fails
//!   store_timeout: 1s
//!   search-weekly: { scope: { team: search }, limit_usd: 50, period: weekly }
//! ```

use std::str::FromStr;

use rust_decimal::Decimal;

use super::raw::{RawBudgets, RawConfig};
use super::validate::Checker;
use crate::budgets::{BudgetMode, BudgetPeriod, BudgetScope, BudgetSpec, BudgetsConfig};
use crate::limits::OnStoreError;

pub(super) fn budgets(c: &mut Checker<'_>, raw: &RawConfig) -> BudgetsConfig {
    let d = BudgetsConfig::default();
    let mut out = BudgetsConfig::default();
    match &raw.budgets {
        None => {}
        Some(RawBudgets::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(spec) = spec(c, &format!("budgets[{i}]"), item.clone(), None) {
                    out.specs.push(spec);
                }
            }
        }
        Some(RawBudgets::Map(map)) => {
            for (id, item) in map {
                let path = format!("budgets.{id}");
                match id.as_str() {
                    "on_store_error" => {
                        out.on_store_error = match item.as_str().map(str::trim) {
                            Some("allow") => OnStoreError::Allow,
                            Some("deny") => OnStoreError::Deny,
                            _ => {
                                c.problem(path, format!("`{item}` is not one of allow, deny"));
                                d.on_store_error
                            }
                        }
                    }
                    "store_timeout" => {
                        let timeout = c.duration(&path, item.as_str(), d.store_timeout);
                        if timeout.is_zero() || item.as_str().is_none() {
                            c.problem(path, "must be a duration longer than zero, e.g. `250ms`");
                        } else {
                            out.store_timeout = timeout;
                        }
                    }
                    _ => {
                        if let Some(spec) = spec(c, &path, item.clone(), Some(id)) {
                            out.specs.push(spec);
                        }
                    }
                }
            }
        }
    }
    for (var, id, period) in [
        ("LLM_DAILY_BUDGET", "global-daily", BudgetPeriod::Daily),
        (
            "LLM_MONTHLY_BUDGET",
            "global-monthly",
            BudgetPeriod::Monthly,
        ),
    ] {
        let Some(text) = c.env.var(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let limit = Decimal::from_str(text.trim().trim_start_matches('$'))
            .ok()
            .filter(|d| *d > Decimal::ZERO);
        let Some(limit) = limit else {
            c.problem(
                format!("env {var}"),
                format!("`{text}` is not an amount of dollars above zero, e.g. `25` or `12.50`"),
            );
            continue;
        };
        // The environment wins over a file budget with the same id.
        out.specs.retain(|s| s.id != id);
        out.specs
            .push(BudgetSpec::new(id, BudgetScope::Global, limit, period).mode(BudgetMode::Hard));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, s) in out.specs.iter().enumerate() {
        if seen.contains(&s.id.as_str()) {
            c.problem(
                format!("budgets[{i}].id"),
                format!("`{}` is used by two budgets; give each its own id", s.id),
            );
        }
        seen.push(&s.id);
    }
    out
}

/// One spec at `path`; in the map form, `id` is its key (and may be left out of the spec).
fn spec(
    c: &mut Checker<'_>,
    path: &str,
    mut value: serde_json::Value,
    id: Option<&str>,
) -> Option<BudgetSpec> {
    if let (Some(id), serde_json::Value::Object(map)) = (id, &mut value) {
        match map.get("id") {
            None => {
                map.insert("id".into(), serde_json::Value::String(id.to_owned()));
            }
            Some(given) if given.as_str() != Some(id) => {
                c.problem(
                    format!("{path}.id"),
                    format!(
                        "`{given}` differs from its key `{id}`; leave `id` out or make them match"
                    ),
                );
                return None;
            }
            Some(_) => {}
        }
    }
    let spec: BudgetSpec = match serde_path_to_error::deserialize(value) {
        Ok(spec) => spec,
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else {
                format!("{path}.{inner}")
            };
            c.problem(
                at,
                format!(
                    "{}; a budget is {{ id, scope: global | {{ key|user|team|project|model: \
                     NAME }}, limit_usd, period: daily | weekly | monthly | {{ rolling: 7d }}, \
                     time_zone, mode: hard | soft, thresholds }}",
                    e.into_inner()
                ),
            );
            return None;
        }
    };
    let problems = spec.problems();
    if problems.is_empty() {
        return Some(spec);
    }
    for (field, reason) in problems {
        c.problem(format!("{path}.{field}"), reason);
    }
    None
}
