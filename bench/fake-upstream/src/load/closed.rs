//! Non-streaming load: closed loop at fixed concurrency, and fixed arrival rate with
//! coordinated-omission correction (each request's latency counts from the moment the
//! schedule meant to send it, so a stalled server cannot hide its queueing).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::{Args, Conn, Tally, Template, Window, ns};
use crate::stats::summary;

/// Send one request and read its whole body; the status, or an error kind.
async fn exchange(conn: &mut Conn, t: &Template) -> Result<u16, String> {
    let req = t.request().map_err(|e| format!("request: {e}"))?;
    let resp = conn.send(req).await.map_err(|_| "io".to_string())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(f) = body.frame().await {
        if f.is_err() {
            return Err("io".into());
        }
    }
    Ok(status)
}

#[derive(Default)]
struct Outcome {
    tally: Tally,
    lat: Vec<u64>,
    service: Vec<u64>,
}

fn record(out: &mut Outcome, r: Result<u16, String>, measured: bool, lat: u64, service: u64) {
    out.tally.total += 1;
    if !measured {
        return;
    }
    match r {
        Ok(200) => {
            out.tally.ok += 1;
            out.lat.push(lat);
            out.service.push(service);
        }
        Ok(s) => out.tally.error(s.to_string()),
        Err(e) => out.tally.error(e),
    }
}

fn report(mode: &str, win: &Window, outs: Vec<Outcome>, extra: Value) -> Value {
    let mut tally = Tally::default();
    let (mut lat, mut service) = (Vec::new(), Vec::new());
    for o in outs {
        tally.merge(o.tally);
        lat.extend(o.lat);
        service.extend(o.service);
    }
    let mut v = tally.json(win.secs());
    if let Some(m) = v.as_object_mut() {
        m.insert("mode".into(), json!(mode));
        m.insert("duration_s".into(), json!(win.secs()));
        m.insert("latency_us".into(), summary(&mut lat));
        if mode == "rate" {
            m.insert("service_latency_us".into(), summary(&mut service));
        }
        if let Some(e) = extra.as_object() {
            m.extend(e.clone());
        }
    }
    v
}

/// Fixed concurrency: each worker sends its next request as soon as the last one is answered.
pub async fn closed(args: &Args, t: Arc<Template>) -> anyhow::Result<Value> {
    let win = Window::new(args);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut conn = Conn::new(t.addr);
            loop {
                let t0 = Instant::now();
                if t0 >= win.end {
                    break;
                }
                let r = exchange(&mut conn, &t).await;
                let failed = r.is_err();
                let done = Instant::now();
                let d = ns(t0, done);
                // Measured: answered inside the window (a slow target's first answers count).
                record(&mut out, r, done >= win.from, d, d);
                if failed {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            out
        }));
    }
    let mut outs = Vec::new();
    for task in tasks {
        outs.push(task.await?);
    }
    Ok(report("closed", &win, outs, json!({})))
}

/// How long after the schedule ends queued tickets are still sent.
const DRAIN: Duration = Duration::from_secs(2);

/// Fixed rate: a clock thread releases one ticket per period (precise sleeps, not the 1 ms
/// timer wheel); up to `concurrency` connections take tickets. Latency is measured from the
/// ticket's intended time, so waiting for a free connection counts.
pub async fn rate(args: &Args, t: Arc<Template>) -> anyhow::Result<Value> {
    let win = Window::new(args);
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let start = Instant::now();
    let clock = std::thread::spawn(move || {
        let mut i: u32 = 0;
        loop {
            let at = start + period * i;
            if at >= win.end {
                break;
            }
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if tx.send(at).is_err() {
                break;
            }
            i = i.saturating_add(1);
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (t, rx) = (t.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut conn = Conn::new(t.addr);
            loop {
                let Some(intended) = rx.lock().await.recv().await else {
                    break;
                };
                // A ticket still queued well after the schedule ended is dropped, not sent:
                // an overloaded target must not keep the run going for minutes.
                if Instant::now() > win.end + DRAIN && intended >= win.from {
                    // Not sent: counted as an error, not in `total` (the requests sent).
                    out.tally.error("not-sent".into());
                    continue;
                }
                let sent = Instant::now();
                let r = exchange(&mut conn, &t).await;
                let done = Instant::now();
                record(
                    &mut out,
                    r,
                    intended >= win.from,
                    ns(intended, done),
                    ns(sent, done),
                );
            }
            out
        }));
    }
    let mut outs = Vec::new();
    for task in tasks {
        outs.push(task.await?);
    }
    if clock.join().is_err() {
        anyhow::bail!("clock thread failed");
    }
    Ok(report("rate", &win, outs, json!({"target_rps": args.rate})))
}
