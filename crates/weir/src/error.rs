//! The one error type of the library.
//!
//! Variants are kinds of failure, not call sites. Each knows whether a retry could help
//! ([`Error::is_retryable`]), what wait the upstream asked for ([`Error::retry_after`]) and which
//! HTTP status it maps to ([`Error::http_status`]); the server maps it to each route's error body
//! in one place. Messages say what went wrong and what to do, and never carry a secret.

use std::time::Duration;

/// Longest upstream body excerpt kept in an error: enough to read the provider's message,
/// bounded so a misbehaving upstream cannot blow up logs or memory.
pub const BODY_EXCERPT_LIMIT: usize = 2048;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Total => "total",
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is wrong; sending it again will not help.
    #[error("invalid request: {message}")]
    InvalidRequest {
        message: String,
        /// The offending field, when one is known (`messages`, `model`...).
        param: Option<String>,
    },
    /// The upstream rejected the API key.
    #[error("{provider} rejected the API key: {message}; check the key configured for {provider}")]
    Authentication { provider: String, message: String },
    /// The key is valid but not allowed to do this.
    #[error("{provider} denied permission: {message}")]
    Permission { provider: String, message: String },
    /// No provider or alias serves this model.
    #[error("model `{model}` not found: {hint}")]
    ModelNotFound { model: String, hint: String },
    /// The upstream (or a limit of weir's) said to slow down.
    #[error("rate limited by {provider}: {message}{}", fmt_retry(.retry_after))]
    RateLimited {
        provider: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{provider} timed out ({phase} timeout of {}); raise the timeout or try again", fmt_duration(.after))]
    Timeout {
        provider: String,
        phase: TimeoutPhase,
        after: Duration,
    },
    /// The upstream answered with an error status not covered by a more specific variant.
    #[error("{provider} returned HTTP {status}: {message}")]
    Upstream {
        provider: String,
        status: u16,
        message: String,
        /// At most [`BODY_EXCERPT_LIMIT`] bytes of the response body.
        body_excerpt: String,
        retry_after: Option<Duration>,
    },
    /// The upstream answered 2xx with something that is not its API's format.
    #[error("{provider} sent a response weir could not understand: {message}")]
    InvalidResponse { provider: String, message: String },
    /// No connection could be made, or it broke before any response byte.
    #[error("could not reach {provider}: {message}")]
    Connection { provider: String, message: String },
    /// A stream broke after it started.
    #[error("stream from {provider} was interrupted: {message}")]
    StreamInterrupted { provider: String, message: String },
    /// The circuit breaker of this deployment is open.
    #[error("circuit open for {deployment}: failing fast{}", fmt_retry(.retry_after))]
    CircuitOpen {
        deployment: String,
        retry_after: Option<Duration>,
    },
    /// A spending limit would be passed.
    #[error("budget exceeded for {scope}: {message}")]
    BudgetExceeded { scope: String, message: String },
    /// No key in the pool had capacity within the acquire timeout.
    #[error("no capacity for {pool}{}", fmt_retry(.retry_after))]
    PoolExhausted {
        pool: String,
        retry_after: Option<Duration>,
    },
    /// The provider does not offer this operation (e.g. embeddings on Anthropic).
    #[error("{provider} does not support {operation}; use a model from a provider that does")]
    Unsupported { provider: String, operation: String },
    /// A policy of weir's (a budget, a rate limit, an access rule, a request hook) refused
    /// the call before any upstream call. `status` is a 4xx (or 503 when the policy's own
    /// state could not be reached); `code` a stable machine label. The message is shown as
    /// is: when `retry_after` is set, it says when to retry.
    #[error("{message}")]
    Rejected {
        status: u16,
        code: &'static str,
        message: String,
        retry_after: Option<Duration>,
        /// The rate limit that refused the call, when one did.
        quota: Option<crate::pipeline::Quota>,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A duration as people write it: `250ms`, `1.5s`, `30s` (never `999.851329ms`).
fn fmt_duration(d: &Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1000.0 {
        format!("{}ms", ms.round())
    } else {
        let secs = (d.as_secs_f64() * 10.0).round() / 10.0;
        format!("{secs}s")
    }
}

fn fmt_retry(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("; retry after {:.3}s", d.as_secs_f64()),
        None => String::new(),
    }
}

/// A copyable label for an error, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Permission,
    ModelNotFound,
    RateLimited,
    Timeout,
    Upstream,
    InvalidResponse,
    Connection,
    StreamInterrupted,
    CircuitOpen,
    BudgetExceeded,
    PoolExhausted,
    Unsupported,
    Rejected,
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Authentication => "authentication",
            ErrorKind::Permission => "permission",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Upstream => "upstream",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Connection => "connection",
            ErrorKind::StreamInterrupted => "stream_interrupted",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::PoolExhausted => "pool_exhausted",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Config => "config",
        }
    }
}

impl Error {
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// A configuration error with one problem at `path` ([`ConfigError::single`]).
    ///
    /// [`ConfigError::single`]: crate::config::ConfigError::single
    pub fn config(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config(crate::config::ConfigError::single(path, reason))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::Authentication { .. } => ErrorKind::Authentication,
            Error::Permission { .. } => ErrorKind::Permission,
            Error::ModelNotFound { .. } => ErrorKind::ModelNotFound,
            Error::RateLimited { .. } => ErrorKind::RateLimited,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Upstream { .. } => ErrorKind::Upstream,
            Error::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            Error::Connection { .. } => ErrorKind::Connection,
            Error::StreamInterrupted { .. } => ErrorKind::StreamInterrupted,
            Error::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            Error::BudgetExceeded { .. } => ErrorKind::BudgetExceeded,
            Error::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Rejected { .. } => ErrorKind::Rejected,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// Whether sending the same request again (here or elsewhere) could succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Timeout { .. }
            | Error::Connection { .. }
            | Error::CircuitOpen { .. }
            | Error::PoolExhausted { .. } => true,
            Error::Upstream { status, .. } => is_retryable_status(*status),
            // A broken stream can be retried only if nothing reached the client; the caller
            // knows that, this type does not, so it says "yes" and the retry layer decides.
            Error::StreamInterrupted { .. } => true,
            _ => false,
        }
    }

    /// The wait the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. }
            | Error::Upstream { retry_after, .. }
            | Error::CircuitOpen { retry_after, .. }
            | Error::PoolExhausted { retry_after, .. }
            | Error::Rejected { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The rate limit that refused the call, for a refusal by one.
    pub fn quota(&self) -> Option<crate::pipeline::Quota> {
        match self {
            Error::Rejected { quota, .. } => *quota,
            _ => None,
        }
    }

    /// The HTTP status this error maps to at the gateway edge.
    ///
    /// Chosen so the official SDKs behave: they retry 408, 409, 429 and 5xx, and raise
    /// `AuthenticationError` on 401, `NotFoundError` on 404, `RateLimitError` on 429.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidRequest { .. } => 400,
            Error::Authentication { .. } => 401,
            Error::Permission { .. } => 403,
            Error::ModelNotFound { .. } => 404,
            Error::RateLimited { .. } | Error::PoolExhausted { .. } => 429,
            Error::Timeout { .. } => 504,
            Error::Upstream { status, .. } => *status,
            Error::InvalidResponse { .. } | Error::Connection { .. } => 502,
            Error::StreamInterrupted { .. } => 502,
            Error::CircuitOpen { .. } => 503,
            Error::BudgetExceeded { .. } => 429,
            Error::Unsupported { .. } => 400,
            // Refusals are 4xx, or 503 when a policy cannot reach its state (a rate limiter's
            // Redis); anything else is a policy bug, reported as such.
            Error::Rejected { status, .. } if (400..500).contains(status) || *status == 503 => {
                *status
            }
            Error::Rejected { .. } => 403,
            Error::Config(_) => 500,
        }
    }

    /// Classify an upstream error response by status.
    ///
    /// `message` is the provider's own error message when its body could be parsed,
    /// `body` the raw body (only an excerpt is kept).
    pub fn from_upstream(
        provider: &str,
        status: u16,
        message: Option<String>,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> Self {
        let provider = provider.to_owned();
        let body_excerpt = excerpt(body);
        let message = message.unwrap_or_else(|| {
            if body_excerpt.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                body_excerpt.clone()
            }
        });
        match status {
            400 | 413 | 422 => Error::InvalidRequest {
                message: format!("{provider} rejected the request: {message}"),
                param: None,
            },
            401 => Error::Authentication { provider, message },
            403 => Error::Permission { provider, message },
            429 => Error::RateLimited {
                provider,
                message,
                retry_after,
            },
            _ => Error::Upstream {
                provider,
                status,
                message,
                body_excerpt,
                retry_after,
            },
        }
    }
}

/// 408, 429, the transient 5xx and Anthropic's 529 "overloaded" are worth another try;
/// 400, 401, 403, 404, 422 and 501 are not.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// A lossy UTF-8 excerpt of at most [`BODY_EXCERPT_LIMIT`] bytes, cut on a char boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT_LIMIT + 4)]);
    let mut end = text.len().min(BODY_EXCERPT_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_upstream_statuses() {
        let e = Error::from_upstream(
            "openai",
            429,
            None,
            b"slow down",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.http_status(), 429);

        let e = Error::from_upstream("openai", 401, Some("bad key".into()), b"", None);
        assert_eq!(e.http_status(), 401);
        assert!(!e.is_retryable());

        let e = Error::from_upstream("anthropic", 529, None, b"{}", None);
        assert_eq!(e.http_status(), 529);
        assert!(e.is_retryable());

        let e = Error::from_upstream("openai", 400, Some("bad".into()), b"", None);
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(!e.is_retryable());
    }

    #[test]
    fn excerpt_is_bounded_and_utf8_safe() {
        let body = "é".repeat(5000);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= BODY_EXCERPT_LIMIT);
        assert!(e.chars().all(|c| c == 'é'));
    }

    #[test]
    fn timeouts_print_rounded() {
        let e = |ms: u64| {
            Error::Timeout {
                provider: "openai".into(),
                phase: TimeoutPhase::Total,
                after: Duration::from_micros(ms),
            }
            .to_string()
        };
        assert!(e(999_851).contains("timeout of 1000ms"), "{}", e(999_851));
        assert!(e(250_000).contains("timeout of 250ms"), "{}", e(250_000));
        assert!(e(1_500_400).contains("timeout of 1.5s"), "{}", e(1_500_400));
        assert!(
            e(30_000_000).contains("timeout of 30s"),
            "{}",
            e(30_000_000)
        );
    }
}
