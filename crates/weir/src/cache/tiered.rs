//! Two cache tiers as one: a fast L1 (memory) in front of a shared or persistent L2 (SQLite,
//! Redis), with the counters `/status` reports.
//!
//! Reads try L1 then L2, and an L2 hit is copied into L1 so the next read is local. Writes and
//! clears go to both. A failing tier is logged and skipped: the cache can only ever save a call,
//! never fail one. Hits, misses and savings are counted by the caller (it alone knows the
//! tokens and price of the answer it served), through [`TieredCache::record_hit`] and friends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::store::{CacheError, CacheKey, CacheStore};

const NANOS_PER_DOLLAR: u64 = 1_000_000_000;

/// A value found in the cache, and the tier that held it (the store's name: `memory`,
/// `sqlite`, `redis`), for [`TieredCache::record_hit`] and response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    pub value: Bytes,
    pub tier: &'static str,
}

/// Counters since start and what each tier holds now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before any lookup.
    pub hit_rate: f64,
    /// Requests that waited for an identical in-flight request instead of calling upstream.
    pub coalesced: u64,
    /// Prompt plus completion tokens that hits did not spend.
    pub tokens_saved: u64,
    pub prompt_tokens_saved: u64,
    pub completion_tokens_saved: u64,
    /// What the hits would have cost, exact to the nanodollar.
    pub estimated_savings_usd: Decimal,
    /// Hits by the tier that answered (store names, plus any tier the caller reports, such as
    /// a semantic lookup).
    pub hits_by_tier: BTreeMap<&'static str, u64>,
    /// The configured tiers, L1 first.
    pub tiers: Vec<TierStats>,
}

/// One tier's contents now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierStats {
    /// `l1` or `l2`.
    pub level: &'static str,
    /// The store's name.
    pub store: &'static str,
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    /// Set when the store could not report; entries and bytes are then 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Summed as integers so the total is exact and lock-free (as the client's cost stats do).
    nanodollars: AtomicU64,
    /// One slot per configured store name, found by a scan of at most two entries.
    tier_hits: Vec<(&'static str, AtomicU64)>,
    /// Tiers the caller names that are not stores here (a semantic lookup): rare, so a lock.
    other_tier_hits: Mutex<BTreeMap<&'static str, u64>>,
}

/// The response cache's tiers and counters. Share it behind an `Arc`.
#[derive(Debug)]
pub struct TieredCache {
    l1: Option<Arc<dyn CacheStore>>,
    l2: Option<Arc<dyn CacheStore>>,
    promote_ttl: Duration,
    counters: Counters,
    /// L2 writes running behind L1 ones, so [`Self::flush`] can wait for them.
    behind: tokio_util::task::TaskTracker,
}

impl TieredCache {
    /// Tiers as configured (either may be absent). `default_ttl` is the TTL of an L2 hit's copy
    /// in L1: stores do not report an entry's remaining TTL, so a promoted copy may outlive its
    /// L2 original by at most this much.
    pub fn new(
        l1: Option<Arc<dyn CacheStore>>,
        l2: Option<Arc<dyn CacheStore>>,
        default_ttl: Duration,
    ) -> Self {
        let mut tier_hits: Vec<(&'static str, AtomicU64)> = Vec::with_capacity(2);
        for store in l1.iter().chain(l2.iter()) {
            if !tier_hits.iter().any(|(n, _)| *n == store.name()) {
                tier_hits.push((store.name(), AtomicU64::new(0)));
            }
        }
        Self {
            l1,
            l2,
            promote_ttl: default_ttl,
            behind: tokio_util::task::TaskTracker::new(),
            counters: Counters {
                tier_hits,
                ..Counters::default()
            },
        }
    }

    /// Whether any tier is configured.
    pub fn is_enabled(&self) -> bool {
        self.l1.is_some() || self.l2.is_some()
    }

    /// The value under `key`, from L1, else from L2 (then copied into L1). Store errors are
    /// logged and read as misses. Does not count: the caller records the hit or miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CacheHit> {
        if let Some(l1) = &self.l1 {
            match l1.get(key).await {
                Ok(Some(value)) => {
                    return Some(CacheHit {
                        value,
                        tier: l1.name(),
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(tier = l1.name(), error = %e, "cache read failed"),
            }
        }
        let l2 = self.l2.as_ref()?;
        match l2.get(key).await {
            Ok(Some(value)) => {
                if let Some(l1) = &self.l1
                    && let Err(e) = l1.put(key, value.clone(), self.promote_ttl).await
                {
                    tracing::warn!(tier = l1.name(), error = %e, "cache promotion failed");
                }
                Some(CacheHit {
                    value,
                    tier: l2.name(),
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(tier = l2.name(), error = %e, "cache read failed");
                None
            }
        }
    }

    /// Store `value` under `key` in every tier for `ttl`. Store errors are logged and ignored.
    pub async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) {
        let put = |store: &Option<Arc<dyn CacheStore>>| {
            let store = store.clone();
            let value = value.clone();
            async move {
                if let Some(store) = store
                    && let Err(e) = store.put(key, value, ttl).await
                {
                    tracing::warn!(tier = store.name(), error = %e, "cache write failed");
                }
            }
        };
        futures::join!(put(&self.l1), put(&self.l2));
    }

    /// Like [`Self::put`], but with an L1 in front, the L2 write happens in the background:
    /// the caller waits only for memory, and the next identical request hits L1 while the
    /// shared or persistent copy lands a moment later (other instances and restarts see it
    /// once it has). Without an L1, or outside a runtime, both tiers are written inline.
    pub async fn put_write_behind(&self, key: &CacheKey, value: Bytes, ttl: Duration) {
        let (Some(l1), Some(l2)) = (&self.l1, &self.l2) else {
            return self.put(key, value, ttl).await;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return self.put(key, value, ttl).await;
        }
        let (l2, owned_key, l2_value) = (Arc::clone(l2), key.clone(), value.clone());
        self.behind.spawn(async move {
            if let Err(e) = l2.put(&owned_key, l2_value, ttl).await {
                tracing::warn!(tier = l2.name(), error = %e, "cache write failed");
            }
        });
        if let Err(e) = l1.put(key, value, ttl).await {
            tracing::warn!(tier = l1.name(), error = %e, "cache write failed");
        }
    }

    /// Wait for the L2 writes still running behind L1 (before a process exits).
    pub async fn flush(&self) {
        self.behind.close();
        self.behind.wait().await;
        self.behind.reopen();
    }

    /// Remove every entry, or one model's, from every tier. Both tiers are tried even if one
    /// fails (then the first error is returned). The count is the larger tier's, since L1
    /// mostly holds copies of L2 entries.
    pub async fn clear(&self, model: Option<&str>) -> Result<u64, CacheError> {
        let mut removed = 0;
        let mut first_err = None;
        for store in self.l1.iter().chain(self.l2.iter()) {
            match store.clear(model).await {
                Ok(n) => removed = removed.max(n),
                Err(e) => {
                    tracing::warn!(tier = store.name(), error = %e, "cache clear failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(removed), Err)
    }

    /// Whether every configured tier is reachable, for `/ready`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        for store in self.l1.iter().chain(self.l2.iter()) {
            store.ping().await?;
        }
        Ok(())
    }

    /// Count a hit answered by `tier`, with the tokens and dollars it saved. Negative dollars
    /// (a misconfigured price) count as zero.
    pub fn record_hit(
        &self,
        tier: &'static str,
        prompt_tokens: u64,
        completion_tokens: u64,
        dollars: Decimal,
    ) {
        let c = &self.counters;
        c.hits.fetch_add(1, Ordering::Relaxed);
        c.prompt_tokens.fetch_add(prompt_tokens, Ordering::Relaxed);
        c.completion_tokens
            .fetch_add(completion_tokens, Ordering::Relaxed);
        let nanos = (dollars * Decimal::from(NANOS_PER_DOLLAR))
            .round()
            .to_u64()
            .unwrap_or(0);
        c.nanodollars.fetch_add(nanos, Ordering::Relaxed);
        match c.tier_hits.iter().find(|(name, _)| *name == tier) {
            Some((_, n)) => {
                n.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let mut other = c
                    .other_tier_hits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *other.entry(tier).or_default() += 1;
            }
        }
    }

    /// Count a lookup that found nothing.
    pub fn record_miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a request served by joining an identical in-flight one.
    pub fn record_coalesced(&self) {
        self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters and tier contents now. A tier that cannot report is shown with its error.
    pub async fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        let prompt = c.prompt_tokens.load(Ordering::Relaxed);
        let completion = c.completion_tokens.load(Ordering::Relaxed);
        let lookups = hits + misses;
        let hit_rate = if lookups == 0 {
            0.0
        } else {
            hits as f64 / lookups as f64
        };

        let mut hits_by_tier: BTreeMap<&'static str, u64> = c
            .other_tier_hits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (name, n) in &c.tier_hits {
            hits_by_tier.insert(name, n.load(Ordering::Relaxed));
        }

        let mut tiers = Vec::with_capacity(2);
        for (level, store) in [("l1", &self.l1), ("l2", &self.l2)] {
            let Some(store) = store else { continue };
            let (stats, error) = match store.stats().await {
                Ok(s) => (s, None),
                Err(e) => (Default::default(), Some(e.to_string())),
            };
            tiers.push(TierStats {
                level,
                store: store.name(),
                entries: stats.entries,
                bytes: stats.bytes,
                hits: hits_by_tier.get(store.name()).copied().unwrap_or(0),
                error,
            });
        }

        CacheStats {
            hits,
            misses,
            hit_rate,
            coalesced: c.coalesced.load(Ordering::Relaxed),
            tokens_saved: prompt + completion,
            prompt_tokens_saved: prompt,
            completion_tokens_saved: completion,
            estimated_savings_usd: (Decimal::from(c.nanodollars.load(Ordering::Relaxed))
                / Decimal::from(NANOS_PER_DOLLAR))
            .normalize(),
            hits_by_tier,
            tiers,
        }
    }
}

#[cfg(test)]
#[path = "tests/tiered_tests.rs"]
mod tests;
