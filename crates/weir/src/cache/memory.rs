//! The in-process tier: a moka cache bounded by bytes, with a TTL per entry.
//!
//! Entries are weighed by the bytes they hold (value, key and model name) plus the cache's
//! own per-entry overhead, so `max_bytes` bounds memory whatever the response sizes; moka evicts by TinyLFU, so a one-off response
//! may be refused admission rather than push out a popular one. Each entry carries the TTL it
//! was stored with (moka's [`Expiry`]) and its model, so `clear(Some(model))` can pick out one
//! model's entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;

use super::store::{CacheError, CacheKey, CacheStore, StoreStats};

/// One cached value with what the cache needs to know about it.
#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    model: Arc<str>,
    ttl: Duration,
}

/// Expires every entry after the TTL it was put with; a put over an existing key restarts it.
struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// What an entry costs besides its bytes: moka's bookkeeping (the shared entry, its order
/// and timer nodes, the hash table slot) and the allocations around the key, model and value.
/// Measured on x86_64: a full 16 MiB cache of ~820-byte chat answers grew the process by
/// about 1,280 bytes per entry. Left out, `max_bytes` was exceeded by half.
pub(crate) const ENTRY_OVERHEAD: usize = 448;

/// The bytes an entry is charged for: what it holds, plus [`ENTRY_OVERHEAD`].
fn weight(key: &str, entry: &Entry) -> u32 {
    let bytes = entry.value.len() + key.len() + entry.model.len() + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The memory tier. Cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes` of entries (approximately: moka enforces the bound
    /// in its maintenance pass, shortly after inserts).
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .name("weir-response-cache")
            .max_capacity(max_bytes)
            .weigher(|k: &String, v: &Entry| weight(k, v))
            .expire_after(EntryTtl)
            .build();
        Self { cache, max_bytes }
    }

    /// The byte bound this store was built with.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Apply pending evictions and expirations now; moka otherwise does it lazily. For tests
    /// and before reading exact stats.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Ok(self.cache.get(&key.flat()).await.map(|e| e.value))
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let flat = key.flat();
        if ttl.is_zero() {
            // Nothing to keep; also drop a previous value so the put still "replaces" it.
            self.cache.invalidate(&flat).await;
            return Ok(());
        }
        let entry = Entry {
            value,
            model: Arc::from(key.model.as_str()),
            ttl,
        };
        if u64::from(weight(&flat, &entry)) > self.max_bytes {
            // It could never be admitted; skip the insert-then-evict churn.
            self.cache.invalidate(&flat).await;
            return Ok(());
        }
        self.cache.insert(flat, entry).await;
        Ok(())
    }

    async fn clear(&self, model: Option<&str>) -> Result<u64, CacheError> {
        self.cache.run_pending_tasks().await;
        let removed = match model {
            None => {
                let count = self.cache.iter().count() as u64;
                self.cache.invalidate_all();
                count
            }
            Some(model) => {
                // Collected first: removing while iterating would skip entries.
                let keys: Vec<Arc<String>> = self
                    .cache
                    .iter()
                    .filter(|(_, e)| &*e.model == model)
                    .map(|(k, _)| k)
                    .collect();
                let mut count = 0;
                for key in keys {
                    if self.cache.remove(key.as_str()).await.is_some() {
                        count += 1;
                    }
                }
                count
            }
        };
        self.cache.run_pending_tasks().await;
        Ok(removed)
    }

    async fn stats(&self) -> Result<StoreStats, CacheError> {
        // Counts are only current after maintenance; stats are rare enough to pay for it. An
        // entry that expired within the last second or so may still be counted: moka's timer
        // wheel removes expired entries by the bucket.
        self.cache.run_pending_tasks().await;
        Ok(StoreStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        })
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "tests/memory_tests.rs"]
mod tests;
