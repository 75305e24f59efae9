//! `weir status` and `weir top`: a running gateway at a glance, from its admin API
//! (`/admin/dashboard.json`, the figures the `/dashboard` page shows): traffic, deployments
//! and their breakers, upstream key pools, the cache, spend today and this month, budgets.
//!
//! `weir top` redraws the same summary every interval (clear screen, then the text) until
//! q, Esc or Ctrl-C. On a terminal it reads keys in raw mode, restored on every exit path.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::UsageError;
use crate::admin::Admin;
use crate::cli::{StatusArgs, TopArgs};

/// The traffic window `weir status` summarises.
const WINDOW: &str = "/admin/dashboard.json?seconds=60";

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let admin = Admin::new(&args.target.url, args.target.admin_key.as_deref())?;
    let answer = admin.send(reqwest::Method::GET, WINDOW, None).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        out.write_all(render(&answer, &args.target.url).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Raw mode for the life of the value: keys arrive one by one, without echo.
struct RawMode;

impl RawMode {
    fn enable() -> Option<Self> {
        crossterm::terminal::enable_raw_mode().ok().map(|()| Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Watch the keyboard on a thread of its own; the sender fires on q, Esc or Ctrl-C.
fn watch_keys(quit: tokio::sync::mpsc::Sender<()>) {
    use crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
    std::thread::spawn(move || {
        while !quit.is_closed() {
            match crossterm::event::poll(Duration::from_millis(100)) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return,
            }
            let Ok(Event::Key(key)) = crossterm::event::read() else {
                continue;
            };
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            if key.kind != KeyEventKind::Release
                && (ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc))
            {
                let _ = quit.blocking_send(());
                return;
            }
        }
    });
}

pub async fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    if args.interval < Duration::from_millis(100) {
        return Err(UsageError(format!(
            "--interval {} is too short: give at least 100ms",
            humantime::format_duration(args.interval)
        ))
        .into());
    }
    let admin = Admin::new(&args.target.url, args.target.admin_key.as_deref())?;
    let (quit_tx, mut quit) = tokio::sync::mpsc::channel::<()>(1);
    // Keys only from a terminal; elsewhere (a pipe, a test) Ctrl-C is a signal.
    let raw = if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        RawMode::enable()
    } else {
        None
    };
    if raw.is_some() {
        watch_keys(quit_tx.clone());
    }
    let newline = if raw.is_some() { "\r\n" } else { "\n" };
    let mut drawn = 0u64;
    loop {
        let screen = match admin.send(reqwest::Method::GET, WINDOW, None).await {
            Ok(answer) => render(&answer, &args.target.url),
            // The gateway may be restarting: say so and keep trying.
            Err(e) => format!("{e:#}\n"),
        };
        let footer = format!(
            "\nredrawn every {}; q or Ctrl-C quits\n",
            humantime::format_duration(args.interval)
        );
        let text = format!("\x1b[2J\x1b[H{screen}{footer}").replace('\n', newline);
        {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        drawn += 1;
        if args.iterations.is_some_and(|n| drawn >= n) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = quit.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(quit_tx);
    drop(raw);
    Ok(ExitCode::SUCCESS)
}

// ---- rendering ---------------------------------------------------------------------------

/// Columns padded to their widest cell; the last column is not padded.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn ms(v: &Value) -> String {
    match float(v) {
        Some(x) if x < 10.0 => format!("{x:.2} ms"),
        Some(x) => format!("{x:.0} ms"),
        None => "-".into(),
    }
}

/// Dollars: `unpriced` for an unknown cost (never shown as zero).
fn usd(v: &Value) -> String {
    match float(v) {
        Some(x) if x != 0.0 && x.abs() < 0.01 => format!("${x:.5}"),
        Some(x) => format!("${x:.2}"),
        None => "unpriced".into(),
    }
}

fn duration(secs: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole seconds shown to a person"
    )]
    let s = secs.max(0.0) as u64;
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

fn bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let (mut n, mut i) = (n, 0);
    while n >= 1024.0 && i < units.len() - 1 {
        n /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n:.0} B")
    } else {
        format!("{n:.1} {}", units[i])
    }
}

/// A bar of `width` cells, `percent` of them full.
fn bar(percent: f64, width: usize) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a bar of a few cells"
    )]
    let full = ((percent.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(full), ".".repeat(width - full))
}

/// The whole summary, as plain text.
pub fn render(d: &Value, url: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "weir {} at {url}, up {}",
        d["version"].as_str().unwrap_or("?"),
        duration(float(&d["uptime_seconds"]).unwrap_or(0.0))
    );
    let t = &d["traffic"];
    if !t.is_null() {
        let _ = writeln!(
            out,
            "traffic, last {}s: {:.2} req/s, {:.2} errors/s, p50 {}, p99 {}; since start: {} requests, {} errors",
            num(&t["window_seconds"]),
            float(&t["requests_per_second"]).unwrap_or(0.0),
            float(&t["errors_per_second"]).unwrap_or(0.0),
            ms(&t["p50_ms"]),
            ms(&t["p99_ms"]),
            num(&t["requests_total"]),
            num(&t["errors_total"]),
        );
    }
    deployments(&mut out, &d["deployments"]);
    keys(&mut out, &d["keys"]);
    cache(&mut out, &d["cache"], &d["savings"]);
    spend(&mut out, &d["spend"]);
    budgets(&mut out, &d["budgets"]);
    out
}

fn deployments(out: &mut String, list: &Value) {
    let mut rows = vec![
        [
            "DEPLOYMENT",
            "BREAKER",
            "IN FLIGHT",
            "LATENCY",
            "ERRORS",
            "GROUPS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for d in list.as_array().into_iter().flatten() {
        let b = &d["breaker"];
        let mut state = b["state"].as_str().unwrap_or("closed").replace('_', "-");
        if let Some(secs) = float(&b["half_open_in_secs"]) {
            let _ = write!(state, " ({} left)", duration(secs));
        }
        let errors = match (float(&b["window_requests"]), float(&b["window_failures"])) {
            (Some(n), Some(f)) if n > 0.0 => format!("{:.1}%", 100.0 * f / n),
            _ => "-".into(),
        };
        let groups: Vec<&str> = d["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            d["id"].as_str().unwrap_or("?").to_owned(),
            state,
            num(&d["in_flight"]),
            ms(&d["latency_ms"]),
            errors,
            groups.join(","),
        ]);
    }
    out.push('\n');
    table(out, &rows);
}

fn left(remaining: &Value, limit: &Value) -> String {
    match (remaining, limit) {
        (Value::Null, _) => "unlimited".into(),
        (r, Value::Null) => num(r),
        (r, l) => format!("{}/{}", num(r), num(l)),
    }
}

fn keys(out: &mut String, list: &Value) {
    let mut rows = vec![
        [
            "KEY",
            "IN FLIGHT",
            "REQUESTS LEFT",
            "TOKENS LEFT",
            "BENCHED",
            "QUEUE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for k in list.as_array().into_iter().flatten() {
        let limits = &k["limits"];
        let tokens = if k["remaining_tokens"].is_null() {
            if k["remaining_input_tokens"].is_null() && k["remaining_output_tokens"].is_null() {
                "unlimited".to_owned()
            } else {
                format!(
                    "in {}, out {}",
                    left(
                        &k["remaining_input_tokens"],
                        &limits["input_tokens_per_minute"]
                    ),
                    left(
                        &k["remaining_output_tokens"],
                        &limits["output_tokens_per_minute"]
                    )
                )
            }
        } else {
            left(&k["remaining_tokens"], &k["tokens_per_minute"])
        };
        let benched = if k["limited_now"].as_bool() == Some(true) {
            float(&k["limited_for_secs"]).map_or_else(
                || "yes".to_owned(),
                |s| format!("yes ({} left)", duration(s)),
            )
        } else {
            "no".to_owned()
        };
        rows.push(vec![
            k["key_id"].as_str().unwrap_or("?").to_owned(),
            num(&k["in_flight"]),
            left(&k["remaining_requests"], &limits["requests_per_minute"]),
            tokens,
            benched,
            num(&k["queue_len"]),
        ]);
    }
    out.push('\n');
    table(out, &rows);
}

fn cache(out: &mut String, c: &Value, savings: &Value) {
    out.push('\n');
    if c["enabled"].as_bool() == Some(false) || c.is_null() {
        out.push_str("cache: off\n");
        return;
    }
    let tiers = c["tiers"].as_array().cloned().unwrap_or_default();
    let entries: f64 = tiers.iter().filter_map(|t| float(&t["entries"])).sum();
    let size: f64 = tiers.iter().filter_map(|t| float(&t["bytes"])).sum();
    let _ = write!(
        out,
        "cache: hit rate {:.1}% ({} hits, {} misses, {} coalesced); {entries} entries, {}; saved {} since start",
        100.0 * float(&c["hit_rate"]).unwrap_or(0.0),
        num(&c["hits"]),
        num(&c["misses"]),
        num(&c["coalesced"]),
        bytes(size),
        usd(&c["estimated_savings_usd"]),
    );
    if savings.is_object() && savings["error"].is_null() {
        let _ = write!(out, ", {} all time", usd(&savings["saved_usd"]));
    }
    out.push('\n');
}

fn spend(out: &mut String, s: &Value) {
    out.push('\n');
    if s.is_null() {
        out.push_str("spend: no usage ledger (the gateway has no store)\n");
        return;
    }
    for part in ["today", "month"] {
        if let Some(e) = s[part]["error"].as_str() {
            let _ = writeln!(out, "spend {part}: {e}");
        }
    }
    // One row per model seen this month (today's models are among them).
    let rows_of =
        |part: &str| -> Vec<Value> { s[part]["data"].as_array().cloned().unwrap_or_default() };
    let month = rows_of("month");
    let today = rows_of("today");
    let mut rows = vec![
        ["MODEL (UTC)", "TODAY", "REQUESTS", "THIS MONTH", "REQUESTS"]
            .map(String::from)
            .to_vec(),
    ];
    let mut total = (0.0, 0.0);
    for m in &month {
        let model = m["model"].as_str().unwrap_or("?");
        let day = today.iter().find(|r| r["model"].as_str() == Some(model));
        let (day_cost, day_requests) = day.map_or(("$0.00".to_owned(), "0".to_owned()), |r| {
            (usd(&r["cost_usd"]), num(&r["requests"]))
        });
        total.0 += day.and_then(|r| float(&r["cost_usd"])).unwrap_or(0.0);
        total.1 += float(&m["cost_usd"]).unwrap_or(0.0);
        rows.push(vec![
            model.to_owned(),
            day_cost,
            day_requests,
            usd(&m["cost_usd"]),
            num(&m["requests"]),
        ]);
    }
    rows.push(vec![
        "total".into(),
        usd(&Value::from(total.0)),
        String::new(),
        usd(&Value::from(total.1)),
        String::new(),
    ]);
    table(out, &rows);
}

fn budgets(out: &mut String, list: &Value) {
    let list = list.as_array().cloned().unwrap_or_default();
    out.push('\n');
    if list.is_empty() {
        out.push_str("budgets: none\n");
        return;
    }
    let mut rows = vec![
        ["BUDGET", "SPENT", "", "LIMIT", "FORECAST", "RESETS"]
            .map(String::from)
            .to_vec(),
    ];
    for b in &list {
        let spec = &b["spec"];
        let percent = float(&b["percent"]).unwrap_or(0.0);
        let forecast = if b["forecast_usd"].is_null() {
            "-".to_owned()
        } else {
            usd(&b["forecast_usd"])
        };
        let forecast = match b["runs_out_at"].as_str() {
            Some(at) => format!("{forecast} (runs out {at})"),
            None => forecast,
        };
        rows.push(vec![
            spec["id"].as_str().unwrap_or("?").to_owned(),
            format!("{} {}", usd(&b["spent_usd"]), bar(percent, 20)),
            format!("{percent:.1}%"),
            format!(
                "{} {}",
                usd(&spec["limit_usd"]),
                spec["period"].as_str().unwrap_or("")
            ),
            forecast,
            b["resets_at"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    table(out, &rows);
}
