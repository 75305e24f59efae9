//! The fake upstream: OpenAI `/v1/chat/completions` and Anthropic `/v1/messages` on loopback,
//! answering from pre-serialised bytes so that it is never the bottleneck of a benchmark.
//!
//! Instant mode answers each request with one buffer (headers and body flattened into one
//! write, TCP_NODELAY on). Paced mode waits `ttft` before the first stream frame and
//! `interval` between frames, stamping each content chunk with the wall-clock send time.

pub mod bodies;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

use crate::{STAMP_DIGITS, find, wall_ns};
pub use bodies::{Bodies, Shape, StreamFrame, StreamKind};

/// Pacing of streamed answers; zero everywhere is instant mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pacing {
    pub ttft: Duration,
    pub interval: Duration,
}

impl Pacing {
    pub fn instant(&self) -> bool {
        self.ttft.is_zero() && self.interval.is_zero()
    }
}

/// What the server shares between connections.
#[derive(Debug)]
pub struct State {
    pub bodies: Bodies,
    pub pacing: Pacing,
    pub frames: usize,
    pub served: AtomicU64,
}

impl State {
    pub fn new(shape: Shape, pacing: Pacing) -> Arc<Self> {
        Arc::new(Self {
            bodies: Bodies::new(Shape {
                stamped: !pacing.instant(),
                ..shape
            }),
            pacing,
            frames: shape.chunks + 1,
            served: AtomicU64::new(0),
        })
    }
}

/// A response body: one buffer, or frames sent on a schedule.
pub enum FakeBody {
    Once(Option<Bytes>),
    Paced(Paced),
}

/// Frames released one per tick, each stamped with its send time.
pub struct Paced {
    state: Arc<State>,
    kind: StreamKind,
    next: usize,
    sleep: Pin<Box<Sleep>>,
    interval: Duration,
}

fn stamp(f: &StreamFrame) -> Bytes {
    if f.stamps.is_empty() {
        return f.bytes.clone();
    }
    let now = format!("{:0width$}", wall_ns(), width = STAMP_DIGITS);
    let mut b = BytesMut::from(&f.bytes[..]);
    for &at in &f.stamps {
        b[at..at + STAMP_DIGITS].copy_from_slice(now.as_bytes());
    }
    b.freeze()
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Once(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Paced(p) => {
                let Some(f) = p.state.bodies.frames(p.kind).get(p.next) else {
                    return Poll::Ready(None);
                };
                if p.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                p.next += 1;
                let deadline = p.sleep.deadline() + p.interval;
                p.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(Frame::data(stamp(f)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Once(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Once(Some(b)) => SizeHint::with_exact(b.len() as u64),
            FakeBody::Once(None) => SizeHint::with_exact(0),
            FakeBody::Paced(_) => SizeHint::default(),
        }
    }
}

/// Whether `"key": true` appears in a JSON body (a byte scan, not a parse).
pub fn flag(body: &[u8], key: &[u8]) -> bool {
    let mut from = 0;
    while let Some(at) = find(&body[from..], key) {
        let rest = &body[from + at + key.len()..];
        let rest = rest.trim_ascii_start();
        if let Some(v) = rest.strip_prefix(b":") {
            return v.trim_ascii_start().starts_with(b"true");
        }
        from += at + key.len();
    }
    false
}

fn respond(status: StatusCode, ctype: &'static str, body: FakeBody) -> Response<FakeBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if ctype == "text/event-stream" {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    // What OpenAI sends on every answer; weir learns its key limits from these.
    for (k, v) in [
        ("x-ratelimit-limit-requests", "100000000"),
        ("x-ratelimit-remaining-requests", "99999999"),
        ("x-ratelimit-reset-requests", "1ms"),
        ("x-ratelimit-limit-tokens", "10000000000"),
        ("x-ratelimit-remaining-tokens", "9999999999"),
        ("x-ratelimit-reset-tokens", "1ms"),
        ("x-request-id", "req_bench"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<FakeBody>, Infallible> {
    let arrived = Instant::now();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let json = "application/json";
    let openai = path.ends_with("/chat/completions");
    let anthropic = path.ends_with("/messages");
    if method == Method::GET {
        let text = match path.as_str() {
            "/__bench/stats" => format!("{{\"served\":{}}}", state.served.load(Ordering::Relaxed)),
            "/health" | "/v1/models" => "{\"object\":\"list\",\"data\":[]}".into(),
            _ => return Ok(respond(StatusCode::NOT_FOUND, json, FakeBody::Once(None))),
        };
        return Ok(respond(
            StatusCode::OK,
            json,
            FakeBody::Once(Some(text.into())),
        ));
    }
    if method != Method::POST || !(openai || anthropic) {
        let e = Bytes::from_static(
            b"{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\"}}",
        );
        return Ok(respond(
            StatusCode::NOT_FOUND,
            json,
            FakeBody::Once(Some(e)),
        ));
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    let b = &state.bodies;
    let stream = flag(&body, b"\"stream\"");
    let pacing = state.pacing;
    if !stream {
        if !pacing.instant() {
            let frames = u32::try_from(state.frames.saturating_sub(1)).unwrap_or(u32::MAX);
            tokio::time::sleep_until(arrived + pacing.ttft + pacing.interval * frames).await;
        }
        let json_body = if openai {
            &b.openai_json
        } else {
            &b.anthropic_json
        };
        return Ok(respond(
            StatusCode::OK,
            json,
            FakeBody::Once(Some(json_body.clone())),
        ));
    }
    let kind = match (openai, flag(&body, b"\"include_usage\"")) {
        (true, true) => StreamKind::OpenAiUsage,
        (true, false) => StreamKind::OpenAi,
        _ => StreamKind::Anthropic,
    };
    let body = if pacing.instant() {
        FakeBody::Once(Some(b.all(kind).clone()))
    } else {
        FakeBody::Paced(Paced {
            state: state.clone(),
            kind,
            next: 0,
            sleep: Box::pin(tokio::time::sleep_until(arrived + pacing.ttft)),
            interval: pacing.interval,
        })
    };
    Ok(respond(StatusCode::OK, "text/event-stream", body))
}

/// Accept connections forever, one hyper HTTP/1.1 connection task each.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("fake-upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let mut b = http1::Builder::new();
            b.writev(false).timer(TokioTimer::new()).keep_alive(true);
            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::flag;

    #[test]
    fn flags() {
        assert!(flag(br#"{"stream" : true}"#, b"\"stream\""));
        assert!(!flag(
            br#"{"stream_options":{"include_usage":true}}"#,
            b"\"stream\""
        ));
        assert!(flag(
            br#"{"stream_options":{"include_usage":true}}"#,
            b"\"include_usage\""
        ));
        assert!(!flag(br#"{"stream":false}"#, b"\"stream\""));
    }
}
