//! [`Quota`]: where a call stands against one rate limit, as an [`Admission`](super::Admission)
//! reports it. A call keeps the tightest quota of its admissions and hands it to its answer's
//! metadata (or its refusal), so the gateway can send `x-ratelimit-*` headers.

use std::time::Duration;

use serde::Serialize;

/// Whose limit a [`Quota`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// One gateway key.
    Key,
    User,
    Team,
    /// One client IP address (calls without a gateway key).
    Ip,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::User => "user",
            Self::Team => "team",
            Self::Ip => "ip",
        }
    }
}

/// What a [`Quota`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens (input plus output) per minute.
    Tokens,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// One rate limit and what is left of it.
///
/// Serialised with `reset` as `reset_ms`, in whole milliseconds (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub scope: LimitScope,
    pub kind: LimitKind,
    /// The limit, per minute.
    pub limit: u64,
    /// What can still be spent at once.
    pub remaining: u64,
    /// Time until the limit is back to full.
    #[serde(rename = "reset_ms", serialize_with = "millis_up")]
    pub reset: Duration,
}

impl Quota {
    /// The tighter of two quotas: the lower `remaining`, and on a tie the longer `reset`
    /// (the one that takes longer to recover).
    pub fn tightest(a: Option<Quota>, b: Option<Quota>) -> Option<Quota> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let b_tighter =
                    b.remaining < a.remaining || (b.remaining == a.remaining && b.reset > a.reset);
                Some(if b_tighter { b } else { a })
            }
            (a, None) => a,
            (None, b) => b,
        }
    }
}

fn millis_up<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = d.as_nanos().div_ceil(1_000_000);
    s.serialize_u64(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(remaining: u64, reset_ms: u64) -> Quota {
        Quota {
            scope: LimitScope::Key,
            kind: LimitKind::Requests,
            limit: 10,
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn the_tightest_has_the_least_left_then_the_longest_reset() {
        let (a, b, c) = (quota(3, 100), quota(1, 50), quota(1, 80));
        assert_eq!(Quota::tightest(Some(a), Some(b)), Some(b));
        assert_eq!(Quota::tightest(Some(b), Some(a)), Some(b));
        assert_eq!(Quota::tightest(Some(b), Some(c)), Some(c));
        assert_eq!(Quota::tightest(Some(c), Some(b)), Some(c));
        assert_eq!(Quota::tightest(None, Some(a)), Some(a));
        assert_eq!(Quota::tightest(Some(a), None), Some(a));
        assert_eq!(Quota::tightest(None, None), None);
    }

    #[test]
    fn serialises_its_reset_in_milliseconds() -> Result<(), serde_json::Error> {
        let mut q = quota(2, 0);
        q.reset = Duration::from_micros(1500);
        let json = serde_json::to_value(q)?;
        assert_eq!(
            json,
            serde_json::json!({
                "scope": "key", "kind": "requests", "limit": 10, "remaining": 2, "reset_ms": 2
            })
        );
        Ok(())
    }
}
