//! [`BudgetStore`] on Postgres: the `weir_budgets` table and its revision counter, changed
//! in one transaction so no replica sees a revision before the change it counts.

use async_trait::async_trait;
use serde_json::Value;

use super::PostgresStore;
use crate::budgets::{BudgetStore, StoredBudget, check};
use crate::error::{StoreError, StoreResult};
use crate::now_unix;

const UPSERT: &str = "INSERT INTO weir_budgets (id, spec, updated_at) VALUES ($1, $2, $3) \
    ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at";

const BUMP: &str = "UPDATE weir_revisions SET revision = revision + 1 WHERE name = 'budgets'";

fn query_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::query(operation, &e)
}

impl PostgresStore {
    async fn write_budget(
        &self,
        op: &'static str,
        id: &str,
        spec: Option<&Value>,
    ) -> StoreResult<StoredBudget> {
        check(id, spec)?;
        let err = query_err(op);
        let stored = StoredBudget {
            id: id.to_owned(),
            spec: spec.cloned(),
            updated_at: now_unix(),
        };
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        // The revision row first: its lock orders concurrent changes to the same budget too.
        tx.execute(BUMP, &[]).await.map_err(&err)?;
        let stmt = tx.prepare_cached(UPSERT).await.map_err(&err)?;
        tx.execute(&stmt, &[&stored.id, &stored.spec, &stored.updated_at])
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(stored)
    }
}

#[async_trait]
impl BudgetStore for PostgresStore {
    async fn put_budget(&self, id: &str, spec: &Value) -> StoreResult<StoredBudget> {
        self.write_budget("storing a budget", id, Some(spec)).await
    }

    async fn remove_budget(&self, id: &str) -> StoreResult<StoredBudget> {
        self.write_budget("removing a budget", id, None).await
    }

    async fn list_budgets(&self) -> StoreResult<Vec<StoredBudget>> {
        let op = "listing budgets";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached("SELECT id, spec, updated_at FROM weir_budgets ORDER BY updated_at, id")
            .await
            .map_err(&err)?;
        let rows = client.query(&stmt, &[]).await.map_err(&err)?;
        rows.iter()
            .map(|r| {
                Ok(StoredBudget {
                    id: r.try_get(0).map_err(&err)?,
                    spec: r.try_get(1).map_err(&err)?,
                    updated_at: r.try_get(2).map_err(&err)?,
                })
            })
            .collect()
    }

    async fn budget_revision(&self) -> StoreResult<i64> {
        let op = "polling the budget revision";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached("SELECT revision FROM weir_revisions WHERE name = 'budgets'")
            .await
            .map_err(&err)?;
        let row = client.query_one(&stmt, &[]).await.map_err(&err)?;
        row.try_get(0).map_err(&err)
    }
}
