//! [`FakeUpstream`]: a real HTTP server on `127.0.0.1:0` that answers from a script.
//!
//! It speaks plain HTTP/1.1 (with `TCP_NODELAY`, so every flushed chunk leaves at once) and
//! records every request. Replies are queued per call ([`FakeUpstream::push`],
//! [`FakeUpstream::push_for`]) with a fallback ([`FakeUpstream::set_default`]); an unscripted
//! request gets a loud 599 so a test that forgot a reply fails instead of hanging.
//!
//! A [`Reply`] can be JSON, raw bytes or an SSE transcript; delivered whole or in chunks
//! ([`Chunking`], with a delay or a forced flush between chunks), delayed before the headers,
//! never answered ([`Reply::stall`]), cut mid-body with a broken connection
//! ([`Reply::cut_after`]) or left hanging mid-body ([`Reply::stall_after`]). Dropping the
//! `FakeUpstream` releases every stalled handler.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a body is split into writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunking {
    /// One write (with a `Content-Length` when nothing else is scripted).
    Whole,
    /// Writes of this many bytes.
    Every(usize),
    /// Cut at these byte offsets.
    At(Vec<usize>),
    /// Boundaries chosen to hurt: after every CR (splitting CRLF pairs), inside every multi-byte
    /// UTF-8 character, and otherwise every 1, 2, 3, 5, 7, 11 or 13 bytes in turn (splitting
    /// `data:` prefixes and JSON tokens).
    Awkward,
}

/// What happens after the scripted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Complete,
    /// Send this many bytes, then break the connection.
    CutAfter(usize),
    /// Send this many bytes, then send nothing more (until the fake is dropped).
    StallAfter(usize),
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Never send headers.
    stall: bool,
    delay: Duration,
    chunking: Chunking,
    chunk_delay: Duration,
    ending: Ending,
}

impl Reply {
    /// A reply with this status, no headers and an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            stall: false,
            delay: Duration::ZERO,
            chunking: Chunking::Whole,
            chunk_delay: Duration::ZERO,
            ending: Ending::Complete,
        }
    }

    /// `200` with a JSON body.
    pub fn json(body: Value) -> Self {
        Self::status(200).json_body(body)
    }

    /// An error status with a JSON body (use the `openai::error` / `anthropic::error` helpers).
    pub fn error(status: u16, body: Value) -> Self {
        Self::status(status).json_body(body)
    }

    /// `200 text/event-stream` with this transcript.
    pub fn sse(transcript: impl Into<String>) -> Self {
        Self::status(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(transcript.into())
    }

    /// A reply whose headers never come (a first-byte stall).
    pub fn stall() -> Self {
        Self {
            stall: true,
            ..Self::status(200)
        }
    }

    /// Replace the body with JSON (and say so in `content-type`).
    pub fn json_body(self, body: Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Replace the body with raw bytes.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Add a header (set `content-type` yourself for raw bodies).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        // A later content-type replaces an earlier one; other headers accumulate.
        if name.eq_ignore_ascii_case("content-type") {
            self.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        }
        self.headers.push((name, value.into()));
        self
    }

    /// Add several headers.
    pub fn headers<I, K, V>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in headers {
            self = self.header(k, v);
        }
        self
    }

    /// Wait this long before sending the headers.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Split the body into writes.
    pub fn chunked(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Shorthand for [`Chunking::Awkward`].
    pub fn awkward(self) -> Self {
        self.chunked(Chunking::Awkward)
    }

    /// Wait this long between writes (without it, each write is still flushed on its own).
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Send the first `bytes` of the body, then break the connection.
    pub fn cut_after(mut self, bytes: usize) -> Self {
        self.ending = Ending::CutAfter(bytes);
        self
    }

    /// Send the first `bytes` of the body, then nothing more.
    pub fn stall_after(mut self, bytes: usize) -> Self {
        self.ending = Ending::StallAfter(bytes);
        self
    }

    /// The body as the chunks it will be written in (before any cut).
    pub fn chunks(&self) -> Vec<Bytes> {
        split(&self.body, &self.chunking)
    }
}

/// Split `body` as `chunking` says. Empty chunks are never produced.
pub fn split(body: &Bytes, chunking: &Chunking) -> Vec<Bytes> {
    let len = body.len();
    let mut cuts: Vec<usize> = match chunking {
        Chunking::Whole => Vec::new(),
        Chunking::Every(n) => (1..len).filter(|i| i % (*n).max(1) == 0).collect(),
        Chunking::At(at) => at.clone(),
        Chunking::Awkward => {
            let mut cuts = Vec::new();
            for (i, b) in body.iter().enumerate() {
                // After every CR: an LF that follows arrives in the next read.
                if *b == b'\r' {
                    cuts.push(i + 1);
                }
                // Inside a multi-byte character: one byte past its lead byte.
                if *b >= 0xC0 {
                    cuts.push(i + 1);
                }
            }
            let sizes = [1usize, 2, 3, 5, 7, 11, 13];
            let mut at = 0;
            for s in sizes.iter().cycle() {
                at += s;
                if at >= len {
                    break;
                }
                cuts.push(at);
            }
            cuts
        }
    };
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut prev = 0;
    for c in cuts {
        chunks.push(body.slice(prev..c));
        prev = c;
    }
    if prev < len {
        chunks.push(body.slice(prev..));
    }
    chunks
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names lower-cased, in arrival order; values decoded lossily.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Every header and the body as one string, to assert something appears nowhere else.
    pub fn everything(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push_str(&self.text());
        s
    }
}

#[derive(Default)]
struct Script {
    /// Queued replies, each for any path (`None`) or paths ending with the given suffix.
    queue: VecDeque<(Option<String>, Reply)>,
    default: Option<Reply>,
}

struct Shared {
    script: Mutex<Script>,
    /// TCP connections accepted, to assert that clients reuse pooled connections.
    connections: AtomicUsize,
    /// Streamed bodies the client stopped reading before their scripted end.
    abandoned: Arc<AtomicUsize>,
    requests: Mutex<Vec<Recorded>>,
    shutdown: watch::Receiver<bool>,
}

/// Lock a mutex even if a test thread panicked while holding it: the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scripted HTTP upstream on a free loopback port.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Start on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            script: Mutex::new(Script::default()),
            connections: AtomicUsize::new(0),
            abandoned: Arc::new(AtomicUsize::new(0)),
            requests: Mutex::new(Vec::new()),
            shutdown: shutdown_rx,
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(shared.clone());
        let counter = shared.clone();
        let listener = listener.tap_io(move |tcp| {
            counter.connections.fetch_add(1, Ordering::Relaxed);
            // Each scripted write must leave as its own segment, or chunk boundaries vanish.
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            shutdown,
            server,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, the base URL shape providers are configured with.
    pub fn v1(&self) -> String {
        format!("{}/v1", self.url())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue a reply for the next request, whatever its path.
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared.script).queue.push_back((None, reply));
        self
    }

    /// Queue a reply for the next request whose path ends with `path_suffix`
    /// (e.g. `/chat/completions`); other requests skip it.
    pub fn push_for(&self, path_suffix: &str, reply: Reply) -> &Self {
        lock(&self.shared.script)
            .queue
            .push_back((Some(path_suffix.to_owned()), reply));
        self
    }

    /// The reply for requests nothing queued matches.
    pub fn set_default(&self, reply: Reply) -> &Self {
        lock(&self.shared.script).default = Some(reply);
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        lock(&self.shared.requests).last().cloned()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Streamed replies whose client went away before the scripted end: proof that a
    /// downstream disconnect cancelled the upstream request.
    pub fn abandoned_streams(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    lock(&shared.requests).push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    let reply = {
        let mut script = lock(&shared.script);
        let pos = script
            .queue
            .iter()
            .position(|(suffix, _)| suffix.as_deref().is_none_or(|s| path.ends_with(s)));
        match pos.and_then(|i| script.queue.remove(i)) {
            Some((_, r)) => Some(r),
            None => script.default.clone(),
        }
    };
    let Some(reply) = reply else {
        return plain(
            599,
            format!("weir-test-support: no reply scripted for {method} {path}"),
        );
    };
    let mut shutdown = shared.shutdown.clone();
    if reply.stall {
        let _ = shutdown.wait_for(|down| *down).await;
        return plain(503, "weir-test-support: shut down while stalled".into());
    }
    if !reply.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(reply.delay) => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }
    build(reply, shutdown, shared.abandoned.clone())
}

fn plain(status: u16, text: String) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

fn build(reply: Reply, shutdown: watch::Receiver<bool>, abandoned: Arc<AtomicUsize>) -> Response {
    let simple = reply.chunking == Chunking::Whole
        && reply.ending == Ending::Complete
        && reply.chunk_delay.is_zero();
    let body = if simple {
        Body::from(reply.body.clone())
    } else {
        streamed(&reply, shutdown, abandoned)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

/// The scripted writes, then the scripted ending.
fn streamed(reply: &Reply, shutdown: watch::Receiver<bool>, abandoned: Arc<AtomicUsize>) -> Body {
    let limit = match reply.ending {
        Ending::Complete => reply.body.len(),
        Ending::CutAfter(n) | Ending::StallAfter(n) => n.min(reply.body.len()),
    };
    let chunks = split(&reply.body.slice(..limit), &reply.chunking);
    struct St {
        chunks: VecDeque<Bytes>,
        delay: Duration,
        ending: Ending,
        shutdown: watch::Receiver<bool>,
        first: bool,
        ended: bool,
        abandoned: Arc<AtomicUsize>,
    }
    impl Drop for St {
        fn drop(&mut self) {
            // Dropped with chunks left to send: the client hung up (or cancelled) mid-body.
            if !self.ended && !self.chunks.is_empty() {
                self.abandoned.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let st = St {
        chunks: chunks.into(),
        delay: reply.chunk_delay,
        ending: reply.ending,
        shutdown,
        first: true,
        ended: false,
        abandoned,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        if let Some(chunk) = st.chunks.pop_front() {
            if !st.first {
                if st.delay.is_zero() {
                    // Return Pending once so hyper flushes the previous chunk on its own.
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(st.delay).await;
                }
            }
            st.first = false;
            return Some((Ok::<Bytes, std::io::Error>(chunk), st));
        }
        st.ended = true;
        match st.ending {
            Ending::Complete => None,
            Ending::CutAfter(_) => {
                // Let the bytes before the cut reach the client first.
                tokio::time::sleep(Duration::from_millis(5)).await;
                // An error from the body stream makes hyper abort the connection mid-body.
                Some((Err(std::io::Error::other("scripted cut")), st))
            }
            Ending::StallAfter(_) => {
                let _ = st.shutdown.wait_for(|down| *down).await;
                None
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn awkward_splits_crlf_and_characters() {
        let body = Bytes::from("data: é\r\n\r\n");
        let chunks = split(&body, &Chunking::Awkward);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        assert_eq!(joined, body.to_vec());
        assert!(chunks.iter().all(|c| !c.is_empty()));
        // No chunk holds a CR followed by its LF.
        assert!(chunks.iter().all(|c| !c.windows(2).any(|w| w == b"\r\n")));
        // The two bytes of "é" arrive in different chunks.
        assert!(
            chunks
                .iter()
                .all(|c| !c.windows(2).any(|w| w == "é".as_bytes()))
        );
    }

    #[test]
    fn fixed_splits() {
        let body = Bytes::from("abcdefg");
        assert_eq!(split(&body, &Chunking::Every(3)), vec!["abc", "def", "g"]);
        assert_eq!(
            split(&body, &Chunking::At(vec![0, 2, 2, 9])),
            vec!["ab", "cdefg"]
        );
        assert_eq!(split(&body, &Chunking::Whole), vec!["abcdefg"]);
        assert!(split(&Bytes::new(), &Chunking::Awkward).is_empty());
    }
}
