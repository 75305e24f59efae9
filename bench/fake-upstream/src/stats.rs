//! Latency summaries: exact percentiles over every recorded sample, as JSON in microseconds.

use serde_json::{Value, json};

/// Percentile (0..=100) of sorted nanosecond samples, nearest-rank.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 10.0).round() / 100.0
}

/// Count, mean, p50, p90, p99, p99.9 and max of `samples` (nanoseconds), in microseconds.
pub fn summary(samples: &mut [u64]) -> Value {
    samples.sort_unstable();
    let n = samples.len();
    let mean = if n == 0 {
        0
    } else {
        (samples.iter().map(|&s| u128::from(s)).sum::<u128>() / n as u128) as u64
    };
    json!({
        "count": n,
        "mean": us(mean),
        "p50": us(pct(samples, 50.0)),
        "p90": us(pct(samples, 90.0)),
        "p99": us(pct(samples, 99.0)),
        "p999": us(pct(samples, 99.9)),
        "max": us(samples.last().copied().unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let s = summary(&mut v);
        assert_eq!(s["p50"], 50.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
        assert_eq!(summary(&mut [])["count"], 0);
    }
}
