//! The tiers together: read order, L2 to L1 promotion, failing tiers, and the counters.

use std::str::FromStr;

use async_trait::async_trait;

use super::*;
use crate::cache::memory::MemoryStore;
use crate::cache::store::StoreStats;

const HOUR: Duration = Duration::from_secs(3600);

fn key(model: &str, digest: &str) -> CacheKey {
    CacheKey {
        namespace: "shared".into(),
        model: model.into(),
        digest: digest.into(),
    }
}

/// A store that is down: every call fails.
#[derive(Debug)]
struct Broken;

#[async_trait]
impl CacheStore for Broken {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn get(&self, _: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        Err(down())
    }
    async fn put(&self, _: &CacheKey, _: Bytes, _: Duration) -> Result<(), CacheError> {
        Err(down())
    }
    async fn clear(&self, _: Option<&str>) -> Result<u64, CacheError> {
        Err(down())
    }
    async fn stats(&self) -> Result<StoreStats, CacheError> {
        Err(down())
    }
    async fn ping(&self) -> Result<(), CacheError> {
        Err(down())
    }
}

fn down() -> CacheError {
    CacheError::Store {
        store: "redis",
        message: "connection refused".into(),
    }
}

/// A memory L1 in front of a second memory store standing in for L2 (named like one).
#[derive(Debug)]
struct NamedL2(MemoryStore);

#[async_trait]
impl CacheStore for NamedL2 {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    async fn get(&self, k: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        self.0.get(k).await
    }
    async fn put(&self, k: &CacheKey, v: Bytes, ttl: Duration) -> Result<(), CacheError> {
        self.0.put(k, v, ttl).await
    }
    async fn clear(&self, m: Option<&str>) -> Result<u64, CacheError> {
        self.0.clear(m).await
    }
    async fn stats(&self) -> Result<StoreStats, CacheError> {
        self.0.stats().await
    }
    async fn ping(&self) -> Result<(), CacheError> {
        self.0.ping().await
    }
}

fn two_tiers() -> (TieredCache, Arc<MemoryStore>, Arc<NamedL2>) {
    let l1 = Arc::new(MemoryStore::new(1 << 20));
    let l2 = Arc::new(NamedL2(MemoryStore::new(1 << 20)));
    let cache = TieredCache::new(
        Some(l1.clone() as Arc<dyn CacheStore>),
        Some(l2.clone() as Arc<dyn CacheStore>),
        HOUR,
    );
    (cache, l1, l2)
}

#[tokio::test]
async fn l2_hits_are_promoted_into_l1() {
    let (cache, l1, l2) = two_tiers();
    let k = key("m", "d");
    l2.put(&k, Bytes::from_static(b"v"), HOUR).await.unwrap();
    assert_eq!(l1.get(&k).await.unwrap(), None);

    let hit = cache.get(&k).await.unwrap();
    assert_eq!((hit.tier, &hit.value[..]), ("sqlite", &b"v"[..]));
    assert_eq!(l1.get(&k).await.unwrap().as_deref(), Some(&b"v"[..]));
    let hit = cache.get(&k).await.unwrap();
    assert_eq!(hit.tier, "memory");
}

#[tokio::test]
async fn put_and_clear_reach_both_tiers() {
    let (cache, l1, l2) = two_tiers();
    let (a, b) = (key("a", "1"), key("b", "1"));
    cache.put(&a, Bytes::from_static(b"x"), HOUR).await;
    cache.put(&b, Bytes::from_static(b"y"), HOUR).await;
    assert!(l1.get(&a).await.unwrap().is_some());
    assert!(l2.get(&a).await.unwrap().is_some());

    // One entry held in both tiers is counted once.
    assert_eq!(cache.clear(Some("a")).await.unwrap(), 1);
    assert_eq!(cache.get(&a).await, None);
    assert!(cache.get(&b).await.is_some());
    assert_eq!(cache.clear(None).await.unwrap(), 1);
    assert_eq!(cache.get(&b).await, None);
    cache.ping().await.unwrap();
}

#[tokio::test]
async fn a_broken_tier_is_a_miss_not_an_error() {
    let l1 = Arc::new(MemoryStore::new(1 << 20));
    let cache = TieredCache::new(
        Some(l1.clone() as Arc<dyn CacheStore>),
        Some(Arc::new(Broken) as Arc<dyn CacheStore>),
        HOUR,
    );
    let k = key("m", "d");
    assert_eq!(cache.get(&k).await, None);
    // The write still lands in the working tier.
    cache.put(&k, Bytes::from_static(b"v"), HOUR).await;
    assert_eq!(cache.get(&k).await.map(|h| h.tier), Some("memory"));
    // Admin and readiness paths do report the failure.
    assert!(cache.clear(None).await.is_err());
    assert_eq!(
        l1.get(&k).await.unwrap(),
        None,
        "the working tier was still cleared"
    );
    assert!(cache.ping().await.is_err());
    let stats = cache.stats().await;
    assert_eq!(stats.tiers.len(), 2);
    assert!(
        stats.tiers[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused"))
    );

    // A broken L1 falls through to L2.
    let l2 = Arc::new(NamedL2(MemoryStore::new(1 << 20)));
    let cache = TieredCache::new(
        Some(Arc::new(Broken) as Arc<dyn CacheStore>),
        Some(l2.clone() as Arc<dyn CacheStore>),
        HOUR,
    );
    l2.put(&k, Bytes::from_static(b"v"), HOUR).await.unwrap();
    assert_eq!(cache.get(&k).await.map(|h| h.tier), Some("sqlite"));
}

#[tokio::test]
async fn no_tiers_is_a_disabled_cache() {
    let cache = TieredCache::new(None, None, HOUR);
    assert!(!cache.is_enabled());
    let k = key("m", "d");
    cache.put(&k, Bytes::from_static(b"v"), HOUR).await;
    assert_eq!(cache.get(&k).await, None);
    assert_eq!(cache.clear(None).await.unwrap(), 0);
    cache.ping().await.unwrap();
    assert!(cache.stats().await.tiers.is_empty());
}

#[tokio::test]
async fn stats_add_up() {
    let (cache, _l1, _l2) = two_tiers();
    cache
        .put(&key("m", "d"), Bytes::from(vec![0; 100]), HOUR)
        .await;
    let dollars = |s: &str| Decimal::from_str(s).unwrap();
    cache.record_hit("memory", 100, 20, dollars("0.0015"));
    cache.record_hit("memory", 50, 10, dollars("0.000000001"));
    cache.record_hit("sqlite", 1000, 200, dollars("0.25"));
    cache.record_hit("semantic", 10, 5, dollars("0.01"));
    cache.record_miss();
    cache.record_miss();
    cache.record_miss();
    cache.record_miss();
    cache.record_coalesced();

    let s = cache.stats().await;
    assert_eq!((s.hits, s.misses, s.coalesced), (4, 4, 1));
    assert!((s.hit_rate - 0.5).abs() < f64::EPSILON);
    assert_eq!(s.prompt_tokens_saved, 1160);
    assert_eq!(s.completion_tokens_saved, 235);
    assert_eq!(s.tokens_saved, 1395);
    assert_eq!(s.estimated_savings_usd, dollars("0.261500001"));
    assert_eq!(
        s.hits_by_tier.into_iter().collect::<Vec<_>>(),
        vec![("memory", 2), ("semantic", 1), ("sqlite", 1)]
    );
    let tiers: Vec<_> = s
        .tiers
        .iter()
        .map(|t| (t.level, t.store, t.entries, t.hits))
        .collect();
    assert_eq!(tiers, vec![("l1", "memory", 1, 2), ("l2", "sqlite", 1, 1)]);
    assert_eq!(
        s.tiers[0].bytes,
        100 + key("m", "d").flat().len() as u64 + 1 + crate::cache::memory::ENTRY_OVERHEAD as u64
    );

    let json = serde_json::to_value(cache.stats().await).unwrap();
    assert_eq!(json["hit_rate"], 0.5);
    assert_eq!(json["estimated_savings_usd"], "0.261500001");
    assert!(json["tiers"][0].get("error").is_none());
}

#[tokio::test]
async fn hit_rate_is_zero_before_any_lookup() {
    let (cache, _, _) = two_tiers();
    let s = cache.stats().await;
    assert_eq!((s.hits, s.misses, s.hit_rate), (0, 0, 0.0));
    assert_eq!(s.estimated_savings_usd, Decimal::ZERO);
}
