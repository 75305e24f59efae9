#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::pipeline::{CacheOutcome, Latencies, Operation, Outcome, Tokens};
use crate::{CallContext, Principal};

fn limiter(yaml: &str) -> InboundLimits {
    let config = crate::Config::from_yaml(yaml, &|_: &str| None).unwrap();
    InboundLimits::in_memory(&config.limits)
}

fn with_key(key: &str) -> CallContext {
    CallContext {
        principal: Principal {
            key_id: Some(key.into()),
            ..Principal::default()
        },
        ..CallContext::default()
    }
}

fn request(context: &CallContext, input: u64, output: u64) -> AdmissionRequest<'_> {
    AdmissionRequest {
        context,
        operation: Operation::Chat,
        input_tokens: input,
        max_output_tokens: output,
    }
}

fn event(input: u64, output: u64, cache: CacheOutcome) -> UsageEvent {
    UsageEvent {
        context: Arc::new(CallContext::default()),
        operation: Operation::Chat,
        outcome: Outcome::Success,
        status: 200,
        error: None,
        route: None,
        attempts: 1,
        tokens: Tokens {
            input,
            output,
            ..Tokens::default()
        },
        tokens_estimated: false,
        cost_usd: None,
        cache,
        latency: Latencies::default(),
        prompt_fingerprint: None,
    }
}

/// Reserve and return the quota, failing the test on a refusal.
async fn admit(limits: &InboundLimits, request: &AdmissionRequest<'_>) -> Admitted {
    match limits.reserve(request).await {
        Ok(admitted) => admitted,
        Err(e) => panic!("refused: {e}"),
    }
}

fn remaining(admitted: &Admitted) -> u64 {
    admitted.quota.map(|q| q.remaining).unwrap()
}

#[tokio::test(start_paused = true)]
async fn twenty_five_rapid_requests_against_rpm_20_admit_exactly_20() {
    let limits = limiter("limits: { per_key: { rpm: 20 } }");
    let ctx = with_key("key_ab12");
    let (mut admitted, mut refused) = (0, Vec::new());
    for _ in 0..25 {
        match limits.reserve(&request(&ctx, 10, 10)).await {
            Ok(a) => {
                admitted += 1;
                assert_eq!(remaining(&a), 20 - admitted);
            }
            Err(e) => refused.push(e),
        }
    }
    assert_eq!((admitted, refused.len()), (20, 5));
    for e in &refused {
        assert_eq!(e.http_status(), 429);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        let Error::Rejected { code, quota, .. } = e else {
            panic!("not a refusal: {e:?}");
        };
        assert_eq!(*code, "rate_limit_exceeded");
        assert_eq!(
            *quota,
            Some(Quota {
                scope: LimitScope::Key,
                kind: LimitKind::Requests,
                limit: 20,
                remaining: 0,
                reset: Duration::from_secs(60),
            })
        );
        assert_eq!(
            e.to_string(),
            "rate limit exceeded: key key_ab12 allows 20 requests per minute; retry in 3 s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_limit_refills_one_request_per_interval_and_fully_after_a_minute() {
    let limits = limiter("limits: { per_user: { rpm: 20 } }");
    let mut ctx = CallContext::default();
    ctx.principal.user = Some("alice".into());
    for _ in 0..20 {
        admit(&limits, &request(&ctx, 0, 0)).await;
    }
    assert!(limits.reserve(&request(&ctx, 0, 0)).await.is_err());
    tokio::time::advance(Duration::from_millis(2_999)).await;
    let early = limits.reserve(&request(&ctx, 0, 0)).await.unwrap_err();
    assert_eq!(early.retry_after(), Some(Duration::from_millis(1)));
    assert!(
        early
            .to_string()
            .ends_with("user alice allows 20 requests per minute; retry in 1 ms")
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let one = admit(&limits, &request(&ctx, 0, 0)).await;
    assert_eq!(remaining(&one), 0);
    assert!(limits.reserve(&request(&ctx, 0, 0)).await.is_err());

    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..20 {
        admit(&limits, &request(&ctx, 0, 0)).await;
    }
    assert!(limits.reserve(&request(&ctx, 0, 0)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_call_refused_by_its_team_takes_nothing_from_its_key() {
    let limits = limiter("limits: { per_key: { rpm: 10 }, per_team: { rpm: 1 } }");
    let mut ctx = with_key("k1");
    ctx.principal.team = Some("ads".into());
    let first = admit(&limits, &request(&ctx, 0, 0)).await;
    // The tightest of the key's 9 and the team's 0.
    assert_eq!(
        first.quota.map(|q| (q.scope, q.remaining)),
        Some((LimitScope::Team, 0))
    );
    for _ in 0..3 {
        let e = limits.reserve(&request(&ctx, 0, 0)).await.unwrap_err();
        assert_eq!(e.quota().map(|q| q.scope), Some(LimitScope::Team));
        assert!(
            e.to_string()
                .contains("team ads allows 1 request per minute"),
            "{e}"
        );
    }
    // Only the first call was taken from the key.
    let alone = admit(&limits, &request(&with_key("k1"), 0, 0)).await;
    assert_eq!(
        alone.quota.map(|q| (q.scope, q.remaining)),
        Some((LimitScope::Key, 8))
    );
}

#[tokio::test(start_paused = true)]
async fn token_cells_settle_to_the_real_usage() {
    let limits = limiter("limits: { per_key: { tpm: 1000 } }");
    let ctx = with_key("k");
    let first = admit(&limits, &request(&ctx, 100, 400)).await;
    assert_eq!(
        first.quota.map(|q| (q.kind, q.remaining)),
        Some((LimitKind::Tokens, 500))
    );
    // Used 150 of the 500 reserved: 350 come back.
    limits.settle(first.reservation, &event(100, 50, CacheOutcome::Miss));
    let second = admit(&limits, &request(&ctx, 300, 500)).await;
    assert_eq!(remaining(&second), 50);
    // A cache hit spent nothing upstream: all 800 come back.
    limits.settle(second.reservation, &event(300, 200, CacheOutcome::Hit));
    let third = admit(&limits, &request(&ctx, 0, 850)).await;
    assert_eq!(remaining(&third), 0);
    // Used more than reserved: the difference is charged, and the next call waits for it.
    limits.settle(third.reservation, &event(0, 950, CacheOutcome::Miss));
    let e = limits.reserve(&request(&ctx, 0, 1)).await.unwrap_err();
    assert_eq!(e.http_status(), 429);
    assert!(e.to_string().contains("(this call reserves 1)"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_released_reservation_is_given_back_whole() {
    let limits = limiter("limits: { per_key: { rpm: 1, tpm: 100 } }");
    let ctx = with_key("k");
    let held = admit(&limits, &request(&ctx, 60, 40)).await;
    assert!(limits.reserve(&request(&ctx, 0, 0)).await.is_err());
    limits.release(held.reservation);
    let again = admit(&limits, &request(&ctx, 60, 40)).await;
    assert_eq!(remaining(&again), 0);
}

#[tokio::test(start_paused = true)]
async fn per_ip_limits_apply_only_to_calls_without_a_gateway_key() {
    let limits = limiter("limits: { per_ip: { rpm: 1 } }");
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let anonymous = CallContext {
        client_ip: Some(ip),
        ..CallContext::default()
    };
    let quota = admit(&limits, &request(&anonymous, 0, 0)).await.quota;
    assert_eq!(quota.map(|q| q.scope), Some(LimitScope::Ip));
    let e = limits
        .reserve(&request(&anonymous, 0, 0))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("client 10.0.0.7 allows 1 request per minute"),
        "{e}"
    );
    // The same address with a key is not limited by address, and no scope applies.
    let mut keyed = with_key("k");
    keyed.client_ip = Some(ip);
    for _ in 0..3 {
        assert_eq!(admit(&limits, &request(&keyed, 0, 0)).await.quota, None);
    }
    // Another address has its own cell.
    let other = CallContext {
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8))),
        ..CallContext::default()
    };
    admit(&limits, &request(&other, 0, 0)).await;
}

#[tokio::test(start_paused = true)]
async fn a_keys_own_limits_win_over_the_default_field_by_field() {
    let limits = limiter("limits: { per_key: { rpm: 2, tpm: 1000 } }");
    let mut own = with_key("vip");
    own.principal.limits = Some(RateLimit {
        rpm: Some(5),
        tpm: None,
    });
    for left in (0..5).rev() {
        let quota = admit(&limits, &request(&own, 0, 0)).await.quota.unwrap();
        // Requests are the key's own; tokens the default's (1000, none spent).
        assert_eq!(
            (quota.kind, quota.limit, quota.remaining),
            (LimitKind::Requests, 5, left)
        );
    }
    assert!(limits.reserve(&request(&own, 0, 0)).await.is_err());
    // Other keys keep the default.
    let plain = with_key("plain");
    admit(&limits, &request(&plain, 0, 0)).await;
    admit(&limits, &request(&plain, 0, 0)).await;
    assert!(limits.reserve(&request(&plain, 0, 0)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_call_larger_than_a_whole_token_limit_is_refused_as_too_large() {
    let limits = limiter("limits: { per_user: { tpm: 1000 } }");
    let mut ctx = CallContext::default();
    ctx.principal.user = Some("bob".into());
    let e = limits.reserve(&request(&ctx, 200, 4096)).await.unwrap_err();
    assert_eq!(e.http_status(), 413);
    assert_eq!(e.retry_after(), None);
    let text = e.to_string();
    assert!(
        text.contains("user bob allows 1000 tokens per minute"),
        "{text}"
    );
    assert!(text.contains("reserves 4296"), "{text}");
    assert!(text.contains("lower max_tokens"), "{text}");
    // Nothing was taken.
    assert_eq!(remaining(&admit(&limits, &request(&ctx, 0, 1000)).await), 0);
}

#[tokio::test(start_paused = true)]
async fn calls_no_scope_applies_to_pass_without_a_quota() {
    let limits = limiter("limits: { per_team: { rpm: 1 } }");
    let ctx = with_key("k");
    for _ in 0..5 {
        let admitted = admit(&limits, &request(&ctx, 0, 0)).await;
        assert_eq!(admitted.quota, None);
        limits.settle(admitted.reservation, &event(1, 1, CacheOutcome::Miss));
    }
    assert_eq!(
        limits.health(),
        LimitsHealth {
            backend: "memory",
            healthy: true,
            store_errors: 0,
            last_error: None,
        }
    );
}

#[test]
fn waits_read_as_people_write_them() {
    assert_eq!(fmt_wait(Duration::from_micros(1)), "1 ms");
    assert_eq!(fmt_wait(Duration::from_millis(250)), "250 ms");
    assert_eq!(fmt_wait(Duration::from_secs(3)), "3 s");
    assert_eq!(fmt_wait(Duration::from_millis(2_001)), "3 s");
}

#[test]
fn only_configured_scopes_turn_the_limiter_on() {
    assert!(!LimitsConfig::default().any());
    let one = LimitsConfig {
        per_ip: RateLimit {
            rpm: None,
            tpm: Some(5),
        },
        ..LimitsConfig::default()
    };
    assert!(one.any());
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn limits_in_redis_need_the_redis_feature() {
    let yaml = "redis: { url: redis://127.0.0.1:1/ }\nlimits: { per_key: { rpm: 1 } }\n";
    let config = crate::Config::from_yaml(yaml, &|_: &str| None).unwrap();
    let err = InboundLimits::new(&config.limits, config.redis.as_ref())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("without the `redis` feature"),
        "{err}"
    );
}
