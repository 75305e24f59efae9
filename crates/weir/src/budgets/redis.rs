//! The Redis backend: budget counters shared by every gateway instance behind one Redis,
//! exact across them.
//!
//! # Layout
//!
//! Per budget and period, under the configured prefix `P` and the period's start `S` (Unix
//! milliseconds):
//! - `P:budget:{id}:S`, a hash: `spent` and `reserved` in nanodollars, and `w1`, `w2`...
//!   once the period crossed each threshold;
//! - `P:budget:{id}:S:holds`, a sorted set of live reservations, `{hold id}:{amount}`
//!   scored by their deadline (Redis clock, milliseconds).
//!
//! Both expire a day after the period resets (late settlements still land on them).
//!
//! # Scripts
//!
//! A reservation is one script (`EVALSHA`, loaded on first use) over every budget of the
//! call: it reads the Redis clock (`TIME`), expires reservations past their deadline, checks
//! every hard budget and, only if all pass, adds the reservation to all of them and marks
//! the thresholds it crossed. Settling and releasing are a second script, spawned off the
//! request path. On Redis Cluster, give the prefix a hash tag (`{weir}`) so the keys of one
//! call share a slot.
//!
//! Amounts are integers in Redis (`HINCRBY`); the scripts compare them as Lua numbers,
//! exact below 2⁵³ nanodollars (about nine million dollars per budget and period).

use std::fmt::Write as _;
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::config::RedisConfig;
use crate::error::Result;

/// How long keys outlive their period, in milliseconds: a day.
const KEEP_AFTER_RESET_MS: i64 = 24 * 3600 * 1000;

/// KEYS: (hash, holds) per budget. ARGV: hold id, lifetime (ms), then per budget: limit (-1:
/// none), amount, expire-at (ms), threshold count, thresholds.
/// Returns {1, crossed bits, committed before, ...} or {0, budget index, spent, reserved}.
const RESERVE: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, ttl = ARGV[1], tonumber(ARGV[2])
local a = 3
local plan = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, amount, at, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local thr = {}
  for j = 1, n do thr[j] = tonumber(ARGV[a + 3 + j]) end
  a = a + 4 + n
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 512)
  if #dead > 0 then
    local gone = 0
    for _, m in ipairs(dead) do gone = gone + (tonumber(string.match(m, ':(%d+)$')) or 0) end
    redis.call('ZREM', z, unpack(dead))
    redis.call('HINCRBY', h, 'reserved', -gone)
  end
  local spent = tonumber(redis.call('HGET', h, 'spent') or '0') or 0
  local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0') or 0
  if limit >= 0 and spent + reserved + amount > limit then
    return {0, i, spent, reserved}
  end
  plan[i] = {h, z, amount, at, thr, spent + reserved}
end
local out = {1}
for _, p in ipairs(plan) do
  if p[3] > 0 then
    redis.call('HINCRBY', p[1], 'reserved', p[3])
    redis.call('ZADD', p[2], now + ttl, member .. ':' .. string.format('%d', p[3]))
    redis.call('PEXPIREAT', p[2], p[4])
  end
  redis.call('HSETNX', p[1], 'spent', 0)
  redis.call('PEXPIREAT', p[1], p[4])
  local crossed = 0
  local after = p[6] + p[3]
  for j, th in ipairs(p[5]) do
    if p[6] < th and after >= th and redis.call('HSETNX', p[1], 'w' .. j, 1) == 1 then
      crossed = crossed + 2 ^ (j - 1)
    end
  end
  out[#out + 1] = crossed
  out[#out + 1] = p[6]
end
return out
";

/// KEYS: (hash, holds) per budget. ARGV: hold id, then per budget: amount reserved, real
/// cost, expire-at (ms). A reservation already expired gives nothing back.
const SETTLE: &str = r"
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, real, at = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
  if amount > 0 and redis.call('ZREM', z, ARGV[1] .. ':' .. string.format('%d', amount)) == 1 then
    redis.call('HINCRBY', h, 'reserved', -amount)
  end
  if real > 0 then redis.call('HINCRBY', h, 'spent', real) end
  redis.call('PEXPIREAT', h, at)
end
return 1
";

/// KEYS: hash, holds. Expires dead reservations; returns {spent, reserved}.
const READ: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 512)
if #dead > 0 then
  local gone = 0
  for _, m in ipairs(dead) do gone = gone + (tonumber(string.match(m, ':(%d+)$')) or 0) end
  redis.call('ZREM', KEYS[2], unpack(dead))
  redis.call('HINCRBY', KEYS[1], 'reserved', -gone)
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0') or 0
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') or 0
return {spent, reserved}
";

/// KEYS: hash. ARGV: spent, expire-at (ms). Sets the spend only if the period has no key.
const SEED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// One budget of a call, as the reserve script takes it.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) id: &'a str,
    pub(crate) period_start_ms: i64,
    pub(crate) reset_ms: i64,
    /// `None` for a soft budget.
    pub(crate) limit: Option<i64>,
    pub(crate) amount: i64,
    pub(crate) thresholds: &'a [i64],
}

/// The reserve script's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Taken everywhere: per budget, (bits of the thresholds newly crossed, committed
    /// before).
    Taken(Vec<(u64, i64)>),
    /// Budget `index` refused (0-based), standing at (spent, reserved).
    Refused {
        index: usize,
        spent: i64,
        reserved: i64,
    },
}

/// One budget's part of a reservation in Redis.
#[derive(Debug, Clone)]
pub(crate) struct RedisPart {
    hash: String,
    holds: String,
    amount: i64,
    expire_at_ms: i64,
}

/// A reservation in Redis, to settle or release.
#[derive(Debug)]
pub(crate) struct RedisHeld {
    member: String,
    parts: Vec<RedisPart>,
}

/// The shared counters. Cheap to clone (the connection is multiplexed and shared).
#[derive(Clone)]
pub(crate) struct RedisCounters {
    conn: ConnectionManager,
    prefix: String,
    /// The URL with its password masked, for messages.
    url: String,
    reserve: std::sync::Arc<Script>,
    settle: std::sync::Arc<Script>,
    read: std::sync::Arc<Script>,
    seed: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// A connection manager for `config`, connecting on first use and reconnecting on its
    /// own. Fails only on a URL that cannot be used.
    pub(crate) fn open(config: &RedisConfig, timeout: Duration) -> Result<Self> {
        let (conn, url) = crate::limits::redis::connect(config, timeout)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            url,
            reserve: std::sync::Arc::new(Script::new(RESERVE)),
            settle: std::sync::Arc::new(Script::new(SETTLE)),
            read: std::sync::Arc::new(Script::new(READ)),
            seed: std::sync::Arc::new(Script::new(SEED)),
        })
    }

    /// Connect and load the reserve script, so the first call pays neither.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        self.reserve
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.failure("loading the budget script", &e))
    }

    fn failure(&self, what: &str, e: &redis::RedisError) -> String {
        format!("{what} on Redis at {} failed: {e}", self.url)
    }

    /// `P:budget:{id}:S` and `P:budget:{id}:S:holds`.
    fn keys(&self, id: &str, period_start_ms: i64) -> (String, String) {
        let mut hash = String::with_capacity(self.prefix.len() + id.len() + 32);
        let _ = write!(hash, "{}:budget:{id}:{period_start_ms}", self.prefix);
        let holds = format!("{hash}:holds");
        (hash, holds)
    }

    /// Check and reserve every budget of a call in one round trip. The outer error is the
    /// store's.
    pub(crate) async fn reserve(
        &self,
        asks: &[Ask<'_>],
        lifetime: Duration,
    ) -> Result<(Answer, RedisHeld), String> {
        let member = format!("{:016x}", fastrand::u64(..));
        let mut call = self.reserve.prepare_invoke();
        call.arg(&member)
            .arg(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX));
        let mut parts = Vec::with_capacity(asks.len());
        for ask in asks {
            let (hash, holds) = self.keys(ask.id, ask.period_start_ms);
            let expire_at_ms = ask.reset_ms.saturating_add(KEEP_AFTER_RESET_MS);
            call.key(&hash)
                .key(&holds)
                .arg(ask.limit.unwrap_or(-1))
                .arg(ask.amount)
                .arg(expire_at_ms)
                .arg(ask.thresholds.len());
            for t in ask.thresholds {
                call.arg(*t);
            }
            parts.push(RedisPart {
                hash,
                holds,
                amount: ask.amount,
                expire_at_ms,
            });
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failure("the budget check", &e))?;
        let answer = match reply.first() {
            Some(1) if reply.len() == 1 + 2 * asks.len() => Answer::Taken(
                reply[1..]
                    .chunks_exact(2)
                    .map(|pair| (u64::try_from(pair[0]).unwrap_or(0), pair[1]))
                    .collect(),
            ),
            Some(0) if reply.len() == 4 => Answer::Refused {
                index: usize::try_from(reply[1] - 1).unwrap_or(0),
                spent: reply[2],
                reserved: reply[3],
            },
            _ => {
                return Err(format!(
                    "the budget check on Redis at {} answered {reply:?}, not a decision",
                    self.url
                ));
            }
        };
        Ok((answer, RedisHeld { member, parts }))
    }

    /// Replace a reservation with the real cost (`None`: give it back).
    pub(crate) async fn settle(&self, held: &RedisHeld, real: Option<i64>) -> Result<(), String> {
        let mut call = self.settle.prepare_invoke();
        call.arg(&held.member);
        for p in &held.parts {
            call.key(&p.hash)
                .key(&p.holds)
                .arg(p.amount)
                .arg(real.unwrap_or(0))
                .arg(p.expire_at_ms);
        }
        let mut conn = self.conn.clone();
        call.invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.failure("settling budgets", &e))
    }

    /// (spent, live reservations) of one budget's period.
    pub(crate) async fn read(&self, id: &str, period_start_ms: i64) -> Result<(i64, i64), String> {
        let (hash, holds) = self.keys(id, period_start_ms);
        let mut call = self.read.prepare_invoke();
        call.key(&hash).key(&holds);
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failure("reading a budget", &e))?;
        Ok((
            reply.first().copied().unwrap_or(0),
            reply.get(1).copied().unwrap_or(0).max(0),
        ))
    }

    /// Set a period's spend unless it already has a counter; `true` if it was set.
    pub(crate) async fn seed(
        &self,
        id: &str,
        period_start_ms: i64,
        reset_ms: i64,
        spent: i64,
    ) -> Result<bool, String> {
        let (hash, _) = self.keys(id, period_start_ms);
        let mut call = self.seed.prepare_invoke();
        call.key(&hash)
            .arg(spent)
            .arg(reset_ms.saturating_add(KEEP_AFTER_RESET_MS));
        let mut conn = self.conn.clone();
        call.invoke_async::<i64>(&mut conn)
            .await
            .map(|set| set == 1)
            .map_err(|e| self.failure("seeding a budget", &e))
    }
}
