//! The memory tier: TTL per entry, the byte bound, clearing by model.
//!
//! Moka keeps its own clock, so TTL tests sleep for real; they use TTLs of a few hundred
//! milliseconds to stay fast.

use std::time::Duration;

use super::*;

fn key(model: &str, digest: &str) -> CacheKey {
    CacheKey {
        namespace: "shared".into(),
        model: model.into(),
        digest: digest.into(),
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn put_get_replace() {
    let store = MemoryStore::new(1 << 20);
    let k = key("m", "d1");
    assert_eq!(store.get(&k).await.unwrap(), None);
    store
        .put(&k, Bytes::from_static(b"one"), HOUR)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"one"[..]));
    store
        .put(&k, Bytes::from_static(b"two"), HOUR)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"two"[..]));
    // Namespaces are part of the key.
    let other = CacheKey {
        namespace: "tenant".into(),
        ..k.clone()
    };
    assert_eq!(store.get(&other).await.unwrap(), None);
    store.ping().await.unwrap();
}

#[tokio::test]
async fn entries_expire_after_their_own_ttl() {
    let store = MemoryStore::new(1 << 20);
    let short = key("m", "short");
    let long = key("m", "long");
    store
        .put(&short, Bytes::from_static(b"s"), Duration::from_millis(150))
        .await
        .unwrap();
    store
        .put(&long, Bytes::from_static(b"l"), HOUR)
        .await
        .unwrap();
    assert!(store.get(&short).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.get(&short).await.unwrap(), None);
    assert!(store.get(&long).await.unwrap().is_some());
    // Not asserted: `stats` may still count the expired entry until moka's timer wheel (about
    // one-second buckets) reaches it; reads never see it.
}

#[tokio::test]
async fn a_put_restarts_the_ttl() {
    let store = MemoryStore::new(1 << 20);
    let k = key("m", "d");
    store
        .put(&k, Bytes::from_static(b"a"), Duration::from_millis(150))
        .await
        .unwrap();
    store.put(&k, Bytes::from_static(b"b"), HOUR).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"b"[..]));
}

#[tokio::test]
async fn zero_ttl_stores_nothing_and_replaces() {
    let store = MemoryStore::new(1 << 20);
    let k = key("m", "d");
    store.put(&k, Bytes::from_static(b"a"), HOUR).await.unwrap();
    store
        .put(&k, Bytes::from_static(b"b"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
}

#[tokio::test]
async fn bytes_stay_under_the_bound() {
    let cap = 10_000;
    let store = MemoryStore::new(cap);
    for i in 0..100 {
        let k = key("m", &format!("{i:04}"));
        store
            .put(&k, Bytes::from(vec![b'x'; 200]), HOUR)
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert!(stats.bytes <= cap, "{stats:?}");
    assert!(stats.entries > 0 && stats.entries < 100, "{stats:?}");
    // Weight counts value, flat key, model and the per-entry overhead.
    let per_entry = 200 + "v1:shared:m:0000".len() as u64 + 1 + ENTRY_OVERHEAD as u64;
    assert_eq!(stats.bytes, stats.entries * per_entry);
}

#[tokio::test]
async fn a_value_larger_than_the_bound_is_not_kept() {
    let store = MemoryStore::new(100);
    let k = key("m", "big");
    store
        .put(&k, Bytes::from(vec![0; 500]), HOUR)
        .await
        .unwrap();
    store.run_pending_tasks().await;
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
}

#[tokio::test]
async fn clear_by_model_and_all() {
    let store = MemoryStore::new(1 << 20);
    for (model, n) in [("a", 3), ("b", 2)] {
        for i in 0..n {
            let k = key(model, &i.to_string());
            store.put(&k, Bytes::from_static(b"v"), HOUR).await.unwrap();
        }
    }
    assert_eq!(store.clear(Some("a")).await.unwrap(), 3);
    assert_eq!(store.get(&key("a", "0")).await.unwrap(), None);
    assert!(store.get(&key("b", "0")).await.unwrap().is_some());
    assert_eq!(store.clear(Some("missing")).await.unwrap(), 0);
    assert_eq!(store.clear(None).await.unwrap(), 2);
    assert_eq!(store.get(&key("b", "1")).await.unwrap(), None);
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
}
