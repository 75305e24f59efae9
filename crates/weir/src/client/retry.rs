//! The retry schedule: exponential backoff with full jitter, inside one deadline.
//!
//! A retryable error is retried while attempts remain and the wait fits before the deadline.
//! When the upstream says how long to wait (Retry-After), that wait is used if it fits;
//! if it does not, weir fails now and passes the hint on rather than waiting past the deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::error::Error;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    config: RetryConfig,
}

impl Backoff {
    pub(crate) fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// The wait before attempt `attempts + 1`, or `None` to give up with `err`.
    pub(crate) fn next_wait(
        &self,
        err: &Error,
        attempts: u32,
        deadline: Instant,
    ) -> Option<Duration> {
        if !err.is_retryable() || attempts > self.config.max_retries {
            return None;
        }
        let wait = match err.retry_after() {
            Some(hint) => hint,
            None => {
                let exp = self.config.base_delay.as_secs_f64()
                    * self
                        .config
                        .factor
                        .powi(attempts.saturating_sub(1).min(32) as i32);
                let cap = exp.min(self.config.max_delay.as_secs_f64());
                Duration::from_secs_f64(cap * fastrand::f64())
            }
        };
        (Instant::now() + wait < deadline).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(retry_after: Option<Duration>) -> Error {
        Error::from_upstream("t", 503, None, b"", retry_after)
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_retries_and_on_permanent_errors() {
        let b = Backoff::new(RetryConfig {
            max_retries: 2,
            ..RetryConfig::default()
        });
        let far = Instant::now() + Duration::from_secs(600);
        assert!(b.next_wait(&err(None), 1, far).is_some());
        assert!(b.next_wait(&err(None), 2, far).is_some());
        assert!(b.next_wait(&err(None), 3, far).is_none());
        let bad = Error::from_upstream("t", 400, None, b"", None);
        assert!(b.next_wait(&bad, 1, far).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_waits_stay_under_the_exponential_cap() {
        let cfg = RetryConfig {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            factor: 2.0,
            max_delay: Duration::from_millis(500),
        };
        let b = Backoff::new(cfg);
        let far = Instant::now() + Duration::from_secs(600);
        for attempt in 1..=8 {
            let w = b.next_wait(&err(None), attempt, far).unwrap_or_default();
            let cap = (100.0 * 2f64.powi(attempt as i32 - 1)).min(500.0);
            assert!(
                w.as_secs_f64() * 1000.0 <= cap + 1e-6,
                "attempt {attempt}: {w:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_only_when_it_fits_the_deadline() {
        let b = Backoff::new(RetryConfig::default());
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            b.next_wait(&err(Some(Duration::from_secs(2))), 1, soon),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            b.next_wait(&err(Some(Duration::from_secs(30))), 1, soon),
            None
        );
    }
}
