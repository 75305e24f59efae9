//! The SQLite tier: persistence, TTL, LRU under the byte bound, clearing by model.
//!
//! Expiry is tested by writing past timestamps into the table rather than waiting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

/// A fresh directory under the system temp dir, removed on drop (no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "weir-sqlite-cache-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }
    fn db(&self) -> PathBuf {
        // A missing parent directory is created by `open`.
        self.0.join("nested").join("cache.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(model: &str, digest: &str) -> CacheKey {
    CacheKey {
        namespace: "shared".into(),
        model: model.into(),
        digest: digest.into(),
    }
}

/// The bytes a row for `key(model, digest)` holding `len` value bytes is charged.
fn row_bytes(model: &str, digest: &str, len: usize) -> u64 {
    (len + key(model, digest).flat().len() + model.len()) as u64
}

async fn expire(store: &SqliteStore, k: &CacheKey) {
    let flat = k.flat();
    store
        .with_db(move |db| {
            db.conn.execute(
                "UPDATE cache SET expires_at = ?1 WHERE key = ?2",
                params![now_ms() - 1, flat],
            )
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn entries_survive_reopening() {
    let dir = TempDir::new();
    let k = key("openai/gpt-4o", "abc");
    {
        let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
        store
            .put(&k, Bytes::from_static(b"answer"), HOUR)
            .await
            .unwrap();
        store.ping().await.unwrap();
    }
    let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(&b"answer"[..])
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.bytes, row_bytes("openai/gpt-4o", "abc", 6));
    // WAL mode stuck.
    let mode = store
        .with_db(|db| {
            db.conn
                .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn put_replaces() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
    let k = key("m", "d");
    store
        .put(&k, Bytes::from_static(b"one"), HOUR)
        .await
        .unwrap();
    store
        .put(&k, Bytes::from_static(b"three"), HOUR)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(store.stats().await.unwrap().bytes, row_bytes("m", "d", 5));
    store
        .put(&k, Bytes::from_static(b"x"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
}

#[tokio::test]
async fn expired_rows_are_misses_and_cleaned_up() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
    let (a, b, c) = (key("m", "a"), key("m", "b"), key("m", "c"));
    for k in [&a, &b, &c] {
        store.put(k, Bytes::from_static(b"v"), HOUR).await.unwrap();
    }
    expire(&store, &a).await;
    expire(&store, &b).await;
    assert_eq!(store.get(&a).await.unwrap(), None, "expired row is a miss");
    // Expired rows do not count as held.
    assert_eq!(store.stats().await.unwrap().entries, 1);
    let report = store.cleanup().await.unwrap();
    // `a` was already deleted when read.
    assert_eq!(
        report,
        CleanupReport {
            expired: 1,
            evicted: 0
        }
    );
    assert!(store.get(&c).await.unwrap().is_some());
}

#[tokio::test]
async fn a_real_ttl_expires() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
    let k = key("m", "d");
    store
        .put(&k, Bytes::from_static(b"v"), Duration::from_millis(30))
        .await
        .unwrap();
    assert!(store.get(&k).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(store.get(&k).await.unwrap(), None);
}

#[tokio::test]
async fn cleanup_evicts_least_recently_used_under_the_bound() {
    let dir = TempDir::new();
    let one = row_bytes("m", "k0", 100);
    // Room for four rows exactly; the inline bound is not crossed until the fifth.
    let store = SqliteStore::open(&dir.db(), 4 * one).unwrap();
    let keys: Vec<CacheKey> = (0..4).map(|i| key("m", &format!("k{i}"))).collect();
    for k in &keys {
        store.put(k, Bytes::from(vec![7; 100]), HOUR).await.unwrap();
    }
    // Touch k0 and k2: k1 and k3 are now the least recently used.
    store.get(&keys[0]).await.unwrap();
    store.get(&keys[2]).await.unwrap();
    assert_eq!(store.cleanup().await.unwrap(), CleanupReport::default());

    // Shrink the bound by reopening the same file: two rows must go.
    drop(store);
    let store = SqliteStore::open(&dir.db(), 2 * one + one / 2).unwrap();
    let report = store.cleanup().await.unwrap();
    assert_eq!(
        report,
        CleanupReport {
            expired: 0,
            evicted: 2
        }
    );
    assert!(store.get(&keys[0]).await.unwrap().is_some());
    assert!(store.get(&keys[2]).await.unwrap().is_some());
    assert_eq!(store.get(&keys[1]).await.unwrap(), None);
    assert_eq!(store.get(&keys[3]).await.unwrap(), None);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.entries, stats.bytes), (2, 2 * one));
}

#[tokio::test]
async fn a_put_over_the_bound_evicts_at_once() {
    let dir = TempDir::new();
    let one = row_bytes("m", "k00", 100);
    let store = SqliteStore::open(&dir.db(), 10 * one).unwrap();
    for i in 0..25 {
        let k = key("m", &format!("k{i:02}"));
        store
            .put(&k, Bytes::from(vec![1; 100]), HOUR)
            .await
            .unwrap();
        assert!(store.stats().await.unwrap().bytes <= 10 * one);
    }
    // The newest entry is always kept.
    assert!(store.get(&key("m", "k24")).await.unwrap().is_some());
    assert_eq!(store.get(&key("m", "k00")).await.unwrap(), None);
    // A value bigger than the whole bound is not stored.
    let big = key("m", "big");
    store
        .put(&big, Bytes::from(vec![0; 20 * 100]), HOUR)
        .await
        .unwrap();
    assert_eq!(store.get(&big).await.unwrap(), None);
}

#[tokio::test]
async fn clear_by_model_and_all() {
    let dir = TempDir::new();
    let store = SqliteStore::open(&dir.db(), 1 << 20).unwrap();
    for (model, n) in [("a", 3), ("b", 2)] {
        for i in 0..n {
            let k = key(model, &i.to_string());
            store.put(&k, Bytes::from_static(b"v"), HOUR).await.unwrap();
        }
    }
    assert_eq!(store.clear(Some("a")).await.unwrap(), 3);
    assert_eq!(store.get(&key("a", "1")).await.unwrap(), None);
    assert!(store.get(&key("b", "1")).await.unwrap().is_some());
    assert_eq!(store.clear(None).await.unwrap(), 2);
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
}

#[tokio::test(start_paused = true)]
async fn background_cleanup_runs_and_stops_with_the_store() {
    let dir = TempDir::new();
    let store = Arc::new(SqliteStore::open(&dir.db(), 1 << 20).unwrap());
    let k = key("m", "d");
    store.put(&k, Bytes::from_static(b"v"), HOUR).await.unwrap();
    expire(&store, &k).await;
    let task = store.spawn_cleanup(Duration::from_secs(60));
    // Paused time: advance past one period, then let the blocking cleanup finish.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let mut rows = 1;
    for _ in 0..200 {
        rows = store
            .with_db(|db| {
                db.conn
                    .query_row("SELECT COUNT(*) FROM cache", [], |r| r.get::<_, i64>(0))
            })
            .await
            .unwrap();
        if rows == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rows, 0, "the expired row was cleaned up");
    drop(store);
    tokio::time::sleep(Duration::from_secs(121)).await;
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the task ends once the store is gone")
        .unwrap();
}
