//! `GET /metrics` after known traffic through fake upstreams: a call retried after a 429, a
//! cache hit, a stream, and a deployment whose breaker opens. The scrape is checked for its
//! values, not only its names, and for the absence of secrets; the route's guard is checked
//! with and without an admin key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::Gateway;
use serde_json::{Value, json};
use weir_test_support::{FakeUpstream, Reply, openai};

fn config(ok: &FakeUpstream, down: &FakeUpstream, admin: &str) -> String {
    format!(
        "  api_keys: [\"gw-key\"]
{admin}retry:
  max_retries: 2
  base_delay: 1ms
  max_delay: 2ms
circuit_breaker:
  consecutive_failures: 2
  cooldown: 60s
providers:
  oai:
    kind: openai
    base_url: {}
    api_key: sk-oai-upstream
  down:
    kind: openai
    base_url: {}
    api_key: sk-down-upstream
pricing:
  oai/gpt-4o-mini: {{ input: 1.00, output: 2.00 }}
models:
  fast:
    deployments: [oai/gpt-4o-mini]
  broken:
    deployments: [down/gpt-4o]
",
        ok.v1(),
        down.v1()
    )
}

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "temperature": 0, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

async fn post(gw: &Gateway, body: &Value) -> reqwest::Response {
    gw.post("/v1/chat/completions")
        .bearer_auth("gw-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Every sample of the scrape, keyed by its whole `name{labels}` as printed.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse::<f64>().unwrap())
        })
        .collect()
}

/// The sum of a family's samples whose labels contain every `want` pair.
fn total(s: &HashMap<String, f64>, name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.split_once('{').map_or(k.as_str(), |(n, _)| n) == name
                && want
                    .iter()
                    .all(|(l, v)| k.contains(&format!("{l}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(gw: &Gateway) -> String {
    let res = gw.get("/metrics").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    res.text().await.unwrap()
}

#[tokio::test]
async fn a_scrape_after_known_traffic_reports_its_values() {
    let ok = FakeUpstream::start().await.unwrap();
    let down = FakeUpstream::start().await.unwrap();
    down.set_default(Reply::error(
        500,
        openai::error("The server had an error", "server_error", None),
    ));
    let gw = Gateway::start(&config(&ok, &down, "")).await;

    // A 429 then an answer: one call, two attempts, one retry.
    ok.push(
        Reply::error(
            429,
            openai::error(
                "Rate limit reached",
                "requests",
                Some("rate_limit_exceeded"),
            ),
        )
        .header("retry-after", "0"),
    );
    ok.push(Reply::json(openai::chat_completion("gpt-4o-mini", "hi")));
    assert_eq!(post(&gw, &chat("fast", "one", false)).await.status(), 200);
    // The same request again: a cache hit, no upstream call.
    let hit = post(&gw, &chat("fast", "one", false)).await;
    assert_eq!(hit.headers()["x-weir-cache"], "hit");
    // A stream.
    ok.push(Reply::sse(openai::text_stream(
        "gpt-4o-mini",
        &["a", "b", "c"],
    )));
    let streamed = post(&gw, &chat("fast", "two", true)).await;
    assert_eq!(streamed.status(), 200);
    assert!(streamed.text().await.unwrap().contains("[DONE]"));
    assert_eq!(ok.request_count(), 3);
    // A failing deployment: two 500s open its breaker; the next call is refused at once.
    let first = post(&gw, &chat("broken", "x", false)).await;
    assert!(first.status().is_server_error(), "{}", first.status());
    let second = post(&gw, &chat("broken", "y", false)).await;
    assert!(second.status().is_server_error(), "{}", second.status());
    assert_eq!(down.request_count(), 2);
    // A model nobody configured folds into `other`.
    let unknown = post(&gw, &chat("made-up", "z", false)).await;
    assert_eq!(unknown.status(), 404);

    let text = scrape(&gw).await;
    std::fs::write("/tmp/m-scrape.txt", &text).unwrap();
    let s = samples(&text);
    let fast = [("model", "fast"), ("provider", "oai")];

    assert_eq!(total(&s, "weir_requests_total", &fast), 3.0, "{text}");
    assert_eq!(
        total(
            &s,
            "weir_requests_total",
            &[("model", "fast"), ("cache", "hit")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_requests_total",
            &[
                ("model", "fast"),
                ("operation", "chat_stream"),
                ("status_class", "2xx")
            ]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_requests_total",
            &[("model", "broken"), ("status_class", "5xx")]
        ),
        2.0
    );
    assert_eq!(
        total(
            &s,
            "weir_requests_total",
            &[("model", "other"), ("provider", "none")]
        ),
        1.0
    );
    // Two upstream answers of 11 input and 7 output tokens, priced at $1 and $2 per million.
    assert_eq!(
        total(&s, "weir_cost_dollars_total", &fast),
        2.0 * (11.0 + 14.0) / 1e6
    );
    assert_eq!(
        total(
            &s,
            "gen_ai_client_token_usage_count",
            &[
                ("gen_ai_request_model", "fast"),
                ("gen_ai_token_type", "output")
            ]
        ),
        3.0
    );
    assert_eq!(
        total(
            &s,
            "gen_ai_server_time_to_first_token_seconds_count",
            &[("gen_ai_request_model", "fast")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "gen_ai_client_operation_duration_seconds_count",
            &[("gen_ai_provider_name", "oai")]
        ),
        3.0
    );
    // weir's own time: the two answers, the hit, the call refused by the open breaker and
    // the unknown model; not the call whose attempts failed (its time was the upstream's).
    assert_eq!(total(&s, "weir_overhead_seconds_count", &[]), 4.0);
    // Attempts: the 429 and the two answers; the broken deployment's two 500s.
    let oai = [("deployment", "oai/gpt-4o-mini")];
    assert_eq!(
        total(
            &s,
            "weir_upstream_attempts_total",
            &[oai[0], ("outcome", "success")]
        ),
        2.0
    );
    assert_eq!(
        total(
            &s,
            "weir_upstream_attempts_total",
            &[oai[0], ("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_upstream_attempt_errors_total",
            &[oai[0], ("kind", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_upstream_attempts_total",
            &[("deployment", "down/gpt-4o"), ("outcome", "failed")]
        ),
        2.0
    );
    // One retry after the 429, one after the first 500, one refused by the open breaker.
    assert!(total(&s, "weir_retries_total", &[]) >= 2.0, "{text}");
    assert!(total(&s, "weir_breaker_rejections_total", &[]) >= 1.0);
    assert_eq!(
        total(
            &s,
            "weir_breaker_state",
            &[("deployment", "down/gpt-4o"), ("state", "open")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_breaker_state",
            &[("deployment", "oai/gpt-4o-mini"), ("state", "closed")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &s,
            "weir_breaker_trips_total",
            &[("deployment", "down/gpt-4o")]
        ),
        1.0
    );
    assert_eq!(
        total(&s, "weir_cache_lookups_total", &[("result", "hit")]),
        1.0
    );
    assert!(total(&s, "weir_cache_lookups_total", &[("result", "miss")]) >= 1.0);
    assert!(total(&s, "weir_cache_entries", &[("tier", "l1")]) >= 1.0);
    assert_eq!(
        total(
            &s,
            "weir_errors_total",
            &[("provider", "none"), ("kind", "model_not_found")]
        ),
        1.0
    );
    assert!(total(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(total(&s, "weir_uptime_seconds", &[]) > 0.0);
    // The stream's body is dropped once sent.
    let mut open = total(&s, "weir_streams_open", &[]);
    for _ in 0..50 {
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        open = total(&samples(&scrape(&gw).await), "weir_streams_open", &[]);
    }
    assert_eq!(open, 0.0);
    for secret in ["sk-oai-upstream", "sk-down-upstream", "gw-key"] {
        assert!(!text.contains(secret), "{secret} in the scrape");
    }
}

#[tokio::test]
async fn metrics_need_the_admin_key_when_one_is_set() {
    let ok = FakeUpstream::start().await.unwrap();
    let down = FakeUpstream::start().await.unwrap();
    let gw = Gateway::start(&config(&ok, &down, "  admin_key: adm-secret\n")).await;
    let res = gw.get("/metrics").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.admin_key"),
        "{v}"
    );
    let res = gw
        .get("/metrics")
        .bearer_auth("gw-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a gateway key is not an admin key");
    let res = gw
        .get("/metrics")
        .bearer_auth("adm-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("# TYPE weir_requests_total counter"));
    assert!(!text.contains("adm-secret"));
}

#[tokio::test]
async fn without_an_admin_key_loopback_clients_may_scrape() {
    let ok = FakeUpstream::start().await.unwrap();
    let down = FakeUpstream::start().await.unwrap();
    let gw = Gateway::start(&config(&ok, &down, "")).await;
    // No gateway key either: metrics are not an API route.
    let text = scrape(&gw).await;
    assert!(text.contains("weir_breaker_state{deployment=\"oai/gpt-4o-mini\",state=\"closed\"} 1"));
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "weir-metrics-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// With a store and a budget: the budget's usage ratio and the ledger's counts, and every
/// family the Grafana dashboard queries.
#[tokio::test]
async fn budgets_ledger_and_the_dashboards_families() {
    let dir = tempdir("ledger");
    let gw = Gateway::start(&format!(
        "store:\n  sqlite: {{ path: {} }}\npricing:\n  mock/echo: {{ input: 1000, output: 1000 }}\nbudgets:\n  - {{ id: day, scope: global, limit_usd: 100, period: daily }}\n",
        dir.join("weir.sqlite3").display()
    ))
    .await;
    let res = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let usage: Value = res.json().await.unwrap();
    let tokens = usage["usage"]["prompt_tokens"].as_f64().unwrap()
        + usage["usage"]["completion_tokens"].as_f64().unwrap();
    // $1000 per million tokens each way, against a $100 limit.
    let spent = tokens * 1000.0 / 1e6;
    let mut s = samples(&scrape(&gw).await);
    for _ in 0..100 {
        if total(&s, "weir_ledger_written_total", &[]) >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        s = samples(&scrape(&gw).await);
    }
    assert_eq!(total(&s, "weir_ledger_written_total", &[]), 1.0);
    assert_eq!(total(&s, "weir_ledger_dropped_total", &[]), 0.0);
    assert_eq!(total(&s, "weir_ledger_healthy", &[]), 1.0);
    let spent_metric = total(&s, "weir_budget_spent_dollars", &[("budget", "day")]);
    assert!(
        (spent_metric - spent).abs() < 1e-9,
        "{spent_metric} != {spent}"
    );
    let ratio = total(&s, "weir_budget_usage_ratio", &[("budget", "day")]);
    assert!((ratio - spent / 100.0).abs() < 1e-9, "{ratio}");
    assert_eq!(
        total(&s, "weir_budget_limit_dollars", &[("budget", "day")]),
        100.0
    );

    let text = scrape(&gw).await;
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/weir.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("weir_")
                    || word.starts_with("gen_ai_client")
                    || word.starts_with("gen_ai_server")
                    || word.starts_with("process_")
                {
                    queried.push(word.trim_end_matches("_bucket").to_owned());
                }
            }
        }
    }
    assert!(queried.len() > 20);
    for name in queried {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
