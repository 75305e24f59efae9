//! Budgets the gateway keeps: the configured ones, overlaid with those set or removed through
//! the admin API and kept in the store ([`BudgetSync`]), each started from the ledger's spend
//! ([`seed_all`], [`seed_one`]), and the ledger's daily spend per budget scope that forecasts
//! read ([`daily_history`]).
//!
//! **Which wins.** At start the configured budgets (`budgets:`, `LLM_DAILY_BUDGET`,
//! `LLM_MONTHLY_BUDGET`) are loaded first, then every stored change in the order it was made:
//! a stored budget replaces a configured one with the same id, and a stored removal removes
//! it. The admin API's change is the later decision, made by someone looking at the running
//! gateway; letting a restart silently undo it would bring back a limit that was raised, or
//! a budget that was removed, at the worst moment. Each override is logged at start, so an
//! edit to the configuration that seems to have no effect explains itself.
//!
//! **Replicas.** Every change bumps the store's budget revision; each replica polls it (every
//! [`POLL_EVERY`]) and, when it moves, reloads the stored budgets and applies the difference:
//! a changed budget keeps the spend counted so far, a new one starts from the ledger's spend
//! this period.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use rust_decimal::Decimal;
use weir::budgets::{BudgetScope, BudgetSpec, Budgets, PATTERN_DAYS};
use weir_store::{
    BudgetStore, Dimension, LedgerStore, SpendFilter, StoreError, StoredBudget, UsageQuery,
};

/// How often each replica asks the store whether the budgets changed. Budgets change rarely
/// and a second's delay is harmless, unlike a revoked key's.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Why a budget could not be set or removed.
#[derive(Debug, thiserror::Error)]
pub enum BudgetChangeError {
    /// The budget itself is wrong (the message says how).
    #[error(transparent)]
    Invalid(#[from] weir::Error),
    /// The store could not keep the change; nothing changed.
    #[error("the budget change was not stored, so nothing changed: {0}")]
    Store(#[from] StoreError),
}

/// The configured budgets overlaid with the stored ones, kept in step with the store. See
/// the module docs.
pub struct BudgetSync {
    store: Arc<dyn BudgetStore>,
    budgets: Arc<Budgets>,
    configured: Vec<BudgetSpec>,
    ledger: Option<Arc<dyn LedgerStore>>,
    revision: AtomicI64,
    /// One reload at a time, so a poll and an admin change never interleave their edits.
    applying: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for BudgetSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetSync")
            .field("revision", &self.revision.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BudgetSync {
    /// Apply the stored budgets over the configured ones in `budgets` (without seeding them:
    /// the caller seeds every budget once they are all there), and start the poller that
    /// keeps this replica in step (it stops when the sync is dropped).
    pub async fn start(
        store: Arc<dyn BudgetStore>,
        budgets: Arc<Budgets>,
        configured: Vec<BudgetSpec>,
        ledger: Option<Arc<dyn LedgerStore>>,
    ) -> Result<Arc<Self>, StoreError> {
        let revision = store.budget_revision().await?;
        let sync = Arc::new(Self {
            store,
            budgets,
            configured,
            ledger,
            revision: AtomicI64::new(revision),
            applying: tokio::sync::Mutex::new(()),
        });
        let stored = sync.store.list_budgets().await?;
        for change in &stored {
            if sync.configured.iter().any(|c| c.id == change.id) {
                let what = if change.spec.is_some() {
                    "replaced by the one set"
                } else {
                    "removed"
                };
                tracing::info!(
                    budget = %change.id,
                    "the configured budget is {what} through the admin API, which wins: set it again there to change it"
                );
            }
        }
        sync.apply(stored, false).await;
        tokio::spawn(poll(Arc::downgrade(&sync)));
        Ok(sync)
    }

    /// Store `spec` and apply it here (other replicas follow within [`POLL_EVERY`]). A new
    /// budget starts from the ledger's spend this period.
    pub async fn put(&self, spec: BudgetSpec) -> Result<(), BudgetChangeError> {
        spec.validate().map_err(weir::Error::invalid_request)?;
        let json = serde_json::to_value(&spec).map_err(|e| {
            weir::Error::invalid_request(format!("budget `{}` cannot be encoded: {e}", spec.id))
        })?;
        self.store.put_budget(&spec.id, &json).await?;
        self.reload().await?;
        Ok(())
    }

    /// Store the removal of budget `id` and apply it here; `false` (and nothing stored) when
    /// this gateway has no such budget.
    pub async fn remove(&self, id: &str) -> Result<bool, BudgetChangeError> {
        if !self.budgets.list().iter().any(|b| b.id == id) {
            return Ok(false);
        }
        self.store.remove_budget(id).await?;
        self.reload().await?;
        Ok(true)
    }

    /// Read the stored budgets and apply them.
    async fn reload(&self) -> Result<(), StoreError> {
        let stored = self.store.list_budgets().await?;
        self.apply(stored, true).await;
        Ok(())
    }

    /// Make the budgets the configured ones overlaid with `stored`: remove what is gone, set
    /// what is new or changed (a changed limit keeps the spend counted so far), and, when
    /// `seed_new`, start what is new or has new periods from the ledger.
    async fn apply(&self, stored: Vec<StoredBudget>, seed_new: bool) {
        let _one = self.applying.lock().await;
        let wanted = overlay(&self.configured, &stored);
        let current = self.budgets.list();
        for old in &current {
            if !wanted.iter().any(|w| w.id == old.id)
                && let Err(e) = self.budgets.remove(&old.id)
            {
                tracing::warn!(budget = %old.id, error = %e, "cannot remove the budget");
            }
        }
        for spec in wanted {
            let before = current.iter().find(|c| c.id == spec.id);
            if before == Some(&spec) {
                continue;
            }
            let id = spec.id.clone();
            if let Err(e) = self.budgets.set(spec.clone()) {
                tracing::warn!(budget = %id, error = %e, "cannot apply the stored budget");
                continue;
            }
            // A new budget, or one whose periods changed, counts from zero: start it from
            // the ledger. A changed limit alone keeps the spend counted so far.
            let restarted =
                before.is_none_or(|b| b.period != spec.period || b.time_zone != spec.time_zone);
            if restarted
                && seed_new
                && let Some(ledger) = &self.ledger
            {
                seed_one(&self.budgets, ledger.as_ref(), &spec).await;
            }
        }
    }
}

/// Poll the store's budget revision until the sync is dropped; reload when it moves.
async fn poll(sync: Weak<BudgetSync>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sync) = sync.upgrade() else { return };
        match sync.store.budget_revision().await {
            Ok(revision) if sync.revision.swap(revision, Ordering::AcqRel) != revision => {
                if let Err(e) = sync.reload().await {
                    // Try again at the next poll.
                    sync.revision.store(i64::MIN, Ordering::Release);
                    tracing::warn!(error = %e, "cannot reload the stored budgets");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot poll the budget store for changes"),
        }
    }
}

/// The configured budgets with the stored changes applied in order. A stored budget that no
/// longer reads as a valid budget (written by another weir version) is skipped, with a
/// warning, leaving what was there before it.
pub fn overlay(configured: &[BudgetSpec], stored: &[StoredBudget]) -> Vec<BudgetSpec> {
    let mut out = configured.to_vec();
    for change in stored {
        out.retain(|b| b.id != change.id);
        let Some(json) = &change.spec else { continue };
        match serde_json::from_value::<BudgetSpec>(json.clone()) {
            Ok(spec) if spec.id == change.id && spec.validate().is_ok() => out.push(spec),
            Ok(_) | Err(_) => {
                tracing::warn!(
                    budget = %change.id,
                    "the stored budget is not a valid budget for this weir version: it is ignored; set it again through the admin API"
                );
                if let Some(c) = configured.iter().find(|c| c.id == change.id) {
                    out.push(c.clone());
                }
            }
        }
    }
    out
}

/// The ledger filter for a budget's scope.
pub fn spend_filter(scope: &BudgetScope) -> SpendFilter {
    let mut filter = SpendFilter::default();
    match scope {
        BudgetScope::Global => {}
        BudgetScope::Key(v) => filter.key_id = Some(v.clone()),
        BudgetScope::User(v) => filter.user = Some(v.clone()),
        BudgetScope::Team(v) => filter.team = Some(v.clone()),
        BudgetScope::Project(v) => filter.project = Some(v.clone()),
        BudgetScope::Model(v) => filter.model = Some(v.clone()),
    }
    filter
}

/// Start every budget's current period from what the ledger already holds, so a restart
/// neither forgets spend nor lets a budget be spent twice.
pub async fn seed_all(budgets: &Budgets, ledger: &dyn LedgerStore) {
    for spec in budgets.list() {
        seed_one(budgets, ledger, &spec).await;
    }
}

/// Start one budget's current period from the ledger's spend. A budget the ledger cannot
/// answer for starts at zero, with a warning.
pub async fn seed_one(budgets: &Budgets, ledger: &dyn LedgerStore, spec: &BudgetSpec) {
    let now = budgets.now();
    let Ok((start, _)) = weir::budgets::period_bounds(spec, now) else {
        return;
    };
    let spent = ledger
        .spend(
            &spend_filter(&spec.scope),
            start.as_millisecond(),
            now.as_millisecond().saturating_add(1),
        )
        .await;
    match spent {
        Ok(spent) => {
            if let Err(e) = budgets.seed(&spec.id, start, spent.cost_usd).await {
                tracing::warn!(budget = %spec.id, error = %e, "cannot start the budget from the ledger's spend");
            }
        }
        Err(e) => {
            tracing::warn!(budget = %spec.id, error = %e, "cannot read this period's spend from the ledger: the budget starts at zero")
        }
    }
}

/// Days of history a forecast reads: four weeks for the weekday pattern, and one more week
/// so a scope that spends nothing at weekends still shows four weeks behind it.
const HISTORY_DAYS: i64 = PATTERN_DAYS + 7;

/// The spend per UTC day of `scope` over the [`HISTORY_DAYS`] full days before `now`.
pub async fn daily_history(
    ledger: &dyn LedgerStore,
    scope: &BudgetScope,
    now: Timestamp,
) -> Result<Vec<(Date, Decimal)>, StoreError> {
    const DAY_MS: i64 = 86_400_000;
    let today = now.as_millisecond().div_euclid(DAY_MS) * DAY_MS;
    let query = UsageQuery {
        from_ms: today - HISTORY_DAYS * DAY_MS,
        to_ms: today,
        group_by: vec![Dimension::Day],
        filters: spend_filter(scope).to_filters(),
    };
    let rows = ledger.usage(&query).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let day = row.group.first()?.1.as_deref()?.parse::<Date>().ok()?;
            Some((day, row.cost_usd))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use weir::budgets::BudgetPeriod;

    use super::*;

    fn spec(id: &str, limit: i64) -> BudgetSpec {
        BudgetSpec::new(
            id,
            BudgetScope::Global,
            Decimal::from(limit),
            BudgetPeriod::Daily,
        )
    }

    fn stored(id: &str, spec: Option<serde_json::Value>) -> StoredBudget {
        StoredBudget {
            id: id.into(),
            spec,
            updated_at: 1,
        }
    }

    #[test]
    fn stored_changes_override_the_configuration_in_order() {
        let configured = [spec("a", 1), spec("b", 2), spec("keep", 3)];
        let changes = [
            stored("a", Some(serde_json::to_value(spec("a", 10)).unwrap())),
            stored("b", None),
            stored("c", Some(serde_json::to_value(spec("c", 4)).unwrap())),
            // Written by some other version: ignored, the configured one stays.
            stored("keep", Some(json!({"id": "keep", "colour": "red"}))),
            // A spec stored under another id is not trusted either.
            stored("d", Some(serde_json::to_value(spec("e", 5)).unwrap())),
        ];
        let out = overlay(&configured, &changes);
        let ids: Vec<(&str, Decimal)> = out.iter().map(|b| (b.id.as_str(), b.limit_usd)).collect();
        assert_eq!(
            ids,
            [
                ("a", Decimal::from(10)),
                ("c", Decimal::from(4)),
                ("keep", Decimal::from(3))
            ]
        );
    }

    #[test]
    fn scopes_filter_the_ledger_by_their_dimension() {
        assert_eq!(spend_filter(&BudgetScope::Global), SpendFilter::default());
        let team = spend_filter(&BudgetScope::Team("search".into()));
        assert_eq!(team.team.as_deref(), Some("search"));
        assert_eq!(team.to_filters().len(), 1);
        let key = spend_filter(&BudgetScope::Key("key_1".into()));
        assert_eq!(key.key_id.as_deref(), Some("key_1"));
    }
}
