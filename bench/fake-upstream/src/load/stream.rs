//! Streaming load: SSE requests in a closed loop (`stream`) or N held open at once (`hold`).
//!
//! Per stream: time to the response head (TTFB), to the first content chunk (TTFT), the gaps
//! between content chunks, each stamped chunk's delivery latency (receive wall clock minus the
//! fake upstream's send stamp) and the longest silence (a stall when over `--stall-ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use super::{Args, Conn, Tally, Template, Window, ns};
use crate::sse::{Scanner, Seen};
use crate::stats::summary;
use crate::wall_ns;

/// Every sample of a set of streams.
#[derive(Default)]
struct Samples {
    tally: Tally,
    ttfb: Vec<u64>,
    ttft: Vec<u64>,
    gap: Vec<u64>,
    chunk_latency: Vec<u64>,
    chunks: u64,
    clean: u64,
    stalled: u64,
    max_silence: u64,
}

impl Samples {
    fn merge(&mut self, o: Samples) {
        self.tally.merge(o.tally);
        self.ttfb.extend(o.ttfb);
        self.ttft.extend(o.ttft);
        self.gap.extend(o.gap);
        self.chunk_latency.extend(o.chunk_latency);
        self.chunks += o.chunks;
        self.clean += o.clean;
        self.stalled += o.stalled;
        self.max_silence = self.max_silence.max(o.max_silence);
    }

    fn json(mut self, mode: &str, secs: f64) -> Value {
        let mut v = self.tally.json(secs);
        if let Some(m) = v.as_object_mut() {
            m.insert("mode".into(), json!(mode));
            m.insert("duration_s".into(), json!(secs));
            m.insert("streams_clean".into(), json!(self.clean));
            m.insert("stalled".into(), json!(self.stalled));
            m.insert("chunks".into(), json!(self.chunks));
            m.insert("max_silence_us".into(), json!(self.max_silence / 1000));
            m.insert("ttfb_us".into(), summary(&mut self.ttfb));
            m.insert("ttft_us".into(), summary(&mut self.ttft));
            m.insert("gap_us".into(), summary(&mut self.gap));
            m.insert("chunk_latency_us".into(), summary(&mut self.chunk_latency));
        }
        v
    }
}

/// Options of one stream.
#[derive(Clone, Copy)]
struct Expect {
    chunks: Option<usize>,
    stall: u64,
    active: Option<&'static Active>,
}

/// Streams with an open response, and the most seen at once.
#[derive(Default)]
struct Active {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a stream as open for as long as it lives.
struct Open(&'static Active);

impl Open {
    fn new(a: &'static Active) -> Self {
        let n = a.now.fetch_add(1, Ordering::Relaxed) + 1;
        a.peak.fetch_max(n, Ordering::Relaxed);
        Self(a)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Send one streamed request and read it to the end, adding its samples to `s` when it ends
/// after `from` (a slow target's first streams count).
async fn one(conn: &mut Conn, t: &Template, ex: Expect, from: Instant, s: &mut Samples) {
    s.tally.total += 1;
    let mut local = Samples::default();
    let r = stream_once(conn, t, ex, &mut local).await;
    if Instant::now() < from {
        return;
    }
    match r {
        Ok(clean) => {
            s.tally.ok += 1;
            s.clean += u64::from(clean);
        }
        Err(e) => s.tally.error(e),
    }
    local.tally = Tally::default();
    s.merge(local);
}

/// Ok(clean) once the stream ended; Err(kind) when it failed.
async fn stream_once(
    conn: &mut Conn,
    t: &Template,
    ex: Expect,
    s: &mut Samples,
) -> Result<bool, String> {
    let req = t.request().map_err(|e| format!("request: {e}"))?;
    let t0 = Instant::now();
    let resp = conn.send(req).await.map_err(|_| "io-head".to_string())?;
    let head = Instant::now();
    let _open = ex.active.map(Open::new);
    s.ttfb.push(ns(t0, head));
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut scanner, mut all) = (Scanner::default(), Seen::default());
    let (mut last_read, mut last_chunk) = (t0, None::<Instant>);
    let mut silence = ns(t0, head);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "io-body".to_string())?;
        let now = Instant::now();
        let wall = wall_ns();
        silence = silence.max(ns(last_read, now));
        last_read = now;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let mut seen = Seen::default();
        scanner.push(&data, &mut seen);
        for _ in 0..seen.content {
            match last_chunk {
                None => s.ttft.push(ns(t0, now)),
                Some(prev) => s.gap.push(ns(prev, now)),
            }
            last_chunk = Some(now);
        }
        s.chunk_latency
            .extend(seen.stamps.iter().map(|&st| wall.saturating_sub(st)));
        s.chunks += seen.content as u64;
        all.content += seen.content;
        all.done |= seen.done;
        all.error |= seen.error;
    }
    s.max_silence = s.max_silence.max(silence);
    let stalled = silence > ex.stall;
    s.stalled += u64::from(stalled);
    if status != 200 {
        return Err(status.to_string());
    }
    if all.error {
        return Err("error-event".into());
    }
    if !all.done {
        return Err("truncated".into());
    }
    let complete = ex.chunks.is_none_or(|n| n == all.content);
    Ok(complete && !stalled)
}

fn expect(args: &Args, active: Option<&'static Active>) -> Expect {
    Expect {
        chunks: args.expect_chunks,
        stall: (args.stall_ms * 1e6) as u64,
        active,
    }
}

/// Fixed concurrency of streams for the duration.
pub async fn looped(args: &Args, t: Arc<Template>) -> anyhow::Result<Value> {
    let win = Window::new(args);
    let ex = expect(args, None);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut conn = Conn::new(t.addr);
            loop {
                let t0 = Instant::now();
                if t0 >= win.end {
                    break;
                }
                let errors = s.tally.errors;
                one(&mut conn, &t, ex, win.from, &mut s).await;
                if s.tally.errors > errors {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            s
        }));
    }
    let mut all = Samples::default();
    for task in tasks {
        all.merge(task.await?);
    }
    Ok(all.json("stream", win.secs()))
}

/// Open `--streams` connections, then start every stream at the same moment and read them all
/// to the end. Clean: status 200, the end event, the expected chunks and no stall.
pub async fn hold(args: &Args, t: Arc<Template>) -> anyhow::Result<Value> {
    let n = args.streams.max(1);
    let active: &'static Active = Box::leak(Box::default());
    let ex = expect(args, Some(active));
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (t, barrier) = (t.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut conn = Conn::new(t.addr);
            let mut opened = conn.open().await;
            for _ in 0..3 {
                if opened.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                opened = conn.open().await;
            }
            barrier.wait().await;
            match opened {
                Ok(()) => one(&mut conn, &t, ex, Instant::now(), &mut s).await,
                Err(_) => s.tally.error("connect".into()),
            }
            s
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Samples::default();
    for task in tasks {
        all.merge(task.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let mut v = all.json("hold", secs);
    if let Some(m) = v.as_object_mut() {
        m.insert("streams".into(), json!(n));
        m.insert(
            "peak_active".into(),
            json!(active.peak.load(Ordering::Relaxed)),
        );
    }
    Ok(v)
}
