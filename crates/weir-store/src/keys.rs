//! Gateway keys (virtual API keys): the stored record, what creating and updating one takes,
//! and [`KeyStore`], the trait every backend implements.
//!
//! A key's secret is never stored: only its [`KeyHash`] (a keyed hash, see
//! [`KeyHasher`](crate::KeyHasher)) and a hint (`wk-Ab3x…9fQz`) that tells keys apart in
//! listings. Authentication is one indexed lookup by hash ([`KeyStore::key_by_hash`]);
//! replicas cache keys in memory and poll [`KeyStore::key_revision`] to know when to reload.
//!
//! Rules every backend keeps (the shared suite in `tests/keys.rs` checks them on each):
//! - the store sets `created_at` and `updated_at` (unix seconds, now) on create, and
//!   `updated_at` on every update, revoke and rotate; `last_used_at` moves only through
//!   [`KeyStore::touch_keys`];
//! - names are unique among keys that are not revoked; ids and hashes are unique;
//! - a revoked key stays listed, but cannot be updated or rotated (create a new key instead);
//! - every create, update, revoke and rotate bumps the revision in the same transaction, so a
//!   replica that sees the new revision also sees the change; touching does not bump it.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{StoreError, StoreResult};

/// Longest key id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Longest key name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// The 32-byte keyed hash of a presented key, as made by [`KeyHasher`](crate::KeyHasher).
///
/// `Debug` prints only a short hex prefix: enough to match log lines, too little to matter.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash from stored bytes; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(KeyHash)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Per-key rate limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// A gateway key as stored (never its secret, nor its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `key_` + 16 hex characters (see [`generate_key_id`](crate::generate_key_id)).
    pub id: String,
    /// Unique among keys that are not revoked.
    pub name: String,
    /// E.g. `wk-Ab3x…9fQz`: never the key.
    pub hint: String,
    pub user: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    /// Allowed model patterns; empty means every model.
    pub models: Vec<String>,
    pub limits: KeyLimits,
    /// Whether requests may name their own end user (the OpenAI `user` field or
    /// `x-weir-user`); otherwise the key's `user` is the end user.
    pub allow_user_override: bool,
    pub enabled: bool,
    /// Unix seconds after which the key stops working.
    pub expires_at: Option<i64>,
    /// Unix seconds when the key was revoked; revoked keys stay listed.
    pub revoked_at: Option<i64>,
    pub metadata: Map<String, Value>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Unix seconds; moved forward by [`KeyStore::touch_keys`].
    pub last_used_at: Option<i64>,
}

impl KeyRecord {
    /// Whether the key has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Whether the key has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether the key may authenticate at `now`: enabled, not revoked, not expired.
    pub fn is_usable(&self, now: i64) -> bool {
        self.enabled && !self.is_revoked() && !self.is_expired(now)
    }
}

/// What [`KeyStore::create_key`] takes. The caller makes the id
/// ([`generate_key_id`](crate::generate_key_id)), the secret, its hash and its hint
/// ([`generate_key`](crate::generate_key), [`KeyHasher::hash`](crate::KeyHasher::hash)); the
/// store sets `created_at` and `updated_at` to now, and `revoked_at` and `last_used_at` to none.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub id: String,
    pub hash: KeyHash,
    pub hint: String,
    pub name: String,
    pub user: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub models: Vec<String>,
    pub limits: KeyLimits,
    pub allow_user_override: bool,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub metadata: Map<String, Value>,
}

impl NewKey {
    /// An enabled key for every model, with no owner, limits, expiry or metadata.
    pub fn new(
        id: impl Into<String>,
        hash: KeyHash,
        hint: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        NewKey {
            id: id.into(),
            hash,
            hint: hint.into(),
            name: name.into(),
            user: None,
            team: None,
            project: None,
            models: Vec::new(),
            limits: KeyLimits::default(),
            allow_user_override: false,
            enabled: true,
            expires_at: None,
            metadata: Map::new(),
        }
    }

    /// The record this key becomes when created at `now`.
    pub(crate) fn to_record(&self, now: i64) -> KeyRecord {
        KeyRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            hint: self.hint.clone(),
            user: self.user.clone(),
            team: self.team.clone(),
            project: self.project.clone(),
            models: self.models.clone(),
            limits: self.limits,
            allow_user_override: self.allow_user_override,
            enabled: self.enabled,
            expires_at: self.expires_at,
            revoked_at: None,
            metadata: self.metadata.clone(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
        }
    }

    /// Checks what the database cannot: non-empty id, name and hint, lengths, limits that fit.
    pub fn validate(&self) -> StoreResult<()> {
        if self.id.trim().is_empty() || self.id.len() > MAX_ID_LEN {
            return Err(StoreError::InvalidData(format!(
                "a key id must be 1 to {MAX_ID_LEN} characters: use generate_key_id()"
            )));
        }
        if self.hint.is_empty() {
            return Err(StoreError::InvalidData(
                "a key needs a hint (from generate_key()) so listings can tell keys apart".into(),
            ));
        }
        validate_name(&self.name)?;
        validate_limits(&self.limits)
    }
}

/// Limits as a partial update: each kind absent (unchanged), `null` (cleared) or a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitsUpdate {
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpm: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tpm: Option<Option<u64>>,
}

/// A partial update of a key. `None` leaves a field unchanged; for the fields that can be
/// cleared, `Some(None)` clears them. In JSON: an absent field is unchanged, `null` clears.
/// `metadata` and `models`, when given, replace the stored value whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub user: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub team: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub project: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimitsUpdate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_user_override: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl KeyUpdate {
    /// Checks the new values: a non-empty name, limits that fit.
    pub fn validate(&self) -> StoreResult<()> {
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        if let Some(limits) = &self.limits {
            for limit in [limits.rpm, limits.tpm].into_iter().flatten().flatten() {
                limit_to_db(Some(limit))?;
            }
        }
        Ok(())
    }

    /// Apply the update to `record` (its `updated_at` is the caller's to set).
    pub fn apply(&self, record: &mut KeyRecord) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *field = v.clone();
            }
        }
        set(&mut record.name, &self.name);
        set(&mut record.user, &self.user);
        set(&mut record.team, &self.team);
        set(&mut record.project, &self.project);
        set(&mut record.models, &self.models);
        if let Some(limits) = &self.limits {
            set(&mut record.limits.rpm, &limits.rpm);
            set(&mut record.limits.tpm, &limits.tpm);
        }
        set(&mut record.allow_user_override, &self.allow_user_override);
        set(&mut record.enabled, &self.enabled);
        set(&mut record.expires_at, &self.expires_at);
        set(&mut record.metadata, &self.metadata);
    }
}

/// Absent stays `None` (through `#[serde(default)]`); `null` becomes `Some(None)`.
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn validate_name(name: &str) -> StoreResult<()> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StoreError::InvalidData(format!(
            "a key name must be 1 to {MAX_NAME_LEN} characters and not only spaces: choose \
             another name"
        )));
    }
    Ok(())
}

fn validate_limits(limits: &KeyLimits) -> StoreResult<()> {
    limit_to_db(limits.rpm)?;
    limit_to_db(limits.tpm)?;
    Ok(())
}

/// A limit as the databases store it (a signed 64-bit integer).
pub(crate) fn limit_to_db(limit: Option<u64>) -> StoreResult<Option<i64>> {
    limit
        .map(|v| {
            i64::try_from(v).map_err(|_| {
                StoreError::InvalidData(format!(
                    "limit {v} is too large (at most {}): use a smaller limit, or none",
                    i64::MAX
                ))
            })
        })
        .transpose()
}

/// A stored limit back as weir's type.
pub(crate) fn limit_from_db(id: &str, limit: Option<i64>) -> StoreResult<Option<u64>> {
    limit
        .map(|v| {
            u64::try_from(v).map_err(|_| {
                StoreError::InvalidData(format!(
                    "key {id} has a negative limit ({v}) in the store: set its limits again"
                ))
            })
        })
        .transpose()
}

/// The stored `models` JSON back as a list.
pub(crate) fn models_from_json(id: &str, value: Value) -> StoreResult<Vec<String>> {
    serde_json::from_value(value).map_err(|e| {
        StoreError::InvalidData(format!(
            "key {id} has models in the store that are not a list of strings ({e}): set its \
             models again"
        ))
    })
}

/// The stored `metadata` JSON back as an object.
pub(crate) fn metadata_from_json(id: &str, value: Value) -> StoreResult<Map<String, Value>> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(StoreError::InvalidData(format!(
            "key {id} has metadata in the store that is not a JSON object (found {}): set its \
             metadata again",
            json_kind(&other)
        ))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unique {
    Id,
    Name,
    Hash,
}

impl Unique {
    /// The conflict for key `id` named `name`.
    pub(crate) fn conflict(self, id: &str, name: &str) -> StoreError {
        StoreError::Conflict(match self {
            Unique::Id => format!("a key with id {id} already exists: use a new id"),
            Unique::Name => format!(
                "a key named {name:?} already exists and is not revoked: choose another name, \
                 or revoke that key first"
            ),
            Unique::Hash => "another key already has this secret: generate a new key".into(),
        })
    }
}

/// The conflict returned when a revoked key is changed.
pub(crate) fn revoked_conflict(id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "key {id} is revoked, and revoked keys cannot be changed: create a new key instead"
    ))
}

/// The `weir_settings` row holding the key hashing secret.
pub(crate) const SECRET_NAME: &str = "key_hashing_secret";

/// The latest time per id (a batch may name a key more than once).
pub(crate) fn latest_use(used: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut latest: HashMap<&str, i64> = HashMap::with_capacity(used.len());
    for (id, at) in used {
        latest
            .entry(id.as_str())
            .and_modify(|t| *t = (*t).max(*at))
            .or_insert(*at);
    }
    latest
        .into_iter()
        .map(|(id, at)| (id.to_string(), at))
        .collect()
}

/// The stored secret, if it is the 32 bytes weir stores.
pub(crate) fn check_secret(secret: Vec<u8>) -> StoreResult<Vec<u8>> {
    if secret.len() == 32 {
        Ok(secret)
    } else {
        Err(StoreError::InvalidData(format!(
            "the key hashing secret in the store is {} bytes, not 32: restore it from a backup \
             (replacing it invalidates every key)",
            secret.len()
        )))
    }
}

/// Persistence of gateway keys. Object safe: used as `Arc<dyn KeyStore>`.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Store a new key. A duplicate id, a duplicate hash, or a name already used by a key
    /// that is not revoked is a [`StoreError::Conflict`]; an invalid [`NewKey`] is
    /// [`StoreError::InvalidData`].
    async fn create_key(&self, key: &NewKey) -> StoreResult<KeyRecord>;

    /// The key with this id, revoked or not.
    async fn key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;

    /// The key whose hash this is, revoked or not: one indexed query, the hot path of
    /// authentication (check [`KeyRecord::is_usable`] before trusting it).
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;

    /// Every key, revoked ones included, ordered by `created_at`, then `id`.
    async fn list_keys(&self) -> StoreResult<Vec<KeyRecord>>;

    /// Apply a partial update; `None` when no key has this id. Renaming onto a name in use
    /// and updating a revoked key are [`StoreError::Conflict`]s.
    async fn update_key(&self, id: &str, update: &KeyUpdate) -> StoreResult<Option<KeyRecord>>;

    /// Revoke: set `revoked_at` to now and `enabled` to false. Idempotent: revoking again
    /// returns the key unchanged (and keeps its first `revoked_at`).
    async fn revoke_key(&self, id: &str) -> StoreResult<Option<KeyRecord>>;

    /// Replace the key's hash and hint: the old secret stops working at once. Rotating a
    /// revoked key is a [`StoreError::Conflict`].
    async fn rotate_key(
        &self,
        id: &str,
        hash: &KeyHash,
        hint: &str,
    ) -> StoreResult<Option<KeyRecord>>;

    /// Record use, in one batch: for each `(id, unix seconds)`, set `last_used_at` to the later
    /// of the stored and the given time. Unknown ids are ignored. Does not bump the revision
    /// (use is not a change replicas need to reload for) nor `updated_at`.
    async fn touch_keys(&self, used: &[(String, i64)]) -> StoreResult<()>;

    /// A number that changes whenever any key is created, updated, revoked or rotated, on any
    /// replica sharing the store. Replicas poll it (every ~250 ms) to invalidate their
    /// in-memory key caches, so it is one cheap query. It is bumped in the same transaction
    /// as the change, so a replica that sees a new revision also sees the change.
    async fn key_revision(&self) -> StoreResult<i64>;

    /// The server secret for key hashing, created (32 random bytes) on first call and stored,
    /// so every replica sharing the store hashes alike. Concurrent first calls from several
    /// replicas agree (insert if absent, then read).
    async fn hashing_secret(&self) -> StoreResult<Vec<u8>>;

    /// For logs and status: `sqlite /path` or `postgres host:port/db` (never the password).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests;
