//! The Redis backend: limit state shared by every gateway instance behind one Redis, exact
//! across them.
//!
//! # Layout
//!
//! One string per cell, `P:rl:{scope}:{r|t}:{id}` under the configured prefix `P` (`r` for
//! requests, `t` for tokens), holding the cell's TAT in microseconds of the Redis clock, with
//! a `PX` expiry at that TAT: a cell back to full is gone, so idle callers cost nothing.
//!
//! # Round trips
//!
//! A check is one Lua script (`EVALSHA`, loaded on first use): it reads the Redis clock
//! (`TIME`, so replicas with skewed clocks agree), checks every cell of the call and, only if
//! all pass, writes every new TAT. It returns each cell's backlog, or the refusing cell with
//! its wait. Settling and releasing run a second script that moves TATs by signed amounts,
//! spawned off the request path. Both touch several keys: on Redis Cluster, give the prefix a
//! hash tag (`{weir}`) so they share a slot (this backend connects to a single endpoint).

use std::fmt::Write as _;
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use super::gcra::{self, MINUTE_MICROS};
use super::{CellId, Plan, Refusal};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::pipeline::{LimitKind, Quota};

/// KEYS: the cells. ARGV: the window, then each cell's increment (µs).
/// Returns {1, backlog...} when every cell admits, else {0, index, wait, backlog} for the first
/// that refuses (1-based), having written nothing.
const RESERVE: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local next = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local tat = now
  if v then tat = math.max(tonumber(v) or now, now) end
  local new = tat + tonumber(ARGV[i + 1])
  if new - now > window then
    return {0, i, new - now - window, tat - now}
  end
  next[i] = new
end
local out = {1}
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', next[i]), 'PX', math.floor((next[i] - now) / 1000) + 1)
  out[i + 1] = next[i] - now
end
return out
";

/// KEYS: cells. ARGV: each cell's signed move (µs). A TAT moved back never goes before now: a
/// cell back to full is deleted.
const ADJUST: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  local tat = now
  if v then tat = math.max(tonumber(v) or now, now) end
  tat = tat + tonumber(ARGV[i])
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
";

/// The shared cells. Cheap to clone (the connection is multiplexed and shared).
#[derive(Clone)]
pub(crate) struct RedisCells {
    conn: ConnectionManager,
    prefix: String,
    /// The URL with its password masked, for messages.
    url: String,
    reserve: std::sync::Arc<Script>,
    adjust: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCells")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One cell an admitted call took.
#[derive(Debug)]
struct Taken {
    key: String,
    kind: LimitKind,
    limit: u64,
    cost: u64,
    inc: u64,
}

/// What an admitted call took, to settle or release.
#[derive(Debug)]
pub(crate) struct RedisHeld {
    taken: Vec<Taken>,
}

/// A connection manager for the shared Redis (limits and budgets), connecting on first use
/// and reconnecting on its own, and its URL with the password masked for messages. Fails only
/// on a URL that cannot be used.
pub(crate) fn connect(
    config: &RedisConfig,
    timeout: Duration,
) -> Result<(ConnectionManager, String)> {
    let url = crate::cache::redis::redact_url(config.url.expose_secret());
    let client = redis::Client::open(config.url.expose_secret())
        .map_err(|e| Error::config("redis.url", format!("invalid Redis URL {url}: {e}")))?;
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // One quick retry per reconnection: our calls give up after `timeout` anyway.
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client, manager)
        .map_err(|e| Error::config("redis", format!("Redis at {url}: {e}")))?;
    Ok((conn, url))
}

impl RedisCells {
    /// A connection manager for `config`, which connects on first use and reconnects on its
    /// own. Fails only on a URL that cannot be used; whether Redis answers is the caller's
    /// first check to find out (see [`RedisCells::ping`]).
    pub(crate) fn open(config: &RedisConfig, timeout: Duration) -> Result<Self> {
        let (conn, url) = connect(config, timeout)?;
        Ok(Self {
            conn,
            prefix: config.prefix.clone(),
            url,
            reserve: std::sync::Arc::new(Script::new(RESERVE)),
            adjust: std::sync::Arc::new(Script::new(ADJUST)),
        })
    }

    /// Connect and load the check script, so the first call pays neither.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        self.reserve
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.failure("loading the limit script", &e))
    }

    fn failure(&self, what: &str, e: &redis::RedisError) -> String {
        format!("{what} on Redis at {} failed: {e}", self.url)
    }

    /// `P:rl:{scope}:{r|t}:{id}`.
    fn key(&self, id: CellId<'_>, kind: LimitKind) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 40);
        let kind = match kind {
            LimitKind::Requests => 'r',
            LimitKind::Tokens => 't',
        };
        let _ = write!(
            key,
            "{}:rl:{}:{kind}:{id}",
            self.prefix,
            id.scope().as_str()
        );
        key
    }

    /// Check and take every cell of `plan` in one round trip. The outer error is the store's.
    pub(crate) async fn reserve(
        &self,
        plan: &Plan<'_>,
    ) -> Result<Result<(RedisHeld, Option<Quota>), Refusal>, String> {
        // Where each cell came from, for the refusal's message.
        let mut origin = Vec::with_capacity(8);
        let mut taken = Vec::with_capacity(8);
        let mut call = self.reserve.prepare_invoke();
        call.arg(MINUTE_MICROS);
        for (index, scoped) in plan.scopes() {
            for (kind, limit, cost) in scoped.charges(plan.tokens) {
                let key = self.key(scoped.id, kind);
                let inc = gcra::increment(cost, limit, MINUTE_MICROS);
                call.key(&key).arg(inc);
                origin.push((index, scoped.id.scope()));
                taken.push(Taken {
                    key,
                    kind,
                    limit,
                    cost,
                    inc,
                });
            }
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failure("the rate-limit check", &e))?;
        let micros = |v: Option<&i64>| v.and_then(|v| u64::try_from(*v).ok()).unwrap_or(0);
        match reply.first() {
            Some(1) if reply.len() == taken.len() + 1 => {
                let mut quota = None;
                for ((t, (_, scope)), backlog) in taken.iter().zip(&origin).zip(&reply[1..]) {
                    let backlog = micros(Some(backlog));
                    let q = quota_of(*scope, t.kind, t.limit, backlog);
                    quota = Quota::tightest(quota, Some(q));
                }
                Ok(Ok((RedisHeld { taken }, quota)))
            }
            Some(0) => {
                let at = micros(reply.get(1)).saturating_sub(1);
                let (Some(t), Some((index, scope))) = (
                    taken.get(usize::try_from(at).unwrap_or(usize::MAX)),
                    origin.get(usize::try_from(at).unwrap_or(usize::MAX)),
                ) else {
                    return Err(format!(
                        "the rate-limit check on Redis at {} answered an unknown cell",
                        self.url
                    ));
                };
                Ok(Err(Refusal {
                    index: *index,
                    kind: t.kind,
                    retry_after: Duration::from_micros(micros(reply.get(2))),
                    quota: quota_of(*scope, t.kind, t.limit, micros(reply.get(3))),
                }))
            }
            _ => Err(format!(
                "the rate-limit check on Redis at {} answered {reply:?}, not a decision",
                self.url
            )),
        }
    }

    /// The moves that correct a reservation's token cells to `used_tokens`; empty when
    /// nothing changes.
    pub(crate) fn settlement(held: RedisHeld, used_tokens: u64) -> Vec<(String, i64)> {
        held.taken
            .into_iter()
            .filter(|t| t.kind == LimitKind::Tokens && t.cost != used_tokens)
            .map(|t| {
                let delta = gcra::increment(t.cost.abs_diff(used_tokens), t.limit, MINUTE_MICROS);
                let delta = i64::try_from(delta).unwrap_or(i64::MAX);
                let signed = if used_tokens < t.cost { -delta } else { delta };
                (t.key, signed)
            })
            .collect()
    }

    /// The moves that undo a reservation.
    pub(crate) fn release(held: RedisHeld) -> Vec<(String, i64)> {
        held.taken
            .into_iter()
            .map(|t| (t.key, -i64::try_from(t.inc).unwrap_or(i64::MAX)))
            .collect()
    }

    /// Move each cell's TAT by its amount, in one round trip.
    pub(crate) async fn adjust(&self, moves: &[(String, i64)]) -> Result<(), String> {
        let mut call = self.adjust.prepare_invoke();
        for (key, delta) in moves {
            call.key(key).arg(*delta);
        }
        let mut conn = self.conn.clone();
        call.invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.failure("settling rate limits", &e))
    }
}

/// A cell's quota, `backlog` microseconds from full.
fn quota_of(
    scope: crate::pipeline::LimitScope,
    kind: LimitKind,
    limit: u64,
    backlog: u64,
) -> Quota {
    Quota {
        scope,
        kind,
        limit,
        remaining: gcra::remaining(backlog, limit, MINUTE_MICROS),
        reset: Duration::from_micros(backlog),
    }
}
