//! A fixed-bucket histogram of atomics: recording is three relaxed atomic adds (bucket, sum,
//! count) after a scan of at most 16 bounds, with no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most bounds a histogram has (the `+Inf` bucket is extra).
pub(crate) const MAX_BOUNDS: usize = 16;

/// Bucket bounds, in the unit the histogram is recorded in, with their printed form.
#[derive(Debug)]
pub(crate) struct Bounds {
    /// Upper bounds in recorded units (nanoseconds, or tokens), ascending.
    pub(crate) units: &'static [u64],
    /// The same bounds as printed in `le` (seconds, or tokens).
    pub(crate) le: &'static [&'static str],
    /// Recorded units per printed unit (1e9 for seconds from nanoseconds, 1 for tokens).
    pub(crate) scale: f64,
}

/// `gen_ai.client.operation.duration`'s advised boundaries, in seconds.
pub(crate) static DURATION: Bounds = Bounds {
    units: &[
        10_000_000,
        20_000_000,
        40_000_000,
        80_000_000,
        160_000_000,
        320_000_000,
        640_000_000,
        1_280_000_000,
        2_560_000_000,
        5_120_000_000,
        10_240_000_000,
        20_480_000_000,
        40_960_000_000,
        81_920_000_000,
    ],
    le: &[
        "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12", "10.24",
        "20.48", "40.96", "81.92",
    ],
    scale: 1e9,
};

/// `gen_ai.client.token.usage`'s advised boundaries, in tokens.
pub(crate) static TOKENS: Bounds = Bounds {
    units: &[
        1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304, 16_777_216,
        67_108_864,
    ],
    le: &[
        "1", "4", "16", "64", "256", "1024", "4096", "16384", "65536", "262144", "1048576",
        "4194304", "16777216", "67108864",
    ],
    scale: 1.0,
};

/// `gen_ai.server.time_to_first_token`'s advised boundaries, in seconds.
pub(crate) static FIRST_TOKEN: Bounds = Bounds {
    units: &[
        1_000_000,
        5_000_000,
        10_000_000,
        20_000_000,
        40_000_000,
        60_000_000,
        80_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        750_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        7_500_000_000,
        10_000_000_000,
    ],
    le: &[
        "0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5", "0.75",
        "1", "2.5", "5", "7.5", "10",
    ],
    scale: 1e9,
};

/// `gen_ai.server.time_per_output_token`'s advised boundaries, in seconds.
pub(crate) static PER_TOKEN: Bounds = Bounds {
    units: &[
        10_000_000,
        25_000_000,
        50_000_000,
        75_000_000,
        100_000_000,
        150_000_000,
        200_000_000,
        300_000_000,
        400_000_000,
        500_000_000,
        750_000_000,
        1_000_000_000,
        2_500_000_000,
    ],
    le: &[
        "0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.4", "0.5", "0.75", "1",
        "2.5",
    ],
    scale: 1e9,
};

/// weir's own time per call: finer, since it should be well under a millisecond.
pub(crate) static OVERHEAD: Bounds = Bounds {
    units: &[
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
    ],
    le: &[
        "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
        "0.05", "0.1",
    ],
    scale: 1e9,
};

/// One histogram series: per-bucket (not cumulative) counts, the sum and the count.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// A histogram's figures at one scrape, cumulative as Prometheus prints them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// Cumulative counts, one per bound, then `+Inf`.
    pub(crate) cumulative: Vec<u64>,
    pub(crate) sum: f64,
    pub(crate) count: u64,
}

impl Histogram {
    pub(crate) fn record(&self, bounds: &Bounds, value: u64) {
        let i = bounds
            .units
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(bounds.units.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self, bounds: &Bounds) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self.buckets[..=bounds.units.len()]
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        HistogramSnapshot {
            cumulative,
            sum: self.sum.load(Ordering::Relaxed) as f64 / bounds.scale,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_their_printed_form() {
        for b in [&DURATION, &TOKENS, &FIRST_TOKEN, &PER_TOKEN, &OVERHEAD] {
            assert!(b.units.len() <= MAX_BOUNDS);
            assert_eq!(b.units.len(), b.le.len());
            for (u, le) in b.units.iter().zip(b.le) {
                let printed: f64 = le.parse().unwrap_or(f64::NAN);
                assert!((*u as f64 / b.scale - printed).abs() < 1e-12, "{le}");
            }
        }
    }

    #[test]
    fn values_land_in_their_bucket_and_accumulate() {
        let h = Histogram::default();
        h.record(&TOKENS, 1); // le 1
        h.record(&TOKENS, 5); // le 16
        h.record(&TOKENS, 100_000_000); // +Inf
        let s = h.snapshot(&TOKENS);
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 1);
        assert_eq!(s.cumulative[2], 2);
        assert_eq!(s.cumulative[13], 2);
        assert_eq!(s.cumulative[14], 3);
        assert_eq!(s.sum, 100_000_006.0);
    }
}
