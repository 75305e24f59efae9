//! The pool's shared state and the decisions made under its lock: which key, whether a demand
//! can ever be served, who is next in the queue and when to wake them.
//!
//! Everything here runs with the pool's mutex held, so it is plain synchronous code: no
//! `.await`, no allocation beyond a queue entry, O(keys) per decision.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::bucket::Bucket;
use super::{Demand, KeyLimits, KeyStatus, Lease, PoolConfig};
use crate::error::Error;

/// Dimensions of a key, in the order of [`amounts`].
pub(super) const DIMS: usize = 4;
const REQUESTS: usize = 0;
const INPUT: usize = 1;
const OUTPUT: usize = 2;
/// A combined tokens window (OpenAI's `x-ratelimit-*-tokens`), learned from headers only.
/// OpenAI counts input plus `max_tokens` against it, so its demand is input + output.
const TOKENS: usize = 3;

/// The longest a timer sleeps before the head looks again, and the longest wait reported.
/// Waits past it come from huge debts or upstream resets; re-checking hourly costs nothing.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// What a demand costs in each dimension.
pub(super) fn amounts(d: Demand) -> [u64; DIMS] {
    [
        1,
        d.input_tokens,
        d.output_tokens,
        d.input_tokens.saturating_add(d.output_tokens),
    ]
}

/// `now + d`, capped at [`MAX_WAIT`] so it can neither overflow nor park a timer for days.
pub(super) fn after(now: Instant, d: Duration) -> Instant {
    now + d.min(MAX_WAIT)
}

/// A timer delay: whole milliseconds rounded up (tokio's timer resolution; rounding down
/// would wake a waiter just short of its refill) and at least one, so a head whose demand is
/// "ready now" by float rounding but was refused can never spin.
fn timer_delay(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000).max(1);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)).min(MAX_WAIT)
}

/// The non-secret and secret parts of a key, fixed for the pool's life (outside the lock).
pub(super) struct KeyMeta {
    pub(super) id: String,
    pub(super) secret: Option<SecretString>,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) keys: Vec<KeyMeta>,
    pub(super) cfg: PoolConfig,
    /// Whether any key limits input or total tokens (configured, or learned from headers):
    /// only then do requests need an exact token count, which costs a tokenizer pass.
    pub(super) counts_tokens: std::sync::atomic::AtomicBool,
    /// Whether this pool started the tokenizer's warm-up.
    pub(super) warming: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
}

impl Inner {
    /// Requests reserve an upper bound on their input and are counted exactly only when a
    /// key has no room for the bound. Once a key's token window is half used that may happen
    /// soon: build the tokenizer (~50 MiB, ~0.2 s) off the hot path, once. A pool far from its
    /// limits never needs it.
    pub(super) fn warm_tokenizer(&self) {
        if !self
            .warming
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            std::thread::spawn(crate::tokens::warm_up);
        }
    }

    pub(super) fn new(
        name: &str,
        keys: Vec<KeyMeta>,
        limits: &[KeyLimits],
        cfg: PoolConfig,
    ) -> Self {
        let now = Instant::now();
        let counts_tokens = limits
            .iter()
            .any(|l| l.input_tokens_per_minute.is_some() || l.output_tokens_per_minute.is_some());
        Self {
            name: name.to_owned(),
            keys,
            cfg,
            counts_tokens: std::sync::atomic::AtomicBool::new(counts_tokens),
            warming: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State {
                keys: limits.iter().map(|l| KeyState::new(l, now)).collect(),
                queue: BTreeMap::new(),
                next_seq: 0,
                cursor: 0,
            }),
        }
    }

    /// The state. A poisoned lock is recovered: every critical section leaves the state
    /// consistent between statements that can fail, and a pool that refuses all requests
    /// after one unrelated panic would be worse than the panic.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state and the time, read in that order: with `now` taken under the lock, every
    /// critical section sees time move forward, so a bucket never sees a refill "from the
    /// past" computed by a thread that read the clock before another one took the lock.
    pub(super) fn lock_now(&self) -> (MutexGuard<'_, State>, Instant) {
        let st = self.lock();
        (st, Instant::now())
    }

    pub(super) fn index_of(&self, key_id: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.id == key_id)
    }

    pub(super) fn exhausted(&self, retry_after: Option<Duration>) -> Error {
        Error::PoolExhausted {
            pool: self.name.clone(),
            retry_after,
        }
    }

    /// Serve the queue from its head for as long as the head can be served, then arm the
    /// head's timer for when its demand is expected to fit.
    ///
    /// Called after every change that could free capacity or change the head (settle, lease
    /// drop, a waiter leaving, observe, mark_limited) and when the head's timer fires. Only
    /// the head is ever woken, so there is no thundering herd; strict order means a large
    /// demand at the head is not starved by small ones behind it.
    pub(super) fn dispatch(self: &Arc<Self>, st: &mut State, now: Instant) {
        loop {
            let Some((&pos, head)) = st.queue.first_key_value() else {
                return;
            };
            let demand = head.demand;
            if let Err(err) = st.check(&self.name, demand, &head.allowed, now) {
                // Limits learned while it waited made the demand impossible: say so now.
                if let Some(w) = st.queue.remove(&pos) {
                    let _ = w.tx.send(Err(err));
                }
                continue;
            }
            let Some(k) = st.pick(demand, &head.allowed, now) else {
                let ready = st
                    .ready_in(demand, &head.allowed, now)
                    .map(|d| after(now, timer_delay(d)));
                if let Some(w) = st.queue.get_mut(&pos)
                    && w.wake_at != ready
                {
                    w.wake_at = ready;
                    w.wake.notify_one();
                }
                return;
            };
            let Some(w) = st.queue.remove(&pos) else {
                return;
            };
            if st.reserve(k, demand, now) {
                self.warm_tokenizer();
            }
            if let Err(Ok(lease)) = w.tx.send(Ok(Lease::new(Arc::clone(self), k, demand))) {
                // The waiter vanished without leaving the queue (it cannot, but if it did):
                // nothing was sent upstream, so give everything back. Disarm first: the
                // lease's own drop would take the lock held here.
                lease.disarm();
                st.cancel(k, demand, now);
            }
        }
    }
}

/// A waiter's place: higher priority first, then arrival order.
pub(super) type QueuePos = (Reverse<u8>, u64);

pub(super) struct Waiter {
    pub(super) demand: Demand,
    /// Per key: not excluded by the caller.
    pub(super) allowed: Vec<bool>,
    pub(super) tx: oneshot::Sender<Result<Lease, Error>>,
    /// Pinged when this waiter's `wake_at` changes.
    pub(super) wake: Arc<Notify>,
    /// Set only on the head: when its demand is expected to fit.
    pub(super) wake_at: Option<Instant>,
}

pub(super) struct KeyState {
    buckets: [Bucket; DIMS],
    in_flight: u32,
    /// An upstream 429 (or Retry-After) benched the key until then.
    limited_until: Option<Instant>,
}

impl KeyState {
    fn new(l: &KeyLimits, now: Instant) -> Self {
        Self {
            buckets: [
                Bucket::new(l.requests_per_minute.map(u64::from), now),
                Bucket::new(l.input_tokens_per_minute, now),
                Bucket::new(l.output_tokens_per_minute, now),
                Bucket::new(None, now),
            ],
            in_flight: 0,
            limited_until: None,
        }
    }

    /// A dimension limited to zero: the key can take nothing at all.
    fn is_zero(&self) -> bool {
        self.buckets.iter().any(Bucket::is_zero)
    }

    /// Whether the key could ever admit these amounts.
    fn fits(&self, a: &[u64; DIMS]) -> bool {
        !self.is_zero() && self.buckets.iter().zip(a).all(|(b, &x)| b.fits(x))
    }

    fn limited_for(&self, now: Instant) -> Option<Duration> {
        self.limited_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }

    /// The key's headroom after admitting `a` now, or `None` if it cannot admit it now.
    fn admissible(&self, a: &[u64; DIMS], now: Instant) -> Option<f64> {
        if !self.fits(a) || self.limited_for(now).is_some() {
            return None;
        }
        if !self.buckets.iter().zip(a).all(|(b, &x)| b.has(x, now)) {
            return None;
        }
        Some(
            self.buckets
                .iter()
                .zip(a)
                .filter_map(|(b, &x)| b.headroom_after(x, now))
                .fold(1.0, f64::min),
        )
    }

    /// How long until the key can admit `a`; `None` if never.
    fn ready_in(&self, a: &[u64; DIMS], now: Instant) -> Option<Duration> {
        if !self.fits(a) {
            return None;
        }
        let mut wait = self.limited_for(now).unwrap_or_default();
        for (b, &x) in self.buckets.iter().zip(a) {
            wait = wait.max(b.time_until(x, now)?);
        }
        Some(wait)
    }

    fn limits(&self) -> KeyLimits {
        KeyLimits {
            requests_per_minute: self.buckets[REQUESTS]
                .limit()
                .map(|l| u32::try_from(l).unwrap_or(u32::MAX)),
            input_tokens_per_minute: self.buckets[INPUT].limit(),
            output_tokens_per_minute: self.buckets[OUTPUT].limit(),
        }
    }

    fn remaining(&self, dim: usize, now: Instant) -> Option<i64> {
        let b = &self.buckets[dim];
        // Floor: "remaining 3" must mean three fit; the cast saturates.
        b.limit().map(|_| b.level_at(now).floor() as i64)
    }
}

pub(super) struct State {
    keys: Vec<KeyState>,
    pub(super) queue: BTreeMap<QueuePos, Waiter>,
    next_seq: u64,
    /// Where the next tie-break scan starts, so equal keys take turns.
    cursor: usize,
}

impl State {
    /// Whether the demand could ever be served by a key the caller allows; the error says
    /// why not.
    ///
    /// - every key has a zero limit: `PoolExhausted` without a retry time (configuration,
    ///   not load, and no wait will help);
    /// - it fits only keys the caller excluded: `PoolExhausted` with the time those keys
    ///   expect to have room, since a later retry (which excludes nothing) can succeed;
    /// - it fits no key at all: `InvalidRequest`, naming `max_tokens` or `messages` when one
    ///   dimension alone is too large, because only a smaller request can ever pass. It is
    ///   not retryable on purpose: queueing or retrying it would only burn the caller's time.
    pub(super) fn check(
        &self,
        pool: &str,
        demand: Demand,
        allowed: &[bool],
        now: Instant,
    ) -> Result<(), Error> {
        let a = amounts(demand);
        if self
            .keys
            .iter()
            .zip(allowed)
            .any(|(k, &ok)| ok && k.fits(&a))
        {
            return Ok(());
        }
        if self.keys.iter().all(KeyState::is_zero) {
            return Err(Error::PoolExhausted {
                pool: pool.to_owned(),
                retry_after: None,
            });
        }
        let mut excluded = self
            .keys
            .iter()
            .zip(allowed)
            .filter(|(k, ok)| !**ok && k.fits(&a))
            .peekable();
        if excluded.peek().is_some() {
            let retry_after = excluded.filter_map(|(k, _)| k.ready_in(&a, now)).min();
            return Err(Error::PoolExhausted {
                pool: pool.to_owned(),
                retry_after: retry_after.map(|d| d.min(MAX_WAIT)),
            });
        }
        Err(self.too_large(pool, &a))
    }

    fn too_large(&self, pool: &str, a: &[u64; DIMS]) -> Error {
        const NAMES: [(&str, Option<&str>); DIMS] = [
            ("requests", None),
            ("input tokens", Some("messages")),
            ("output tokens", Some("max_tokens")),
            // Input or output may be the one to cut; the message gives both numbers.
            ("input + output tokens", None),
        ];
        for (d, (what, param)) in NAMES.iter().enumerate() {
            let usable = self.keys.iter().filter(|k| !k.is_zero());
            // `None` inside: some key is unlimited in this dimension.
            let largest = usable
                .map(|k| k.buckets[d].limit())
                .try_fold(0u64, |m, l| l.map(|l| m.max(l)));
            if let Some(cap) = largest
                && a[d] > cap
            {
                let message = format!(
                    "this request needs {} {what} but no key of `{pool}` allows more than \
                     {cap} per minute, so it can never be sent; make it smaller",
                    a[d]
                );
                return match param {
                    Some(p) => Error::invalid_param(p, message),
                    None => Error::invalid_request(message),
                };
            }
        }
        Error::invalid_request(format!(
            "no single key of `{pool}` allows {} input and {} output tokens per minute, so \
             this request can never be sent; make it smaller",
            a[INPUT], a[OUTPUT]
        ))
    }

    /// The allowed key that can admit the demand now with the most headroom left; ties go
    /// to fewer requests in flight, then to the next key in turn.
    pub(super) fn pick(&self, demand: Demand, allowed: &[bool], now: Instant) -> Option<usize> {
        let a = amounts(demand);
        let n = self.keys.len();
        let mut best: Option<(usize, f64, u32)> = None;
        for off in 0..n {
            let i = (self.cursor + off) % n;
            if !allowed.get(i).copied().unwrap_or(false) {
                continue;
            }
            let key = &self.keys[i];
            let Some(h) = key.admissible(&a, now) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((_, bh, bf)) => {
                    h > bh + 1e-9 || ((h - bh).abs() <= 1e-9 && key.in_flight < bf)
                }
            };
            if better {
                best = Some((i, h, key.in_flight));
            }
        }
        best.map(|(i, _, _)| i)
    }

    /// Take `demand` from key `k`. True when the key's input-token window is now less than
    /// half full: exact counts may soon decide admissions (see [`Inner::warm_tokenizer`]).
    pub(super) fn reserve(&mut self, k: usize, demand: Demand, now: Instant) -> bool {
        let n = self.keys.len();
        let Some(key) = self.keys.get_mut(k) else {
            return false;
        };
        for (b, x) in key.buckets.iter_mut().zip(amounts(demand)) {
            b.take(x, now);
        }
        key.in_flight += 1;
        self.cursor = (k + 1) % n.max(1);
        [INPUT, TOKENS].iter().any(|&d| {
            let b = &key.buckets[d];
            b.limit()
                .is_some_and(|limit| b.level_at(now) < limit as f64 / 2.0)
        })
    }

    /// Replace the reservation with what was really used: refund or debit the difference.
    /// The request itself was spent either way.
    pub(super) fn settle(&mut self, k: usize, reserved: Demand, used: Demand, now: Instant) {
        if let Some(key) = self.keys.get_mut(k) {
            let (r, u) = (amounts(reserved), amounts(used));
            for d in [INPUT, OUTPUT, TOKENS] {
                let b = &mut key.buckets[d];
                if r[d] >= u[d] {
                    b.give(r[d] - u[d], now);
                } else {
                    b.take(u[d] - r[d], now);
                }
            }
            key.in_flight = key.in_flight.saturating_sub(1);
        }
    }

    /// A lease that ended without settling: the reservation stays spent (the upstream may
    /// have counted it), only the in-flight count goes.
    pub(super) fn release(&mut self, k: usize) {
        if let Some(key) = self.keys.get_mut(k) {
            key.in_flight = key.in_flight.saturating_sub(1);
        }
    }

    /// A lease that never reached its caller: nothing was sent, give everything back.
    pub(super) fn cancel(&mut self, k: usize, demand: Demand, now: Instant) {
        if let Some(key) = self.keys.get_mut(k) {
            for (b, x) in key.buckets.iter_mut().zip(amounts(demand)) {
                b.give(x, now);
            }
            key.in_flight = key.in_flight.saturating_sub(1);
        }
    }

    /// How long until some allowed key can admit the demand (ignoring the queue).
    pub(super) fn ready_in(
        &self,
        demand: Demand,
        allowed: &[bool],
        now: Instant,
    ) -> Option<Duration> {
        let a = amounts(demand);
        self.keys
            .iter()
            .zip(allowed)
            .filter(|(_, ok)| **ok)
            .filter_map(|(k, _)| k.ready_in(&a, now))
            .min()
    }

    /// The wait to report to a caller that gives up: the longer of its own demand's refill
    /// and the time the allowed keys together need to refill everything queued ahead of it
    /// (before `ahead_of`) plus its own, so a client told to come back is not told "now"
    /// while a queue stands in front of it.
    pub(super) fn estimate_wait(
        &self,
        demand: Demand,
        allowed: &[bool],
        ahead_of: QueuePos,
        now: Instant,
    ) -> Option<Duration> {
        let own = amounts(demand);
        let mut wait = self.ready_in(demand, allowed, now)?;
        let mut total = own.map(|x| x as f64);
        for w in self.queue.range(..ahead_of).map(|(_, w)| w) {
            for (t, x) in total.iter_mut().zip(amounts(w.demand)) {
                *t += x as f64;
            }
        }
        for (d, need) in total.iter().enumerate() {
            let (mut rate, mut level) = (0.0, 0.0);
            let mut unlimited = false;
            let keys = self.keys.iter().zip(allowed);
            for (k, _) in keys.filter(|(k, ok)| **ok && k.fits(&own)) {
                match k.buckets[d].limit() {
                    None => unlimited = true,
                    Some(l) => {
                        rate += l as f64 / 60.0;
                        level += k.buckets[d].level_at(now);
                    }
                }
            }
            if unlimited || rate <= 0.0 {
                continue;
            }
            if let Ok(d) = Duration::try_from_secs_f64((need - level).max(0.0) / rate) {
                wait = wait.max(d);
            }
        }
        Some(wait.min(MAX_WAIT))
    }

    /// Whether a waiter of this priority would have someone ahead of it.
    pub(super) fn waiting_ahead(&self, priority: u8) -> bool {
        self.queue
            .first_key_value()
            .is_some_and(|((Reverse(p), _), _)| *p >= priority)
    }

    /// Queue a waiter. If it goes to the head, the old head's timer is cleared: only the
    /// head keeps one (at most one stale wake follows, which just runs a dispatch).
    pub(super) fn enqueue(&mut self, priority: u8, waiter: Waiter) -> QueuePos {
        let pos = (Reverse(priority), self.next_seq);
        self.next_seq += 1;
        if let Some(mut head) = self.queue.first_entry()
            && pos < *head.key()
        {
            head.get_mut().wake_at = None;
        }
        self.queue.insert(pos, waiter);
        pos
    }

    pub(super) fn limit_for(&mut self, k: usize, until: Instant) {
        if let Some(key) = self.keys.get_mut(k) {
            key.limited_until = Some(key.limited_until.map_or(until, |u| u.max(until)));
        }
    }

    /// Take in one upstream window for dimension `dim` of key `k`.
    pub(super) fn observe(
        &mut self,
        k: usize,
        dim: Dim,
        window: (Option<u64>, Option<u64>, Option<Duration>),
        now: Instant,
    ) {
        if let Some(key) = self.keys.get_mut(k) {
            let (limit, remaining, reset) = window;
            key.buckets[dim as usize].observe(limit, remaining, reset, now);
        }
    }

    pub(super) fn status(&self, metas: &[KeyMeta], now: Instant) -> Vec<KeyStatus> {
        let secs = |d: Duration| (d.as_secs_f64() * 1000.0).ceil() / 1000.0;
        self.keys
            .iter()
            .zip(metas)
            .map(|(k, m)| {
                let full = k
                    .buckets
                    .iter()
                    .filter_map(|b| b.time_until_full(now))
                    .max();
                let limited_for = k.limited_for(now);
                KeyStatus {
                    key_id: m.id.clone(),
                    in_flight: k.in_flight,
                    limits: k.limits(),
                    tokens_per_minute: k.buckets[TOKENS].limit(),
                    remaining_requests: k.remaining(REQUESTS, now),
                    remaining_input_tokens: k.remaining(INPUT, now),
                    remaining_output_tokens: k.remaining(OUTPUT, now),
                    remaining_tokens: k.remaining(TOKENS, now),
                    seconds_until_full: full.map(secs),
                    limited_now: limited_for.is_some(),
                    limited_for_secs: limited_for.map(secs),
                    queue_len: self.queue.len(),
                }
            })
            .collect()
    }
}

/// A dimension an upstream window maps to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dim {
    Requests = REQUESTS as isize,
    Input = INPUT as isize,
    Output = OUTPUT as isize,
    Tokens = TOKENS as isize,
}
