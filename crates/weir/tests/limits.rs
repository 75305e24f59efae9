//! Inbound rate limits through a real `Client` on the mock provider: the quota on every
//! answer, the refusal's shape, and limits shared exactly by two clients (two gateway
//! replicas) through one Redis, including what happens when that Redis dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt;
use weir::{CallContext, Client, Config, Error, LimitKind, LimitScope, Principal};
#[cfg(feature = "redis")]
use weir_test_support::redis::RedisServer;
use weir_types::chat::{ChatRequest, Message};

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, &|_: &str| None).unwrap()
}

fn hello(max_tokens: u32) -> ChatRequest {
    let mut req = ChatRequest::new("mock/echo", vec![Message::user("hello there")]);
    req.max_tokens = Some(max_tokens);
    // Sampled: the cache stays out of the way unless a test asks for it.
    req.temperature = Some(0.7);
    req
}

fn as_key(key: &str) -> CallContext {
    CallContext {
        principal: Principal {
            key_id: Some(key.into()),
            ..Principal::default()
        },
        ..CallContext::default()
    }
}

#[cfg(feature = "redis")]
fn redis_or_skip() -> Option<RedisServer> {
    let redis = RedisServer::start().unwrap();
    if redis.is_none() {
        eprintln!("redis-server not installed: skipping (scripts/test.sh installs it)");
    }
    redis
}

/// Poll `check` for up to two seconds: settlement in Redis happens off the request path.
#[cfg(feature = "redis")]
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn answers_carry_the_callers_quota_and_refusals_say_which_limit() {
    let client = Client::builder(config("limits: { per_key: { rpm: 3 } }"))
        .build()
        .unwrap();
    let limits = client.inbound_limits().expect("registered from the config");
    assert_eq!(limits.health().backend, "memory");

    let done = client
        .chat_with(hello(16), as_key("key_ab12"))
        .await
        .unwrap();
    let quota = done.meta.quota.unwrap();
    assert_eq!(
        (quota.scope, quota.kind, quota.limit, quota.remaining),
        (LimitScope::Key, LimitKind::Requests, 3, 2)
    );
    assert_eq!(quota.reset, Duration::from_secs(20));

    let stream = client
        .chat_stream_with(hello(16), as_key("key_ab12"))
        .await
        .unwrap();
    assert_eq!(stream.meta().quota.map(|q| q.remaining), Some(1));
    drop(stream.collect::<Vec<_>>().await);
    let done = client
        .chat_with(hello(16), as_key("key_ab12"))
        .await
        .unwrap();
    assert_eq!(done.meta.quota.map(|q| q.remaining), Some(0));

    let err = client
        .chat_with(hello(16), as_key("key_ab12"))
        .await
        .unwrap_err();
    let Error::Rejected {
        status,
        code,
        retry_after,
        quota,
        ..
    } = &err
    else {
        panic!("not a refusal: {err:?}");
    };
    assert_eq!((*status, *code), (429, "rate_limit_exceeded"));
    let wait = retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    let quota = quota.unwrap();
    assert_eq!(
        (quota.scope, quota.limit, quota.remaining),
        (LimitScope::Key, 3, 0)
    );
    assert_eq!(err.http_status(), 429);
    assert_eq!(
        err.to_string(),
        "rate limit exceeded: key key_ab12 allows 3 requests per minute; retry in 20 s"
    );

    // Another key has its own limit; a call with no key and no address has none.
    let other = client
        .chat_with(hello(16), as_key("key_cd34"))
        .await
        .unwrap();
    assert_eq!(other.meta.quota.map(|q| q.remaining), Some(2));
    let open = client.chat(hello(16)).await.unwrap();
    assert_eq!(open.meta.quota, None);
    assert!(limits.health().healthy);
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_address_and_cache_hits_give_tokens_back() {
    let yaml = "
cache: { enabled: true }
limits:
  per_ip: { rpm: 100, tpm: 1000 }
";
    let client = Client::builder(config(yaml)).build().unwrap();
    let ctx = CallContext {
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))),
        ..CallContext::default()
    };
    let mut cached = hello(300);
    cached.temperature = Some(0.0);
    let first = client.chat_with(cached.clone(), ctx.clone()).await.unwrap();
    // The tightest cell is the one with the least left: 99 requests (against 700-odd tokens).
    let q = first.meta.quota.unwrap();
    assert_eq!(
        (q.scope, q.kind, q.remaining),
        (LimitScope::Ip, LimitKind::Requests, 99)
    );
    for _ in 0..5 {
        let hit = client.chat_with(cached.clone(), ctx.clone()).await.unwrap();
        assert_eq!(hit.meta.cache, weir::client::CacheStatus::Hit);
        assert!(hit.meta.quota.is_some());
    }
    // Six calls reserved 300+ tokens each against 1000 per minute: the first settled to
    // its usage and the hits gave theirs back, so a stream reserving 900 still fits, and
    // holds its reservation while it is open.
    let stream = client
        .chat_stream_with(hello(900), ctx.clone())
        .await
        .unwrap();
    // Now the tokens are the tighter: fewer left than the 93 requests.
    let q = stream.meta().quota.unwrap();
    assert_eq!((q.kind, q.limit), (LimitKind::Tokens, 1000), "{q:?}");
    assert!(q.remaining < 93, "{q:?}");
    let err = client.chat_with(hello(200), ctx.clone()).await.unwrap_err();
    assert_eq!(err.http_status(), 429);
    let text = err.to_string();
    assert!(
        text.contains("client 10.0.0.7 allows 1000 tokens per minute"),
        "{text}"
    );
    assert!(text.contains("this call reserves 2"), "{text}");
    // Dropped half-read, the stream settles to what it used and gives the rest back.
    drop(stream);
    client.chat_with(hello(200), ctx).await.unwrap();
}

#[tokio::test]
async fn a_client_without_limits_registers_no_limiter() {
    let client = Client::new(config("")).unwrap();
    assert!(client.inbound_limits().is_none());
    let done = client.chat_with(hello(16), as_key("k")).await.unwrap();
    assert_eq!(done.meta.quota, None);
    // Forced on (for keys that carry their own limits), it applies those alone.
    let client = Client::builder(config(""))
        .with_inbound_limits()
        .build()
        .unwrap();
    let mut own = as_key("k");
    own.principal.limits = Some(weir::limits::RateLimit {
        rpm: Some(1),
        tpm: None,
    });
    client.chat_with(hello(16), own.clone()).await.unwrap();
    assert_eq!(
        client
            .chat_with(hello(16), own)
            .await
            .unwrap_err()
            .http_status(),
        429
    );
    assert!(
        client
            .chat_with(hello(16), as_key("k2"))
            .await
            .unwrap()
            .meta
            .quota
            .is_none()
    );
}

#[tokio::test]
async fn limits_in_redis_need_the_async_build() {
    let yaml = "redis: { url: redis://127.0.0.1:1/ }\nlimits: { per_key: { rpm: 1 } }\n";
    let err = Client::new(config(yaml)).unwrap_err();
    assert!(err.to_string().contains("build_async"), "{err}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sharing_one_redis_admit_exactly_the_limit() {
    let Some(redis) = redis_or_skip() else { return };
    let yaml = format!(
        "redis: {{ url: \"{}\", prefix: replicas }}\nlimits: {{ per_key: {{ rpm: 10 }} }}\n",
        redis.url()
    );
    let a = Client::builder(config(&yaml)).build_async().await.unwrap();
    let b = Client::builder(config(&yaml)).build_async().await.unwrap();
    assert_eq!(a.inbound_limits().unwrap().health().backend, "redis");

    let calls = (0..30).map(|i| {
        let client = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { client.chat_with(hello(16), as_key("shared")).await })
    });
    let results = futures::future::join_all(calls).await;
    let (mut admitted, mut refused) = (0, 0);
    for r in results {
        match r.unwrap() {
            Ok(done) => {
                admitted += 1;
                assert_eq!(done.meta.quota.map(|q| q.scope), Some(LimitScope::Key));
            }
            Err(e) => {
                refused += 1;
                assert_eq!(e.http_status(), 429, "{e}");
                assert!(e.retry_after().is_some());
                assert_eq!(e.quota().map(|q| q.remaining), Some(0));
            }
        }
    }
    assert_eq!((admitted, refused), (10, 20));
    for client in [&a, &b] {
        let health = client.inbound_limits().unwrap().health();
        assert!(health.healthy && health.store_errors == 0, "{health:?}");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_call_refused_by_one_redis_cell_takes_from_none() {
    let Some(redis) = redis_or_skip() else { return };
    let yaml = format!(
        "redis: {{ url: \"{}\" }}\nlimits: {{ per_key: {{ rpm: 10 }}, per_team: {{ rpm: 1 }} }}\n",
        redis.url()
    );
    let client = Client::builder(config(&yaml)).build_async().await.unwrap();
    let mut ctx = as_key("k1");
    ctx.principal.team = Some("ads".into());
    let first = client.chat_with(hello(16), ctx.clone()).await.unwrap();
    assert_eq!(
        first.meta.quota.map(|q| (q.scope, q.remaining)),
        Some((LimitScope::Team, 0))
    );
    for _ in 0..3 {
        let err = client.chat_with(hello(16), ctx.clone()).await.unwrap_err();
        assert_eq!(err.quota().map(|q| q.scope), Some(LimitScope::Team));
        assert!(
            err.to_string()
                .contains("team ads allows 1 request per minute"),
            "{err}"
        );
    }
    // Only the first call was taken from the key.
    let alone = client.chat_with(hello(16), as_key("k1")).await.unwrap();
    assert_eq!(
        alone.meta.quota.map(|q| (q.scope, q.remaining)),
        Some((LimitScope::Key, 8))
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn token_limits_in_redis_settle_to_the_real_usage() {
    let Some(redis) = redis_or_skip() else { return };
    let yaml = format!(
        "redis: {{ url: \"{}\" }}\nlimits: {{ per_user: {{ tpm: 1000 }} }}\n",
        redis.url()
    );
    let client = Client::builder(config(&yaml)).build_async().await.unwrap();
    let mut ctx = CallContext::default();
    ctx.principal.user = Some("alice".into());
    let first = client.chat_with(hello(600), ctx.clone()).await.unwrap();
    assert!(first.meta.quota.unwrap().remaining < 400);
    // Reserving 600 more fits only once the first call has settled to its few tokens.
    let settled =
        eventually(async || client.chat_with(hello(600), ctx.clone()).await.is_ok()).await;
    assert!(settled, "the first call's unused tokens never came back");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_dead_redis_is_allowed_through_or_denied_as_configured() {
    let Some(redis) = redis_or_skip() else { return };
    let yaml = |mode: &str| {
        format!(
            "redis: {{ url: \"{}\" }}\nlimits: {{ per_key: {{ rpm: 100 }}, on_store_error: {mode}, store_timeout: 200ms }}\n",
            redis.url()
        )
    };
    let allow = Client::builder(config(&yaml("allow")))
        .build_async()
        .await
        .unwrap();
    let deny = Client::builder(config(&yaml("deny")))
        .build_async()
        .await
        .unwrap();
    for client in [&allow, &deny] {
        let done = client.chat_with(hello(16), as_key("k")).await.unwrap();
        assert!(done.meta.quota.is_some());
    }

    drop(redis);
    let started = std::time::Instant::now();
    let done = allow.chat_with(hello(16), as_key("k")).await.unwrap();
    assert_eq!(done.meta.quota, None, "admitted without a quota");
    let err = deny.chat_with(hello(16), as_key("k")).await.unwrap_err();
    let Error::Rejected { status, code, .. } = &err else {
        panic!("not a refusal: {err:?}");
    };
    assert_eq!((*status, *code), (503, "limits_unavailable"));
    assert_eq!(err.http_status(), 503);
    assert!(err.to_string().contains("Redis"), "{err}");
    // Later calls skip the dead store instead of each waiting for it.
    for _ in 0..20 {
        allow.chat_with(hello(16), as_key("k")).await.unwrap();
        deny.chat_with(hello(16), as_key("k")).await.unwrap_err();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    for client in [&allow, &deny] {
        let health = client.inbound_limits().unwrap().health();
        assert_eq!(health.backend, "redis");
        assert!(!health.healthy, "{health:?}");
        assert!(health.store_errors >= 1, "{health:?}");
        assert!(health.last_error.is_some(), "{health:?}");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_failures_never_show_the_password() {
    let Some(redis) = redis_or_skip() else { return };
    // The server has no password, so AUTH with one fails: the client still builds.
    let url = format!("redis://:hunter2@{}/", redis.addr());
    let yaml = format!(
        "redis: {{ url: \"{url}\" }}\nlimits: {{ per_key: {{ rpm: 5 }}, on_store_error: deny }}\n"
    );
    let client = Client::builder(config(&yaml)).build_async().await.unwrap();
    let health = client.inbound_limits().unwrap().health();
    assert!(!health.healthy, "{health:?}");
    let err = client.chat_with(hello(16), as_key("k")).await.unwrap_err();
    assert_eq!(err.http_status(), 503);
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{health:?}"),
        format!("{client:?}"),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
    }
}
