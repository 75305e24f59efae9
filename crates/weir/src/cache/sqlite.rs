//! The on-disk tier: one SQLite file in WAL mode, surviving restarts.
//!
//! All database work runs on tokio's blocking pool behind one `std::sync::Mutex`-guarded
//! connection: SQLite serialises writers anyway, and every read also writes (it refreshes
//! `last_used` for LRU), so a second connection would only add lock contention.
//!
//! Times are unix milliseconds so they mean the same after a restart. Expired rows are misses
//! (and deleted when met); [`SqliteStore::cleanup`] deletes the rest and evicts the least
//! recently used rows while the total is over `max_bytes`. A put that takes the total over the
//! bound evicts at once, down to 90 % of it, so the file stays bounded between cleanups without
//! paying an eviction on every put.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::store::{CacheError, CacheKey, CacheStore, StoreStats};

/// Bumped when the table changes shape; a file with another version is rebuilt (it is a
/// cache: losing it costs misses, not data).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    value      BLOB NOT NULL,
    bytes      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    last_used  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_expires_at ON cache (expires_at);
CREATE INDEX IF NOT EXISTS cache_last_used ON cache (last_used);
CREATE INDEX IF NOT EXISTS cache_model ON cache (model);
";

/// Rows kept by recency while their running total fits `?1` bytes; the rest go. One statement,
/// so eviction is one pass however many rows it removes.
const EVICT_LRU: &str = "
DELETE FROM cache WHERE key IN (
    SELECT key FROM (
        SELECT key, SUM(bytes) OVER (
            ORDER BY last_used DESC, key ROWS UNBOUNDED PRECEDING
        ) AS running
        FROM cache
    ) WHERE running > ?1
)";

/// What one [`SqliteStore::cleanup`] pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Rows past their TTL.
    pub expired: u64,
    /// Live rows evicted to get under the byte bound.
    pub evicted: u64,
}

/// The SQLite tier.
#[derive(Debug)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    max_bytes: u64,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Sum of `bytes` over all rows, kept in step with every write so a put knows when to
    /// evict without scanning the table.
    total_bytes: u64,
    /// Last `last_used` handed out: a wall-clock millisecond that never repeats or goes back,
    /// so LRU order is exact even for touches within one millisecond or across a clock step.
    clock: i64,
}

impl Inner {
    fn tick(&mut self) -> i64 {
        self.clock = now_ms().max(self.clock + 1);
        self.clock
    }

    fn recount(&mut self) -> rusqlite::Result<()> {
        let total: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(bytes), 0) FROM cache", [], |r| {
                    r.get(0)
                })?;
        self.total_bytes = u64::try_from(total).unwrap_or(0);
        Ok(())
    }

    fn evict_to(&mut self, target: u64) -> rusqlite::Result<u64> {
        let target = i64::try_from(target).unwrap_or(i64::MAX);
        let evicted = self.conn.execute(EVICT_LRU, [target])?;
        self.recount()?;
        Ok(evicted as u64)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn err(message: impl std::fmt::Display) -> CacheError {
    CacheError::Store {
        store: "sqlite",
        message: message.to_string(),
    }
}

impl SqliteStore {
    /// Open (or create) the cache file at `path`, holding at most about `max_bytes` of entries.
    ///
    /// Blocking: call it at start-up, or from `spawn_blocking`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let mut inner = Inner {
            conn,
            total_bytes: 0,
            clock: 0,
        };
        init(&mut inner).map_err(err)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(inner)),
            max_bytes,
        })
    }

    /// The byte bound this store was opened with.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Delete expired rows, then evict least recently used rows until the total is at most
    /// `max_bytes`, and hand freed pages back to the file system.
    pub async fn cleanup(&self) -> Result<CleanupReport, CacheError> {
        let max = self.max_bytes;
        self.with_db(move |db| {
            let expired = db
                .conn
                .execute("DELETE FROM cache WHERE expires_at <= ?1", [now_ms()])?;
            db.recount()?;
            let evicted = if db.total_bytes > max {
                db.evict_to(max)?
            } else {
                0
            };
            // Only effective on files created with incremental auto-vacuum (all of ours).
            db.conn.execute_batch("PRAGMA incremental_vacuum")?;
            Ok(CleanupReport {
                expired: expired as u64,
                evicted,
            })
        })
        .await
    }

    /// Run [`cleanup`](Self::cleanup) every `every` in the background. The task holds only a
    /// weak reference, so it ends by itself once the store is dropped.
    pub fn spawn_cleanup(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; a fresh store has nothing to clean yet.
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(store) = weak.upgrade() else { break };
                match store.cleanup().await {
                    Ok(r) if r.expired + r.evicted > 0 => {
                        tracing::debug!(
                            expired = r.expired,
                            evicted = r.evicted,
                            "sqlite cache cleanup"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sqlite cache cleanup failed"),
                }
            }
        })
    }

    /// Run `f` on the connection, on the blocking pool.
    async fn with_db<T, F>(&self, f: F) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Inner) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable (an open transaction
            // rolls back on drop), so a poisoned lock is taken over rather than failing forever.
            let mut db = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut db)
        })
        .await
        .map_err(err)?
        .map_err(err)
    }
}

fn init(db: &mut Inner) -> rusqlite::Result<()> {
    let conn = &db.conn;
    // Must precede table creation to take effect on a new file; harmless on an old one.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "sqlite cache: WAL unavailable, using {mode}");
    }
    // NORMAL is durable across process crashes in WAL mode; losing the last writes on power
    // loss only costs cache misses.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION && version != 0 {
        tracing::warn!(version, "sqlite cache: unknown schema version, rebuilding");
        conn.execute_batch("DROP TABLE IF EXISTS cache")?;
    }
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    let last: Option<i64> = conn.query_row("SELECT MAX(last_used) FROM cache", [], |r| r.get(0))?;
    db.clock = last.unwrap_or(0);
    db.recount()
}

#[async_trait]
impl CacheStore for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        let flat = key.flat();
        self.with_db(move |db| {
            let row: Option<(Vec<u8>, i64, i64)> = db
                .conn
                .query_row(
                    "SELECT value, expires_at, bytes FROM cache WHERE key = ?1",
                    [&flat],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((value, expires_at, bytes)) = row else {
                return Ok(None);
            };
            if expires_at <= now_ms() {
                db.conn
                    .execute("DELETE FROM cache WHERE key = ?1", [&flat])?;
                db.total_bytes = db
                    .total_bytes
                    .saturating_sub(u64::try_from(bytes).unwrap_or(0));
                return Ok(None);
            }
            let now = db.tick();
            db.conn.execute(
                "UPDATE cache SET last_used = ?1 WHERE key = ?2",
                params![now, flat],
            )?;
            Ok(Some(Bytes::from(value)))
        })
        .await
    }

    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let flat = key.flat();
        let model = key.model.clone();
        let max = self.max_bytes;
        self.with_db(move |db| {
            let bytes = (value.len() + flat.len() + model.len()) as u64;
            if ttl.is_zero() || bytes > max {
                // Never storable; drop any older value so the put still replaces it.
                db.conn
                    .execute("DELETE FROM cache WHERE key = ?1", [&flat])?;
                return db.recount();
            }
            let now = db.tick();
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            let expires_at = now_ms().saturating_add(ttl_ms);
            let tx = db.conn.transaction()?;
            let old: Option<i64> = tx
                .query_row("SELECT bytes FROM cache WHERE key = ?1", [&flat], |r| {
                    r.get(0)
                })
                .optional()?;
            tx.execute(
                "INSERT INTO cache (key, model, value, bytes, expires_at, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET model = excluded.model, value = excluded.value,
                     bytes = excluded.bytes, expires_at = excluded.expires_at,
                     last_used = excluded.last_used",
                params![flat, model, &value[..], bytes as i64, expires_at, now],
            )?;
            tx.commit()?;
            let old = old.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
            db.total_bytes = db.total_bytes.saturating_sub(old).saturating_add(bytes);
            if db.total_bytes > max {
                // Expired rows go first: they are free to lose.
                db.conn
                    .execute("DELETE FROM cache WHERE expires_at <= ?1", [now_ms()])?;
                db.evict_to(max / 10 * 9)?;
            }
            Ok(())
        })
        .await
    }

    async fn clear(&self, model: Option<&str>) -> Result<u64, CacheError> {
        let model = model.map(str::to_owned);
        self.with_db(move |db| {
            let removed = match &model {
                None => db.conn.execute("DELETE FROM cache", [])?,
                Some(m) => db.conn.execute("DELETE FROM cache WHERE model = ?1", [m])?,
            };
            db.recount()?;
            Ok(removed as u64)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, CacheError> {
        self.with_db(|db| {
            let (entries, bytes): (i64, i64) = db.conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM cache WHERE expires_at > ?1",
                [now_ms()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(StoreStats {
                entries: u64::try_from(entries).unwrap_or(0),
                bytes: u64::try_from(bytes).unwrap_or(0),
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.with_db(|db| db.conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }
}

#[cfg(test)]
#[path = "tests/sqlite_tests.rs"]
mod tests;
