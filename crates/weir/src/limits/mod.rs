//! Inbound rate limits: [`InboundLimits`], the [`Admission`] that holds callers to their
//! requests and tokens per minute.
//!
//! # Scopes
//!
//! A call is counted in every scope that applies to it (`limits:` in the config):
//!
//! | scope | id | limit |
//! | --- | --- | --- |
//! | key | the gateway key's id | the key's own limits ([`Principal::limits`], field by field), else `per_key` |
//! | user | the principal's user | `per_user` |
//! | team | the principal's team | `per_team` |
//! | ip | the client's address, for calls without a gateway key only | `per_ip` |
//!
//! Each scope has a requests cell (costing 1 per call) and a tokens cell (costing the call's
//! input plus its output cap) when it sets `rpm` and `tpm`. A call is admitted only if every
//! cell has room, and then takes from all of them; refused by one, it takes from none. Token
//! cells settle to the real usage once the call ends (a cache hit, or a call that failed
//! before reaching the upstream, gives its tokens back); a call refused by a later admission
//! gives everything back.
//!
//! # The algorithm
//!
//! GCRA ([`gcra`]): smooth, with a burst of the whole limit, never a fixed window. `rpm: 60`
//! admits 60 calls at once from full, then one a second.
//!
//! # Backends
//!
//! In memory ([`memory`]) for one instance; in Redis (`redis:` in the config, the `redis`
//! feature) for several instances sharing exact limits, one round trip per check. When Redis
//! fails, `limits.on_store_error` decides: `allow` (the default) admits without a quota,
//! `deny` refuses with a 503. Failures are counted and reported by
//! [`InboundLimits::health`]. A single failure (a reply late under load) decides only its own
//! call; after three failures in a row, calls skip Redis for a second instead
//! of each waiting out `limits.store_timeout` (default 1 s: long enough that a busy process is
//! not mistaken for a dead Redis, which would let a burst through unlimited).
//!
//! ```
//! use weir::limits::{InboundLimits, LimitsConfig, RateLimit};
//! use weir::{CallContext, Client, Config};
//! use weir_types::chat::{ChatRequest, Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let limits = LimitsConfig {
//!     per_user: RateLimit { rpm: Some(1), tpm: None },
//!     ..LimitsConfig::default()
//! };
//! let client = Client::builder(Config::from_yaml("", &|_: &str| None)?)
//!     .admission(std::sync::Arc::new(InboundLimits::in_memory(&limits)))
//!     .build()?;
//! let mut context = CallContext::default();
//! context.principal.user = Some("alice".into());
//! let hello = || ChatRequest::new("mock/echo", vec![Message::user("hello")]);
//! let done = client.chat_with(hello(), context.clone()).await?;
//! assert_eq!(done.meta.quota.map(|q| q.remaining), Some(0));
//! let refused = client.chat_with(hello(), context).await.unwrap_err();
//! assert_eq!(refused.http_status(), 429);
//! # Ok::<(), weir::Error>(())
//! # })?;
//! # Ok(())
//! # }
//! ```
//!
//! [`Principal::limits`]: crate::Principal::limits

mod gcra;
pub(crate) mod health;
mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use health::LimitsHealth;

use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::pipeline::{
    Admission, AdmissionRequest, Admitted, LimitKind, LimitScope, Quota, Reservation, UsageEvent,
};
use health::Health;
use memory::{MemoryCells, MemoryHeld};

/// Requests and tokens per minute; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl RateLimit {
    /// Whether it limits anything.
    pub fn is_set(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some()
    }

    /// Each field of `self`, else of `fallback`.
    pub fn or(self, fallback: RateLimit) -> RateLimit {
        RateLimit {
            rpm: self.rpm.or(fallback.rpm),
            tpm: self.tpm.or(fallback.tpm),
        }
    }
}

/// What to do with calls when the limit store (Redis) cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStoreError {
    /// Admit them, unlimited, until the store is back.
    #[default]
    Allow,
    /// Refuse them with a 503 (`limits_unavailable`).
    Deny,
}

impl OnStoreError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// The inbound limits (`limits:` in the config). The default limits nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Every gateway key without limits of its own.
    pub per_key: RateLimit,
    pub per_user: RateLimit,
    pub per_team: RateLimit,
    /// Calls without a gateway key, by client address.
    pub per_ip: RateLimit,
    pub on_store_error: OnStoreError,
    /// The bound on each check against the store (Redis).
    pub store_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_key: RateLimit::default(),
            per_user: RateLimit::default(),
            per_team: RateLimit::default(),
            per_ip: RateLimit::default(),
            on_store_error: OnStoreError::Allow,
            store_timeout: Duration::from_secs(1),
        }
    }
}

impl LimitsConfig {
    /// Whether any scope has a limit.
    pub fn any(&self) -> bool {
        [self.per_key, self.per_user, self.per_team, self.per_ip]
            .iter()
            .any(RateLimit::is_set)
    }
}

/// Whose cell: a scope and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellId<'a> {
    Key(&'a str),
    User(&'a str),
    Team(&'a str),
    Ip(IpAddr),
}

impl<'a> CellId<'a> {
    pub(crate) fn scope(self) -> LimitScope {
        match self {
            Self::Key(_) => LimitScope::Key,
            Self::User(_) => LimitScope::User,
            Self::Team(_) => LimitScope::Team,
            Self::Ip(_) => LimitScope::Ip,
        }
    }

    /// How messages name it: `key key_ab12`, `user alice`, `client 10.0.0.7`.
    fn who(self) -> Who<'a> {
        Who(self)
    }
}

/// The id alone (for store keys).
impl fmt::Display for CellId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) | Self::User(id) | Self::Team(id) => f.write_str(id),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A cell's id as messages name it.
struct Who<'a>(CellId<'a>);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            CellId::Ip(_) => "client",
            other => other.scope().as_str(),
        };
        write!(f, "{kind} {}", self.0)
    }
}

/// One scope that applies to a call, with its limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoped<'a> {
    pub(crate) id: CellId<'a>,
    pub(crate) limit: RateLimit,
}

impl Scoped<'_> {
    /// The cells this scope charges: (kind, limit, cost).
    pub(crate) fn charges(&self, tokens: u64) -> impl Iterator<Item = (LimitKind, u64, u64)> {
        let requests = self.limit.rpm.map(|l| (LimitKind::Requests, l, 1));
        let tokens = self.limit.tpm.map(|l| (LimitKind::Tokens, l, tokens));
        requests.into_iter().chain(tokens)
    }
}

/// The scopes that apply to one call, in a fixed order (key, user, team, ip).
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    scopes: [Option<Scoped<'a>>; 4],
    /// What the call's token cells cost: its input plus its output cap.
    pub(crate) tokens: u64,
}

impl<'a> Plan<'a> {
    pub(crate) fn scopes(&self) -> impl Iterator<Item = (usize, &Scoped<'a>)> {
        self.scopes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    fn is_empty(&self) -> bool {
        self.scopes.iter().all(Option::is_none)
    }

    fn scope(&self, index: usize) -> Option<&Scoped<'a>> {
        self.scopes.get(index).and_then(Option::as_ref)
    }
}

/// A cell that refused a call.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The refusing scope's place in the plan.
    pub(crate) index: usize,
    pub(crate) kind: LimitKind,
    pub(crate) retry_after: Duration,
    /// The cell as it stands (nothing taken).
    pub(crate) quota: Quota,
}

/// Where limit state lives.
#[derive(Debug)]
enum Store {
    Memory(Box<MemoryCells>),
    #[cfg(feature = "redis")]
    Redis(redis::RedisCells),
}

/// A reservation that holds nothing: no scope applied, or the store was down and the call was
/// let through. A zero-sized box: no allocation.
#[derive(Debug)]
struct Nothing;

/// The inbound rate limiter. See the module docs.
#[derive(Debug)]
pub struct InboundLimits {
    config: LimitsConfig,
    store: Store,
    health: Arc<Health>,
}

impl InboundLimits {
    /// A limiter keeping its state in this process.
    pub fn in_memory(config: &LimitsConfig) -> Self {
        Self {
            config: config.clone(),
            store: Store::Memory(Box::new(MemoryCells::new())),
            health: Arc::new(Health::new("memory", "inbound rate limits")),
        }
    }

    /// A limiter keeping its state in Redis when `redis` is given (shared with every instance
    /// using the same Redis and prefix), else in memory.
    ///
    /// Fails only on a Redis URL that cannot be used (or without the `redis` feature). A
    /// Redis that does not answer yet is not an error: the limiter starts unhealthy, applies
    /// `on_store_error`, and connects once Redis is back.
    pub async fn new(config: &LimitsConfig, redis: Option<&RedisConfig>) -> Result<Self> {
        let Some(redis) = redis else {
            return Ok(Self::in_memory(config));
        };
        #[cfg(not(feature = "redis"))]
        {
            let _ = redis;
            Err(Error::config(
                "redis",
                "weir was built without the `redis` feature; rebuild it with `--features redis` \
                 (on by default) to keep rate limits in Redis, or remove `redis:` to keep them \
                 in memory",
            ))
        }
        #[cfg(feature = "redis")]
        {
            let cells = redis::RedisCells::open(redis, config.store_timeout)?;
            let health = Arc::new(Health::new("redis", "inbound rate limits"));
            // The first connection gets a little longer than a check: it includes the TCP
            // (and TLS) handshake and loading the script.
            let connect = config.store_timeout.max(Duration::from_secs(2));
            match tokio::time::timeout(connect, cells.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => health.failed(e),
                Err(_) => health.failed(format!(
                    "Redis for rate limits did not answer within {connect:?}"
                )),
            }
            Ok(Self {
                config: config.clone(),
                store: Store::Redis(cells),
                health,
            })
        }
    }

    /// The limits it applies.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Its backend, whether its store answers, and the store's failures.
    pub fn health(&self) -> LimitsHealth {
        self.health.snapshot()
    }

    /// The scopes that apply to a call, and their limits.
    fn plan<'a>(&self, request: &'a AdmissionRequest<'_>) -> Plan<'a> {
        let principal = &request.context.principal;
        let c = &self.config;
        let set = |id: Option<CellId<'a>>, limit: RateLimit| {
            id.filter(|_| limit.is_set()).map(|id| Scoped { id, limit })
        };
        let key_limit = principal.limits.map_or(c.per_key, |own| own.or(c.per_key));
        let ip = match principal.key_id {
            None => request.context.client_ip.map(CellId::Ip),
            Some(_) => None,
        };
        Plan {
            scopes: [
                set(principal.key_id.as_deref().map(CellId::Key), key_limit),
                set(principal.user.as_deref().map(CellId::User), c.per_user),
                set(principal.team.as_deref().map(CellId::Team), c.per_team),
                set(ip, c.per_ip),
            ],
            tokens: request
                .input_tokens
                .saturating_add(request.max_output_tokens),
        }
    }

    /// A call whose tokens exceed a whole tokens-per-minute limit can never pass: say so now
    /// rather than have it wait forever.
    fn too_large(plan: &Plan<'_>) -> Result<()> {
        for (_, scoped) in plan.scopes() {
            if let Some(tpm) = scoped.limit.tpm
                && plan.tokens > tpm
            {
                return Err(Error::Rejected {
                    status: 413,
                    code: "request_too_large",
                    message: format!(
                        "request too large for the rate limit: {} allows {tpm} tokens per minute, \
                         and this call reserves {} (its input plus max_tokens); lower max_tokens \
                         or shorten the input",
                        scoped.id.who(),
                        plan.tokens
                    ),
                    retry_after: None,
                    quota: None,
                });
            }
        }
        Ok(())
    }

    /// The 429 for a refusal.
    fn refused(plan: &Plan<'_>, refusal: Refusal) -> Error {
        let Refusal {
            index,
            kind,
            retry_after,
            quota,
        } = refusal;
        let who = plan.scope(index).map_or_else(
            || quota.scope.as_str().to_owned(),
            |s| s.id.who().to_string(),
        );
        let unit = match (kind, quota.limit) {
            (LimitKind::Requests, 1) => "request",
            (LimitKind::Tokens, 1) => "token",
            (kind, _) => kind.as_str(),
        };
        let cost = match kind {
            LimitKind::Tokens => format!(" (this call reserves {})", plan.tokens),
            LimitKind::Requests => String::new(),
        };
        Error::Rejected {
            status: 429,
            code: "rate_limit_exceeded",
            message: format!(
                "rate limit exceeded: {who} allows {} {unit} per minute{cost}; retry in {}",
                quota.limit,
                fmt_wait(retry_after)
            ),
            retry_after: Some(retry_after),
            quota: Some(quota),
        }
    }

    /// The store failed or is paused: `on_store_error` decides.
    #[cfg_attr(
        not(feature = "redis"),
        expect(dead_code, reason = "only the Redis backend has a store that can fail")
    )]
    fn store_unavailable(&self) -> Result<Admitted> {
        match self.config.on_store_error {
            OnStoreError::Allow => Ok(Admitted::new(Box::new(Nothing))),
            OnStoreError::Deny => {
                let cause = self
                    .health
                    .last_error()
                    .unwrap_or_else(|| "the limit store is not answering".to_owned());
                Err(Error::Rejected {
                    status: 503,
                    code: "limits_unavailable",
                    message: format!(
                        "rate limits unavailable: {cause}; calls are refused until the limit \
                         store answers again (limits.on_store_error: deny): check that Redis is \
                         running and reachable"
                    ),
                    retry_after: Some(health::RETRY_STORE_AFTER),
                    quota: None,
                })
            }
        }
    }

    #[cfg(feature = "redis")]
    async fn reserve_redis(&self, cells: &redis::RedisCells, plan: &Plan<'_>) -> Result<Admitted> {
        if self.health.paused() {
            return self.store_unavailable();
        }
        let timeout = self.config.store_timeout;
        let outcome = match tokio::time::timeout(timeout, cells.reserve(plan)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the rate-limit check on Redis timed out after {timeout:?} (limits.store_timeout)"
            )),
        };
        match outcome {
            Ok(Ok((held, quota))) => {
                self.health.succeeded();
                Ok(Admitted {
                    reservation: Box::new(held),
                    quota,
                    warnings: Vec::new(),
                })
            }
            Ok(Err(refusal)) => {
                self.health.succeeded();
                Err(Self::refused(plan, refusal))
            }
            Err(e) => {
                self.health.failed(e);
                self.store_unavailable()
            }
        }
    }

    /// Apply moves to Redis cells off the request path (settling runs in a call's end, which
    /// may be a stream's drop).
    #[cfg(feature = "redis")]
    fn adjust_later(&self, cells: &redis::RedisCells, moves: Vec<(String, i64)>) {
        // While the store is paused the moves are dropped: a lost refund holds a caller back a
        // little longer, a lost charge lets it spend a little more, and both fade as the
        // cells refill.
        if moves.is_empty() || self.health.paused() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("rate limits not settled: no async runtime to reach Redis from");
            return;
        };
        let (cells, health, timeout) = (
            cells.clone(),
            Arc::clone(&self.health),
            self.config.store_timeout,
        );
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, cells.adjust(&moves)).await {
                Ok(Ok(())) => health.succeeded(),
                Ok(Err(e)) => health.failed(e),
                Err(_) => health.failed(format!(
                    "settling rate limits on Redis timed out after {timeout:?}"
                )),
            }
        });
    }
}

#[async_trait]
impl Admission for InboundLimits {
    async fn reserve(&self, request: &AdmissionRequest<'_>) -> Result<Admitted> {
        let plan = self.plan(request);
        if plan.is_empty() {
            return Ok(Admitted::new(Box::new(Nothing)));
        }
        Self::too_large(&plan)?;
        match &self.store {
            Store::Memory(cells) => match cells.reserve(&plan) {
                Ok((held, quota)) => Ok(Admitted {
                    reservation: Box::new(held),
                    quota,
                    warnings: Vec::new(),
                }),
                Err(refusal) => Err(Self::refused(&plan, refusal)),
            },
            #[cfg(feature = "redis")]
            Store::Redis(cells) => self.reserve_redis(cells, &plan).await,
        }
    }

    fn settle(&self, reservation: Reservation, event: &UsageEvent) {
        // Only tokens spent upstream count: a cache hit or a shared answer spent none.
        let used = if event.cache.is_free() {
            0
        } else {
            event.tokens.input.saturating_add(event.tokens.output)
        };
        match &self.store {
            Store::Memory(cells) => {
                if let Some(held) = reservation.downcast_ref::<MemoryHeld>() {
                    cells.settle(held, used);
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(cells) => {
                if let Ok(held) = reservation.downcast::<redis::RedisHeld>() {
                    self.adjust_later(cells, redis::RedisCells::settlement(*held, used));
                }
            }
        }
    }

    fn release(&self, reservation: Reservation) {
        match &self.store {
            Store::Memory(cells) => {
                if let Some(held) = reservation.downcast_ref::<MemoryHeld>() {
                    cells.release(held);
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(cells) => {
                if let Ok(held) = reservation.downcast::<redis::RedisHeld>() {
                    self.adjust_later(cells, redis::RedisCells::release(*held));
                }
            }
        }
    }
}

/// A wait as people read it: `250 ms`, `3 s` (whole seconds, rounded up).
fn fmt_wait(wait: Duration) -> String {
    if wait < Duration::from_secs(1) {
        format!("{} ms", wait.as_nanos().div_ceil(1_000_000).max(1))
    } else {
        format!("{} s", wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }
}

#[cfg(test)]
mod tests;
