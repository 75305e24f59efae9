//! OpenTelemetry traces end to end: `weir serve` exporting to an OTLP/HTTP receiver in the
//! test. A call retried once (500, then an answer) becomes one call span with two attempt
//! spans under the caller's `traceparent`; each attempt's context reaches the upstream as its
//! `traceparent`; the GenAI attributes carry the call's values and never its key or prompt.
//! A collector that never answers slows no request, and the spans it costs are counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use weir_test_support::fake::{FakeUpstream, Reply};
use weir_test_support::openai;

use common::{ServeProcess, free_port, weir};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const PROMPT: &str = "a prompt that must stay out of the spans";

/// An OTLP/HTTP receiver: every span posted to `/v1/traces`, with its service name.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

impl Receiver {
    async fn start(&self) -> u16 {
        let spans = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let spans = spans.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                spans.0.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    async fn wait_for(&self, n: usize) -> Vec<(String, Span)> {
        let started = Instant::now();
        loop {
            let spans = self.0.lock().unwrap().clone();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "only {} of {n} spans arrived: {spans:?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn text(v: &Any) -> Option<String> {
    match v {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// A span's attributes as JSON values, for readable assertions.
fn attributes(span: &Span) -> HashMap<String, serde_json::Value> {
    span.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => json!(s),
                Some(Any::IntValue(i)) => json!(i),
                Some(Any::DoubleValue(d)) => json!(d),
                Some(Any::BoolValue(b)) => json!(b),
                other => json!(format!("{other:?}")),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-otlp-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `weir serve` with this config, extra arguments and environment, its stderr in `log`.
fn serve_with(
    config: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
    log: &std::path::Path,
) -> (ServeProcess, u16) {
    let port = free_port();
    let mut cmd = weir();
    cmd.args(args)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child: Child = cmd.spawn().unwrap();
    let served = ServeProcess(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "weir serve did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (served, port)
}

fn config(fake: &FakeUpstream, telemetry: &str) -> std::path::PathBuf {
    let dir = temp_dir("config");
    let path = dir.join("weir.yaml");
    std::fs::write(
        &path,
        format!(
            "providers:\n  fake: {{ kind: openai, base_url: \"{}\", api_key: sk-fake-secret-key }}\n\
             retry: {{ max_retries: 2, base_delay: 1ms, max_delay: 2ms }}\n\
             cache: {{ enabled: false }}\n\
             pricing:\n  fake/gpt-4o-mini: {{ input: 1, output: 2 }}\n{telemetry}",
            fake.v1()
        ),
    )
    .unwrap();
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_is_one_span_with_two_attempt_children_under_the_callers_trace() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let receiver = Receiver::default();
    let collector = receiver.start().await;
    let fake = FakeUpstream::start().await.unwrap();
    fake.push(Reply::error(
        500,
        openai::error("try again", "server_error", None),
    ));
    fake.push(Reply::json(openai::chat_completion("gpt-4o-mini", "hello")));
    let config = config(
        &fake,
        &format!(
            "telemetry:\n  service_name: weir-under-test\n  otlp: {{ endpoint: \"http://127.0.0.1:{collector}/v1/traces\" }}\n"
        ),
    );
    let log = config.with_file_name("stderr.log");
    let (_served, port) = serve_with(
        &config,
        &["--log-json"],
        &[("WEIR_LOG", "info,weir::client::engine=debug".to_owned())],
        &log,
    );

    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(
            &json!({"model": "fake/gpt-4o-mini", "max_tokens": 50, "temperature": 0.5,
                      "messages": [{"role": "user", "content": PROMPT}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    let spans = receiver.wait_for(3).await;
    assert_eq!(spans.len(), 3, "{spans:?}");
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "weir-under-test")
    );
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    let call = spans
        .iter()
        .find(|s| attributes(s).contains_key("weir.attempts"))
        .expect("a call span");
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.span_id != call.span_id).collect();
    attempts.sort_by_key(|s| attributes(s)["weir.attempt"].as_i64());

    // The caller's trace, the call under its span, the attempts under the call.
    for span in &spans {
        assert_eq!(hex(&span.trace_id), TRACE_ID, "{span:?}");
    }
    assert_eq!(hex(&call.parent_span_id), PARENT_ID);
    for a in &attempts {
        assert_eq!(a.parent_span_id, call.span_id, "{a:?}");
    }

    assert_eq!(call.name, "chat fake/gpt-4o-mini");
    let c = attributes(call);
    let expect = [
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.request.model", json!("fake/gpt-4o-mini")),
        ("gen_ai.provider.name", json!("fake")),
        ("gen_ai.response.model", json!("gpt-4o-mini")),
        ("gen_ai.usage.input_tokens", json!(11)),
        ("gen_ai.usage.output_tokens", json!(7)),
        ("gen_ai.request.max_tokens", json!(50)),
        ("gen_ai.request.temperature", json!(0.5)),
        ("gen_ai.response.finish_reasons", json!("[\"stop\"]")),
        ("weir.cache", json!("bypass")),
        ("weir.attempts", json!(2)),
        ("weir.deployment", json!("fake/gpt-4o-mini")),
        ("weir.outcome", json!("success")),
        // 11 input at $1/M and 7 output at $2/M.
        ("weir.cost_usd", json!("0.000025")),
    ];
    for (key, value) in expect {
        assert_eq!(c.get(key), Some(&value), "{key} in {c:?}");
    }
    assert!(c.contains_key("weir.key_label"), "{c:?}");
    assert!(
        !c.contains_key("gen_ai.input.messages"),
        "content is off by default"
    );
    assert!(!c.contains_key("gen_ai.output.messages"));

    assert_eq!(attempts.len(), 2);
    for (n, a) in attempts.iter().enumerate() {
        let at = attributes(a);
        assert_eq!(a.name, "chat gpt-4o-mini");
        assert_eq!(a.kind, 3, "client span"); // SPAN_KIND_CLIENT
        assert_eq!(at["weir.attempt"], json!(n as i64 + 1));
        assert_eq!(at["gen_ai.provider.name"], json!("fake"));
        assert_eq!(at["gen_ai.request.model"], json!("gpt-4o-mini"));
        assert_eq!(at["weir.deployment"], json!("fake/gpt-4o-mini"));
    }
    let first = attributes(attempts[0]);
    assert_eq!(first["error.type"], json!("upstream"));
    assert_eq!(first["http.response.status_code"], json!(500));
    assert!(!attributes(attempts[1]).contains_key("error.type"));

    // Each upstream request carried its attempt's context.
    let sent: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            r.header("traceparent")
                .expect("traceparent upstream")
                .to_owned()
        })
        .collect();
    assert_eq!(sent.len(), 2);
    for (header, attempt) in sent.iter().zip(&attempts) {
        assert_eq!(
            header,
            &format!("00-{TRACE_ID}-{}-01", hex(&attempt.span_id)),
            "the upstream's parent is the attempt span"
        );
    }

    // Neither the key nor the prompt is in any span.
    let everything = format!("{spans:?}");
    assert!(!everything.contains("sk-fake-secret-key"));
    assert!(!everything.contains(PROMPT));

    // A JSON log line written inside the call carries its trace and span.
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("attempt failed"))
        .unwrap_or_else(|| panic!("no attempt log line in {log}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["trace_id"], json!(TRACE_ID), "{line}");
    assert_eq!(line["span_id"], json!(hex(&call.span_id)), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_capture_content_the_prompt_and_answer_are_span_attributes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let receiver = Receiver::default();
    let collector = receiver.start().await;
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion(
        "gpt-4o-mini",
        "the answer",
    )));
    let config = config(&fake, "telemetry: { capture_content: true }\n");
    let log = config.with_file_name("stderr.log");
    // The endpoint from the standard variable (a base URL: `/v1/traces` is added).
    let (_served, port) = serve_with(
        &config,
        &[],
        &[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector}"),
        )],
        &log,
    );
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&json!({"model": "fake/gpt-4o-mini",
                      "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let spans = receiver.wait_for(2).await;
    let (service, call) = spans
        .iter()
        .find(|(_, s)| attributes(s).contains_key("weir.attempts"))
        .unwrap();
    assert_eq!(service, "weir");
    assert!(
        call.parent_span_id.is_empty(),
        "no traceparent: a new trace"
    );
    let c = attributes(call);
    let input: serde_json::Value =
        serde_json::from_str(c["gen_ai.input.messages"].as_str().unwrap()).unwrap();
    assert_eq!(input[0]["content"], json!(PROMPT), "{input}");
    let output = c["gen_ai.output.messages"].as_str().unwrap();
    assert!(output.contains("the answer"), "{output}");
    assert!(!format!("{spans:?}").contains("sk-fake-secret-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_slows_no_request_and_its_spans_are_counted_as_dropped() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Accepts connections and never answers: each export waits out its timeout.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = blackhole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((conn, _)) = blackhole.accept().await {
            keep.lock().unwrap().push(conn);
        }
    });
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o-mini", "ok")));
    let config = config(
        &fake,
        &format!(
            "telemetry:\n  otlp: {{ endpoint: \"http://127.0.0.1:{collector}/v1/traces\", timeout: 3s, queue_size: 8 }}\n"
        ),
    );
    let log = config.with_file_name("stderr.log");
    let (_served, port) = serve_with(&config, &[], &[], &log);
    let http = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..40 {
        let call = Instant::now();
        let res = http
            .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
            .json(&json!({"model": "fake/gpt-4o-mini",
                          "messages": [{"role": "user", "content": format!("call {i}")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            // An export holding requests would hold each for its 3s timeout.
            call.elapsed() < Duration::from_secs(1),
            "call {i} took {:?}: export must not hold requests",
            call.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // 80 spans into a queue of 8 behind an export that times out: most are dropped.
    let waited = Instant::now();
    loop {
        let status: serde_json::Value = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let t = &status["telemetry"];
        if t["spans_dropped"].as_u64().unwrap_or(0) >= 60
            && t["export_failures"].as_u64() >= Some(1)
        {
            assert_eq!(t["spans_exported"], json!(0), "{t}");
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "drops not counted: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn config_check_names_the_trace_endpoint_and_reports_a_bad_one() {
    let dir = temp_dir("check");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "telemetry: { otlp: { endpoint: \"http://127.0.0.1:4318/v1/traces\" } }\n",
    )
    .unwrap();
    let o = weir()
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("traces to http://127.0.0.1:4318/v1/traces as weir"),
        "{out}"
    );
    // The standard variable, read by `config check` as by `serve`.
    let o = weir()
        .args(["config", "check"])
        .arg(&good)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "udp://collector")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && err.contains("speaks HTTP"),
        "{err}"
    );
}

#[test]
fn serve_refuses_to_start_with_an_unreadable_trace_endpoint() {
    let dir = temp_dir("serve-bad");
    let o = weir()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && err.contains("is not a URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_no_traceparent_goes_upstream() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeUpstream::start().await.unwrap();
    fake.set_default(Reply::json(openai::chat_completion("gpt-4o-mini", "ok")));
    let config = config(&fake, "");
    let log = config.with_file_name("stderr.log");
    let (_served, port) = serve_with(&config, &[], &[], &log);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!({"model": "fake/gpt-4o-mini",
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent.header("traceparent"),
        None,
        "not forwarded without export"
    );
    let status: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["telemetry"], serde_json::Value::Null, "{status}");
}
