//! The process-wide retry budget: retries (and hedges) may be at most a fraction of recent
//! requests plus a small floor, so a failing upstream sees its load grow by that fraction
//! instead of multiplying by `max_retries + 1` (a retry storm).
//!
//! Why not `tower::retry::budget::TpsBudget`: it takes a mutex on every deposit and withdrawal,
//! rounds the ratio to `1 / round_down(1 / ratio)` (0.3 becomes 1/3), lets concurrent
//! withdrawals overdraw, and asserts (panics) on settings outside its ranges. This one is
//! lock-free, keeps the ratio to a thousandth, never overdraws, and clamps its settings.
//!
//! Accounting: ten slots each cover a tenth of the window and hold a signed balance in
//! thousandths of a retry, tagged with the slot's period number in the same 64-bit word so a
//! stale slot is reset by the compare-and-swap that first writes to it. Time comes from
//! tokio's clock, so tests with paused time drive the window.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::RetryPolicy;

const SLOTS: usize = 10;
/// One retry, in budget units: ratios keep three decimals without floats on the hot path.
const UNIT: i32 = 1000;
/// More retries per request than this makes no sense (`max_retries` bounds them anyway), and
/// the cap keeps a slot's 32-bit balance far from overflow.
const MAX_RATIO: f64 = 100.0;
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// Caps retries to `ratio` × recent requests + `min_per_second` × window.
///
/// `Send + Sync` and lock-free: share one per process (or per upstream) behind an `Arc`, call
/// [`RetryBudget::deposit`] for every original request and [`RetryBudget::try_withdraw`]
/// before every retry or hedge.
pub struct RetryBudget {
    start: Instant,
    slot_nanos: u64,
    /// Each word: period number (low 32 bits of it) in the high half, balance in the low half.
    slots: [AtomicU64; SLOTS],
    /// Credit of one request, in units.
    deposit_units: i32,
    /// The floor's retries per window, in units; spent withdrawals return to it as their slot
    /// expires, which is what makes it a per-second rate.
    reserve: i64,
    ratio: f64,
    min_per_second: u32,
    window: Duration,
}

impl RetryBudget {
    /// A budget over a rolling 10 s window.
    ///
    /// `ratio` is clamped to `[0, 100]` (NaN counts as 0).
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self::with_window(ratio, min_per_second, DEFAULT_WINDOW)
    }

    /// A budget over a rolling `window`, clamped to `[1 s, 1 h]`.
    pub fn with_window(ratio: f64, min_per_second: u32, window: Duration) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, MAX_RATIO)
        };
        let window = window.clamp(MIN_WINDOW, MAX_WINDOW);
        // Both casts are in range: ratio * UNIT <= 100_000, and the window is at most an hour.
        let deposit_units = (ratio * f64::from(UNIT)).round() as i32;
        let slot_nanos = (window.as_nanos() / SLOTS as u128) as u64;
        // UNIT is 1000, so units per window = retries per second * window in milliseconds.
        let reserve = i64::from(min_per_second).saturating_mul(window.as_millis() as i64);
        Self {
            start: Instant::now(),
            slot_nanos,
            slots: std::array::from_fn(|_| AtomicU64::new(pack(0, 0))),
            deposit_units,
            reserve,
            ratio,
            min_per_second,
            window,
        }
    }

    /// The budget of `policy`: `budget_ratio` and `budget_min_per_second` over 10 s.
    pub fn from_policy(policy: &RetryPolicy) -> Self {
        Self::new(policy.budget_ratio, policy.budget_min_per_second)
    }

    /// Count one original request (not a retry): it earns `ratio` retries for the window.
    pub fn deposit(&self) {
        if self.deposit_units > 0 {
            self.add(self.period(), self.deposit_units);
        }
    }

    /// Take one retry from the budget; `false` means "do not retry, pass the error on".
    pub fn try_withdraw(&self) -> bool {
        let period = self.period();
        // The cheap check first: in a storm most calls end here, without writing.
        if self.balance(period) < i64::from(UNIT) {
            return false;
        }
        if !self.add(period, -UNIT) {
            return false;
        }
        // Withdraw, then check: if concurrent withdrawals took the last units first, give
        // ours back. Races can refuse a retry that would have fitted, never allow one that
        // does not.
        if self.balance(period) >= 0 {
            true
        } else {
            self.add(period, UNIT);
            false
        }
    }

    /// Retries that could be withdrawn now (for metrics and status pages).
    pub fn available(&self) -> u64 {
        u64::try_from(self.balance(self.period()) / i64::from(UNIT)).unwrap_or(0)
    }

    /// The current period number: time since creation in slot widths.
    fn period(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        // A u64 of slot widths (>= 100 ms each) lasts billions of years.
        (elapsed.as_nanos() / u128::from(self.slot_nanos)) as u64
    }

    /// Floor plus every live slot.
    fn balance(&self, period: u64) -> i64 {
        let tag = period as u32;
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::SeqCst)))
            .filter(|&(slot_tag, _)| is_live(tag, slot_tag))
            .fold(self.reserve, |sum, (_, balance)| {
                sum.saturating_add(i64::from(balance))
            })
    }

    /// Add `delta` units to the slot of `period`, resetting it first if it holds an older
    /// period. Credits saturate (under-counting credit is safe); a debit that would overflow
    /// is refused, returning `false`.
    fn add(&self, period: u64, delta: i32) -> bool {
        let tag = period as u32;
        let slot = &self.slots[(period % SLOTS as u64) as usize];
        let mut current = slot.load(Ordering::SeqCst);
        loop {
            let (slot_tag, balance) = unpack(current);
            // A thread that read the clock a moment later may already have moved the slot to
            // a newer period; adding to that keeps the units rather than wiping its credit.
            let (new_tag, base) = if slot_tag == tag || is_ahead(tag, slot_tag) {
                (slot_tag, balance)
            } else {
                (tag, 0)
            };
            let new_balance = match base.checked_add(delta) {
                Some(b) => b,
                None if delta > 0 => i32::MAX,
                None => return false,
            };
            match slot.compare_exchange_weak(
                current,
                pack(new_tag, new_balance),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

impl Default for RetryBudget {
    /// The budget of [`RetryPolicy::default`]: 20% of requests plus 10 retries per second.
    fn default() -> Self {
        Self::from_policy(&RetryPolicy::default())
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("window", &self.window)
            .field("available", &self.available())
            .finish()
    }
}

fn pack(tag: u32, balance: i32) -> u64 {
    (u64::from(tag) << 32) | u64::from(balance as u32)
}

fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

/// Whether a slot tagged `slot_tag` still counts at period `tag`: written within the last
/// `SLOTS` periods, or by a thread whose clock ran slightly ahead. Tags wrap, so compare by
/// distance.
fn is_live(tag: u32, slot_tag: u32) -> bool {
    tag.wrapping_sub(slot_tag) < SLOTS as u32 || is_ahead(tag, slot_tag)
}

fn is_ahead(tag: u32, slot_tag: u32) -> bool {
    let lead = slot_tag.wrapping_sub(tag);
    lead > 0 && lead <= SLOTS as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::time::advance;

    use super::*;
    use crate::retry::Schedule;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_shareable<T: Send + Sync + 'static>() {}
        assert_shareable::<RetryBudget>();
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_alone_allows_min_per_second_times_the_window() {
        let b = RetryBudget::new(0.0, 10);
        b.deposit(); // earns nothing at ratio 0
        assert_eq!(b.available(), 100);
        for _ in 0..100 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_earn_the_ratio_to_a_thousandth() {
        let b = RetryBudget::new(0.2, 0);
        assert!(!b.try_withdraw());
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());

        // tower's TpsBudget would allow 33 here (1 / floor(1 / 0.3)).
        let b = RetryBudget::new(0.3, 0);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.available(), 30);
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn credit_expires_with_its_slot() {
        let b = RetryBudget::new(0.5, 0);
        for _ in 0..10 {
            b.deposit();
        }
        advance(Duration::from_millis(5500)).await;
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available(), 10);
        // The first deposits' slot leaves the window; the second ones' is still in it.
        advance(Duration::from_millis(4600)).await;
        assert_eq!(b.available(), 5);
        advance(secs(6)).await;
        assert_eq!(b.available(), 0);
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_recovers_after_the_window() {
        let b = RetryBudget::new(0.2, 10);
        for _ in 0..50 {
            b.deposit();
        }
        let drained = std::iter::from_fn(|| b.try_withdraw().then_some(())).count();
        assert_eq!(drained, 110);
        assert!(!b.try_withdraw());

        // Part of the window later, still nothing: spent retries count for the whole window.
        advance(secs(5)).await;
        assert!(!b.try_withdraw());

        // Once the window has passed, the floor is whole again (the old credit is gone too).
        advance(secs(6)).await;
        assert_eq!(b.available(), 100);
        b.deposit();
        b.deposit();
        b.deposit();
        b.deposit();
        b.deposit();
        assert_eq!(b.available(), 101);
    }

    /// A 100% failure storm: every attempt fails and every request wants `max_retries` retries.
    /// Without a budget that is 2 retries per request (3x the load); with it, retries stay at
    /// ratio × requests + floor × seconds.
    #[tokio::test(start_paused = true)]
    async fn a_failure_storm_is_held_to_the_ratio_plus_the_floor() {
        let policy = RetryPolicy::default(); // 2 retries, ratio 0.2, floor 10/s
        let budget = RetryBudget::from_policy(&policy);
        let (seconds, per_second) = (120u64, 100u64);
        let (mut requests, mut retries, mut refused) = (0u64, 0u64, 0u64);
        let mut per_window = Vec::new();
        let mut in_window = 0u64;
        for tick in 0..seconds * per_second {
            budget.deposit();
            requests += 1;
            let mut schedule = Schedule::with_rng(&policy, fastrand::Rng::with_seed(tick));
            while schedule.retries_left() {
                if !budget.try_withdraw() {
                    refused += 1;
                    break;
                }
                schedule.next_delay();
                retries += 1;
                in_window += 1;
            }
            if (tick + 1) % (10 * per_second) == 0 {
                per_window.push(in_window);
                in_window = 0;
            }
            advance(Duration::from_millis(1000 / per_second)).await;
        }
        let ratio_part = policy.budget_ratio * requests as f64;
        let floor = f64::from(policy.budget_min_per_second);
        let upper = ratio_part + floor * (seconds + 10) as f64;
        let lower = ratio_part + floor * seconds as f64;
        assert!(
            (retries as f64) <= upper && (retries as f64) >= lower * 0.98,
            "{retries} retries for {requests} requests: expected {lower}..={upper}"
        );
        assert!(refused > 0);
        // Steady, not bursty: every 10 s window gets its floor (100) plus 20% of its own
        // 1000 requests, give or take a slot's worth.
        for &w in &per_window {
            assert!((280..=320).contains(&w), "{w} retries in one window");
        }
        // Versus 2 retries per request unbudgeted.
        assert!(retries * 5 < requests * 2, "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_process_still_retries_its_rare_failures() {
        let b = RetryBudget::default();
        // One request every two seconds, each retried twice, for ten minutes.
        for _ in 0..300 {
            b.deposit();
            assert!(b.try_withdraw());
            assert!(b.try_withdraw());
            advance(secs(2)).await;
        }
    }

    #[test]
    fn concurrent_withdrawals_never_overdraw() {
        // No runtime here: tokio's clock falls back to the real one, and the test takes far
        // less than a slot, so nothing expires while it runs.
        let b = RetryBudget::new(0.2, 10); // 100 floor
        let granted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for i in 0..2000 {
                        if i % 4 == 0 {
                            b.deposit();
                        }
                        if b.try_withdraw() {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // 8 threads × 500 deposits × 0.2 = 800, plus the floor of 100.
        let granted = granted.into_inner();
        assert!(granted <= 900, "{granted}");
        assert!(granted >= 850, "{granted}");
        assert_eq!(b.available(), 900 - granted);
    }

    #[tokio::test(start_paused = true)]
    async fn settings_are_clamped_not_trusted() {
        for ratio in [f64::NAN, -1.0, f64::NEG_INFINITY] {
            let b = RetryBudget::new(ratio, 0);
            b.deposit();
            assert!(!b.try_withdraw(), "{ratio}");
        }
        let b = RetryBudget::new(f64::INFINITY, 0);
        b.deposit();
        assert_eq!(b.available(), 100);

        let b = RetryBudget::with_window(0.0, u32::MAX, Duration::MAX);
        assert_eq!(b.available(), u64::from(u32::MAX) * 3600);
        assert!(b.try_withdraw());

        // A zero window is raised to one second: 10 retries for a floor of 10/s.
        let b = RetryBudget::with_window(0.0, 10, Duration::ZERO);
        assert_eq!((0..20).filter(|_| b.try_withdraw()).count(), 10);
        advance(Duration::from_millis(1100)).await;
        assert_eq!(b.available(), 10);
        assert!(format!("{b:?}").contains("available: 10"));
    }

    #[test]
    fn huge_slot_balances_saturate_instead_of_wrapping() {
        fn slot_balance(b: &RetryBudget, period: u64) -> i32 {
            unpack(b.slots[(period % SLOTS as u64) as usize].load(Ordering::SeqCst)).1
        }
        let b = RetryBudget::new(100.0, 0);
        let period = b.period();
        assert!(b.add(period, i32::MAX - 10));
        b.deposit();
        assert_eq!(slot_balance(&b, period), i32::MAX);

        // A debit past i32::MIN is refused rather than wrapping to a huge credit.
        let b = RetryBudget::new(0.0, u32::MAX);
        let period = b.period();
        assert!(b.add(period, i32::MIN + 10));
        assert!(!b.add(period, -UNIT));
        assert!(!b.try_withdraw());
        assert_eq!(slot_balance(&b, period), i32::MIN + 10);
    }

    #[test]
    fn slot_tags_compare_across_wrap_around() {
        assert!(is_live(5, 5));
        assert!(is_live(5, 0));
        assert!(!is_live(10, 0));
        assert!(is_live(3, u32::MAX - 2)); // written 6 periods ago, before the wrap
        assert!(!is_live(20, u32::MAX - 2));
        assert!(is_live(u32::MAX, 2)); // a thread 3 periods ahead, across the wrap
        assert!(is_ahead(u32::MAX, 2));
        assert!(!is_ahead(5, 5));
        assert!(!is_ahead(5, 100));
        for (tag, balance) in [(0, 0), (u32::MAX, -1), (7, i32::MIN), (1, i32::MAX)] {
            assert_eq!(unpack(pack(tag, balance)), (tag, balance));
        }
    }
}
