//! A limit store's health (the inbound limiter's, the budgets'): errors counted, the last one
//! kept, warnings spaced out, and a short pause after a run of failures during which calls skip
//! the store.
//!
//! The pause is what keeps a dead store from costing every call its timeout: for
//! [`RETRY_STORE_AFTER`] after [`PAUSE_AFTER`] failures in a row, calls go straight to the
//! `on_store_error` setting; the
//! first call after it tries the store again (and the connection reconnects on its own).
#![cfg_attr(
    not(feature = "redis"),
    expect(dead_code, reason = "only the Redis backend has a store that can fail")
)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// How long calls skip the store after it failed [`PAUSE_AFTER`] times in a row.
pub(crate) const RETRY_STORE_AFTER: Duration = Duration::from_secs(1);
/// Failures in a row before calls skip the store: one late reply is not an outage.
pub(crate) const PAUSE_AFTER: u32 = 3;
/// The least time between two warnings about the store.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// A limit store's health (the inbound limiter's or the budgets'), for the gateway's
/// `/status` and `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsHealth {
    /// Where limit state lives: `memory` or `redis`.
    pub backend: &'static str,
    /// `false` while the store is failing (from its last failure to its next success).
    pub healthy: bool,
    /// Store failures since start.
    pub store_errors: u64,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Health {
    backend: &'static str,
    /// What the store serves, for warnings: `inbound rate limits`, `budgets`.
    subject: &'static str,
    base: Instant,
    errors: AtomicU64,
    /// Failures since the store last answered.
    in_a_row: AtomicU32,
    failing: AtomicBool,
    /// Milliseconds since `base` until which calls skip the store.
    skip_until: AtomicU64,
    /// Milliseconds since `base` of the last warning, plus one (0: never warned).
    warned: AtomicU64,
    /// Written only on failures, read only by `snapshot` and refusals: never on the path of
    /// a call the store answers.
    last_error: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn new(backend: &'static str, subject: &'static str) -> Self {
        Self {
            backend,
            subject,
            base: Instant::now(),
            errors: AtomicU64::new(0),
            in_a_row: AtomicU32::new(0),
            failing: AtomicBool::new(false),
            skip_until: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.base);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// The store answered.
    pub(crate) fn succeeded(&self) {
        // Read first: a healthy store costs no write to a shared cache line per call.
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
            self.in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// The store failed: count it, keep it, pause the store, and warn unless a warning went
    /// out in the last few seconds.
    pub(crate) fn failed(&self, message: String) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        self.failing.store(true, Ordering::Relaxed);
        let now = self.now_ms();
        if self.in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= PAUSE_AFTER {
            let pause = u64::try_from(RETRY_STORE_AFTER.as_millis()).unwrap_or(u64::MAX);
            self.skip_until
                .store(now.saturating_add(pause), Ordering::Relaxed);
        }
        let warned = self.warned.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        let due = warned == 0 || now.saturating_sub(warned - 1) >= every;
        if due
            && self
                .warned
                .compare_exchange(warned, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                subject = self.subject,
                backend = self.backend,
                errors,
                error = %message,
                "a limit store failed; applying its on_store_error setting"
            );
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Whether calls should skip the store for now (it failed moments ago).
    pub(crate) fn paused(&self) -> bool {
        self.now_ms() < self.skip_until.load(Ordering::Relaxed)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }

    pub(crate) fn snapshot(&self) -> LimitsHealth {
        LimitsHealth {
            backend: self.backend,
            healthy: !self.failing.load(Ordering::Relaxed),
            store_errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error(),
        }
    }
}
