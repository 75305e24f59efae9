//! The in-memory backend: exact for one gateway instance, lock-free on the request path.
//!
//! Each budget has one [`Counter`] per period, swapped for a fresh one when the period
//! rolls over. A counter holds `committed` (spend plus live reservations) and `spent`, in
//! nanodollars. A call takes from every hard budget that applies with a compare-and-swap
//! loop that refuses to pass the limit and, refused by one, gives back what it took from
//! the earlier ones: all or none, without a lock. (A concurrent call may see the earlier
//! counters briefly charged and be refused by them: a refusal a moment early, never an
//! admission past a limit.) Soft budgets are charged unconditionally.
//!
//! # Expiry
//!
//! Every reservation is a [`Hold`] with a deadline and a `live` flag; whoever clears the
//! flag first (settle, release, or expiry) moves the counters, so each happens once. New
//! holds go to the sweeper through a lock-free channel; at most once a second, one call
//! takes the sweeper (with `try_lock`: no call ever waits for it), drops the holds already
//! settled and expires those past their deadline. A hold settled after it expired adds its
//! real cost to the spend, and nothing else.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

/// How often the sweeper runs, at most, in milliseconds.
const SWEEP_EVERY_MS: i64 = 1000;

/// One budget's spend in one period, in nanodollars.
#[derive(Debug)]
pub(crate) struct Counter {
    pub(crate) start: Timestamp,
    pub(crate) reset: Timestamp,
    /// Spent plus live reservations.
    committed: AtomicI64,
    spent: AtomicI64,
    /// What [`Counter::seed`] added, so seeding again replaces it.
    seeded: AtomicI64,
    /// One bit per threshold index: the warnings this period already gave.
    warned: AtomicU64,
}

impl Counter {
    pub(crate) fn new(start: Timestamp, reset: Timestamp) -> Self {
        Self {
            start,
            reset,
            committed: AtomicI64::new(0),
            spent: AtomicI64::new(0),
            seeded: AtomicI64::new(0),
            warned: AtomicU64::new(0),
        }
    }

    /// Whether `now` falls in this counter's period.
    pub(crate) fn holds(&self, now: Timestamp) -> bool {
        self.start <= now && now < self.reset
    }

    /// (spent, reserved) now.
    pub(crate) fn read(&self) -> (i64, i64) {
        let spent = self.spent.load(Ordering::Acquire);
        let committed = self.committed.load(Ordering::Acquire);
        (spent, (committed - spent).max(0))
    }

    /// Take `amount` if the spend and reservations stay within `limit` (`None`: no limit).
    /// Returns the committed total before, or that total when refused.
    pub(crate) fn take(&self, amount: i64, limit: Option<i64>) -> Result<i64, i64> {
        match limit {
            None => Ok(self.committed.fetch_add(amount, Ordering::AcqRel)),
            Some(limit) => {
                let mut current = self.committed.load(Ordering::Acquire);
                loop {
                    if current.saturating_add(amount) > limit {
                        return Err(current);
                    }
                    match self.committed.compare_exchange_weak(
                        current,
                        current + amount,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(before) => return Ok(before),
                        Err(now) => current = now,
                    }
                }
            }
        }
    }

    /// Give back a reservation.
    pub(crate) fn give_back(&self, amount: i64) {
        self.committed.fetch_sub(amount, Ordering::AcqRel);
    }

    /// Record a real cost; `reserved` is what the call still held (0 when it expired).
    fn spend(&self, real: i64, reserved: i64) {
        self.spent.fetch_add(real, Ordering::AcqRel);
        self.committed.fetch_add(real - reserved, Ordering::AcqRel);
    }

    /// Set the spend recorded before this process counted (replacing an earlier seed).
    pub(crate) fn seed(&self, spent: i64) {
        let delta = spent - self.seeded.swap(spent, Ordering::AcqRel);
        self.spend(delta, 0);
    }

    /// Mark threshold `index` as warned; `true` if it was not yet.
    pub(crate) fn first_warning(&self, index: usize) -> bool {
        let bit = 1u64 << index.min(63);
        self.warned.fetch_or(bit, Ordering::AcqRel) & bit == 0
    }
}

/// One call's reservation against one budget's counter.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) counter: Arc<Counter>,
    pub(crate) amount: i64,
}

/// One admitted call's reservations, until settled, released or expired.
#[derive(Debug)]
pub(crate) struct Hold {
    live: AtomicBool,
    /// Milliseconds since the epoch on the budgets' clock.
    deadline_ms: i64,
    parts: Vec<Part>,
}

impl Hold {
    pub(crate) fn new(parts: Vec<Part>, deadline_ms: i64) -> Self {
        Self {
            live: AtomicBool::new(true),
            deadline_ms,
            parts,
        }
    }

    /// Replace the reservations with the real cost.
    pub(crate) fn settle(&self, real: i64) {
        let live = self.live.swap(false, Ordering::AcqRel);
        for p in &self.parts {
            p.counter.spend(real, if live { p.amount } else { 0 });
        }
    }

    /// Give the reservations back.
    pub(crate) fn release(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            for p in &self.parts {
                p.counter.give_back(p.amount);
            }
        }
    }

    fn expire(&self) {
        self.release();
    }

    fn holds_anything(&self) -> bool {
        self.parts.iter().any(|p| p.amount > 0)
    }
}

/// The holds waiting for their deadline.
#[derive(Debug)]
struct Sweeper {
    incoming: Receiver<Arc<Hold>>,
    pending: Vec<Arc<Hold>>,
}

/// Expires reservations that were never settled.
#[derive(Debug)]
pub(crate) struct Expiry {
    sender: Sender<Arc<Hold>>,
    sweeper: Mutex<Sweeper>,
    /// Milliseconds (budgets' clock) before which no sweep runs.
    next_sweep: AtomicI64,
}

impl Expiry {
    pub(crate) fn new() -> Self {
        let (sender, incoming) = channel();
        Self {
            sender,
            sweeper: Mutex::new(Sweeper {
                incoming,
                pending: Vec::new(),
            }),
            next_sweep: AtomicI64::new(0),
        }
    }

    /// Watch `hold` until its deadline.
    pub(crate) fn watch(&self, hold: &Arc<Hold>) {
        if hold.holds_anything() {
            // Fails only when the receiver is gone, which lives as long as `self`.
            let _ = self.sender.send(Arc::clone(hold));
        }
    }

    /// Expire what is past its deadline, at most once a second (`force` for status).
    pub(crate) fn sweep(&self, now_ms: i64, force: bool) {
        let due = self.next_sweep.load(Ordering::Acquire);
        if !force
            && (now_ms < due
                || self
                    .next_sweep
                    .compare_exchange(
                        due,
                        now_ms + SWEEP_EVERY_MS,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err())
        {
            return;
        }
        // Another call sweeping right now does the work: never wait for it.
        let Ok(mut sweeper) = self.sweeper.try_lock() else {
            return;
        };
        let Sweeper { incoming, pending } = &mut *sweeper;
        pending.extend(incoming.try_iter());
        pending.retain(|hold| {
            if !hold.live.load(Ordering::Acquire) {
                return false;
            }
            if hold.deadline_ms <= now_ms {
                hold.expire();
                return false;
            }
            true
        });
    }
}
