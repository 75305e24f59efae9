//! [`RedisStore`]: the shared cache tier, for several gateway instances behind one Redis.
//!
//! # Layout
//!
//! Every key lives under the store's prefix `P` (so one Redis can be shared with other
//! applications and other gateway deployments; `clear` never uses `FLUSHDB`/`FLUSHALL`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `P:e:{CacheKey::flat()}` | string | the entry's bytes, written with `SET .. PX ttl` |
//! | `P:m:{model}` | sorted set | the model's entry keys, scored by their expiry (ms, server clock) |
//! | `P:s:{model}` | hash | entry key → value size, plus `#bytes`: the model's total |
//! | `P:models` | set | the models that have (or recently had) entries |
//!
//! The model of an entry is recorded in its index (`P:m:{model}`), which is what
//! `clear(Some(model))` walks. The index is a sorted set scored by expiry rather than a plain
//! set, so that members whose entries expired can be pruned (`ZRANGEBYSCORE -inf (now`): a
//! plain set refreshed by every `put` of a busy model would grow without bound. Pruning
//! happens on every `put` of the model (a bounded batch) and in [`CacheStore::stats`]. The index
//! keys carry a TTL too, pushed forward by every `put` to the expiry of the model's
//! longest-lived entry, so a model nobody writes to any more leaves nothing behind.
//!
//! `put`, pruning and each batch of `clear(Some(model))` are Lua scripts (`EVALSHA`): atomic, one
//! round trip, with the script's `TIME` (the Redis clock, the same one `PX` uses) as "now",
//! so gateways with skewed clocks agree on what has expired. Scripts touch only the keys they
//! are given, but they touch several: on Redis Cluster, give the prefix a hash tag (`{weir}`)
//! so all of them share a slot (this store connects to a single endpoint, though).
//!
//! # Stats
//!
//! `entries` is the number of indexed entries and `bytes` the sum of their value sizes (not
//! Redis's per-key overhead), both after pruning the expired members (up to 16 384 per model
//! per call, so a backlog larger than that takes several calls), so they are exact for
//! entries that expired by TTL. They over-count entries that Redis removed on its own
//! (evicted under `maxmemory`) until those entries' TTLs pass, and entries written *during* a
//! `clear(None)` may escape the index. Computing them costs one round trip per model, not a
//! scan of the keyspace (`MEMORY USAGE` or `SCAN` over a shared Redis would be far slower).
//!
//! # Timeouts
//!
//! Every round trip is bounded by [`RedisStoreOptions::op_timeout`] (250 ms by default): a slow
//! or unreachable Redis turns into a [`CacheError`] (a miss for the caller) instead of a
//! stalled request. `clear` and `stats` make several round trips, each bounded. The
//! underlying [`ConnectionManager`] reconnects in the background after the connection drops.
//! A `put` that timed out may still be applied once Redis catches up (harmless for a cache).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use super::store::{CacheError, CacheKey, CacheStore, StoreStats};

const STORE: &str = "redis";

/// Members pruned per script call (bounded so one call never blocks Redis for long).
const PRUNE_BATCH: usize = 256;
/// Entries removed per round trip by `clear`.
const CLEAR_BATCH: usize = 500;
/// `SCAN .. COUNT` for `clear(None)`.
const SCAN_COUNT: usize = 1000;
/// Prune calls per model in one `stats` (each removes up to `PRUNE_BATCH` members).
const MAX_PRUNE_ROUNDS: usize = 64;
/// The longest TTL stored: ten years (far past any sensible cache TTL, and small enough for
/// the expiry score to stay an exact integer).
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

// The scripts keep a model's total bytes in the field `#bytes` of `P:s:{model}`. The other
// fields are entry keys, which start with the prefix and `:e:`, so none can equal it.

/// Arms every script with the Redis clock, as milliseconds, in `now`.
const SCRIPT_CLOCK: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Removes up to `limit` expired members of an index (`idx`) and their sizes (`sizes`),
/// keeping the model's byte total right. Returns how many it removed.
const SCRIPT_PRUNE_FN: &str = r"
local function prune(idx, sizes, limit, now)
  local expired = redis.call('ZRANGEBYSCORE', idx, '-inf', string.format('(%d', now), 'LIMIT', 0, limit)
  if #expired == 0 then return 0 end
  local got = redis.call('HMGET', sizes, unpack(expired))
  local freed = 0
  for i = 1, #expired do freed = freed + (tonumber(got[i]) or 0) end
  redis.call('ZREM', idx, unpack(expired))
  redis.call('HDEL', sizes, unpack(expired))
  if freed ~= 0 and redis.call('EXISTS', sizes) == 1 then
    redis.call('HINCRBY', sizes, '#bytes', -freed)
  end
  return #expired
end
";

/// KEYS: entry, index, sizes, models. ARGV: value, ttl ms, model, prune limit.
const SCRIPT_PUT_BODY: &str = r"
local ttl = tonumber(ARGV[2])
prune(KEYS[2], KEYS[3], tonumber(ARGV[4]), now)
local size = string.len(ARGV[1])
local old = tonumber(redis.call('HGET', KEYS[3], KEYS[1])) or 0
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('HINCRBY', KEYS[3], '#bytes', size - old)
redis.call('SADD', KEYS[4], ARGV[3])
for i = 2, 4 do
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
";

/// KEYS: index, sizes, models. ARGV: model, prune limit.
/// Returns {entries, bytes, pruned}; forgets the model once its index is empty.
const SCRIPT_STATS_BODY: &str = r"
local pruned = prune(KEYS[1], KEYS[2], tonumber(ARGV[2]), now)
local count = redis.call('ZCARD', KEYS[1])
if count == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  return {0, 0, pruned}
end
local bytes = tonumber(redis.call('HGET', KEYS[2], '#bytes')) or 0
return {count, bytes, pruned}
";

/// KEYS: index, sizes, models, then the entry keys to remove. ARGV: model.
/// Returns how many entries still existed.
const SCRIPT_CLEAR_BODY: &str = r"
local removed = 0
if #KEYS > 3 then
  local entries = {}
  for i = 4, #KEYS do entries[#entries + 1] = KEYS[i] end
  removed = redis.call('UNLINK', unpack(entries))
  local got = redis.call('HMGET', KEYS[2], unpack(entries))
  local freed = 0
  for i = 1, #entries do freed = freed + (tonumber(got[i]) or 0) end
  redis.call('ZREM', KEYS[1], unpack(entries))
  redis.call('HDEL', KEYS[2], unpack(entries))
  if freed ~= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], '#bytes', -freed)
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
end
return removed
";

/// Timeouts of a [`RedisStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisStoreOptions {
    /// The bound on every Redis round trip (default 250 ms).
    pub op_timeout: Duration,
    /// The bound on [`RedisStore::connect_with`] establishing the first connection (default
    /// 2 s), and on each later reconnection attempt.
    pub connect_timeout: Duration,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// The shared cache tier: entries in a Redis that several gateway instances share.
///
/// Cheap to clone (the connection is multiplexed and shared).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The URL without its password, for messages.
    url: String,
    prefix: String,
    op_timeout: Duration,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    put: Script,
    stats: Script,
    clear: Script,
}

impl Scripts {
    fn new() -> Self {
        let build = |body: &str| Script::new(&format!("{SCRIPT_CLOCK}{SCRIPT_PRUNE_FN}{body}"));
        Self {
            put: build(SCRIPT_PUT_BODY),
            stats: build(SCRIPT_STATS_BODY),
            clear: build(SCRIPT_CLEAR_BODY),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connect with the default [`RedisStoreOptions`]. See [`RedisStore::connect_with`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CacheError> {
        Self::connect_with(url, prefix, RedisStoreOptions::default()).await
    }

    /// Connect to the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`, or
    /// `redis+unix:///path`) and keep every key under `{prefix}:`.
    ///
    /// Fails when the URL is invalid, the prefix is empty, or no connection (including
    /// `AUTH`/`SELECT`) is established within `options.connect_timeout`; the message names the
    /// URL with its password masked.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        options: RedisStoreOptions,
    ) -> Result<Self, CacheError> {
        let shown = redact_url(url);
        if prefix.is_empty() {
            return Err(error(format!(
                "Redis at {shown}: the key prefix must not be empty (clear() removes every key \
                 under `{{prefix}}:*`)"
            )));
        }
        let client = redis::Client::open(url)
            .map_err(|e| error(format!("invalid Redis URL {shown}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.op_timeout))
            // Few quick retries per reconnection: a command that finds the connection down
            // starts a new one anyway, and ours give up after `op_timeout` regardless.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = match tokio::time::timeout(
            options.connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(error(format!("cannot connect to Redis at {shown}: {e}"))),
            Err(_) => {
                return Err(error(format!(
                    "cannot connect to Redis at {shown}: no connection within {:?}",
                    options.connect_timeout
                )));
            }
        };
        Ok(Self {
            conn,
            url: shown,
            prefix: prefix.to_owned(),
            op_timeout: options.op_timeout,
            scripts: std::sync::Arc::new(Scripts::new()),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL with its password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound on each Redis round trip.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        format!("{}:e:{}", self.prefix, key.flat())
    }

    fn index_key(&self, model: &str) -> String {
        format!("{}:m:{model}", self.prefix)
    }

    fn sizes_key(&self, model: &str) -> String {
        format!("{}:s:{model}", self.prefix)
    }

    fn models_key(&self) -> String {
        format!("{}:models", self.prefix)
    }

    /// Run one round trip under the timeout, naming `op` in the error.
    async fn bounded<T>(
        &self,
        op: &str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(error(format!("{op} on {} failed: {e}", self.url))),
            Err(_) => Err(error(format!(
                "{op} on {} timed out after {:?}",
                self.url, self.op_timeout
            ))),
        }
    }

    /// One model's entries and bytes, pruning its expired members first.
    async fn model_stats(&self, model: &str) -> Result<StoreStats, CacheError> {
        let (index, sizes, models) = (
            self.index_key(model),
            self.sizes_key(model),
            self.models_key(),
        );
        let mut rounds = 0;
        loop {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.stats.prepare_invoke();
            call.key(&index)
                .key(&sizes)
                .key(&models)
                .arg(model)
                .arg(PRUNE_BATCH);
            let (entries, bytes, pruned): (u64, i64, usize) =
                self.bounded("stats", call.invoke_async(&mut conn)).await?;
            rounds += 1;
            if pruned < PRUNE_BATCH || rounds >= MAX_PRUNE_ROUNDS {
                return Ok(StoreStats {
                    entries,
                    bytes: u64::try_from(bytes).unwrap_or(0),
                });
            }
        }
    }

    async fn clear_model(&self, model: &str) -> Result<u64, CacheError> {
        let (index, sizes, models) = (
            self.index_key(model),
            self.sizes_key(model),
            self.models_key(),
        );
        let mut removed = 0u64;
        loop {
            let mut conn = self.conn.clone();
            let batch: Vec<String> = self
                .bounded(
                    "clear (ZRANGE)",
                    redis::cmd("ZRANGE")
                        .arg(&index)
                        .arg(0)
                        .arg(CLEAR_BATCH - 1)
                        .query_async(&mut conn),
                )
                .await?;
            let mut call = self.scripts.clear.prepare_invoke();
            call.key(&index).key(&sizes).key(&models);
            for entry in &batch {
                call.key(entry);
            }
            call.arg(model);
            let n: u64 = self.bounded("clear", call.invoke_async(&mut conn)).await?;
            removed += n;
            if batch.len() < CLEAR_BATCH {
                return Ok(removed);
            }
        }
    }

    async fn clear_all(&self) -> Result<u64, CacheError> {
        let pattern = format!("{}:*", escape_glob(&self.prefix));
        let entry_prefix = format!("{}:e:", self.prefix);
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let mut conn = self.conn.clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .bounded(
                    "clear (SCAN)",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut conn),
                )
                .await?;
            let (entries, others): (Vec<Vec<u8>>, Vec<Vec<u8>>) = keys
                .into_iter()
                .partition(|k| k.starts_with(entry_prefix.as_bytes()));
            if !entries.is_empty() {
                let n: u64 = self
                    .bounded(
                        "clear (UNLINK)",
                        redis::cmd("UNLINK").arg(&entries).query_async(&mut conn),
                    )
                    .await?;
                removed += n;
            }
            if !others.is_empty() {
                let _: u64 = self
                    .bounded(
                        "clear (UNLINK)",
                        redis::cmd("UNLINK").arg(&others).query_async(&mut conn),
                    )
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    fn name(&self) -> &'static str {
        STORE
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>, CacheError> {
        let mut conn = self.conn.clone();
        let value: Option<Vec<u8>> = self
            .bounded(
                "GET",
                redis::cmd("GET")
                    .arg(self.entry_key(key))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(value.map(Bytes::from))
    }

    /// TTLs are stored in whole milliseconds, rounded up, between 1 ms and ten years.
    async fn put(&self, key: &CacheKey, value: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let entry = self.entry_key(key);
        let (index, sizes, models) = (
            self.index_key(&key.model),
            self.sizes_key(&key.model),
            self.models_key(),
        );
        let mut call = self.scripts.put.prepare_invoke();
        call.key(&entry)
            .key(&index)
            .key(&sizes)
            .key(&models)
            .arg(value.as_ref())
            .arg(ttl_millis(ttl))
            .arg(&key.model)
            .arg(PRUNE_BATCH);
        let _: i64 = self.bounded("put", call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// `Some(model)` walks the model's index (removing a batch per round trip); `None` scans
    /// the keyspace for `{prefix}:*` and unlinks what it finds, index keys included. Either
    /// way the count is of entries that still existed. Only keys under the prefix are touched.
    async fn clear(&self, model: Option<&str>) -> Result<u64, CacheError> {
        match model {
            Some(model) => self.clear_model(model).await,
            None => self.clear_all().await,
        }
    }

    /// See the module docs: exact for TTL expiry, one round trip per model.
    async fn stats(&self) -> Result<StoreStats, CacheError> {
        let mut conn = self.conn.clone();
        let models: Vec<String> = self
            .bounded(
                "stats (SMEMBERS)",
                redis::cmd("SMEMBERS")
                    .arg(self.models_key())
                    .query_async(&mut conn),
            )
            .await?;
        let mut total = StoreStats::default();
        for model in models {
            let one = self.model_stats(&model).await?;
            total.entries += one.entries;
            total.bytes += one.bytes;
        }
        Ok(total)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .bounded("PING", redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

fn error(message: String) -> CacheError {
    CacheError::Store {
        store: STORE,
        message,
    }
}

/// `ttl` in whole milliseconds, rounded up, clamped to `1..=MAX_TTL_MS`.
fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_micros().div_ceil(1000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// `url` with its password (and any `password`/`pass` query parameter) replaced by `***`.
pub(crate) fn redact_url(raw: &str) -> String {
    const MASK: &str = "***";
    let is_secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        name == "password" || name == "pass"
    };
    match url::Url::parse(raw) {
        Ok(mut url) if !url.cannot_be_a_base() => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which then have none.
                let _ = url.set_password(Some(MASK));
            }
            if url.query_pairs().any(|(name, _)| is_secret(&name)) {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(name, value)| {
                        let value = if is_secret(&name) {
                            MASK.to_owned()
                        } else {
                            value.into_owned()
                        };
                        (name.into_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        // Not a URL with an authority: keep only what follows the last `@`, which cannot
        // hold a password.
        _ => match raw.rsplit_once('@') {
            Some((_, host)) => format!("{MASK}@{host}"),
            None if raw.contains('?') => format!("{MASK} (unparseable URL)"),
            None => raw.to_owned(),
        },
    }
}

/// Escape the glob characters of Redis's `MATCH` (`*`, `?`, `[`, `]`, `\`) so the prefix is
/// matched literally.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
