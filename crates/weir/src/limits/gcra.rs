//! The arithmetic of the generic cell rate algorithm (GCRA), on plain integers.
//!
//! A cell holds one number, its theoretical arrival time (TAT): the instant at which the limit
//! would be back to full. A call costing `c` of a limit `L` per minute moves the TAT forward by
//! `c` emission intervals (`c × 60 s / L`), starting from now if the TAT is in the past; it
//! passes if the new TAT is at most one window (a minute) ahead of now. So `L` unit calls pass
//! at once from full, then one per `60 s / L`: a smooth limit with a burst of `L`, never a
//! fixed window that lets `2L` through around its edge.
//!
//! Time is in ticks of the backend's choosing (nanoseconds in memory, microseconds in Redis,
//! whose script does the same arithmetic); `window` is one minute in those ticks. Increments
//! round down, so a burst of `L` always fits; at most one tick per call is lost to rounding.

/// One minute in nanoseconds: the in-memory backend's window.
pub(crate) const MINUTE_NANOS: u64 = 60_000_000_000;
/// One minute in microseconds: the Redis backend's window (its clock, `TIME`, counts them).
#[cfg_attr(
    all(not(feature = "redis"), not(test)),
    expect(dead_code, reason = "only the Redis backend counts in microseconds")
)]
pub(crate) const MINUTE_MICROS: u64 = 60_000_000;

/// What taking `cost` from a cell would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// It fits: the cell's new TAT.
    Admit(u64),
    /// It does not: `wait` ticks until it would, and the cell's current `backlog` (how far
    /// its TAT is ahead of now).
    Refuse { wait: u64, backlog: u64 },
}

/// How far the TAT moves for `cost` of a limit of `limit` per window.
pub(crate) fn increment(cost: u64, limit: u64, window: u64) -> u64 {
    let ticks = u128::from(cost) * u128::from(window) / u128::from(limit.max(1));
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Take `inc` ticks from a cell whose TAT is `tat`, at `now`.
pub(crate) fn step(tat: u64, now: u64, inc: u64, window: u64) -> Step {
    let from = tat.max(now);
    let ahead = (from - now).saturating_add(inc);
    if ahead <= window {
        Step::Admit(from.saturating_add(inc))
    } else {
        Step::Refuse {
            wait: ahead - window,
            backlog: from - now,
        }
    }
}

/// What a cell `backlog` ticks behind full still allows at once, in units of the limit.
pub(crate) fn remaining(backlog: u64, limit: u64, window: u64) -> u64 {
    let room = u128::from(window.saturating_sub(backlog)) * u128::from(limit);
    u64::try_from(room / u128::from(window.max(1))).unwrap_or(u64::MAX)
}

/// The TAT after giving `amount` ticks back: earlier, but never before now (a TAT in the
/// past means full, whatever its value).
pub(crate) fn give_back(tat: u64, now: u64, amount: u64) -> u64 {
    tat.saturating_sub(amount).max(now)
}

/// The TAT after charging `amount` ticks more, unconditionally (usage beyond the estimate has
/// happened; the calls after it wait).
pub(crate) fn charge(tat: u64, now: u64, amount: u64) -> u64 {
    tat.max(now).saturating_add(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = MINUTE_NANOS;

    #[test]
    fn a_full_cell_takes_a_burst_of_its_limit_then_one_per_interval() {
        let inc = increment(1, 20, W);
        assert_eq!(inc, 3_000_000_000);
        let mut tat = 0;
        for _ in 0..20 {
            match step(tat, 0, inc, W) {
                Step::Admit(t) => tat = t,
                other => panic!("refused inside the burst: {other:?}"),
            }
        }
        assert_eq!(
            step(tat, 0, inc, W),
            Step::Refuse {
                wait: inc,
                backlog: W
            }
        );
        assert!(matches!(step(tat, inc, inc, W), Step::Admit(_)));
    }

    #[test]
    fn odd_limits_still_fit_their_whole_burst() {
        for limit in [1, 7, 9_999, 100_000] {
            let inc = increment(1, limit, MINUTE_MICROS);
            let mut tat = 0;
            let mut admitted = 0u64;
            while let Step::Admit(t) = step(tat, 0, inc, MINUTE_MICROS) {
                tat = t;
                admitted += 1;
                if admitted > limit + 1 {
                    break;
                }
            }
            assert!(admitted >= limit, "limit {limit}: {admitted} admitted");
        }
    }

    #[test]
    fn remaining_counts_whole_units_left() {
        assert_eq!(remaining(0, 20, W), 20);
        assert_eq!(remaining(3_000_000_000, 20, W), 19);
        assert_eq!(remaining(3_000_000_001, 20, W), 18);
        assert_eq!(remaining(W, 20, W), 0);
        assert_eq!(remaining(2 * W, 20, W), 0);
    }

    #[test]
    fn giving_back_never_goes_before_now_and_charging_starts_from_now() {
        assert_eq!(give_back(100, 50, 30), 70);
        assert_eq!(give_back(100, 90, 30), 90);
        assert_eq!(give_back(10, 50, 30), 50);
        assert_eq!(charge(10, 50, 30), 80);
        assert_eq!(charge(100, 50, 30), 130);
    }
}
