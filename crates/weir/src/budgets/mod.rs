//! Spend budgets: [`Budgets`], the [`Admission`] that holds spending to dollar limits per
//! period.
//!
//! # Budgets
//!
//! A [`BudgetSpec`] counts the calls of one scope (every call, a gateway key, a user, a
//! team, a project, or a requested model) against `limit_usd` per period (daily, weekly,
//! monthly in the budget's time zone, or rolling windows; see [`period_bounds`]). A call is
//! counted by every budget whose scope matches it.
//!
//! # Reserve, then settle
//!
//! Before any upstream call, a call reserves its worst-case cost (its input and output cap
//! at the dearest price it may reach: see [`money`]) on each of its budgets. A **hard**
//! budget refuses a call whose reservation would take its spend plus the reservations in
//! flight past the limit, with a 402 `budget_exceeded` (402 because the official SDKs retry
//! 429 and 5xx, and retrying cannot help until the period resets). A **soft** budget admits
//! every call. Both warn once per period as the spend crosses each threshold: the warning
//! goes to the answer's [`ResponseMeta::budget_warnings`] and to the log.
//!
//! When the call ends, its reservation is replaced by its real cost (`UsageEvent::cost_usd`;
//! zero for cache hits and unpriced models). A call refused by a later admission gives its
//! reservation back. A reservation never settled (its gateway instance died) stops counting
//! after the call's deadline plus a minute.
//!
//! The result: concurrent calls never reserve past a hard limit, so the settled spend passes
//! it only when calls cost more than they reserved (an input estimate that fell short).
//!
//! # Backends
//!
//! In memory ([`memory`]: atomic counters, exact for one instance) or in Redis (`redis:` in
//! the config, the `redis` feature: one script per reservation, exact across instances).
//! When Redis fails, `budgets.on_store_error` decides, as for the rate limiter: `allow` (the
//! default) admits without counting, `deny` refuses with a 503; failures are counted and
//! reported by [`Budgets::health`].
//!
//! ```
//! use std::sync::Arc;
//! use rust_decimal::Decimal;
//! use weir::budgets::{BudgetPeriod, BudgetScope, BudgetSpec, Budgets};
//! use weir::{Client, Config};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_yaml("", &|_: &str| None)?;
//! let budgets = Arc::new(Budgets::in_memory(&config)?);
//! budgets.set(BudgetSpec::new(
//!     "team-search-daily",
//!     BudgetScope::Team("search".into()),
//!     Decimal::new(25, 0),
//!     BudgetPeriod::Daily,
//! ))?;
//! let client = Client::builder(config).budgets(budgets).build()?;
//! assert_eq!(client.budgets().map(|b| b.list().len()), Some(1));
//! # Ok(())
//! # }
//! ```
//!
//! [`ResponseMeta::budget_warnings`]: crate::ResponseMeta::budget_warnings

mod forecast;
mod memory;
mod money;
mod period;
#[cfg(feature = "redis")]
mod redis;
mod spec;
mod status;
mod table;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;

pub use forecast::{Forecast, ForecastInput, ForecastMethod, PATTERN_DAYS, RECENT_DAYS, forecast};
pub use period::period_bounds;
pub use spec::{BudgetMode, BudgetPeriod, BudgetScope, BudgetSpec, DEFAULT_THRESHOLDS};
pub use status::BudgetStatus;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::limits::health::Health;
use crate::limits::{LimitsHealth, OnStoreError};
use crate::pipeline::{Admission, AdmissionRequest, Admitted, Reservation, UsageEvent};
use memory::{Counter, Expiry, Hold, Part};
use money::Prices;
use table::{Slot, Table};

/// How long a reservation outlives its call's deadline before it stops counting, unless
/// [`Budgets::with_reservation_margin`] says otherwise.
const RESERVATION_MARGIN: Duration = Duration::from_secs(60);

/// The budgets part of the config (`budgets:`).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetsConfig {
    pub specs: Vec<BudgetSpec>,
    pub on_store_error: OnStoreError,
    /// The bound on each check against the store (Redis).
    pub store_timeout: Duration,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            specs: Vec::new(),
            on_store_error: OnStoreError::Allow,
            store_timeout: Duration::from_secs(1),
        }
    }
}

impl BudgetsConfig {
    /// Whether any budget is configured.
    pub fn any(&self) -> bool {
        !self.specs.is_empty()
    }
}

/// Where the budgets' time comes from.
#[derive(Debug, Clone, Copy)]
enum Clock {
    System,
    /// From this wall time, advancing with tokio's clock (which tests pause and advance).
    Follow {
        wall: Timestamp,
        at: tokio::time::Instant,
    },
}

impl Clock {
    fn now(&self) -> Timestamp {
        match *self {
            Self::System => Timestamp::now(),
            Self::Follow { wall, at } => jiff::SignedDuration::try_from(at.elapsed())
                .ok()
                .and_then(|d| wall.checked_add(d).ok())
                .unwrap_or(wall),
        }
    }
}

/// Where the counters live.
#[derive(Debug)]
enum Store {
    Memory(Expiry),
    #[cfg(feature = "redis")]
    Redis(redis::RedisCounters),
}

/// A reservation that holds nothing: no budget applied, or the store was down.
#[derive(Debug)]
struct Nothing;

/// Spend budgets. See the module docs.
#[derive(Debug)]
pub struct Budgets {
    /// Read once per call without a lock; replaced whole by `set` and `remove`.
    table: ArcSwap<Table>,
    /// Serialises `set` and `remove` (never taken by calls).
    writer: Mutex<()>,
    store: Store,
    prices: Prices,
    clock: Clock,
    #[cfg_attr(
        not(feature = "redis"),
        expect(
            dead_code,
            reason = "only the Redis backend has a store to bound or fail"
        )
    )]
    settings: BudgetsConfig,
    /// A call's deadline when its context sets none (`defaults.request_timeout`).
    call_timeout: Duration,
    /// How long a reservation outlives its call's deadline.
    margin: Duration,
    health: Arc<Health>,
}

impl Budgets {
    /// Budgets counted in this process, with the config's specs, prices and groups.
    pub fn in_memory(config: &Config) -> Result<Self> {
        Self::with_store(config, Store::Memory(Expiry::new()), "memory")
    }

    /// Budgets counted in Redis when the config has `redis:` (shared with every instance
    /// using the same Redis and prefix), else in memory.
    ///
    /// Fails only on a Redis URL that cannot be used (or without the `redis` feature). A
    /// Redis that does not answer yet is not an error: the budgets start unhealthy, apply
    /// `budgets.on_store_error`, and connect once Redis is back.
    pub async fn new(config: &Config) -> Result<Self> {
        let Some(redis) = config.redis.as_ref() else {
            return Self::in_memory(config);
        };
        #[cfg(not(feature = "redis"))]
        {
            let _ = redis;
            Err(Error::config(
                "redis",
                "weir was built without the `redis` feature; rebuild it with `--features redis` \
                 (on by default) to keep budgets in Redis, or remove `redis:` to keep them in \
                 memory",
            ))
        }
        #[cfg(feature = "redis")]
        {
            let timeout = config.budgets.store_timeout;
            let counters = redis::RedisCounters::open(redis, timeout)?;
            let budgets = Self::with_store(config, Store::Redis(counters.clone()), "redis")?;
            // The first connection gets a little longer than a check: it includes the
            // handshake and loading the script.
            let connect = timeout.max(Duration::from_secs(2));
            match tokio::time::timeout(connect, counters.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => budgets.health.failed(e),
                Err(_) => budgets.health.failed(format!(
                    "Redis for budgets did not answer within {connect:?}"
                )),
            }
            Ok(budgets)
        }
    }

    fn with_store(config: &Config, store: Store, backend: &'static str) -> Result<Self> {
        let clock = Clock::System;
        let now = clock.now();
        let mut slots = Vec::with_capacity(config.budgets.specs.len());
        for spec in &config.budgets.specs {
            spec.validate().map_err(Error::invalid_request)?;
            slots.push(Arc::new(Slot::new(spec.clone(), now, None)?));
        }
        Ok(Self {
            table: ArcSwap::from_pointee(Table::new(slots)),
            writer: Mutex::new(()),
            store,
            prices: Prices::new(config),
            clock,
            settings: config.budgets.clone(),
            call_timeout: config.defaults.request_timeout,
            margin: RESERVATION_MARGIN,
            health: Arc::new(Health::new(backend, "budgets")),
        })
    }

    /// Count time from `now` on, advancing with tokio's clock instead of the system's (for
    /// tests, which pause and advance tokio's clock, and simulations). Counters start again
    /// at zero.
    pub fn starting_at(mut self, now: Timestamp) -> Result<Self> {
        self.clock = Clock::Follow {
            wall: now,
            at: tokio::time::Instant::now(),
        };
        let slots = self
            .table
            .load()
            .slots()
            .iter()
            .map(|s| Slot::new(s.spec.clone(), now, None).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        self.table = ArcSwap::from_pointee(Table::new(slots));
        Ok(self)
    }

    /// How long a reservation outlives its call's deadline before it stops counting (60 s
    /// by default): the time a call that is still settling gets before its reservation is
    /// presumed lost with its gateway instance.
    pub fn with_reservation_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The time the budgets go by.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Add a budget, or replace the one with the same id. A replacement with the same
    /// period and time zone keeps the spend counted so far (a new limit applies to it);
    /// otherwise counting starts again.
    pub fn set(&self, spec: BudgetSpec) -> Result<()> {
        spec.validate().map_err(Error::invalid_request)?;
        let _writing = self.writer.lock().map_err(|_| poisoned())?;
        let table = self.table.load_full();
        let previous = table.get(&spec.id);
        let slot = Arc::new(Slot::new(spec, self.clock.now(), previous.map(|s| &**s))?);
        let mut slots: Vec<Arc<Slot>> = table
            .slots()
            .iter()
            .filter(|s| s.spec.id != slot.spec.id)
            .cloned()
            .collect();
        slots.push(slot);
        self.table.store(Arc::new(Table::new(slots)));
        Ok(())
    }

    /// Remove a budget; `false` when there was none with this id.
    pub fn remove(&self, id: &str) -> Result<bool> {
        let _writing = self.writer.lock().map_err(|_| poisoned())?;
        let table = self.table.load_full();
        if table.get(id).is_none() {
            return Ok(false);
        }
        let slots = table
            .slots()
            .iter()
            .filter(|s| s.spec.id != id)
            .cloned()
            .collect();
        self.table.store(Arc::new(Table::new(slots)));
        Ok(true)
    }

    /// Every budget, in the order they were added.
    pub fn list(&self) -> Vec<BudgetSpec> {
        self.table
            .load()
            .slots()
            .iter()
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Its backend, whether its store answers, and the store's failures.
    pub fn health(&self) -> LimitsHealth {
        self.health.snapshot()
    }

    /// Start budget `id`'s period at `period_start` from `spent` (what the durable ledger
    /// recorded before this process started counting). Applied only when `period_start` is
    /// the budget's current period (`false` otherwise: other periods never count again). In
    /// memory it replaces an earlier seed; in Redis it is set only when the period has no
    /// counter yet (another instance seeded it, or calls already counted there).
    pub async fn seed(&self, id: &str, period_start: Timestamp, spent: Decimal) -> Result<bool> {
        let slot = self.table.load().get(id).cloned().ok_or_else(|| {
            Error::invalid_request(format!(
                "no budget `{id}` to seed; add it first (budgets: in the config, or Budgets::set)"
            ))
        })?;
        let units = money::to_units_nearest(spent).ok_or_else(|| {
            Error::invalid_request(format!(
                "cannot seed budget `{id}` with {spent} dollars: give an amount from 0 to {}",
                money::MAX_USD
            ))
        })?;
        let counter = slot.current(self.clock.now());
        if counter.start != period_start {
            return Ok(false);
        }
        match &self.store {
            Store::Memory(_) => {
                counter.seed(units);
                Ok(true)
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                let (start, reset) = (
                    counter.start.as_millisecond(),
                    counter.reset.as_millisecond(),
                );
                self.bounded(redis.seed(id, start, reset, units), "seeding a budget")
                    .await
            }
        }
    }

    /// Where every budget stands now (for Redis, one round trip per budget).
    pub async fn status(&self) -> Result<Vec<BudgetStatus>> {
        let now = self.clock.now();
        let table = self.table.load_full();
        let mut out = Vec::with_capacity(table.slots().len());
        for slot in table.slots() {
            let counter = slot.current(now);
            let (spent, reserved) = match &self.store {
                Store::Memory(expiry) => {
                    expiry.sweep(now.as_millisecond(), true);
                    counter.read()
                }
                #[cfg(feature = "redis")]
                Store::Redis(redis) => {
                    let start = counter.start.as_millisecond();
                    self.bounded(redis.read(&slot.spec.id, start), "reading a budget")
                        .await?
                }
            };
            out.push(BudgetStatus::new(slot, &counter, now, spent, reserved));
        }
        Ok(out)
    }

    /// Run a store operation within `budgets.store_timeout`, recording its health.
    #[cfg(feature = "redis")]
    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = std::result::Result<T, String>>,
        what: &str,
    ) -> Result<T> {
        let timeout = self.settings.store_timeout;
        let outcome = match tokio::time::timeout(timeout, op).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "{what} on Redis timed out after {timeout:?} (budgets.store_timeout)"
            )),
        };
        match outcome {
            Ok(v) => {
                self.health.succeeded();
                Ok(v)
            }
            Err(e) => {
                self.health.failed(e.clone());
                Err(unavailable(&e))
            }
        }
    }

    /// The worst-case cost of a call, in nanodollars.
    fn worst_case(&self, request: &AdmissionRequest<'_>) -> i64 {
        let model = request.context.model.as_str();
        match self.prices.rate(model) {
            Some(rate) => rate.cost_units(request.input_tokens, request.max_output_tokens),
            None => {
                tracing::debug!(
                    model,
                    "no price is known for this model: budgets reserve nothing for the call"
                );
                0
            }
        }
    }

    /// How long a reservation counts: the call's timeout plus a margin.
    fn lifetime(&self, request: &AdmissionRequest<'_>) -> Duration {
        request
            .context
            .timeout
            .unwrap_or(self.call_timeout)
            .saturating_add(self.margin)
    }

    fn reserve_memory(
        &self,
        expiry: &Expiry,
        slots: &[Arc<Slot>],
        amount: i64,
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<Admitted> {
        let now_ms = now.as_millisecond();
        expiry.sweep(now_ms, false);
        let mut parts: Vec<Part> = Vec::with_capacity(slots.len());
        let mut befores = Vec::with_capacity(slots.len());
        for slot in slots {
            let counter = slot.current(now);
            match counter.take(amount, slot.hard_limit()) {
                Ok(before) => {
                    befores.push(before);
                    parts.push(Part { counter, amount });
                }
                Err(_) => {
                    for p in &parts {
                        p.counter.give_back(p.amount);
                    }
                    let (spent, reserved) = counter.read();
                    return Err(refusal(slot, &counter, spent, reserved, amount));
                }
            }
        }
        let mut warnings = Vec::new();
        for ((slot, part), before) in slots.iter().zip(&parts).zip(befores) {
            for index in slot.crossed(before, before.saturating_add(amount)) {
                if part.counter.first_warning(index) {
                    warnings.push(slot.warning(index, &part.counter));
                }
            }
        }
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        let hold = Arc::new(Hold::new(parts, now_ms.saturating_add(lifetime_ms)));
        expiry.watch(&hold);
        let mut admitted = Admitted::new(Box::new(hold));
        admitted.warnings = warnings;
        Ok(admitted)
    }

    #[cfg(feature = "redis")]
    async fn reserve_redis(
        &self,
        redis: &redis::RedisCounters,
        slots: &[Arc<Slot>],
        amount: i64,
        now: Timestamp,
        lifetime: Duration,
    ) -> Result<Admitted> {
        if self.health.paused() {
            return self.store_unavailable();
        }
        let counters: Vec<Arc<Counter>> = slots.iter().map(|s| s.current(now)).collect();
        let asks: Vec<redis::Ask<'_>> = slots
            .iter()
            .zip(&counters)
            .map(|(slot, counter)| redis::Ask {
                id: &slot.spec.id,
                period_start_ms: counter.start.as_millisecond(),
                reset_ms: counter.reset.as_millisecond(),
                limit: slot.hard_limit(),
                amount,
                thresholds: slot.threshold_units(),
            })
            .collect();
        let timeout = self.settings.store_timeout;
        let outcome = match tokio::time::timeout(timeout, redis.reserve(&asks, lifetime)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the budget check on Redis timed out after {timeout:?} (budgets.store_timeout)"
            )),
        };
        match outcome {
            Ok((redis::Answer::Taken(crossings), held)) => {
                self.health.succeeded();
                let mut warnings = Vec::new();
                for ((slot, counter), (bits, _)) in slots.iter().zip(&counters).zip(crossings) {
                    for index in 0..slot.threshold_units().len().min(64) {
                        if bits & (1 << index) != 0 {
                            warnings.push(slot.warning(index, counter));
                        }
                    }
                }
                let mut admitted = Admitted::new(Box::new(held));
                admitted.warnings = warnings;
                Ok(admitted)
            }
            Ok((
                redis::Answer::Refused {
                    index,
                    spent,
                    reserved,
                },
                _,
            )) => {
                self.health.succeeded();
                match (slots.get(index), counters.get(index)) {
                    (Some(slot), Some(counter)) => {
                        Err(refusal(slot, counter, spent, reserved, amount))
                    }
                    _ => Err(unavailable("the budget store answered an unknown budget")),
                }
            }
            Err(e) => {
                self.health.failed(e);
                self.store_unavailable()
            }
        }
    }

    /// The store failed or is paused: `budgets.on_store_error` decides.
    #[cfg(feature = "redis")]
    fn store_unavailable(&self) -> Result<Admitted> {
        match self.settings.on_store_error {
            OnStoreError::Allow => Ok(Admitted::new(Box::new(Nothing))),
            OnStoreError::Deny => {
                let cause = self
                    .health
                    .last_error()
                    .unwrap_or_else(|| "the budget store is not answering".to_owned());
                Err(unavailable(&cause))
            }
        }
    }

    /// Settle or release a Redis reservation off the request path (settling runs in a
    /// call's end, which may be a stream's drop). One try: a settlement that fails leaves
    /// the reservation to expire, and the call's real cost uncounted in Redis (the durable
    /// ledger still has it, for the next seed).
    #[cfg(feature = "redis")]
    fn settle_later(
        &self,
        redis: &redis::RedisCounters,
        held: redis::RedisHeld,
        real: Option<i64>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("budgets not settled: no async runtime to reach Redis from");
            return;
        };
        let (redis, health, timeout) = (
            redis.clone(),
            Arc::clone(&self.health),
            self.settings.store_timeout,
        );
        runtime.spawn(async move {
            match tokio::time::timeout(timeout, redis.settle(&held, real)).await {
                Ok(Ok(())) => health.succeeded(),
                Ok(Err(e)) => health.failed(e),
                Err(_) => health.failed(format!(
                    "settling budgets on Redis timed out after {timeout:?}"
                )),
            }
        });
    }
}

#[async_trait]
impl Admission for Budgets {
    async fn reserve(&self, request: &AdmissionRequest<'_>) -> Result<Admitted> {
        let slots = self.table.load().matching(request.context);
        if slots.is_empty() {
            return Ok(Admitted::new(Box::new(Nothing)));
        }
        let amount = self.worst_case(request);
        let now = self.clock.now();
        let lifetime = self.lifetime(request);
        match &self.store {
            Store::Memory(expiry) => self.reserve_memory(expiry, &slots, amount, now, lifetime),
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                self.reserve_redis(redis, &slots, amount, now, lifetime)
                    .await
            }
        }
    }

    fn settle(&self, reservation: Reservation, event: &UsageEvent) {
        // Only money spent upstream counts: a cache hit or a shared answer spent none.
        let real = if event.cache.is_free() {
            0
        } else {
            event
                .cost_usd
                .and_then(money::to_units_nearest)
                .unwrap_or(0)
        };
        match &self.store {
            Store::Memory(_) => {
                if let Some(hold) = reservation.downcast_ref::<Arc<Hold>>() {
                    hold.settle(real);
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                if let Ok(held) = reservation.downcast::<redis::RedisHeld>() {
                    self.settle_later(redis, *held, Some(real));
                }
            }
        }
    }

    fn release(&self, reservation: Reservation) {
        match &self.store {
            Store::Memory(_) => {
                if let Some(hold) = reservation.downcast_ref::<Arc<Hold>>() {
                    hold.release();
                }
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                if let Ok(held) = reservation.downcast::<redis::RedisHeld>() {
                    self.settle_later(redis, *held, None);
                }
            }
        }
    }
}

/// The 402 for a call a hard budget refuses.
fn refusal(slot: &Slot, counter: &Counter, spent: i64, reserved: i64, amount: i64) -> Error {
    let spec = &slot.spec;
    let in_flight = if reserved > 0 {
        format!(
            " (and ${} reserved by calls in flight)",
            money::to_usd(reserved)
        )
    } else {
        String::new()
    };
    Error::Rejected {
        status: 402,
        code: "budget_exceeded",
        message: format!(
            "budget `{}` ({}, {} ${} {}) exceeded: ${} spent so far this period{in_flight}, \
             and this call could cost up to ${}; it resets at {}. Raise the budget's limit, \
             lower max_tokens, or wait for the reset",
            spec.id,
            spec.scope,
            spec.mode.as_str(),
            spec.limit_usd,
            spec.period,
            money::to_usd(spent),
            money::to_usd(amount),
            counter.reset,
        ),
        retry_after: None,
        quota: None,
    }
}

/// The 503 when the budget store cannot be reached.
#[cfg(feature = "redis")]
fn unavailable(cause: &str) -> Error {
    Error::Rejected {
        status: 503,
        code: "budgets_unavailable",
        message: format!(
            "budgets unavailable: {cause}; calls are refused until the budget store answers \
             again (budgets.on_store_error: deny): check that Redis is running and reachable"
        ),
        retry_after: Some(crate::limits::health::RETRY_STORE_AFTER),
        quota: None,
    }
}

fn poisoned() -> Error {
    Error::invalid_request(
        "the budget table is unusable: an earlier change panicked; restart the gateway",
    )
}

#[cfg(test)]
mod tests;
