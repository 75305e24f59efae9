//! [`KeyStore`] on Postgres: the `weir_keys` table, its revision counter and the hashing
//! secret in `weir_settings`.
//!
//! Changes read the key `FOR UPDATE`, apply the change in Rust (the same
//! [`KeyUpdate::apply`] as SQLite), write it back and bump the revision, in one transaction.
//! The revision row's lock orders concurrent writers, so every committed change has its own
//! revision and no replica sees a revision before the change it counts.

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{GenericClient, Row};

use super::PostgresStore;
use crate::error::{StoreError, StoreResult};
use crate::keys::{
    KeyHash, KeyLimits, KeyRecord, KeyStore, KeyUpdate, NewKey, SECRET_NAME, Unique, check_secret,
    latest_use, limit_from_db, limit_to_db, metadata_from_json, models_from_json, revoked_conflict,
};
use crate::now_unix;
use crate::secret::fill_random;

/// The columns [`record_from_row`] reads, in its order.
const COLUMNS: &str = "id, name, hint, user_id, team_id, project_id, models, rpm, tpm, \
    allow_user_override, enabled, expires_at, revoked_at, metadata, created_at, updated_at, \
    last_used_at";

const INSERT: &str = "INSERT INTO weir_keys (id, hash, hint, name, user_id, team_id, project_id, \
    models, rpm, tpm, allow_user_override, enabled, expires_at, revoked_at, metadata, created_at, \
    updated_at, last_used_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $15, $15, NULL)";

const UPDATE: &str = "UPDATE weir_keys SET name = $2, user_id = $3, team_id = $4, \
    project_id = $5, models = $6, rpm = $7, tpm = $8, allow_user_override = $9, enabled = $10, \
    expires_at = $11, metadata = $12, updated_at = $13 WHERE id = $1";

const BUMP: &str = "UPDATE weir_revisions SET revision = revision + 1 WHERE name = 'keys'";

/// A tokio-postgres error while doing `operation`, as ours.
fn query_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::query(operation, &e)
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, key: &NewKey) -> StoreResult<KeyRecord> {
        key.validate()?;
        let op = "creating a key";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        let record = key.to_record(now_unix());
        let stmt = tx.prepare_cached(INSERT).await.map_err(&err)?;
        tx.execute(
            &stmt,
            &[
                &record.id,
                &key.hash.as_bytes().as_slice(),
                &record.hint,
                &record.name,
                &record.user,
                &record.team,
                &record.project,
                &to_json(&record.models)?,
                &limit_to_db(record.limits.rpm)?,
                &limit_to_db(record.limits.tpm)?,
                &record.allow_user_override,
                &record.enabled,
                &record.expires_at,
                &Value::Object(record.metadata.clone()),
                &record.created_at,
            ],
        )
        .await
        .map_err(|e| unique_conflict(op, e, &record.id, &record.name))?;
        tx.execute(BUMP, &[]).await.map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(record)
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let op = "reading a key";
        let client = self.client(op).await?;
        select_by_id(&**client, op, id, false).await
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let op = "looking a key up by hash";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM weir_keys WHERE hash = $1"))
            .await
            .map_err(&err)?;
        let row = client
            .query_opt(&stmt, &[&hash.as_bytes().as_slice()])
            .await
            .map_err(&err)?;
        row.map(|r| record_from_row(op, &r)).transpose()
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let op = "listing keys";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM weir_keys ORDER BY created_at, id"
            ))
            .await
            .map_err(&err)?;
        let rows = client.query(&stmt, &[]).await.map_err(&err)?;
        rows.iter().map(|r| record_from_row(op, r)).collect()
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> StoreResult<Option<KeyRecord>> {
        update.validate()?;
        let op = "updating a key";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        let Some(mut record) = select_by_id(&*tx, op, id, true).await? else {
            return Ok(None);
        };
        if record.is_revoked() {
            return Err(revoked_conflict(id));
        }
        update.apply(&mut record);
        record.updated_at = now_unix();
        let stmt = tx.prepare_cached(UPDATE).await.map_err(&err)?;
        tx.execute(
            &stmt,
            &[
                &record.id,
                &record.name,
                &record.user,
                &record.team,
                &record.project,
                &to_json(&record.models)?,
                &limit_to_db(record.limits.rpm)?,
                &limit_to_db(record.limits.tpm)?,
                &record.allow_user_override,
                &record.enabled,
                &record.expires_at,
                &Value::Object(record.metadata.clone()),
                &record.updated_at,
            ],
        )
        .await
        .map_err(|e| unique_conflict(op, e, &record.id, &record.name))?;
        tx.execute(BUMP, &[]).await.map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(Some(record))
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let op = "revoking a key";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        let Some(mut record) = select_by_id(&*tx, op, id, true).await? else {
            return Ok(None);
        };
        if record.is_revoked() {
            return Ok(Some(record));
        }
        let now = now_unix();
        record.revoked_at = Some(now);
        record.enabled = false;
        record.updated_at = now;
        tx.execute(
            "UPDATE weir_keys SET revoked_at = $2, enabled = FALSE, updated_at = $2 \
             WHERE id = $1",
            &[&id, &now],
        )
        .await
        .map_err(&err)?;
        tx.execute(BUMP, &[]).await.map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(Some(record))
    }

    async fn rotate_key(
        &self,
        id: &str,
        hash: &KeyHash,
        hint: &str,
    ) -> StoreResult<Option<KeyRecord>> {
        if hint.is_empty() {
            return Err(StoreError::InvalidData(
                "a rotated key needs the new secret's hint (from generate_key())".into(),
            ));
        }
        let op = "rotating a key";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        let Some(mut record) = select_by_id(&*tx, op, id, true).await? else {
            return Ok(None);
        };
        if record.is_revoked() {
            return Err(revoked_conflict(id));
        }
        record.hint = hint.to_string();
        record.updated_at = now_unix();
        tx.execute(
            "UPDATE weir_keys SET hash = $2, hint = $3, updated_at = $4 WHERE id = $1",
            &[
                &id,
                &hash.as_bytes().as_slice(),
                &record.hint,
                &record.updated_at,
            ],
        )
        .await
        .map_err(|e| unique_conflict(op, e, &record.id, &record.name))?;
        tx.execute(BUMP, &[]).await.map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(Some(record))
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> StoreResult<()> {
        let latest = latest_use(used);
        if latest.is_empty() {
            return Ok(());
        }
        let op = "recording key use";
        let err = query_err(op);
        let (ids, times): (Vec<String>, Vec<i64>) = latest.into_iter().unzip();
        let client = self.client(op).await?;
        // One statement for the whole batch, whatever its size.
        let stmt = client
            .prepare_cached(
                "UPDATE weir_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.at) \
                 FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(id, at) WHERE k.id = u.id",
            )
            .await
            .map_err(&err)?;
        client.execute(&stmt, &[&ids, &times]).await.map_err(&err)?;
        Ok(())
    }

    async fn key_revision(&self) -> StoreResult<i64> {
        let op = "polling the key revision";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached("SELECT revision FROM weir_revisions WHERE name = 'keys'")
            .await
            .map_err(&err)?;
        let row = client.query_one(&stmt, &[]).await.map_err(&err)?;
        row.try_get(0).map_err(&err)
    }

    async fn hashing_secret(&self) -> StoreResult<Vec<u8>> {
        let op = "reading the key hashing secret";
        let err = query_err(op);
        let client = self.client(op).await?;
        let select = "SELECT value FROM weir_settings WHERE name = $1";
        if let Some(row) = client
            .query_opt(select, &[&SECRET_NAME])
            .await
            .map_err(&err)?
        {
            return check_secret(row.try_get(0).map_err(&err)?);
        }
        // Concurrent first calls: one insert wins, the others do nothing (each waits for the
        // winner to commit), and every caller then reads the winner's secret.
        let mut fresh = [0u8; 32];
        fill_random(&mut fresh)?;
        let inserted = client
            .execute(
                "INSERT INTO weir_settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&SECRET_NAME, &fresh.as_slice()],
            )
            .await;
        fresh.fill(0);
        inserted.map_err(query_err("creating the key hashing secret"))?;
        match client
            .query_opt(select, &[&SECRET_NAME])
            .await
            .map_err(&err)?
        {
            Some(row) => check_secret(row.try_get(0).map_err(&err)?),
            None => Err(StoreError::InvalidData(
                "the key hashing secret vanished right after it was stored: check that nothing \
                 else deletes rows from weir_settings"
                    .into(),
            )),
        }
    }

    fn describe(&self) -> String {
        super::describe_target(&self.target)
    }
}

/// The key with this id, locked for the rest of the transaction when `for_update`.
async fn select_by_id<C: GenericClient>(
    client: &C,
    op: &'static str,
    id: &str,
    for_update: bool,
) -> StoreResult<Option<KeyRecord>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM weir_keys WHERE id = $1{lock}");
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .map_err(query_err(op))?;
    row.map(|r| record_from_row(op, &r)).transpose()
}

fn record_from_row(op: &'static str, row: &Row) -> StoreResult<KeyRecord> {
    let err = query_err(op);
    let id: String = row.try_get(0).map_err(&err)?;
    let limits = KeyLimits {
        rpm: limit_from_db(&id, row.try_get(7).map_err(&err)?)?,
        tpm: limit_from_db(&id, row.try_get(8).map_err(&err)?)?,
    };
    Ok(KeyRecord {
        name: row.try_get(1).map_err(&err)?,
        hint: row.try_get(2).map_err(&err)?,
        user: row.try_get(3).map_err(&err)?,
        team: row.try_get(4).map_err(&err)?,
        project: row.try_get(5).map_err(&err)?,
        models: models_from_json(&id, row.try_get(6).map_err(&err)?)?,
        limits,
        allow_user_override: row.try_get(9).map_err(&err)?,
        enabled: row.try_get(10).map_err(&err)?,
        expires_at: row.try_get(11).map_err(&err)?,
        revoked_at: row.try_get(12).map_err(&err)?,
        metadata: metadata_from_json(&id, row.try_get(13).map_err(&err)?)?,
        created_at: row.try_get(14).map_err(&err)?,
        updated_at: row.try_get(15).map_err(&err)?,
        last_used_at: row.try_get(16).map_err(&err)?,
        id,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<Value> {
    serde_json::to_value(value)
        .map_err(|e| StoreError::InvalidData(format!("cannot encode a key field as JSON: {e}")))
}

/// A unique violation on `weir_keys` as the [`StoreError::Conflict`] it means.
fn unique_conflict(op: &'static str, e: tokio_postgres::Error, id: &str, name: &str) -> StoreError {
    let unique = match e.as_db_error() {
        Some(db) if db.code() == &SqlState::UNIQUE_VIOLATION => match db.constraint() {
            Some("weir_keys_pkey") => Some(Unique::Id),
            Some("weir_keys_name_live") => Some(Unique::Name),
            Some("weir_keys_hash") => Some(Unique::Hash),
            _ => None,
        },
        _ => None,
    };
    match unique {
        Some(u) => u.conflict(id, name),
        None => StoreError::query(op, &e),
    }
}
