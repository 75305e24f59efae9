//! The load generator: keep-alive hyper HTTP/1.1 connections with TCP_NODELAY, one per worker.
//!
//! Modes: `closed` (fixed concurrency for a duration), `rate` (fixed arrival rate with
//! coordinated-omission correction: latency counts from the intended send time), `stream`
//! (fixed concurrency of SSE requests: time to first byte and first chunk, gaps between
//! chunks, per-chunk delivery latency from the fake upstream's stamps) and `hold` (N streams
//! open at once, reporting stalls). Every mode prints one JSON object.

pub mod closed;
pub mod stream;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// How the load is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Closed,
    Rate,
    Stream,
    Hold,
}

/// `weir-load` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "weir-load",
    about = "HTTP load generator for weir's benchmarks (JSON out)"
)]
pub struct Args {
    /// Target, e.g. http://127.0.0.1:4100/v1/chat/completions.
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// Concurrent connections (closed, stream); the connection cap in rate mode.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub concurrency: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Requests per second (rate mode).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Streams opened at once (hold mode).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Request body; `{{n}}` is replaced by a number unique to each request.
    #[arg(long)]
    pub body: Option<String>,
    #[arg(long, conflicts_with = "body")]
    pub body_file: Option<PathBuf>,
    /// Extra header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    #[arg(long, default_value = "POST")]
    pub method: String,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Content chunks a clean stream has (stream, hold).
    #[arg(long)]
    pub expect_chunks: Option<usize>,
    /// A gap between two reads of a stream longer than this is a stall.
    #[arg(long, default_value_t = 1000.0)]
    pub stall_ms: f64,
}

/// A request to send again and again; the body may hold one `{{n}}`.
#[derive(Debug)]
pub struct Template {
    pub addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    prefix: Bytes,
    suffix: Option<Bytes>,
    seq: AtomicU64,
}

impl Template {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let rest = args
            .url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("only http:// URLs: {}", args.url))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow!("cannot resolve {authority}"))?;
        let mut headers = vec![(header::HOST, HeaderValue::from_str(authority)?)];
        let body = match (&args.body, &args.body_file) {
            (Some(b), _) => b.clone(),
            (None, Some(f)) => {
                std::fs::read_to_string(f).with_context(|| f.display().to_string())?
            }
            (None, None) => String::new(),
        };
        if !body.is_empty() {
            headers.push((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        for h in &args.headers {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow!("bad header {h:?}"))?;
            headers.push((
                HeaderName::try_from(k.trim())?,
                HeaderValue::from_str(v.trim())?,
            ));
        }
        let (prefix, suffix) = match body.split_once("{{n}}") {
            Some((p, s)) => (p.to_owned(), Some(Bytes::from(s.to_owned()))),
            None => (body, None),
        };
        Ok(Self {
            addr,
            method: Method::from_bytes(args.method.as_bytes())?,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            headers,
            prefix: Bytes::from(prefix),
            suffix,
            // Unique across runs too, so a cache never sees the same "unique" body twice.
            seq: AtomicU64::new(crate::wall_ns() / 1000),
        })
    }

    /// The next request.
    pub fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let body = match &self.suffix {
            None => self.prefix.clone(),
            Some(s) => {
                let n = self.seq.fetch_add(1, Ordering::Relaxed).to_string();
                let mut b = Vec::with_capacity(self.prefix.len() + n.len() + s.len());
                b.extend_from_slice(&self.prefix);
                b.extend_from_slice(n.as_bytes());
                b.extend_from_slice(s);
                Bytes::from(b)
            }
        };
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(&self.path);
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        Ok(r.body(Full::new(body))?)
    }
}

/// One keep-alive connection, re-opened after an error.
pub struct Conn {
    addr: SocketAddr,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, send: None }
    }

    pub async fn open(&mut self) -> anyhow::Result<()> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(tcp))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.send = Some(send);
        Ok(())
    }

    /// Send a request and return the response head (the body is read by the caller).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        if self.send.as_ref().is_none_or(SendRequest::is_closed) {
            self.open().await?;
        }
        let Some(s) = self.send.as_mut() else {
            bail!("not connected");
        };
        if s.ready().await.is_err() {
            self.open().await?;
        }
        let Some(s) = self.send.as_mut() else {
            bail!("not connected");
        };
        match s.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.send = None;
                Err(e.into())
            }
        }
    }
}

/// Counts shared by every mode.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests completed, warm-up included (to divide a server's CPU time by).
    pub total: u64,
    /// Requests completed inside the measured window.
    pub ok: u64,
    pub errors: u64,
    pub status: BTreeMap<String, u64>,
}

impl Tally {
    pub fn merge(&mut self, o: Tally) {
        self.total += o.total;
        self.ok += o.ok;
        self.errors += o.errors;
        for (k, v) in o.status {
            *self.status.entry(k).or_default() += v;
        }
    }

    pub fn error(&mut self, what: String) {
        self.errors += 1;
        *self.status.entry(what).or_default() += 1;
    }

    pub fn json(&self, secs: f64) -> Value {
        json!({
            "requests": self.ok,
            "requests_total": self.total,
            "errors": self.errors,
            "error_kinds": self.status,
            "throughput_rps": if secs > 0.0 { (self.ok as f64 / secs * 10.0).round() / 10.0 } else { 0.0 },
        })
    }
}

/// The measured window: `from` (end of warm-up) to `end`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub from: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(args: &Args) -> Self {
        let from = Instant::now() + Duration::from_secs_f64(args.warmup.max(0.0));
        Self {
            from,
            end: from + Duration::from_secs_f64(args.duration.max(0.0)),
        }
    }

    pub fn secs(&self) -> f64 {
        (self.end - self.from).as_secs_f64()
    }
}

/// Nanoseconds between two instants.
pub fn ns(a: Instant, b: Instant) -> u64 {
    u64::try_from(b.saturating_duration_since(a).as_nanos()).unwrap_or(u64::MAX)
}

/// Run the mode the arguments ask for and return its JSON report.
pub async fn run(args: Args) -> anyhow::Result<Value> {
    let template = std::sync::Arc::new(Template::new(&args)?);
    let mut report = match args.mode {
        Mode::Closed => closed::closed(&args, template).await?,
        Mode::Rate => closed::rate(&args, template).await?,
        Mode::Stream => stream::looped(&args, template).await?,
        Mode::Hold => stream::hold(&args, template).await?,
    };
    if let Some(m) = report.as_object_mut() {
        m.insert("url".into(), json!(args.url));
        m.insert("concurrency".into(), json!(args.concurrency));
    }
    Ok(report)
}
