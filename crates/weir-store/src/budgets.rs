//! Spend budgets set at run time (through the admin API), kept in the store: [`BudgetStore`]
//! and its [`StoredBudget`] rows.
//!
//! The store does not know what a budget means: it keeps each one as the JSON the gateway
//! gives it, by id, so the budget's shape can grow without a migration. A removal is kept
//! too, as a row without a spec, so removing a budget that the configuration also defines
//! still holds after a restart. Every change bumps a revision in the same transaction;
//! replicas poll [`BudgetStore::budget_revision`] and reload when it moves.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{StoreError, StoreResult};

/// The longest budget id the store keeps.
pub const MAX_BUDGET_ID: usize = 128;

/// One budget as stored: its latest spec, or its removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBudget {
    pub id: String,
    /// The budget as JSON; `None` when it was removed.
    pub spec: Option<Value>,
    /// When it was last set or removed, unix seconds.
    pub updated_at: i64,
}

/// Where budgets set at run time are kept. Every backend passes the shared suite in
/// `tests/budgets.rs`.
#[async_trait]
pub trait BudgetStore: Send + Sync + fmt::Debug {
    /// Set budget `id` to `spec` (a JSON object), replacing what was stored under that id (a
    /// removal included), and bump the revision.
    async fn put_budget(&self, id: &str, spec: &Value) -> StoreResult<StoredBudget>;

    /// Record that budget `id` was removed (whether or not it was stored), and bump the
    /// revision.
    async fn remove_budget(&self, id: &str) -> StoreResult<StoredBudget>;

    /// Every stored budget and removal, oldest change first (then by id).
    async fn list_budgets(&self) -> StoreResult<Vec<StoredBudget>>;

    /// A number that changes whenever a budget is set or removed, on any replica.
    async fn budget_revision(&self) -> StoreResult<i64>;
}

/// Checked before any query: an id the gateway could have accepted, and a JSON object.
pub(crate) fn check(id: &str, spec: Option<&Value>) -> StoreResult<()> {
    if id.is_empty() || id.len() > MAX_BUDGET_ID {
        return Err(StoreError::InvalidData(format!(
            "a budget id must have 1 to {MAX_BUDGET_ID} characters, not {}: choose a shorter id",
            id.len()
        )));
    }
    if spec.is_some_and(|s| !s.is_object()) {
        return Err(StoreError::InvalidData(format!(
            "budget `{id}` must be stored as a JSON object: this is a bug in the caller"
        )));
    }
    Ok(())
}

/// A stored spec's text back as JSON.
pub(crate) fn spec_from_text(id: &str, text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            StoreError::InvalidData(format!(
                "the stored budget `{id}` is not JSON ({e}): set it again through the admin API"
            ))
        })
    })
    .transpose()
}
