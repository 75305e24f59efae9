//! [`KeyStore`] on SQLite: the `weir_keys` table, its revision counter and the hashing
//! secret in `weir_settings`.

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde_json::Value;

use super::{Fail, SqliteStore};
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
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14, ?15, ?15, NULL)";

const UPDATE: &str = "UPDATE weir_keys SET name = ?2, user_id = ?3, team_id = ?4, \
    project_id = ?5, models = ?6, rpm = ?7, tpm = ?8, allow_user_override = ?9, enabled = ?10, \
    expires_at = ?11, metadata = ?12, updated_at = ?13 WHERE id = ?1";

const BUMP: &str = "UPDATE weir_revisions SET revision = revision + 1 WHERE name = 'keys'";

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: &NewKey) -> StoreResult<KeyRecord> {
        key.validate()?;
        let key = key.clone();
        self.write("creating a key", move |c| {
            let tx = begin(c)?;
            let record = key.to_record(now_unix());
            let models = to_json(&record.models)?;
            let metadata = to_json(&record.metadata)?;
            tx.prepare_cached(INSERT)?
                .execute(rusqlite::params![
                    record.id,
                    key.hash.as_bytes(),
                    record.hint,
                    record.name,
                    record.user,
                    record.team,
                    record.project,
                    models,
                    limit_to_db(record.limits.rpm)?,
                    limit_to_db(record.limits.tpm)?,
                    record.allow_user_override,
                    record.enabled,
                    record.expires_at,
                    metadata,
                    record.created_at,
                ])
                .map_err(|e| unique_conflict(e, &record.id, &record.name))?;
            tx.execute(BUMP, [])?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_string();
        self.read("reading a key", move |c| select_by_id(c, &id))
            .await
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let hash = *hash;
        self.read("looking a key up by hash", move |c| {
            let sql = format!("SELECT {COLUMNS} FROM weir_keys WHERE hash = ?1");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query([hash.as_bytes()])?;
            rows.next()?.map(record_from_row).transpose()
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>> {
        self.read("listing keys", |c| {
            let sql = format!("SELECT {COLUMNS} FROM weir_keys ORDER BY created_at, id");
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = stmt.query([])?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                keys.push(record_from_row(row)?);
            }
            Ok(keys)
        })
        .await
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> StoreResult<Option<KeyRecord>> {
        update.validate()?;
        let (id, update) = (id.to_string(), update.clone());
        self.write("updating a key", move |c| {
            let tx = begin(c)?;
            let Some(mut record) = select_by_id(&tx, &id)? else {
                return Ok(None);
            };
            if record.is_revoked() {
                return Err(revoked_conflict(&id).into());
            }
            update.apply(&mut record);
            record.updated_at = now_unix();
            tx.prepare_cached(UPDATE)?
                .execute(rusqlite::params![
                    record.id,
                    record.name,
                    record.user,
                    record.team,
                    record.project,
                    to_json(&record.models)?,
                    limit_to_db(record.limits.rpm)?,
                    limit_to_db(record.limits.tpm)?,
                    record.allow_user_override,
                    record.enabled,
                    record.expires_at,
                    to_json(&record.metadata)?,
                    record.updated_at,
                ])
                .map_err(|e| unique_conflict(e, &record.id, &record.name))?;
            tx.execute(BUMP, [])?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_string();
        self.write("revoking a key", move |c| {
            let tx = begin(c)?;
            let Some(mut record) = select_by_id(&tx, &id)? else {
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
                "UPDATE weir_keys SET revoked_at = ?2, enabled = 0, updated_at = ?2 WHERE id = ?1",
                rusqlite::params![id, now],
            )?;
            tx.execute(BUMP, [])?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
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
        let (id, hash, hint) = (id.to_string(), *hash, hint.to_string());
        self.write("rotating a key", move |c| {
            let tx = begin(c)?;
            let Some(mut record) = select_by_id(&tx, &id)? else {
                return Ok(None);
            };
            if record.is_revoked() {
                return Err(revoked_conflict(&id).into());
            }
            record.hint = hint;
            record.updated_at = now_unix();
            tx.execute(
                "UPDATE weir_keys SET hash = ?2, hint = ?3, updated_at = ?4 WHERE id = ?1",
                rusqlite::params![id, hash.as_bytes(), record.hint, record.updated_at],
            )
            .map_err(|e| unique_conflict(e, &record.id, &record.name))?;
            tx.execute(BUMP, [])?;
            tx.commit()?;
            Ok(Some(record))
        })
        .await
    }

    async fn touch_keys(&self, used: &[(String, i64)]) -> StoreResult<()> {
        let latest = latest_use(used);
        if latest.is_empty() {
            return Ok(());
        }
        self.write("recording key use", move |c| {
            let tx = begin(c)?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE weir_keys SET last_used_at = max(coalesce(last_used_at, ?2), ?2) \
                     WHERE id = ?1",
                )?;
                for (id, at) in &latest {
                    stmt.execute(rusqlite::params![id, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn key_revision(&self) -> StoreResult<i64> {
        self.read("polling the key revision", |c| {
            let mut stmt =
                c.prepare_cached("SELECT revision FROM weir_revisions WHERE name = 'keys'")?;
            Ok(stmt.query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn hashing_secret(&self) -> StoreResult<Vec<u8>> {
        let stored = self
            .read("reading the key hashing secret", |c| read_secret(c))
            .await?;
        if let Some(secret) = stored {
            return check_secret(secret);
        }
        let mut fresh = [0u8; 32];
        fill_random(&mut fresh)?;
        let secret = self
            .write("creating the key hashing secret", move |c| {
                c.execute(
                    "INSERT INTO weir_settings (name, value) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO NOTHING",
                    rusqlite::params![SECRET_NAME, fresh.as_slice()],
                )?;
                fresh.fill(0);
                read_secret(c)
            })
            .await?;
        match secret {
            Some(secret) => check_secret(secret),
            None => Err(StoreError::InvalidData(
                "the key hashing secret vanished right after it was stored: check that nothing \
                 else deletes rows from weir_settings"
                    .into(),
            )),
        }
    }

    fn describe(&self) -> String {
        super::describe(self.path())
    }
}

/// A write transaction holding the write lock from its start (see the module docs).
fn begin(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn select_by_id(c: &Connection, id: &str) -> Result<Option<KeyRecord>, Fail> {
    let sql = format!("SELECT {COLUMNS} FROM weir_keys WHERE id = ?1");
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    rows.next()?.map(record_from_row).transpose()
}

fn record_from_row(row: &Row<'_>) -> Result<KeyRecord, Fail> {
    let id: String = row.get(0)?;
    let models: String = row.get(6)?;
    let metadata: String = row.get(13)?;
    let limits = KeyLimits {
        rpm: limit_from_db(&id, row.get(7)?)?,
        tpm: limit_from_db(&id, row.get(8)?)?,
    };
    Ok(KeyRecord {
        name: row.get(1)?,
        hint: row.get(2)?,
        user: row.get(3)?,
        team: row.get(4)?,
        project: row.get(5)?,
        models: models_from_json(&id, parse_json(&id, "models", &models)?)?,
        limits,
        allow_user_override: row.get(9)?,
        enabled: row.get(10)?,
        expires_at: row.get(11)?,
        revoked_at: row.get(12)?,
        metadata: metadata_from_json(&id, parse_json(&id, "metadata", &metadata)?)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        last_used_at: row.get(16)?,
        id,
    })
}

fn parse_json(id: &str, column: &str, text: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::InvalidData(format!(
            "key {id} has {column} in the store that is not JSON ({e}): set its {column} again"
        ))
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidData(format!("cannot encode a key field as JSON: {e}")))
}

/// A unique-constraint failure on `weir_keys` as the [`StoreError::Conflict`] it means.
fn unique_conflict(e: rusqlite::Error, id: &str, name: &str) -> Fail {
    let unique = match &e {
        rusqlite::Error::SqliteFailure(err, Some(message))
            if err.code == ErrorCode::ConstraintViolation =>
        {
            if message.contains("weir_keys.id") {
                Some(Unique::Id)
            } else if message.contains("weir_keys.name") {
                Some(Unique::Name)
            } else if message.contains("weir_keys.hash") {
                Some(Unique::Hash)
            } else {
                None
            }
        }
        _ => None,
    };
    match unique {
        Some(u) => Fail::Store(u.conflict(id, name)),
        None => Fail::Sql(e),
    }
}

fn read_secret(c: &Connection) -> Result<Option<Vec<u8>>, Fail> {
    Ok(
        c.prepare_cached("SELECT value FROM weir_settings WHERE name = ?1")?
            .query_row([SECRET_NAME], |r| r.get(0))
            .optional()?,
    )
}
