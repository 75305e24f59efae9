//! [`Live`]: the dashboard's in-process view of recent traffic, fed by a [`UsageSink`].
//!
//! Two fixed rings, written with atomics only (no lock, no allocation per call):
//! - per-second buckets for the last [`SECONDS`] seconds: calls, errors, and a latency
//!   histogram from which p50 and p99 are read;
//! - the last [`RECENT`] calls (time, model, deployment, status, latency, tokens, cost, cache):
//!   never prompts or keys.
//!
//! A bucket is recycled by the first call of a new second (a compare-and-swap on its second);
//! a call landing in the same instant as the recycling may be lost. A recent-call slot is a
//! seqlock over atomics: a writer that finds its slot mid-write by another (the ring wrapped
//! around during a write) drops its entry, and a reader skips a slot that changed under it.
//! These are dashboard figures, not accounts: the ledger keeps the exact record.

use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{SystemTime, UNIX_EPOCH};

use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use weir::pipeline::{CacheOutcome, Outcome, UsageEvent, UsageSink};

/// Seconds of history kept (5 minutes).
pub const SECONDS: usize = 300;
/// Calls kept in the recent-calls ring.
pub const RECENT: usize = 64;
/// Upper bounds of the latency histogram's buckets, in milliseconds; the last bucket is
/// everything slower.
const BOUNDS_MS: [u64; 16] = [
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000,
];
const BUCKETS: usize = BOUNDS_MS.len() + 1;
/// Bytes of a model or deployment name kept per recent call (longer names are cut).
const NAME_WORDS: usize = 8;
const NAME_BYTES: usize = NAME_WORDS * 8;
/// A cost unknown (no price): distinct from zero.
const NO_COST: i64 = i64::MIN;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug)]
struct Second {
    /// The Unix second this bucket holds.
    at: AtomicU64,
    calls: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Second {
    fn new() -> Self {
        Self {
            at: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// A name stored in atomics: its length and its bytes, eight to a word.
#[derive(Debug)]
struct Name {
    len: AtomicU8,
    words: [AtomicU64; NAME_WORDS],
}

impl Name {
    fn new() -> Self {
        Self {
            len: AtomicU8::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn store(&self, text: &str) {
        let mut end = text.len().min(NAME_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &text.as_bytes()[..end];
        for (i, word) in self.words.iter().enumerate() {
            let mut chunk = [0u8; 8];
            let start = (i * 8).min(end);
            let stop = (start + 8).min(end);
            chunk[..stop - start].copy_from_slice(&bytes[start..stop]);
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        self.len
            .store(u8::try_from(end).unwrap_or(u8::MAX), Ordering::Relaxed);
    }

    fn load(&self) -> String {
        let mut bytes = [0u8; NAME_BYTES];
        for (i, word) in self.words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = usize::from(self.len.load(Ordering::Relaxed)).min(NAME_BYTES);
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    }
}

#[derive(Debug)]
struct Slot {
    /// Even when stable; odd while a writer fills the slot.
    seq: AtomicU64,
    at_ms: AtomicU64,
    status: AtomicU16,
    outcome: AtomicU8,
    cache: AtomicU8,
    stream: AtomicU8,
    latency_us: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Nano-dollars, or [`NO_COST`].
    cost_nanos: AtomicU64,
    model: Name,
    deployment: Name,
}

impl Slot {
    fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            at_ms: AtomicU64::new(0),
            status: AtomicU16::new(0),
            outcome: AtomicU8::new(0),
            cache: AtomicU8::new(0),
            stream: AtomicU8::new(0),
            latency_us: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cost_nanos: AtomicU64::new(0),
            model: Name::new(),
            deployment: Name::new(),
        }
    }
}

/// One recent call, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentCall {
    /// Unix milliseconds when the call ended.
    pub at_ms: u64,
    pub model: String,
    /// `provider/model`, empty when no deployment was chosen.
    pub deployment: String,
    pub status: u16,
    pub outcome: &'static str,
    pub cache: &'static str,
    pub stream: bool,
    /// To the microsecond.
    pub latency_ms: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Dollars, `None` when the model has no price.
    pub cost_usd: Option<f64>,
}

/// One second of the series.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// Unix second.
    pub t: u64,
    pub requests: u32,
    pub errors: u32,
    /// `None` for a second without calls.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// Totals since start and the series of the last seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub requests_total: u64,
    pub errors_total: u64,
    /// Entries the recent-calls ring dropped (a slot busy when the ring wrapped around).
    pub recent_dropped: u64,
    /// Oldest first, ending with the current (partial) second.
    pub series: Vec<Point>,
    /// Over the whole series: calls and errors per second, and latency percentiles.
    pub window_seconds: u64,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// The dashboard's live figures; register it as a [`UsageSink`].
#[derive(Debug)]
pub struct Live {
    seconds: Box<[Second]>,
    recent: Box<[Slot]>,
    next: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

const fn is_error(status: u16, outcome: Outcome) -> bool {
    status >= 400 || matches!(outcome, Outcome::Failure)
}

fn bucket_of(ms: u64) -> usize {
    BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BOUNDS_MS.len())
}

/// The latency (a bucket's upper bound) at or below which `q` of the calls fall.
fn quantile(hist: &[u64; BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank among at most a few million calls"
    )]
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            // The slowest bucket has no bound: report the last bound, the best known floor.
            return Some(BOUNDS_MS[i.min(BOUNDS_MS.len() - 1)]);
        }
    }
    None
}

impl Live {
    pub fn new() -> Self {
        Self {
            seconds: (0..SECONDS).map(|_| Second::new()).collect(),
            recent: (0..RECENT).map(|_| Slot::new()).collect(),
            next: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Count one call that ended at `at_ms`.
    fn count(&self, at_ms: u64, latency_ms: u64, error: bool) {
        let second = at_ms / 1000;
        let Some(bucket) = usize::try_from(second % SECONDS as u64)
            .ok()
            .and_then(|i| self.seconds.get(i))
        else {
            return;
        };
        let held = bucket.at.load(Ordering::Acquire);
        if held != second {
            if held > second {
                // A call from a second already recycled (a clock step back): not shown.
                return;
            }
            if bucket
                .at
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                bucket.calls.store(0, Ordering::Relaxed);
                bucket.errors.store(0, Ordering::Relaxed);
                for b in &bucket.latency {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
        bucket.calls.fetch_add(1, Ordering::Relaxed);
        if error {
            bucket.errors.fetch_add(1, Ordering::Relaxed);
        }
        bucket.latency[bucket_of(latency_ms)].fetch_add(1, Ordering::Relaxed);
    }

    fn remember(&self, at_ms: u64, latency_us: u64, event: &UsageEvent) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
        let Some(slot) = self.recent.get(i) else {
            return;
        };
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq % 2 == 1
            || slot
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        fence(Ordering::Release);
        slot.at_ms.store(at_ms, Ordering::Relaxed);
        slot.status.store(event.status, Ordering::Relaxed);
        slot.outcome.store(
            match event.outcome {
                Outcome::Success => 0,
                Outcome::Failure => 1,
                Outcome::Disconnected => 2,
            },
            Ordering::Relaxed,
        );
        slot.cache.store(
            match event.cache {
                CacheOutcome::Bypass => 0,
                CacheOutcome::Hit => 1,
                CacheOutcome::Miss => 2,
                CacheOutcome::Coalesced => 3,
            },
            Ordering::Relaxed,
        );
        slot.stream
            .store(u8::from(event.operation.is_stream()), Ordering::Relaxed);
        slot.latency_us.store(latency_us, Ordering::Relaxed);
        slot.input_tokens
            .store(event.tokens.input, Ordering::Relaxed);
        slot.output_tokens
            .store(event.tokens.output, Ordering::Relaxed);
        let nanos = event
            .cost_usd
            .and_then(|c| (c * rust_decimal::Decimal::from(1_000_000_000u64)).to_i64())
            .unwrap_or(NO_COST);
        slot.cost_nanos
            .store(u64::from_ne_bytes(nanos.to_ne_bytes()), Ordering::Relaxed);
        slot.model.store(&event.context.model);
        match &event.route {
            Some(route) => {
                // Written as `provider/model` without building the joined string.
                slot.deployment.store(&route.provider);
                let provider_len = route.provider.len().min(NAME_BYTES);
                if provider_len < NAME_BYTES - 1 {
                    store_suffix(&slot.deployment, provider_len, &route.upstream_model);
                }
            }
            None => slot.deployment.store(""),
        }
        slot.seq.store(seq + 2, Ordering::Release);
    }

    /// The last calls, newest first.
    pub fn recent(&self) -> Vec<RecentCall> {
        let mut out = Vec::with_capacity(RECENT);
        for slot in self.recent.iter() {
            let before = slot.seq.load(Ordering::Acquire);
            if before % 2 == 1 || before == 0 {
                continue;
            }
            let nanos = i64::from_ne_bytes(slot.cost_nanos.load(Ordering::Relaxed).to_ne_bytes());
            #[expect(
                clippy::cast_precision_loss,
                reason = "a call's cost, shown to a person"
            )]
            let cost_usd = (nanos != NO_COST).then(|| nanos as f64 / 1e9);
            let call = RecentCall {
                at_ms: slot.at_ms.load(Ordering::Relaxed),
                model: slot.model.load(),
                deployment: slot.deployment.load(),
                status: slot.status.load(Ordering::Relaxed),
                outcome: match slot.outcome.load(Ordering::Relaxed) {
                    0 => "success",
                    1 => "failure",
                    _ => "disconnected",
                },
                cache: match slot.cache.load(Ordering::Relaxed) {
                    0 => "bypass",
                    1 => "hit",
                    2 => "miss",
                    _ => "coalesced",
                },
                stream: slot.stream.load(Ordering::Relaxed) == 1,
                latency_ms: micros_to_ms(slot.latency_us.load(Ordering::Relaxed)),
                input_tokens: slot.input_tokens.load(Ordering::Relaxed),
                output_tokens: slot.output_tokens.load(Ordering::Relaxed),
                cost_usd,
            };
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == before {
                out.push(call);
            }
        }
        out.sort_by_key(|c| std::cmp::Reverse(c.at_ms));
        out
    }

    /// The series of the last `seconds` seconds (at most [`SECONDS`]) and the totals.
    pub fn snapshot(&self, seconds: usize) -> Snapshot {
        self.snapshot_at(now_ms() / 1000, seconds)
    }

    pub(crate) fn snapshot_at(&self, now: u64, seconds: usize) -> Snapshot {
        let seconds = seconds.clamp(1, SECONDS);
        let mut series = Vec::with_capacity(seconds);
        let mut all = [0u64; BUCKETS];
        let (mut calls, mut errors) = (0u64, 0u64);
        for t in (now + 1).saturating_sub(seconds as u64)..=now {
            let bucket = usize::try_from(t % SECONDS as u64)
                .ok()
                .and_then(|i| self.seconds.get(i));
            let mut hist = [0u64; BUCKETS];
            let mut point = Point {
                t,
                requests: 0,
                errors: 0,
                p50_ms: None,
                p99_ms: None,
            };
            if let Some(b) = bucket.filter(|b| b.at.load(Ordering::Acquire) == t) {
                point.requests = b.calls.load(Ordering::Relaxed);
                point.errors = b.errors.load(Ordering::Relaxed);
                for (h, l) in hist.iter_mut().zip(&b.latency) {
                    *h = u64::from(l.load(Ordering::Relaxed));
                }
                point.p50_ms = quantile(&hist, 0.5);
                point.p99_ms = quantile(&hist, 0.99);
            }
            for (a, h) in all.iter_mut().zip(hist) {
                *a += h;
            }
            calls += u64::from(point.requests);
            errors += u64::from(point.errors);
            series.push(point);
        }
        #[expect(clippy::cast_precision_loss, reason = "rates shown to a person")]
        let per_second = |n: u64| n as f64 / seconds as f64;
        Snapshot {
            requests_total: self.requests.load(Ordering::Relaxed),
            errors_total: self.errors.load(Ordering::Relaxed),
            recent_dropped: self.dropped.load(Ordering::Relaxed),
            series,
            window_seconds: seconds as u64,
            requests_per_second: per_second(calls),
            errors_per_second: per_second(errors),
            p50_ms: quantile(&all, 0.5),
            p99_ms: quantile(&all, 0.99),
        }
    }

    pub(crate) fn record_at(&self, at_ms: u64, event: &UsageEvent) {
        let latency_us = u64::try_from(event.latency.total.as_micros()).unwrap_or(u64::MAX);
        let error = is_error(event.status, event.outcome);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.count(at_ms, latency_us / 1000, error);
        self.remember(at_ms, latency_us, event);
    }
}

#[expect(clippy::cast_precision_loss, reason = "a latency shown to a person")]
fn micros_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Append `/suffix` to a name whose first `at` bytes are written, cutting at the bound.
fn store_suffix(name: &Name, at: usize, suffix: &str) {
    let mut bytes = [0u8; NAME_BYTES];
    for (i, word) in name.words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    bytes[at] = b'/';
    let room = NAME_BYTES - at - 1;
    let mut take = suffix.len().min(room);
    while !suffix.is_char_boundary(take) {
        take -= 1;
    }
    bytes[at + 1..at + 1 + take].copy_from_slice(&suffix.as_bytes()[..take]);
    for (i, word) in name.words.iter().enumerate() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
    }
    name.len.store(
        u8::try_from(at + 1 + take).unwrap_or(u8::MAX),
        Ordering::Relaxed,
    );
}

impl UsageSink for Live {
    fn record(&self, event: &UsageEvent) {
        self.record_at(now_ms(), event);
    }
}
