//! weir's benchmark tools: a fake upstream that is never the bottleneck ([`fake`]) and a
//! load generator ([`load`]) that measures latency, throughput and SSE timings as JSON.
//!
//! Both binaries are thin wrappers: `fake-upstream` and `weir-load`. `bench/run.sh` drives them.

pub mod fake;
pub mod load;
pub mod sse;
pub mod stats;

/// Marker put before a 19-digit wall-clock timestamp (nanoseconds since the Unix epoch) in each
/// paced content chunk, so the load tool can tell how long a chunk took to reach it.
pub const STAMP_MARK: &[u8] = b"@@";
/// Digits of a stamp.
pub const STAMP_DIGITS: usize = 19;

/// The tokio runtime of a bench binary: single-threaded for `threads <= 1`, else that many
/// workers.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
