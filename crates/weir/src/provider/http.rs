//! The HTTP plumbing every HTTP adapter shares.
//!
//! This module owns: the time budget of a call ([`CallDeadlines`]: first byte and total, never
//! past the caller's deadline), sending with that budget ([`send`]), turning transport failures
//! and error responses into [`Error`]s ([`error_from_response`]), bounded body reads, and the
//! guarded event stream of a streamed call ([`sse_events`]). The client itself is
//! [`super::transport`]'s.
//!
//! Error messages built here never contain a URL (its query may hold a key) or the API key (an
//! upstream that echoes it back is redacted).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Body as _;
use http_body_util::BodyExt;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::ratelimit;
use super::sse::{self, SseError, SseEvent};
use super::transport::{self, Response};
use super::{Upstream, UpstreamMeta};
use crate::config::Timeouts;
use crate::error::{Error, Result, TimeoutPhase};

/// Most bytes read from an error response: enough for any provider's error JSON, bounded so
/// a broken upstream cannot stream gigabytes into an error message.
pub const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Most bytes read from a successful non-streamed response (a long completion is ~100 KiB;
/// a large embeddings batch a few MiB).
pub const RESPONSE_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Longest wait for an error response's body once its headers are in: the status already
/// says what happened, the body only adds the message.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

pub use super::transport::{HttpClient, RequestBuilder, error_chain, install_crypto_provider};

/// Parse configured extra headers once, at provider construction.
pub fn header_map(provider: &str, pairs: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let bad = |what: &str| {
            Error::config(
                format!("providers.{provider}.headers.{name}"),
                format!("not a valid HTTP header {what}"),
            )
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        let mut v = HeaderValue::from_str(value).map_err(|_| bad("value"))?;
        // Configured headers may carry credentials (a proxy's auth); keep them out of logs.
        v.set_sensitive(true);
        map.append(n, v);
    }
    Ok(map)
}

/// The auth header of each configured key, built once: a request picks its key's value (a
/// shared-bytes clone) instead of formatting and validating a header every time.
#[derive(Clone)]
pub struct KeyHeaders {
    prefix: &'static str,
    built: Vec<(SecretString, HeaderValue)>,
}

impl KeyHeaders {
    /// `prefix` goes before the secret: `"Bearer "` for OpenAI, `""` for Anthropic.
    pub fn new(
        provider: &str,
        prefix: &'static str,
        keys: &[crate::config::ApiKey],
    ) -> Result<Self> {
        let built = keys
            .iter()
            .map(|k| {
                Ok((
                    k.secret.clone(),
                    secret_header(provider, prefix, &k.secret)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { prefix, built })
    }

    /// The header for this key; built on the spot for a key that is not configured (a
    /// caller-supplied one).
    pub fn get(&self, provider: &str, secret: &SecretString) -> Result<HeaderValue> {
        let wanted = secret.expose_secret();
        match self.built.iter().find(|(k, _)| k.expose_secret() == wanted) {
            Some((_, value)) => Ok(value.clone()),
            None => secret_header(provider, self.prefix, secret),
        }
    }
}

/// A header value from a secret, marked sensitive so `Debug` of the request never shows it.
pub fn secret_header(provider: &str, prefix: &str, secret: &SecretString) -> Result<HeaderValue> {
    let mut v =
        HeaderValue::from_str(&format!("{prefix}{}", secret.expose_secret())).map_err(|_| {
            // Weir's own configuration is wrong, not the client's request; never echo the key.
            Error::config(
                format!("providers.{provider}.keys"),
                "an API key contains characters not allowed in an HTTP header",
            )
        })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The time budget of one upstream call, fixed when it starts.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlines {
    started: Instant,
    /// Headers (and, for streams, the first body bytes) must arrive by then.
    pub first_byte: Instant,
    /// The whole call, body included, must be done by then.
    pub total: Instant,
    timeouts: Timeouts,
}

impl CallDeadlines {
    /// Start the clock: first byte within `timeouts.first_byte`, everything within
    /// `timeouts.total`, neither past the caller's `deadline`.
    pub fn start(timeouts: &Timeouts, deadline: Option<Instant>) -> Self {
        let now = Instant::now();
        let mut total = now + timeouts.total;
        if let Some(d) = deadline {
            total = total.min(d);
        }
        Self {
            started: now,
            first_byte: (now + timeouts.first_byte).min(total),
            total,
            timeouts: *timeouts,
        }
    }

    /// The error for missing the first-byte deadline. When the total budget (or the caller's
    /// deadline) was the tighter bound, it says so, so the right knob gets turned.
    pub fn first_byte_error(&self, provider: &str) -> Error {
        if self.first_byte < self.started + self.timeouts.first_byte {
            self.total_error(provider)
        } else {
            Error::Timeout {
                provider: provider.to_owned(),
                phase: TimeoutPhase::FirstByte,
                after: self.timeouts.first_byte,
            }
        }
    }

    /// The error for missing the total deadline.
    pub fn total_error(&self, provider: &str) -> Error {
        Error::Timeout {
            provider: provider.to_owned(),
            phase: TimeoutPhase::Total,
            after: self.total.saturating_duration_since(self.started),
        }
    }

    fn connect_error(&self, provider: &str) -> Error {
        Error::Timeout {
            provider: provider.to_owned(),
            phase: TimeoutPhase::Connect,
            after: self.timeouts.connect,
        }
    }
}

/// Send a request; the response headers must arrive by the first-byte deadline.
///
/// Any status is returned as `Ok`: callers check it and use [`error_from_response`].
pub async fn send(
    provider: &str,
    req: RequestBuilder<'_>,
    deadlines: &CallDeadlines,
) -> Result<Response> {
    match tokio::time::timeout_at(deadlines.first_byte, req.send()).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(send_error(provider, &e, deadlines)),
        Err(_) => Err(deadlines.first_byte_error(provider)),
    }
}

/// Classify a failure to get a response at all.
fn send_error(provider: &str, e: &transport::SendError, deadlines: &CallDeadlines) -> Error {
    if transport::is_connect_timeout(e) {
        return deadlines.connect_error(provider);
    }
    let message = if e.is_connect() {
        format!("connection failed: {}", error_chain(e))
    } else {
        error_chain(e)
    };
    Error::Connection {
        provider: provider.to_owned(),
        message,
    }
}

/// The upstream's error response as an [`Error`], classified by status with the provider's own
/// message (OpenAI's `{"error":{"message"}}`, Anthropic's `{"type":"error","error":{"message"}}`
/// and the shapes of common compatible servers), `Retry-After` honoured. At most
/// [`ERROR_BODY_LIMIT`] bytes are read; `secret` is redacted if the upstream echoes it.
pub async fn error_from_response(
    provider: &str,
    resp: Response,
    deadlines: &CallDeadlines,
    secret: Option<&SecretString>,
) -> Error {
    let status = resp.status().as_u16();
    let retry_after = ratelimit::retry_after(resp.headers());
    let until = deadlines.total.min(Instant::now() + ERROR_BODY_TIMEOUT);
    // A body that breaks or stalls still leaves the status to classify by.
    let body = read_limited(resp, ERROR_BODY_LIMIT, until)
        .await
        .map(|(b, _)| b)
        .unwrap_or_default();
    let body = redact(&String::from_utf8_lossy(&body), secret);
    let message = error_message(body.as_bytes());
    Error::from_upstream(provider, status, message, body.as_bytes(), retry_after)
}

/// The provider's error message in an error body, if the body is one of the known shapes.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    // OpenAI and Anthropic: error.message. Ollama: error as a string. vLLM, TGI and others:
    // message or detail at the top level.
    v.pointer("/error/message")
        .and_then(text)
        .or_else(|| v.get("error").and_then(text))
        .or_else(|| v.get("message").and_then(text))
        .or_else(|| v.get("detail").and_then(text))
}

/// An error carried in a 2xx body (OpenRouter does this) or a streamed `error` event:
/// `Some` if `v` is an error object rather than the expected payload.
pub fn embedded_error(provider: &str, v: &serde_json::Value) -> Option<Error> {
    let err = v.get("error")?;
    if err.is_null() {
        return None;
    }
    // OpenRouter puts the HTTP status it would have sent in `error.code`.
    let status = err
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(502);
    let body = v.to_string();
    Some(Error::from_upstream(
        provider,
        status,
        error_message(body.as_bytes()),
        body.as_bytes(),
        None,
    ))
}

/// Replace every occurrence of the secret. Very short "keys" (test placeholders) are left
/// alone: redacting a 2-letter string would mangle every message.
pub fn redact(text: &str, secret: Option<&SecretString>) -> String {
    match secret.map(ExposeSecret::expose_secret) {
        Some(s) if s.len() >= 6 && text.contains(s) => text.replace(s, "[redacted]"),
        _ => text.to_owned(),
    }
}

/// Read a whole successful response, at most `limit` bytes, by the total deadline.
pub async fn read_body(
    provider: &str,
    resp: Response,
    deadlines: &CallDeadlines,
    limit: usize,
) -> Result<Bytes> {
    match read_limited(resp, limit, deadlines.total).await {
        Ok((body, false)) => Ok(body),
        Ok((_, true)) => Err(Error::InvalidResponse {
            provider: provider.to_owned(),
            message: format!("the response body exceeded {limit} bytes"),
        }),
        Err(ReadError::Deadline) => Err(deadlines.total_error(provider)),
        Err(ReadError::Transport(e)) => Err(Error::Connection {
            provider: provider.to_owned(),
            message: format!(
                "the connection broke while reading the response: {}",
                error_chain(&e)
            ),
        }),
    }
}

enum ReadError {
    Deadline,
    Transport(hyper::Error),
}

/// Read up to `limit` bytes; the flag says whether the body was longer (and cut).
async fn read_limited(
    resp: Response,
    limit: usize,
    until: Instant,
) -> std::result::Result<(Bytes, bool), ReadError> {
    let mut body = resp.into_body();
    // Content-Length (when sent) sizes the buffer once; a lying one only costs a regrowth.
    let hint = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    let mut buf = BytesMut::with_capacity(hint.min(limit));
    loop {
        match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => return Err(ReadError::Deadline),
            Ok(Some(Err(e))) => return Err(ReadError::Transport(e)),
            Ok(None) => return Ok((buf.freeze(), false)),
            Ok(Some(Ok(frame))) => {
                // Trailers carry nothing weir reads.
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                let room = limit - buf.len();
                if chunk.len() > room {
                    buf.extend_from_slice(&chunk[..room]);
                    return Ok((buf.freeze(), true));
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// Parse a successful JSON body as `T`; a body that is instead an error object becomes that
/// error, anything else [`Error::InvalidResponse`] (with serde's position, not the body, which
/// may hold the user's content).
pub fn parse_json<T: DeserializeOwned>(provider: &str, body: &[u8], what: &str) -> Result<T> {
    // Checked as UTF-8 once, then read as text: `from_slice` checks every string on its own,
    // which cost a fifth of parsing a chat response.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    parsed.map_err(|e| {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(err) = embedded_error(provider, &v)
        {
            return err;
        }
        Error::InvalidResponse {
            provider: provider.to_owned(),
            message: format!("expected {what}: {e}"),
        }
    })
}

/// What the response headers say besides the body: rate limits and the upstream request id.
pub fn upstream_meta(headers: &HeaderMap) -> UpstreamMeta {
    let request_id = ["x-request-id", "request-id"]
        .iter()
        .find_map(|n| headers.get(*n)?.to_str().ok())
        .map(str::to_owned);
    UpstreamMeta {
        rate_limit: ratelimit::parse_headers(headers),
        upstream_request_id: request_id,
        raw_body: None,
    }
}

/// One JSON call: send, check the status, read the bounded body by the total deadline, parse.
pub async fn call_json<T: DeserializeOwned>(
    provider: &str,
    req: RequestBuilder<'_>,
    deadlines: &CallDeadlines,
    secret: Option<&SecretString>,
    what: &str,
) -> Result<Upstream<T>> {
    call_json_keeping_body(provider, req, deadlines, secret, what)
        .await
        .map(|(up, _)| up)
}

/// [`call_json`], also returning the body as received.
pub async fn call_json_keeping_body<T: DeserializeOwned>(
    provider: &str,
    req: RequestBuilder<'_>,
    deadlines: &CallDeadlines,
    secret: Option<&SecretString>,
    what: &str,
) -> Result<(Upstream<T>, Bytes)> {
    let resp = send(provider, req, deadlines).await?;
    if !resp.status().is_success() {
        return Err(error_from_response(provider, resp, deadlines, secret).await);
    }
    let meta = upstream_meta(resp.headers());
    let body = read_body(provider, resp, deadlines, RESPONSE_BODY_LIMIT).await?;
    let parsed = parse_json(provider, &body, what)?;
    Ok((Upstream { body: parsed, meta }, body))
}

/// One streamed call: send, check the status, and return the guarded event stream. Errors
/// before the first event (status, connection, a JSON answer instead of a stream) are `Err`
/// here, so the caller can still retry or fail over.
pub async fn call_sse(
    provider: &str,
    req: RequestBuilder<'_>,
    deadlines: &CallDeadlines,
    secret: Option<&SecretString>,
) -> Result<(BoxStream<'static, Result<SseEvent>>, UpstreamMeta)> {
    let req = req.header(
        http::header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    let resp = send(provider, req, deadlines).await?;
    if !resp.status().is_success() {
        return Err(error_from_response(provider, resp, deadlines, secret).await);
    }
    let meta = upstream_meta(resp.headers());
    if !is_event_stream(resp.headers()) {
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = read_body(provider, resp, deadlines, ERROR_BODY_LIMIT).await?;
        let embedded = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| embedded_error(provider, &v));
        return Err(embedded.unwrap_or_else(|| Error::InvalidResponse {
            provider: provider.to_owned(),
            message: format!("asked for an event stream, got `{content_type}`"),
        }));
    }
    Ok((sse_events(provider, resp, *deadlines).boxed(), meta))
}

/// Whether a success response is an event stream. Some servers answer a streamed request
/// with a JSON error (or ignore `stream`), which must not be fed to the SSE decoder.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// The body of a streamed response as SSE events, guarded by the call's deadlines: the first
/// bytes must come by the first-byte deadline (servers often send headers at once and then
/// queue), all of it by the total deadline. A broken connection or an oversized event becomes
/// one [`Error::StreamInterrupted`] item, a missed deadline one [`Error::Timeout`] item, and
/// the stream ends after it.
pub fn sse_events(
    provider: &str,
    resp: Response,
    deadlines: CallDeadlines,
) -> impl Stream<Item = Result<SseEvent>> + Send + 'static {
    let name = provider.to_owned();
    let bytes = guarded_bytes(name.clone(), resp.into_body().into_data_stream(), deadlines);
    sse::decode(bytes).map(move |item| {
        item.map_err(|e| match e {
            SseError::Transport(e) => e,
            SseError::TooLarge => Error::StreamInterrupted {
                provider: name.clone(),
                message: format!("an event exceeded {} bytes", sse::MAX_EVENT_BYTES),
            },
        })
    })
}

/// Bytes with deadlines applied and transport errors mapped; ends after the first error.
fn guarded_bytes<S>(
    provider: String,
    bytes: S,
    deadlines: CallDeadlines,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static
where
    S: Stream<Item = std::result::Result<Bytes, hyper::Error>> + Send + 'static,
{
    struct St<S> {
        bytes: std::pin::Pin<Box<S>>,
        /// One timer for the whole stream, moved once from the first-byte to the total
        /// deadline, rather than a new timer per chunk.
        timer: std::pin::Pin<Box<tokio::time::Sleep>>,
        provider: String,
        deadlines: CallDeadlines,
        got_first: bool,
        done: bool,
    }
    let st = St {
        bytes: Box::pin(bytes),
        timer: Box::pin(tokio::time::sleep_until(deadlines.first_byte)),
        provider,
        deadlines,
        got_first: false,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let next = tokio::select! {
            biased;
            next = st.bytes.next() => Some(next),
            () = &mut st.timer => None,
        };
        let item = match next {
            Some(Some(Ok(chunk))) => {
                if !st.got_first && !chunk.is_empty() {
                    st.got_first = true;
                    st.timer.as_mut().reset(st.deadlines.total);
                }
                Ok(chunk)
            }
            Some(Some(Err(e))) => Err(Error::StreamInterrupted {
                provider: st.provider.clone(),
                message: format!("the connection broke mid-stream: {}", error_chain(&e)),
            }),
            Some(None) => return None,
            None if st.got_first => Err(st.deadlines.total_error(&st.provider)),
            None => Err(st.deadlines.first_byte_error(&st.provider)),
        };
        st.done = item.is_err();
        Some((item, st))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_of_known_shapes() {
        let m = |s: &str| error_message(s.as_bytes());
        assert_eq!(
            m(r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#)
                .as_deref(),
            Some("Incorrect API key")
        );
        assert_eq!(
            m(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
                .as_deref(),
            Some("Overloaded")
        );
        assert_eq!(
            m(r#"{"error":"model not found"}"#).as_deref(),
            Some("model not found")
        );
        assert_eq!(
            m(r#"{"object":"error","message":"bad"}"#).as_deref(),
            Some("bad")
        );
        assert_eq!(m(r#"{"detail":"Not Found"}"#).as_deref(), Some("Not Found"));
        assert_eq!(m(r#"{"error":{"message":""}}"#), None);
        assert_eq!(m("<html>502 Bad Gateway</html>"), None);
        assert_eq!(m(""), None);
    }

    #[test]
    fn embedded_errors() {
        let v = serde_json::json!({"error": {"message": "Rate limit exceeded", "code": 429}});
        let e = embedded_error("openrouter", &v).unwrap();
        assert_eq!(e.http_status(), 429);
        let v = serde_json::json!({"error": {"message": "boom", "code": "server_error"}});
        assert_eq!(embedded_error("x", &v).unwrap().http_status(), 502);
        assert!(embedded_error("x", &serde_json::json!({"error": null, "id": "1"})).is_none());
        assert!(embedded_error("x", &serde_json::json!({"id": "1"})).is_none());
    }

    #[test]
    fn parse_json_reports_position_not_body() {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            #[allow(dead_code)]
            id: String,
        }
        let e = parse_json::<T>("p", br#"{"secret prompt": 1}"#, "a thing").unwrap_err();
        assert!(matches!(e, Error::InvalidResponse { .. }));
        assert!(!e.to_string().contains("secret prompt"), "{e}");
        let e = parse_json::<T>(
            "p",
            br#"{"error":{"message":"nope","code":503}}"#,
            "a thing",
        )
        .unwrap_err();
        assert_eq!(e.http_status(), 503);
    }

    #[test]
    fn redaction() {
        let key = SecretString::from("sk-live-123456");
        assert_eq!(
            redact("bad key sk-live-123456!", Some(&key)),
            "bad key [redacted]!"
        );
        assert_eq!(redact("nothing here", Some(&key)), "nothing here");
        assert_eq!(redact("a b", Some(&SecretString::from("a"))), "a b");
        assert_eq!(redact("x", None), "x");
    }

    #[test]
    fn headers_from_config() {
        let h = header_map("p", &[("HTTP-Referer".into(), "https://x".into())]).unwrap();
        assert_eq!(h["http-referer"], "https://x");
        assert!(h["http-referer"].is_sensitive());
        let e = header_map("p", &[("bad name".into(), "v".into())]).unwrap_err();
        assert!(
            e.to_string().contains("providers.p.headers.bad name"),
            "{e}"
        );
        assert!(header_map("p", &[("x".into(), "bad\nvalue".into())]).is_err());
    }

    #[test]
    fn deadlines_pick_the_binding_phase() {
        let t = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(5),
            total: Duration::from_secs(60),
        };
        let d = CallDeadlines::start(&t, None);
        assert!(matches!(
            d.first_byte_error("p"),
            Error::Timeout { phase: TimeoutPhase::FirstByte, after, .. } if after == Duration::from_secs(5)
        ));
        // The caller's deadline is tighter than the first-byte timeout: it is the total one.
        let d = CallDeadlines::start(&t, Some(Instant::now() + Duration::from_secs(2)));
        assert!(d.first_byte <= d.total);
        assert!(matches!(
            d.first_byte_error("p"),
            Error::Timeout {
                phase: TimeoutPhase::Total,
                ..
            }
        ));
    }

    #[test]
    fn event_stream_detection() {
        let mut h = HeaderMap::new();
        assert!(
            is_event_stream(&h),
            "no content type: assume the stream asked for"
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert!(is_event_stream(&h));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert!(!is_event_stream(&h));
    }

    #[test]
    fn meta_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("request-id", HeaderValue::from_static("req_123"));
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("4"),
        );
        let m = upstream_meta(&h);
        assert_eq!(m.upstream_request_id.as_deref(), Some("req_123"));
        assert_eq!(m.rate_limit.unwrap().requests.unwrap().remaining, Some(4));
    }
}
