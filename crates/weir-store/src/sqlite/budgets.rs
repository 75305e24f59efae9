//! [`BudgetStore`] on SQLite: the `weir_budgets` table and its revision counter.

use async_trait::async_trait;
use rusqlite::TransactionBehavior;
use serde_json::Value;

use super::SqliteStore;
use crate::budgets::{BudgetStore, StoredBudget, check, spec_from_text};
use crate::error::{StoreError, StoreResult};
use crate::now_unix;

const UPSERT: &str = "INSERT INTO weir_budgets (id, spec, updated_at) VALUES (?1, ?2, ?3) \
    ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at";

const BUMP: &str = "UPDATE weir_revisions SET revision = revision + 1 WHERE name = 'budgets'";

impl SqliteStore {
    async fn write_budget(
        &self,
        operation: &'static str,
        id: &str,
        spec: Option<&Value>,
    ) -> StoreResult<StoredBudget> {
        check(id, spec)?;
        let text = spec
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::InvalidData(format!("cannot encode budget `{id}`: {e}")))?;
        let stored = StoredBudget {
            id: id.to_owned(),
            spec: spec.cloned(),
            updated_at: now_unix(),
        };
        let row = stored.clone();
        self.write(operation, move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(UPSERT)?
                .execute(rusqlite::params![row.id, text, row.updated_at])?;
            tx.execute(BUMP, [])?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        Ok(stored)
    }
}

#[async_trait]
impl BudgetStore for SqliteStore {
    async fn put_budget(&self, id: &str, spec: &Value) -> StoreResult<StoredBudget> {
        self.write_budget("storing a budget", id, Some(spec)).await
    }

    async fn remove_budget(&self, id: &str) -> StoreResult<StoredBudget> {
        self.write_budget("removing a budget", id, None).await
    }

    async fn list_budgets(&self) -> StoreResult<Vec<StoredBudget>> {
        let rows = self
            .read("listing budgets", |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, spec, updated_at FROM weir_budgets ORDER BY updated_at, id",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let spec: Option<String> = row.get(1)?;
                    out.push((row.get::<_, String>(0)?, spec, row.get::<_, i64>(2)?));
                }
                Ok(out)
            })
            .await?;
        rows.into_iter()
            .map(|(id, spec, updated_at)| {
                Ok(StoredBudget {
                    spec: spec_from_text(&id, spec)?,
                    id,
                    updated_at,
                })
            })
            .collect()
    }

    async fn budget_revision(&self) -> StoreResult<i64> {
        self.read("polling the budget revision", |c| {
            let mut stmt =
                c.prepare_cached("SELECT revision FROM weir_revisions WHERE name = 'budgets'")?;
            Ok(stmt.query_row([], |r| r.get(0))?)
        })
        .await
    }
}
