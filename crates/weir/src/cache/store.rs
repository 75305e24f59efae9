//! The storage interface every cache tier implements (memory, SQLite, Redis).
//!
//! Stores hold opaque bytes (the serialised [`super::CachedResponse`]) under a [`CacheKey`];
//! they know the entry's model so `clear(Some(model))` can drop one model's entries, and they
//! enforce the TTL they are given on `put`. Errors are [`CacheError`]: a failing store must
//! never fail a request, so the caller logs and treats it as a miss.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

/// Where an entry lives: tenant namespace, resolved model, and the request digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The tenant (a hash of the gateway key) or `shared`.
    pub namespace: String,
    /// The model after alias resolution (a group name or `provider/model`).
    pub model: String,
    /// Hex digest of the normalised request.
    pub digest: String,
}

impl CacheKey {
    /// One flat string, stable across processes and versions of the same format:
    /// `v1:{namespace}:{model}:{digest}`.
    pub fn flat(&self) -> String {
        // Built by hand, not with `format!`: every lookup and store builds one.
        let mut flat =
            String::with_capacity(5 + self.namespace.len() + self.model.len() + self.digest.len());
        for part in ["v1:", &self.namespace, ":", &self.model, ":", &self.digest] {
            flat.push_str(part);
        }
        flat
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.flat())
    }
}

/// What a store holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache store {store} failed: {message}")]
    Store {
        store: &'static str,
        message: String,
    },
}

/// One cache tier.
#[async_trait]
pub trait CacheStore: Send + Sync + fmt::Debug {
    /// `memory`, `sqlite` or `redis`.
    fn name(&self) -> &'static str;
    /// The entry, if present and not expired.
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError>;
    /// Store an entry for `ttl`, replacing any previous one.
    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError>;
    /// Remove every entry, or one model's; returns how many were removed (best effort).
    async fn clear(&self, model: Option<&str>) -> Result<u64, CacheError>;
    /// Entries and bytes held now.
    async fn stats(&self) -> Result<StoreStats, CacheError>;
    /// Whether the store is reachable (for `/ready`).
    async fn ping(&self) -> Result<(), CacheError>;
}
