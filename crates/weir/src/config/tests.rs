#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

#[test]
fn no_file_gives_mock_only() {
    let c = load(None, &env(&[])).unwrap();
    assert_eq!(c.providers.len(), 1);
    assert_eq!(c.providers[0].kind, ProviderKind::Mock);
    assert_eq!(c.defaults.model, "mock/echo");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:4100");
    assert!(c.server.api_keys.is_empty());
}

#[test]
fn env_keys_switch_providers_on_and_base_urls_move_them() {
    let c = load(
        None,
        &env(&[
            ("OPENAI_API_KEY", "sk-test-openai"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1/"),
            ("ANTHROPIC_API_KEY", "sk-ant-test"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9000"),
        ]),
    )
    .unwrap();
    let openai = c.provider("openai").unwrap();
    assert_eq!(openai.base_url.as_str(), "http://127.0.0.1:8000/v1");
    assert_eq!(openai.keys[0].secret.expose_secret(), "sk-test-openai");
    let anthropic = c.provider("anthropic").unwrap();
    assert_eq!(anthropic.base_url.as_str(), "http://127.0.0.1:9000/v1");
    assert!(c.provider("openrouter").is_none());
}

#[test]
fn full_file_with_interpolation() {
    let yaml = r#"
server:
  listen: 0.0.0.0:9999
  api_keys: ["${GW_KEY}"]
  body_limit: 2MiB
  shutdown_grace: 5s
defaults:
  model: fast
  max_tokens: 1024
providers:
  local:
    kind: openai
    base_url: ${LOCAL_URL:-http://localhost:11434/v1}
    models: [llama3]
  openrouter:
    api_keys: ["k1", "k2"]
    headers:
      HTTP-Referer: https://example.com
      X-Title: weir
models:
  fast: local/llama3
retry:
  max_retries: 5
  base_delay: 100ms
pricing:
  local/llama3: { input: 0.1, output: 0.2 }
mock:
  inter_token_delay: 5ms
  faults: { error_rate: 0.5, error_status: 503, retry_after: 2s }
"#;
    let c = Config::from_yaml(yaml, &env(&[("GW_KEY", "gw-secret")])).unwrap();
    assert_eq!(c.server.listen.port(), 9999);
    assert_eq!(c.server.body_limit, 2 * 1024 * 1024);
    assert_eq!(c.server.api_keys[0].expose_secret(), "gw-secret");
    assert_eq!(
        c.provider("local").unwrap().base_url.as_str(),
        "http://localhost:11434/v1"
    );
    let or = c.provider("openrouter").unwrap();
    assert_eq!(or.keys.len(), 2);
    assert_eq!(or.keys[1].id, "openrouter#1");
    assert_eq!(or.headers.len(), 2);
    assert_eq!(c.groups["fast"].deployments[0].upstream_model, "llama3");
    assert_eq!(c.retry.max_retries, 5);
    assert!(c.pricing.lookup("local", "llama3").is_some());
    assert_eq!(c.mock.faults.error_status, 503);
    assert_eq!(
        c.mock.inter_token_delay,
        std::time::Duration::from_millis(5)
    );
}

#[test]
fn reports_every_problem_with_its_path() {
    let yaml = r#"
server:
  listen: not-an-address
providers:
  local:
    base_url: ftp://x
  other:
    kind: openai
    base_url: "::::"
models:
  fast: nowhere/model
  bad: no-slash
retry:
  base_delay: soon
"#;
    let err = Config::from_yaml(yaml, &env(&[])).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "server.listen",
        "providers.local.kind",
        "providers.other.base_url",
        "models.fast",
        "models.bad",
        "retry.base_delay",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    let text = err.to_string();
    assert!(text.contains("problems"), "{text}");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let err = Config::from_yaml("providers:\n  openai:\n    api_kee: x\n", &env(&[])).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].path.contains("providers.openai"), "{err}");
    assert!(err.problems[0].reason.contains("api_kee"), "{err}");
}

#[test]
fn missing_variables_are_reported() {
    let err = Config::from_yaml("server:\n  api_keys: [\"${NOPE}\"]\n", &env(&[])).unwrap_err();
    assert_eq!(err.problems[0].path, "server.api_keys[0]");
    assert!(err.problems[0].reason.contains("NOPE"));
}

#[test]
fn llm_env_overrides_apply() {
    let c = load(
        None,
        &env(&[
            ("LLM_FORCE_MOCK", "1"),
            ("LLM_MAX_RETRIES", "7"),
            ("LLM_RETRY_BACKOFF_BASE", "3.0"),
            ("WEIR_API_KEYS", "a, b"),
            ("WEIR_LISTEN", "127.0.0.1:0"),
        ]),
    )
    .unwrap();
    assert!(c.defaults.force_mock);
    assert_eq!(c.retry.max_retries, 7);
    assert!((c.retry.factor - 3.0).abs() < f64::EPSILON);
    assert_eq!(c.server.api_keys.len(), 2);
    assert_eq!(c.server.listen.port(), 0);

    let err = load(
        None,
        &env(&[("LLM_MAX_RETRIES", "many"), ("LLM_PROVIDER", "nope")]),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"env LLM_MAX_RETRIES"));
    assert!(paths.contains(&"defaults.provider"));
}

#[test]
fn debug_output_redacts_secrets() {
    let c = load(
        None,
        &env(&[
            ("OPENAI_API_KEY", "sk-live-supersecret"),
            ("WEIR_API_KEYS", "gw-topsecret"),
        ]),
    )
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("supersecret"), "{dbg}");
    assert!(!dbg.contains("topsecret"), "{dbg}");
}

#[test]
fn store_and_admin_key_come_from_the_file_or_the_environment() {
    let c = Config::from_yaml(
        "server:\n  admin_key: adm\nstore:\n  sqlite: { path: /tmp/weir.db }\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.server.admin_key.as_ref().unwrap().expose_secret(), "adm");
    assert_eq!(
        c.store.sqlite.as_deref(),
        Some(std::path::Path::new("/tmp/weir.db"))
    );
    assert!(c.store.postgres.is_none());
    let debug = format!("{:?}", c.server);
    assert!(!debug.contains("adm\""), "{debug}");

    let c = Config::from_yaml(
        "",
        &env(&[
            ("WEIR_ADMIN_KEY", "from-env"),
            ("WEIR_POSTGRES_URL", "postgres://u:pw@db:5432/weir"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.admin_key.unwrap().expose_secret(), "from-env");
    assert!(!format!("{:?}", c.store).contains("pw"));

    let err = Config::from_yaml("store:\n  postgres: { url: mysql://x }\n", &env(&[])).unwrap_err();
    assert_eq!(err.problems[0].path, "store.postgres.url");
}

#[test]
fn inbound_limits_and_the_shared_redis_are_read() {
    let yaml = r#"
redis:
  url: redis://:hunter2@127.0.0.1:6379/
  prefix: gw1
limits:
  per_key:  { rpm: 600, tpm: 200000 }
  per_user: { rpm: 60 }
  per_team: { rpm: 1000, tpm: 1000000 }
  per_ip:   { rpm: 20 }
  on_store_error: deny
  store_timeout: 100ms
"#;
    let c = Config::from_yaml(yaml, &env(&[])).unwrap();
    let l = &c.limits;
    assert!(l.any());
    assert_eq!(
        (l.per_key.rpm, l.per_key.tpm, l.per_user.rpm, l.per_user.tpm),
        (Some(600), Some(200_000), Some(60), None)
    );
    assert_eq!((l.per_team.tpm, l.per_ip.rpm), (Some(1_000_000), Some(20)));
    assert_eq!(l.on_store_error, crate::limits::OnStoreError::Deny);
    assert_eq!(l.store_timeout, std::time::Duration::from_millis(100));
    let redis = c.redis.as_ref().unwrap();
    assert_eq!(
        redis.url.expose_secret(),
        "redis://:hunter2@127.0.0.1:6379/"
    );
    assert_eq!(redis.prefix, "gw1");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}

#[test]
fn without_limits_nothing_is_limited_and_nothing_is_shared() {
    let c = load(None, &env(&[])).unwrap();
    assert!(!c.limits.any());
    assert_eq!(c.limits, crate::limits::LimitsConfig::default());
    assert_eq!(c.limits.on_store_error, crate::limits::OnStoreError::Allow);
    assert!(c.redis.is_none());
}

#[test]
fn weir_redis_url_sets_or_overrides_the_shared_redis() {
    let c = load(
        None,
        &env(&[("WEIR_REDIS_URL", "rediss://:pw@cache:6380/2")]),
    )
    .unwrap();
    let redis = c.redis.unwrap();
    assert_eq!(redis.url.expose_secret(), "rediss://:pw@cache:6380/2");
    assert_eq!(redis.prefix, "weir");

    let yaml = "redis: { url: redis://file:6379/, prefix: mine }\n";
    let c = Config::from_yaml(yaml, &env(&[("WEIR_REDIS_URL", "redis://env:6379/")])).unwrap();
    let redis = c.redis.unwrap();
    assert_eq!(redis.url.expose_secret(), "redis://env:6379/");
    assert_eq!(redis.prefix, "mine");

    let err = load(None, &env(&[("WEIR_REDIS_URL", "http://:secret@x/")])).unwrap_err();
    assert_eq!(err.problems[0].path, "env WEIR_REDIS_URL");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn bad_limits_are_reported_with_their_paths() {
    let yaml = r#"
redis:
  url: http://:topsecret@127.0.0.1:6379/
limits:
  per_key: { rpm: 0 }
  per_ip: { tpm: 0 }
  on_store_error: maybe
  store_timeout: soon
"#;
    let err = Config::from_yaml(yaml, &env(&[])).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "limits.per_key.rpm",
        "limits.per_ip.tpm",
        "limits.on_store_error",
        "limits.store_timeout",
        "redis.url",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    assert_eq!(paths.len(), 5, "{paths:?}");
    let text = err.to_string();
    assert!(text.contains("at least 1"), "{text}");
    assert!(text.contains("redis:// or rediss://"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");

    let err = Config::from_yaml("redis: { prefix: x }\n", &env(&[])).unwrap_err();
    assert_eq!(err.problems[0].path, "redis.url");
}

#[test]
fn unknown_limit_keys_are_refused() {
    let err = Config::from_yaml("limits:\n  per_key: { rps: 5 }\n", &env(&[])).unwrap_err();
    assert!(err.problems[0].path.contains("limits.per_key"), "{err}");
    assert!(err.problems[0].reason.contains("rps"), "{err}");
    let err = Config::from_yaml("limits:\n  per_tenant: { rpm: 5 }\n", &env(&[])).unwrap_err();
    assert!(err.problems[0].reason.contains("per_tenant"), "{err}");
}

#[test]
fn budgets_are_read_as_a_list_or_a_map_by_id() {
    use crate::budgets::{BudgetMode, BudgetPeriod, BudgetScope, DEFAULT_THRESHOLDS};
    use rust_decimal::Decimal;
    let list = "
budgets:
  - id: all-daily
    scope: global
    limit_usd: 100
    period: daily
  - id: search-weekly
    scope: { team: search }
    limit_usd: 12.5
    period: { rolling: 7d }
    time_zone: America/New_York
    mode: soft
    thresholds: [0.9]
";
    let c = Config::from_yaml(list, &env(&[])).unwrap();
    let b = &c.budgets;
    assert!(b.any());
    assert_eq!(b.on_store_error, crate::limits::OnStoreError::Allow);
    assert_eq!(b.specs.len(), 2);
    let all = &b.specs[0];
    assert_eq!(
        (&all.scope, all.limit_usd, all.period, all.mode),
        (
            &BudgetScope::Global,
            Decimal::from(100),
            BudgetPeriod::Daily,
            BudgetMode::Hard
        )
    );
    assert_eq!(
        (all.time_zone.as_str(), all.thresholds.as_slice()),
        ("UTC", &DEFAULT_THRESHOLDS[..])
    );
    let search = &b.specs[1];
    assert_eq!(search.scope, BudgetScope::Team("search".into()));
    assert_eq!(search.limit_usd, Decimal::new(125, 1));
    assert_eq!(
        search.period,
        BudgetPeriod::Rolling(std::time::Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(
        (search.mode, search.thresholds.as_slice()),
        (BudgetMode::Soft, &[0.9][..])
    );

    let map = "
budgets:
  on_store_error: deny
  store_timeout: 100ms
  gpt-monthly: { scope: { model: smart }, limit_usd: '30', period: monthly }
";
    let c = Config::from_yaml(map, &env(&[])).unwrap();
    let b = &c.budgets;
    assert_eq!(b.on_store_error, crate::limits::OnStoreError::Deny);
    assert_eq!(b.store_timeout, std::time::Duration::from_millis(100));
    assert_eq!(b.specs.len(), 1);
    assert_eq!(b.specs[0].id, "gpt-monthly");
    assert_eq!(b.specs[0].scope, BudgetScope::Model("smart".into()));
    assert_eq!(b.specs[0].period, BudgetPeriod::Monthly);

    let none = Config::from_yaml("", &env(&[])).unwrap();
    assert!(!none.budgets.any());
}

#[test]
fn llm_budget_variables_add_hard_global_budgets() {
    use crate::budgets::{BudgetMode, BudgetPeriod, BudgetScope};
    use rust_decimal::Decimal;
    let file = "budgets:\n  global-daily: { scope: global, limit_usd: 1, period: daily }\n";
    let c = Config::from_yaml(
        file,
        &env(&[
            ("LLM_DAILY_BUDGET", "25"),
            ("LLM_MONTHLY_BUDGET", "$400.50"),
        ]),
    )
    .unwrap();
    let specs = &c.budgets.specs;
    // The environment's daily budget replaces the file's with the same id.
    assert_eq!(specs.len(), 2);
    let daily = specs.iter().find(|s| s.id == "global-daily").unwrap();
    assert_eq!(
        (&daily.scope, daily.limit_usd, daily.period, daily.mode),
        (
            &BudgetScope::Global,
            Decimal::from(25),
            BudgetPeriod::Daily,
            BudgetMode::Hard
        )
    );
    let monthly = specs.iter().find(|s| s.id == "global-monthly").unwrap();
    assert_eq!(
        (monthly.limit_usd, monthly.period),
        (Decimal::new(40050, 2), BudgetPeriod::Monthly)
    );

    let err = Config::from_yaml("", &env(&[("LLM_DAILY_BUDGET", "lots")])).unwrap_err();
    assert_eq!(err.problems[0].path, "env LLM_DAILY_BUDGET");
    assert!(err.problems[0].reason.contains("`lots`"), "{err}");
}

#[test]
fn bad_budgets_are_reported_with_their_paths() {
    let yaml = "
budgets:
  on_store_error: maybe
  a: { scope: global, limit_usd: 0, period: daily, time_zone: Nowhere/City }
  b: { id: c, scope: global, limit_usd: 1, period: daily }
  d: { scope: { squad: x }, limit_usd: 1, period: daily }
  e: { scope: global, limit_usd: 1, period: hourly }
  f: { scope: global, limit_usd: 1, period: daily, thresholds: [0] }
";
    let err = Config::from_yaml(yaml, &env(&[])).unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "budgets.a.limit_usd",
            "budgets.a.time_zone",
            "budgets.b.id",
            "budgets.d.scope",
            "budgets.e.period",
            "budgets.f.thresholds",
            "budgets.on_store_error",
        ],
        "{err}"
    );
    let err = Config::from_yaml(
        "budgets:\n  - { id: x, scope: global, limit_usd: 1, period: daily }\n  - { id: x, scope: global, limit_usd: 2, period: daily }\n",
        &env(&[]),
    )
    .unwrap_err();
    assert_eq!(err.problems[0].path, "budgets[1].id");
    assert!(err.problems[0].reason.contains("two budgets"), "{err}");
}

#[test]
fn price_tiers_load_and_bad_prices_are_reported_by_entry() {
    let yaml = r#"
pricing:
  local/big:
    input: 1
    output: 4
    reasoning: 5
    batch_multiplier: 0.5
    long_context: { above_input_tokens: 1000, input: 2, output: 6 }
"#;
    let c = Config::from_yaml(yaml, &env(&[])).unwrap();
    let price = c.pricing.lookup("local", "big").unwrap();
    assert_eq!(price.long_context.unwrap().above_input_tokens, 1000);

    let yaml = r#"
pricing:
  a/neg: { input: -1, output: 1 }
  b/batch: { input: 1, output: 1, batch_multiplier: 1.5 }
  c/long: { input: 1, output: 1, long_context: { above_input_tokens: 0, input: 1, output: 1 } }
"#;
    let err = Config::from_yaml(yaml, &env(&[])).unwrap_err();
    let problems: Vec<(&str, &str)> = err
        .problems
        .iter()
        .map(|p| (p.path.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(problems.len(), 3, "{err}");
    assert!(problems[0].0 == "pricing.a/neg" && problems[0].1.contains("negative"));
    assert!(problems[1].0 == "pricing.b/batch" && problems[1].1.contains("0.5 for half"));
    assert!(problems[2].0 == "pricing.c/long" && problems[2].1.contains("200000"));
    let err = Config::from_yaml(
        "pricing:\n  a/b: { input: 1, output: 1, long_context: { above: 5, input: 1, output: 1 } }\n",
        &env(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("above"), "{err}");
}

#[test]
fn ledger_retention_and_roll_up_load_and_their_bounds_are_checked() {
    let c = Config::from_yaml(
        "ledger:\n  retention: 90d\n  roll_up_after: 30d\n",
        &env(&[]),
    )
    .unwrap();
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(c.ledger.retention, Some(90 * day));
    assert_eq!(c.ledger.roll_up_after, Some(30 * day));
    assert_eq!(c.ledger.sweep_every, std::time::Duration::from_secs(3600));
    assert!(c.ledger.sweeps());
    assert!(!Config::from_yaml("", &env(&[])).unwrap().ledger.sweeps());

    let err = Config::from_yaml(
        "ledger:\n  retention: 30d\n  roll_up_after: 90d\n",
        &env(&[]),
    )
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, "ledger.retention");
    assert!(
        err.problems[0]
            .reason
            .contains("must be longer than roll_up_after"),
        "{err}"
    );
    let err = Config::from_yaml(
        "ledger:\n  retention: 2h\n  roll_up_after: soon\n  sweep_every: 0s\n  keep: 1d\n",
        &env(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("keep"), "{err}");
    let err = Config::from_yaml(
        "ledger:\n  retention: 2h\n  roll_up_after: soon\n  sweep_every: 0s\n",
        &env(&[]),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ledger.retention",
            "ledger.roll_up_after",
            "ledger.sweep_every"
        ],
        "{err}"
    );
    assert!(
        err.problems[0].reason.contains("shorter than a day"),
        "{err}"
    );
}

#[test]
fn telemetry_is_off_by_default_and_its_endpoint_comes_from_the_file_or_the_otel_variables() {
    let c = Config::from_yaml("", &env(&[])).unwrap();
    assert_eq!(c.telemetry, TelemetryConfig::default());
    assert!(c.telemetry.otlp.is_none());
    assert!(!c.telemetry.capture_content);

    let c = Config::from_yaml(
        "telemetry:\n  service_name: gw\n  capture_content: true\n  otlp: { endpoint: \"http://collector:4318/v1/traces\", timeout: 2s, queue_size: 64 }\n",
        &env(&[]),
    )
    .unwrap();
    let otlp = c.telemetry.otlp.clone().unwrap();
    assert_eq!(otlp.endpoint.as_str(), "http://collector:4318/v1/traces");
    assert_eq!(otlp.timeout, std::time::Duration::from_secs(2));
    assert_eq!(otlp.queue_size, 64);
    assert_eq!(c.telemetry.service_name, "gw");
    assert!(c.telemetry.capture_content);

    // The standard variables win over the file; a base URL gets `/v1/traces`.
    let file = "telemetry: { otlp: { endpoint: \"http://file:4318/v1/traces\" } }\n";
    let c = Config::from_yaml(
        file,
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.telemetry.otlp.unwrap().endpoint.as_str(),
        "http://base:4318/v1/traces"
    );
    assert_eq!(c.telemetry.service_name, "from-env");
    let c = Config::from_yaml(
        file,
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.telemetry.otlp.unwrap().endpoint.as_str(),
        "http://traces:4318/custom"
    );
    let c = Config::from_yaml(file, &env(&[("OTEL_SDK_DISABLED", "true")])).unwrap();
    assert!(
        c.telemetry.otlp.is_none(),
        "OTEL_SDK_DISABLED turns export off"
    );
}

#[test]
fn bad_telemetry_settings_are_reported_with_their_paths() {
    let err = Config::from_yaml(
        "telemetry:\n  otlp: { endpoint: \"grpc://collector:4317\", timeout: soon, queue_size: 0 }\n",
        &env(&[]),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "telemetry.otlp.timeout",
            "telemetry.otlp.queue_size",
            "telemetry.otlp.endpoint"
        ],
        "{err}"
    );
    assert!(err.problems[2].reason.contains("speaks HTTP"), "{err}");
    let err =
        Config::from_yaml("", &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")])).unwrap_err();
    assert_eq!(
        err.problems[0].path, "env OTEL_EXPORTER_OTLP_ENDPOINT",
        "{err}"
    );
    assert!(err.problems[0].reason.contains("is not a URL"), "{err}");
    let err = Config::from_yaml("telemetry: { otlp: { url: x } }\n", &env(&[])).unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
}
