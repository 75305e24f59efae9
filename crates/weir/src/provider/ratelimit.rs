//! Upstream rate-limit headers: parsing them into a [`RateLimitSnapshot`], and `Retry-After`.
//!
//! This module owns the header formats of every provider weir talks to:
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as Go-style
//!   durations (`6m0s`, `1s`, `20ms`, `1h2m3.5s`);
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`,
//!   resets as RFC 3339 timestamps;
//! - OpenRouter and other compatible servers: unsuffixed `x-ratelimit-{limit,remaining,reset}`
//!   for requests, resets as Unix timestamps (seconds or milliseconds);
//! - `retry-after-ms` (OpenAI, Anthropic) and `retry-after` (seconds or an HTTP-date).
//!
//! Parsing is total: a malformed header is ignored, never an error, because rate-limit headers
//! are advice and a bad one must not fail a call that otherwise succeeded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::{Serialize, Serializer};

/// The longest wait weir will take from an upstream's `Retry-After`. Anything longer is clamped:
/// a day-long "retry after" usually means a quota ran out, and the router should treat the
/// deployment as limited for a while, not park a request for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Resets further out than this are clamped too; they come from broken clocks or parsers.
const MAX_RESET: Duration = Duration::from_secs(7 * 24 * 3600);

/// One rate-limit window (requests, tokens, ...) as the upstream described it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitWindow {
    /// The window's capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// What is left of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// How long after `observed_at` the window is full again.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_secs"
    )]
    pub reset_after: Option<Duration>,
    /// When the window is full again (`observed_at + reset_after`), as Unix seconds.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_unix"
    )]
    pub reset_at: Option<SystemTime>,
}

impl RateLimitWindow {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset_after.is_none()
    }

    /// Exhausted, and the reset is still ahead of `now`.
    ///
    /// A window with nothing remaining but no known reset does not count: weir could never
    /// tell when to try again, and the next response's headers will say more.
    pub fn is_exhausted_at(&self, now: SystemTime) -> bool {
        self.remaining == Some(0) && self.reset_at.is_some_and(|r| r > now)
    }
}

/// What an upstream's headers said about its rate limits, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitSnapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RateLimitWindow>,
    /// Tokens of any kind (OpenAI; Anthropic's combined window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<RateLimitWindow>,
    /// Anthropic's input-token window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<RateLimitWindow>,
    /// Anthropic's output-token window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<RateLimitWindow>,
    /// The wait the upstream asked for, from `retry-after-ms` / `retry-after`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_secs"
    )]
    pub retry_after: Option<Duration>,
    /// When the headers were read, as Unix seconds; resets and `retry_after` count from here.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_unix"
    )]
    pub observed_at: Option<SystemTime>,
}

impl RateLimitSnapshot {
    /// Whether the upstream is known to refuse a call made right now: a request or token
    /// window is exhausted until a reset still in the future, or a `Retry-After` is running.
    pub fn is_limited_now(&self) -> bool {
        self.is_limited_at(SystemTime::now())
    }

    /// [`Self::is_limited_now`] at a given time (for tests and for callers that batch).
    pub fn is_limited_at(&self, now: SystemTime) -> bool {
        let windows = [
            &self.requests,
            &self.tokens,
            &self.input_tokens,
            &self.output_tokens,
        ];
        if windows
            .iter()
            .any(|w| w.as_ref().is_some_and(|w| w.is_exhausted_at(now)))
        {
            return true;
        }
        match (self.retry_after, self.observed_at) {
            (Some(wait), Some(at)) => at.checked_add(wait).is_some_and(|until| until > now),
            _ => false,
        }
    }

    /// When calls may resume: the latest reset among exhausted windows and `Retry-After`,
    /// or `None` if nothing is limited at `now`.
    pub fn limited_until(&self, now: SystemTime) -> Option<SystemTime> {
        let windows = [
            &self.requests,
            &self.tokens,
            &self.input_tokens,
            &self.output_tokens,
        ];
        let mut until = windows
            .iter()
            .filter_map(|w| w.as_ref())
            .filter(|w| w.is_exhausted_at(now))
            .filter_map(|w| w.reset_at)
            .max();
        if let (Some(wait), Some(at)) = (self.retry_after, self.observed_at)
            && let Some(t) = at.checked_add(wait)
            && t > now
        {
            until = Some(until.map_or(t, |u| u.max(t)));
        }
        until
    }
}

/// Read the rate-limit headers of a response; `None` if it has none.
pub fn parse_headers(headers: &HeaderMap) -> Option<RateLimitSnapshot> {
    parse_headers_at(headers, SystemTime::now())
}

/// [`parse_headers`] as if observed at `now` (deterministic for tests).
pub fn parse_headers_at(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitSnapshot> {
    // One pass over the response's headers picks out the ones this module reads; most
    // responses carry a dozen headers and this runs on every call, so no per-name lookups.
    let found = Found::scan(headers);
    if found.is_empty() {
        return None;
    }
    let get = |name: &str| found.get(name);
    let openai = |limit, remaining, reset| {
        window(
            get(limit),
            get(remaining),
            get(reset),
            now,
            parse_relative_reset,
        )
    };
    let anthropic = |limit, remaining, reset| {
        window(
            get(limit),
            get(remaining),
            get(reset),
            now,
            parse_absolute_reset,
        )
    };
    // OpenRouter and others: one unsuffixed request window, reset as a Unix timestamp.
    let unsuffixed = || {
        window(
            get("x-ratelimit-limit"),
            get("x-ratelimit-remaining"),
            get("x-ratelimit-reset"),
            now,
            parse_unix_reset,
        )
    };

    let snapshot = RateLimitSnapshot {
        requests: anthropic(
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        )
        .or_else(|| {
            openai(
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            )
        })
        .or_else(unsuffixed),
        tokens: anthropic(
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        )
        .or_else(|| {
            openai(
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            )
        }),
        input_tokens: anthropic(
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ),
        output_tokens: anthropic(
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ),
        retry_after: retry_after_from(get("retry-after-ms"), get("retry-after"), now),
        observed_at: Some(now),
    };
    let any = snapshot.requests.is_some()
        || snapshot.tokens.is_some()
        || snapshot.input_tokens.is_some()
        || snapshot.output_tokens.is_some()
        || snapshot.retry_after.is_some();
    any.then_some(snapshot)
}

/// Every header name this module reads.
const NAMES: [&str; 23] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "retry-after-ms",
    "retry-after",
];

/// The values of the [`NAMES`] headers a response carries (trimmed, non-empty, text).
struct Found<'a>([Option<&'a str>; NAMES.len()]);

impl<'a> Found<'a> {
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut found = Found([None; NAMES.len()]);
        for (name, value) in headers {
            let name = name.as_str();
            // Header names are lower case in a HeaderMap; the prefix test skips the rest.
            if !(name.starts_with("x-ratelimit")
                || name.starts_with("anthropic-ratelimit")
                || name.starts_with("retry-after"))
            {
                continue;
            }
            if let Some(i) = NAMES.iter().position(|n| *n == name)
                && found.0[i].is_none()
            {
                found.0[i] = value.to_str().ok().map(str::trim).filter(|s| !s.is_empty());
            }
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        let i = NAMES.iter().position(|n| *n == name)?;
        self.0[i]
    }
}

/// The wait an error response asks for: `retry-after-ms` (fractional milliseconds) first,
/// then `retry-after` (seconds, or an HTTP-date). Clamped to [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] relative to `now` (for HTTP-dates).
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    retry_after_from(
        header_str(headers, "retry-after-ms"),
        header_str(headers, "retry-after"),
        now,
    )
}

fn retry_after_from(ms: Option<&str>, value: Option<&str>, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = ms.and_then(parse_non_negative_f64) {
        return Some(clamp_retry(secs_f64_saturating(ms / 1000.0)));
    }
    let value = value?;
    if let Some(secs) = parse_non_negative_f64(value) {
        return Some(clamp_retry(secs_f64_saturating(secs)));
    }
    let at = parse_http_date(value)?;
    // A date in the past means "now".
    Some(clamp_retry(
        at.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

fn clamp_retry(d: Duration) -> Duration {
    d.min(MAX_RETRY_AFTER)
}

fn window(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
    parse_reset: fn(&str, SystemTime) -> Option<Duration>,
) -> Option<RateLimitWindow> {
    let reset_after = reset
        .and_then(|v| parse_reset(v, now))
        .map(|d| d.min(MAX_RESET));
    let w = RateLimitWindow {
        limit: limit.and_then(parse_count),
        remaining: remaining.and_then(parse_count),
        reset_after,
        reset_at: reset_after.and_then(|d| now.checked_add(d)),
    };
    (!w.is_empty()).then_some(w)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A count; some servers send `"1000.0"`, so a whole float is accepted too.
fn parse_count(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        let f = parse_non_negative_f64(s)?;
        // `as` saturates at u64::MAX, which is the right reading of an absurd count.
        (f.fract() == 0.0).then_some(f as u64)
    })
}

fn parse_non_negative_f64(s: &str) -> Option<f64> {
    let f: f64 = s.trim().parse().ok()?;
    (f.is_finite() && f >= 0.0).then_some(f)
}

/// OpenAI's reset: a Go duration (`1h2m3.5s`, `20ms`), or bare seconds.
fn parse_relative_reset(s: &str, _now: SystemTime) -> Option<Duration> {
    parse_go_duration(s).or_else(|| parse_non_negative_f64(s).map(secs_f64_saturating))
}

/// Anthropic's reset: an RFC 3339 timestamp; a time already passed means zero.
fn parse_absolute_reset(s: &str, now: SystemTime) -> Option<Duration> {
    let at = parse_rfc3339(s)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An unsuffixed `x-ratelimit-reset`: a Unix time in milliseconds (OpenRouter) or seconds,
/// told apart by magnitude; small numbers are seconds from now.
fn parse_unix_reset(s: &str, now: SystemTime) -> Option<Duration> {
    let n = parse_non_negative_f64(s)?;
    let at = if n >= 1e12 {
        UNIX_EPOCH.checked_add(secs_f64_saturating(n / 1000.0))?
    } else if n >= 1e9 {
        UNIX_EPOCH.checked_add(secs_f64_saturating(n))?
    } else {
        return parse_relative_reset(s, now);
    };
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn secs_f64_saturating(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// Parse a Go `time.Duration` string as OpenAI sends them: `6m0s`, `1s`, `20ms`, `1h2m3.5s`,
/// `0s`, `1.5µs`. Units: `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// RFC 3339 with any UTC offset (`Z`, `+00:00`, `-07:00`); humantime handles only UTC, so a
/// non-zero offset is applied here.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339(s) {
        return Some(t);
    }
    // `...±HH:MM`: parse the local part as UTC, then undo the offset.
    let split = s.len().checked_sub(6)?;
    if !s.is_char_boundary(split) {
        return None;
    }
    let (local, offset) = s.split_at(split);
    let ob = offset.as_bytes();
    let sign = match ob[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    if ob[3] != b':' {
        return None;
    }
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let as_utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let shift = Duration::from_secs(u64::try_from(hours * 3600 + minutes * 60).ok()?);
    // Local time = UTC + offset, so UTC = local - offset.
    if sign > 0 {
        as_utc.checked_sub(shift)
    } else {
        as_utc.checked_add(shift)
    }
}

/// An HTTP-date: the IMF-fixdate form senders must use (`Sun, 06 Nov 1994 08:49:37 GMT`), or
/// the obsolete RFC 850 and asctime forms, which HTTP requires recipients to accept too.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

fn ser_opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn ser_opt_unix<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("20ms"), Some(ms(20)));
        assert_eq!(parse_go_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("2.083s"), Some(ms(2083)));
        assert_eq!(parse_go_duration("1m30.5s"), Some(ms(90_500)));
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("7ns"), Some(Duration::from_nanos(7)));
        for bad in ["", "s", "5", "5x", "-1s", "1..2s", "ms5", "1h 2m"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_headers() {
        let now = at(1_700_000_000);
        let h = headers(&[
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-limit-tokens", "2000000"),
            ("x-ratelimit-remaining-tokens", "1999950"),
            ("x-ratelimit-reset-tokens", "1m2.5s"),
        ]);
        let s = parse_headers_at(&h, now).unwrap();
        let r = s.requests.as_ref().unwrap();
        assert_eq!(r.limit, Some(10_000));
        assert_eq!(r.remaining, Some(9_999));
        assert_eq!(r.reset_after, Some(Duration::from_millis(6)));
        assert_eq!(r.reset_at, Some(now + Duration::from_millis(6)));
        let t = s.tokens.as_ref().unwrap();
        assert_eq!(t.limit, Some(2_000_000));
        assert_eq!(t.reset_after, Some(Duration::from_millis(62_500)));
        assert!(s.input_tokens.is_none() && s.output_tokens.is_none());
        assert_eq!(s.observed_at, Some(now));
        assert!(!s.is_limited_at(now));
    }

    #[test]
    fn anthropic_headers() {
        let now = humantime::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-01-01T00:00:30Z"),
            ("anthropic-ratelimit-tokens-limit", "90000"),
            ("anthropic-ratelimit-tokens-remaining", "80000"),
            ("anthropic-ratelimit-tokens-reset", "2025-01-01T00:00:01.5Z"),
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "79000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2024-12-31T23:59:00Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "16000"),
            ("anthropic-ratelimit-output-tokens-remaining", "16000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-01-01T01:00:00+01:00",
            ),
        ]);
        let s = parse_headers_at(&h, now).unwrap();
        let r = s.requests.as_ref().unwrap();
        assert_eq!((r.limit, r.remaining), (Some(50), Some(0)));
        assert_eq!(r.reset_after, Some(Duration::from_secs(30)));
        assert_eq!(
            s.tokens.as_ref().unwrap().reset_after,
            Some(Duration::from_millis(1500))
        );
        // A reset already passed reads as zero.
        assert_eq!(
            s.input_tokens.as_ref().unwrap().reset_after,
            Some(Duration::ZERO)
        );
        // +01:00 at 01:00 is midnight UTC: zero wait.
        assert_eq!(
            s.output_tokens.as_ref().unwrap().reset_after,
            Some(Duration::ZERO)
        );
        // Requests exhausted until 00:00:30.
        assert!(s.is_limited_at(now));
        assert!(s.is_limited_at(now + Duration::from_secs(29)));
        assert!(!s.is_limited_at(now + Duration::from_secs(30)));
        assert_eq!(s.limited_until(now), Some(now + Duration::from_secs(30)));
        assert_eq!(s.limited_until(now + Duration::from_secs(31)), None);
    }

    #[test]
    fn openrouter_unsuffixed_headers() {
        let now = at(1_700_000_000);
        let h = headers(&[
            ("x-ratelimit-limit", "20"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1700000005000"),
        ]);
        let s = parse_headers_at(&h, now).unwrap();
        let r = s.requests.unwrap();
        assert_eq!(r.reset_after, Some(Duration::from_secs(5)));
        let h = headers(&[("x-ratelimit-reset", "1700000007")]);
        let r = parse_headers_at(&h, now).unwrap().requests.unwrap();
        assert_eq!(r.reset_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn no_headers_no_snapshot() {
        assert!(parse_headers(&HeaderMap::new()).is_none());
        let h = headers(&[
            ("content-type", "application/json"),
            ("x-ratelimit-limit-requests", "lots"),
        ]);
        assert!(parse_headers(&h).is_none());
    }

    #[test]
    fn exhausted_without_reset_is_not_limited() {
        let now = at(1_000);
        let h = headers(&[("x-ratelimit-remaining-tokens", "0")]);
        let s = parse_headers_at(&h, now).unwrap();
        assert_eq!(s.tokens.as_ref().unwrap().remaining, Some(0));
        assert!(!s.is_limited_at(now));
        // ...but with a reset ahead, it is.
        let h = headers(&[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "2s"),
        ]);
        let s = parse_headers_at(&h, now).unwrap();
        assert!(s.is_limited_at(now + Duration::from_secs(1)));
        assert!(!s.is_limited_at(now + Duration::from_secs(2)));
        assert!(!s.is_limited_now(), "the snapshot was observed long ago");
    }

    #[test]
    fn retry_after_forms() {
        let now = humantime::parse_rfc3339("2015-10-21T07:28:00Z").unwrap();
        let ra = |pairs: &[(&str, &str)]| retry_after_at(&headers(pairs), now);
        assert_eq!(ra(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            ra(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            ra(&[("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            ra(&[("retry-after-ms", "12.5")]),
            Some(Duration::from_micros(12_500))
        );
        // retry-after-ms is more precise and wins.
        assert_eq!(
            ra(&[("retry-after", "2"), ("retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        // A bad retry-after-ms falls back to retry-after.
        assert_eq!(
            ra(&[("retry-after", "2"), ("retry-after-ms", "soon")]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            ra(&[("retry-after", "Wed, 21 Oct 2015 07:28:09 GMT")]),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            ra(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
            Some(Duration::ZERO)
        );
        // Absurd values are clamped, invalid ones ignored.
        assert_eq!(ra(&[("retry-after", "86400000")]), Some(MAX_RETRY_AFTER));
        assert_eq!(ra(&[("retry-after", "1e300")]), Some(MAX_RETRY_AFTER));
        assert_eq!(
            ra(&[("retry-after-ms", "99999999999")]),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            ra(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            Some(MAX_RETRY_AFTER)
        );
        for bad in [
            "-1",
            "NaN",
            "inf",
            "soon",
            "Wed, 21 Oct 2015 07:28:09 PST",
            "Wed 21",
        ] {
            assert_eq!(ra(&[("retry-after", bad)]), None, "{bad:?}");
        }
        assert_eq!(ra(&[]), None);
    }

    #[test]
    fn retry_after_makes_a_snapshot_limited() {
        let now = at(5_000);
        let s = parse_headers_at(&headers(&[("retry-after", "3")]), now).unwrap();
        assert_eq!(s.retry_after, Some(Duration::from_secs(3)));
        assert!(s.is_limited_at(now + Duration::from_secs(2)));
        assert!(!s.is_limited_at(now + Duration::from_secs(3)));
        assert_eq!(s.limited_until(now), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn rfc3339_offsets() {
        let utc = humantime::parse_rfc3339("2025-06-01T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2025-06-01T12:00:00+00:00"), Some(utc));
        assert_eq!(parse_rfc3339("2025-06-01T14:30:00+02:30"), Some(utc));
        assert_eq!(parse_rfc3339("2025-06-01T05:00:00-07:00"), Some(utc));
        assert_eq!(
            parse_rfc3339("2025-06-01T05:00:00.25-07:00"),
            Some(utc + Duration::from_millis(250))
        );
        for bad in [
            "",
            "2025-06-01",
            "2025-06-01T12:00:00+2:00",
            "2025-06-01T12:00:00+24:00",
            "x€€€€€€",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates() {
        let expected = humantime::parse_rfc3339("1994-11-06T08:49:37Z").ok();
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), expected);
        // The obsolete forms, which recipients must accept.
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), expected);
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), expected);
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            // The weekday contradicts the date.
            "Mon, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn serializes_as_seconds() {
        let now = at(1_700_000_000);
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("retry-after-ms", "250"),
        ]);
        let v = serde_json::to_value(parse_headers_at(&h, now).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "requests": {"remaining": 5, "reset_after": 1.5, "reset_at": 1_700_000_001.5},
                "retry_after": 0.25,
                "observed_at": 1_700_000_000.0,
            })
        );
    }

    proptest! {
        /// Whatever the header values, parsing never panics and resets stay bounded.
        #[test]
        fn never_panics(values in proptest::collection::vec("[ -~µ€]{0,40}", 12)) {
            let names = [
                "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens",
                "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-output-tokens-limit", "x-ratelimit-reset",
                "retry-after", "retry-after-ms", "x-ratelimit-limit", "anthropic-ratelimit-input-tokens-reset",
            ];
            let mut h = HeaderMap::new();
            for (name, value) in names.iter().zip(&values) {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(*name, v);
                }
            }
            if let Some(s) = parse_headers(&h) {
                let _ = s.is_limited_now();
                if let Some(r) = s.retry_after {
                    prop_assert!(r <= MAX_RETRY_AFTER);
                }
                for w in [&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens].into_iter().flatten() {
                    prop_assert!(w.reset_after.is_none_or(|d| d <= MAX_RESET));
                }
                let _ = serde_json::to_string(&s);
            }
        }

        #[test]
        fn go_duration_round_trip(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}.{ms:03}s");
            let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
            let got = parse_go_duration(&text).unwrap();
            let diff = got.abs_diff(expected);
            prop_assert!(diff < Duration::from_micros(1), "{text}: {got:?} vs {expected:?}");
        }
    }
}
