//! Recording and rendering, without a gateway: values land under the configured labels, and
//! names a caller made up fold into `other`.

use std::str::FromStr;
use std::sync::Arc;

use super::*;
use crate::pipeline::{CallContext, Latencies, Outcome, RouteTaken, Tokens};

const YAML: &str = "providers:\n  oai:\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-secret-upstream\nmodels:\n  fast:\n    deployments:\n      - model: oai/gpt-4o-mini\n";

fn config() -> Config {
    Config::from_yaml(YAML, &|_: &str| None).unwrap()
}

fn event(model: &str, status: u16) -> UsageEvent {
    let mut context = CallContext::with_request_id("r1");
    context.model = model.to_owned();
    UsageEvent {
        context: Arc::new(context),
        operation: Operation::ChatStream,
        outcome: if status == 200 {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        status,
        error: (status != 200).then_some(ErrorKind::RateLimited),
        route: Some(RouteTaken {
            provider: "oai".into(),
            upstream_model: "gpt-4o-mini".into(),
            key_label: None,
        }),
        attempts: 1,
        tokens: Tokens {
            input: 10,
            output: 11,
            cached_input: 4,
            ..Tokens::default()
        },
        tokens_estimated: false,
        cost_usd: Some(Decimal::from_str("0.0000123").unwrap()),
        cache: CacheOutcome::Miss,
        latency: Latencies {
            total: Duration::from_millis(300),
            upstream: Duration::from_millis(50),
            first_token: Some(Duration::from_millis(100)),
        },
        prompt_fingerprint: None,
    }
}

async fn rendered(m: &Metrics, config: Config) -> String {
    let client = crate::Client::new(config).unwrap();
    m.render(&client).await.finish()
}

#[tokio::test]
async fn a_call_is_counted_under_configured_labels() {
    let m = Metrics::new(&config());
    m.record(&event("fast", 200));
    m.record(&event("fast", 200));
    m.record(&event("made-up-model", 429));
    let text = rendered(&m, config()).await;
    assert!(text.contains(
        "weir_requests_total{operation=\"chat_stream\",model=\"fast\",provider=\"oai\",status_class=\"2xx\",cache=\"miss\"} 2\n"
    ), "{text}");
    assert!(text.contains(
        "weir_requests_total{operation=\"chat_stream\",model=\"other\",provider=\"oai\",status_class=\"4xx\",cache=\"miss\"} 1\n"
    ));
    assert!(text.contains("weir_errors_total{provider=\"oai\",kind=\"rate_limited\"} 1\n"));
    assert!(
        text.contains(
            "weir_tokens_total{model=\"fast\",provider=\"oai\",type=\"cached_input\"} 8\n"
        )
    );
    assert!(text.contains("weir_cost_dollars_total{model=\"fast\",provider=\"oai\"} 0.0000246\n"));
    // 300 ms lands in le=0.32 and above.
    let labels =
        "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"oai\",gen_ai_request_model=\"fast\"";
    assert!(text.contains(&format!(
        "gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.16\"}} 0\n"
    )));
    assert!(text.contains(&format!(
        "gen_ai_client_operation_duration_seconds_bucket{{{labels},le=\"0.32\"}} 2\n"
    )));
    assert!(text.contains(&format!(
        "gen_ai_client_operation_duration_seconds_count{{{labels}}} 2\n"
    )));
    assert!(text.contains(&format!(
        "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"output\"}} 22\n"
    )));
    // (300 - 100) ms over 10 tokens after the first: 20 ms each.
    assert!(text.contains(&format!(
        "gen_ai_server_time_per_output_token_seconds_bucket{{{labels},le=\"0.025\"}} 2\n"
    )));
    assert!(!text.contains("sk-secret-upstream"));
}

#[tokio::test]
async fn attempts_count_by_deployment_and_outcome() {
    let m = Metrics::new(&config());
    let a = AttemptInfo {
        request_id: "r",
        deployment: "oai/gpt-4o-mini",
        provider: "oai",
        key_label: "",
        number: 1,
        hedge: false,
    };
    m.attempt_started(&a);
    m.attempt_ended(
        &a,
        AttemptOutcome::Failed {
            kind: ErrorKind::RateLimited,
            status: 429,
        },
        Duration::from_millis(1),
    );
    let hedge = AttemptInfo {
        hedge: true,
        deployment: "elsewhere/x",
        ..a
    };
    m.attempt_started(&hedge);
    m.attempt_ended(&hedge, AttemptOutcome::Success, Duration::from_millis(1));
    let text = rendered(&m, config()).await;
    assert!(text.contains(
        "weir_upstream_attempts_total{deployment=\"oai/gpt-4o-mini\",outcome=\"failed\"} 1\n"
    ));
    assert!(
        text.contains("weir_upstream_attempts_total{deployment=\"other\",outcome=\"success\"} 1\n")
    );
    assert!(text.contains(
        "weir_upstream_attempt_errors_total{deployment=\"oai/gpt-4o-mini\",kind=\"rate_limited\"} 1\n"
    ));
    assert!(text.contains("weir_hedges_total 1\n"));
    assert!(
        text.contains("weir_breaker_state{deployment=\"oai/gpt-4o-mini\",state=\"closed\"} 1\n")
    );
}

#[test]
fn streams_open_counts_live_guards() {
    let m = Metrics::new(&config());
    let a = m.stream_opened();
    let b = m.stream_opened();
    drop(a);
    assert_eq!(m.streams_open.load(Ordering::Relaxed), 1);
    drop(b);
    assert_eq!(m.streams_open.load(Ordering::Relaxed), 0);
}

#[test]
fn every_error_kind_has_its_slot() {
    for (i, k) in KINDS.iter().enumerate() {
        assert_eq!(kind_index(*k), i, "{}", k.as_str());
    }
}
