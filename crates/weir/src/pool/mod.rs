//! A provider's API keys as one pool, admitting requests within each key's upstream limits.
//!
//! Every key has up to four token buckets: requests, input tokens and output tokens per minute
//! (configured in [`KeyLimits`], or learned from the upstream's headers), and a combined tokens
//! window learned from OpenAI-style `x-ratelimit-*-tokens` headers. Each bucket holds the
//! per-minute limit and refills continuously at `limit / 60` per second on tokio's clock.
//!
//! **Reserve and settle.** [`KeyPool::acquire`] takes the caller's estimate ([`Demand`]: input
//! counted with the tokenizer, output from `max_tokens`), picks the key with the most headroom
//! left after it, reserves it there and returns a [`Lease`]. [`Lease::settle`] trues the
//! reservation up to the real usage; a lease dropped unsettled keeps its reservation spent.
//! Buckets may go into debt, so an underestimate slows later admissions instead of being lost.
//!
//! **What "within the limit" means.** A token bucket admits at most `limit + limit × w / 60`
//! in any window of `w` seconds: a full burst, then the refill. That is the contract OpenAI and
//! Anthropic meter with, so it is the one weir keeps; it is not "at most `limit` in every
//! 60 s window", which would need a sliding log and would leave capacity unused.
//!
//! **Learning.** [`KeyPool::observe`] takes each response's [`RateLimitSnapshot`]: limits are
//! adopted where none is configured, and the local level is lowered to the upstream's
//! `remaining` (another client may share the key) and refills no faster than the upstream's
//! reset says. [`KeyPool::mark_limited`] benches a key after a 429; the engine then retries
//! with that key in `exclude`.
//!
//! **Queueing.** When no key has room, the caller waits in a queue ordered by priority (higher
//! first), then arrival. Service is strictly in that order: only the head is served or woken —
//! by a settle, a lease drop, a waiter leaving, new headers, or one timer set for when the
//! head's demand will have refilled (or its key's 429 expired). No busy loops and no herd, and a
//! large request at the head is not starved by small ones behind it; the price is that a head
//! which excluded a key (a retry after a 429) holds the line while other keys may have room,
//! which lasts at most one refill and only on retries. A waiter that times out or is dropped
//! leaves the queue and hands the head role on. After `acquire_timeout` or the caller's
//! deadline, whichever comes first, it gets [`Error::PoolExhausted`] with a `retry_after` that
//! counts the queue ahead of it.
//!
//! **Demands that can never fit** (more tokens than any key's whole per-minute capacity) fail
//! at once with [`Error::InvalidRequest`] naming `max_tokens` or `messages`: no wait or retry
//! can help, only a smaller request. A demand that fits only keys the caller excluded gets
//! `PoolExhausted` with the time those keys expect to have room; a pool whose every key is
//! limited to zero gets `PoolExhausted` without a retry time.
//!
//! **Concurrency.** One `std::sync::Mutex` guards all state; critical sections are a few
//! comparisons per key and never span an `.await`. Grants are handed over under that lock
//! through a oneshot channel, so a waiter that gives up either finds itself still queued and
//! leaves, or finds its lease already sent and takes it (or, when dropped, refunds it whole).
//!
//! ```
//! use std::time::Duration;
//! use weir::pool::{Demand, KeyLimits, KeyPool, PoolConfig, PooledKey};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let key = PooledKey {
//!     id: "openai#0".into(),
//!     secret: Some("sk-test".into()),
//!     limits: KeyLimits { requests_per_minute: Some(500), ..KeyLimits::default() },
//! };
//! let pool = KeyPool::new("openai", vec![key], PoolConfig::default());
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
//! let lease = pool.acquire(Demand::new(1200, 256), 0, deadline, &[]).await?;
//! assert_eq!(lease.key_id(), "openai#0");
//! // ... send the request with lease.secret(), then report what it really used:
//! lease.settle(1187, 97);
//! # Ok::<(), weir::Error>(())
//! # }).unwrap();
//! ```

mod bucket;
mod lease;
mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

pub use lease::Lease;

use crate::config::ApiKey;
use crate::error::Error;
use crate::provider::RateLimitSnapshot;
use crate::provider::ratelimit::RateLimitWindow;
use state::{Dim, Inner, KeyMeta, QueuePos, Waiter, after};

/// A key's upstream limits per minute; `None` is unlimited until learned from headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u32>,
    pub input_tokens_per_minute: Option<u64>,
    pub output_tokens_per_minute: Option<u64>,
}

/// How the pool queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// The longest a request waits for capacity (the caller's deadline may cut it shorter).
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// One key of a pool.
#[derive(Clone)]
pub struct PooledKey {
    /// A stable, unique, non-secret label (`openai#0`).
    pub id: String,
    /// `None` for a server that needs no key.
    pub secret: Option<SecretString>,
    pub limits: KeyLimits,
}

impl fmt::Debug for PooledKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledKey")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("limits", &self.limits)
            .finish()
    }
}

impl From<ApiKey> for PooledKey {
    /// A configured key with its configured limits; limits it leaves unset are learned from
    /// the upstream's headers.
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            secret: Some(key.secret),
            limits: key.limits,
        }
    }
}

/// What a request is expected to take: input tokens (counted) and output tokens (its
/// `max_tokens`). Every request also takes one from the requests-per-minute budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Demand {
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
        }
    }
}

/// One key's state, for `/status`. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyStatus {
    pub key_id: String,
    pub in_flight: u32,
    /// Configured limits, or the upstream's where none were configured.
    pub limits: KeyLimits,
    /// A combined (input + output) tokens-per-minute window learned from the upstream.
    pub tokens_per_minute: Option<u64>,
    /// Rounded down; negative while the key repays usage beyond its reservations.
    pub remaining_requests: Option<i64>,
    pub remaining_input_tokens: Option<i64>,
    pub remaining_output_tokens: Option<i64>,
    pub remaining_tokens: Option<i64>,
    /// Until every limited bucket is full again; `None` if nothing is limited.
    pub seconds_until_full: Option<f64>,
    /// Benched by an upstream 429 or Retry-After.
    pub limited_now: bool,
    pub limited_for_secs: Option<f64>,
    /// Requests waiting in the pool (the same for every key of it).
    pub queue_len: usize,
}

/// A provider's keys, shared by all its requests. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct KeyPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.inner.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyPool")
            .field("name", &self.inner.name)
            .field("keys", &ids)
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl KeyPool {
    /// A pool of `keys`; ids should be unique (observe and exclude match the first).
    ///
    /// With no keys (a local server) the pool has one keyless, unlimited key named
    /// `{name}#keyless`, so callers always get a lease and the same code path.
    pub fn new(name: &str, keys: Vec<PooledKey>, cfg: PoolConfig) -> Self {
        let keys = if keys.is_empty() {
            vec![PooledKey {
                id: format!("{name}#keyless"),
                secret: None,
                limits: KeyLimits::default(),
            }]
        } else {
            keys
        };
        let limits: Vec<KeyLimits> = keys.iter().map(|k| k.limits).collect();
        let metas = keys
            .into_iter()
            .map(|k| KeyMeta {
                id: k.id,
                secret: k.secret,
            })
            .collect();
        Self {
            inner: Arc::new(Inner::new(name, metas, &limits, cfg)),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether a key limits tokens, so reservations need an exact input count (see
    /// `Client::demand`); otherwise a byte-based estimate will do.
    pub fn counts_tokens(&self) -> bool {
        self.inner.counts_tokens.load(Ordering::Relaxed)
    }

    /// Reserve `demand` on the key with the most headroom, waiting in line if none has room.
    ///
    /// `priority`: higher is served first; equal priorities in arrival order. `deadline`: the
    /// request's own (the wait also ends after `acquire_timeout`). `exclude`: key ids not to
    /// use (keys that just answered 429 for this request).
    ///
    /// Errors: `PoolExhausted` when the wait ends (with the expected time until capacity) or
    /// when only excluded keys could serve the demand; `InvalidRequest` when no key could ever
    /// admit it. Cancel-safe: dropping the future leaves the queue cleanly.
    pub async fn acquire(
        &self,
        demand: Demand,
        priority: u8,
        deadline: Instant,
        exclude: &[String],
    ) -> Result<Lease, Error> {
        let inner = &self.inner;
        let allowed: Vec<bool> = inner
            .keys
            .iter()
            .map(|k| !exclude.contains(&k.id))
            .collect();
        let (pos, mut wake_at, give_up_at, rx, wake) = {
            let (mut st, now) = inner.lock_now();
            // An unrepresentable timeout (`Duration::MAX`) leaves only the deadline.
            let give_up_at = now
                .checked_add(inner.cfg.acquire_timeout)
                .map_or(deadline, |t| t.min(deadline));
            st.check(&inner.name, demand, &allowed, now)?;
            // Nobody of this priority or higher waits, so taking capacity now jumps no one.
            if !st.waiting_ahead(priority)
                && let Some(k) = st.pick(demand, &allowed, now)
            {
                if st.reserve(k, demand, now) {
                    inner.warm_tokenizer();
                }
                return Ok(Lease::new(Arc::clone(inner), k, demand));
            }
            if now >= give_up_at {
                let ahead_of = (std::cmp::Reverse(priority), u64::MAX);
                let wait = st.estimate_wait(demand, &allowed, ahead_of, now);
                return Err(inner.exhausted(wait));
            }
            // Only a request that has to wait pays for its channel and wake-up.
            let wake = Arc::new(Notify::new());
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter {
                demand,
                allowed,
                tx,
                wake: Arc::clone(&wake),
                wake_at: None,
            };
            let pos = st.enqueue(priority, waiter);
            // Arms our timer if we are the head (or serves us, if the head moved on).
            inner.dispatch(&mut st, now);
            let wake_at = st.queue.get(&pos).and_then(|w| w.wake_at);
            (pos, wake_at, give_up_at, rx, wake)
        };
        let mut guard = WaitGuard {
            inner,
            pos,
            rx,
            done: false,
        };
        loop {
            tokio::select! {
                biased;
                res = &mut guard.rx => {
                    guard.done = true;
                    // The sender is only dropped after sending; this is defensive.
                    return res.unwrap_or_else(|_| Err(inner.exhausted(None)));
                }
                () = wake.notified() => {
                    wake_at = inner.lock().queue.get(&pos).and_then(|w| w.wake_at);
                }
                () = sleep_until_some(wake_at) => {
                    let (mut st, now) = inner.lock_now();
                    inner.dispatch(&mut st, now);
                    wake_at = st.queue.get(&pos).and_then(|w| w.wake_at);
                }
                () = tokio::time::sleep_until(give_up_at) => return guard.give_up(),
            }
        }
    }

    /// Take in a response's rate-limit headers for `key_id` (unknown ids are ignored).
    ///
    /// Each window (requests; input and output tokens; OpenAI's combined tokens, used only
    /// when the split windows are absent, because Anthropic's combined one is just the
    /// tighter of its split ones) adopts the upstream limit where none is configured, and
    /// lowers the local level to the upstream's `remaining`, refilling no faster than its
    /// reset. A `retry_after` in the snapshot benches the key like [`Self::mark_limited`].
    pub fn observe(&self, key_id: &str, snap: &RateLimitSnapshot) {
        let Some(k) = self.inner.index_of(key_id) else {
            return;
        };
        // Resets count from when the headers were read; take off the time since.
        let age = snap
            .observed_at
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let window = |w: &RateLimitWindow| {
            (
                w.limit,
                w.remaining,
                w.reset_after.map(|d| d.saturating_sub(age)),
            )
        };
        let split = snap.input_tokens.is_some() || snap.output_tokens.is_some();
        let combined = if split { &None } else { &snap.tokens };
        let windows = [
            (Dim::Requests, &snap.requests),
            (Dim::Input, &snap.input_tokens),
            (Dim::Output, &snap.output_tokens),
            (Dim::Tokens, combined),
        ];
        let learns_tokens = windows[1..]
            .iter()
            .any(|(_, w)| w.as_ref().is_some_and(|w| w.limit.is_some()));
        // A plain load first: this runs on every response, and a read-modify-write would take
        // the cache line exclusively each time.
        if learns_tokens && !self.inner.counts_tokens.load(Ordering::Relaxed) {
            self.inner.counts_tokens.store(true, Ordering::Relaxed);
        }
        let half_used = windows[1..].iter().any(|(_, w)| {
            w.as_ref().is_some_and(|w| match (w.limit, w.remaining) {
                (Some(limit), Some(remaining)) => remaining < limit / 2,
                _ => false,
            })
        });
        if half_used {
            self.inner.warm_tokenizer();
        }
        let (mut st, now) = self.inner.lock_now();
        for (dim, w) in windows {
            if let Some(w) = w {
                st.observe(k, dim, window(w), now);
            }
        }
        if let Some(wait) = snap.retry_after {
            st.limit_for(k, after(now, wait.saturating_sub(age)));
        }
        // Lower levels can move the head's timer; a new limit can make it impossible.
        self.inner.dispatch(&mut st, now);
    }

    /// Bench `key_id` for `for_how_long` after an upstream 429: it takes no requests until
    /// then (an existing longer bench stays). Waits past an hour are cut to an hour.
    pub fn mark_limited(&self, key_id: &str, for_how_long: Duration) {
        let Some(k) = self.inner.index_of(key_id) else {
            return;
        };
        let (mut st, now) = self.inner.lock_now();
        st.limit_for(k, after(now, for_how_long));
        self.inner.dispatch(&mut st, now);
    }

    /// Every key's state, in configuration order.
    pub fn status(&self) -> Vec<KeyStatus> {
        let (st, now) = self.inner.lock_now();
        st.status(&self.inner.keys, now)
    }

    /// Requests waiting for capacity.
    pub fn queue_len(&self) -> usize {
        self.inner.lock().queue.len()
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A queued waiter's place, removed from the queue however the wait ends.
struct WaitGuard<'a> {
    inner: &'a Arc<Inner>,
    pos: QueuePos,
    rx: oneshot::Receiver<Result<Lease, Error>>,
    /// The outcome was taken; nothing left to clean up.
    done: bool,
}

impl WaitGuard<'_> {
    /// The wait timed out: leave the queue with an estimate of when to come back, unless a
    /// lease was granted in the same instant, which is then taken rather than wasted.
    fn give_up(&mut self) -> Result<Lease, Error> {
        self.done = true;
        {
            let (mut st, now) = self.inner.lock_now();
            if let Some(w) = st.queue.get(&self.pos) {
                let wait = st.estimate_wait(w.demand, &w.allowed, self.pos, now);
                st.queue.remove(&self.pos);
                // If this was the head, the next one needs serving or a timer.
                self.inner.dispatch(&mut st, now);
                return Err(self.inner.exhausted(wait));
            }
        }
        // Not queued: the grant (or the error) was sent under the lock before we took it.
        self.rx
            .try_recv()
            .unwrap_or_else(|_| Err(self.inner.exhausted(None)))
    }
}

impl Drop for WaitGuard<'_> {
    /// The acquiring future was dropped mid-wait.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let (mut st, now) = self.inner.lock_now();
            if st.queue.remove(&self.pos).is_some() {
                self.inner.dispatch(&mut st, now);
                return;
            }
        }
        // Granted but never seen: nothing was sent with it, so refund it whole.
        if let Ok(Ok(lease)) = self.rx.try_recv() {
            lease.cancel();
        }
    }
}
