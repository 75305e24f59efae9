use std::time::Instant;

use weir_test_support::redis::RedisServer;

use super::*;

fn key(namespace: &str, model: &str, digest: &str) -> CacheKey {
    CacheKey {
        namespace: namespace.into(),
        model: model.into(),
        digest: digest.into(),
    }
}

const TTL: Duration = Duration::from_secs(60);

/// A fresh server and a store on it; `None` when redis-server is absent and not required.
async fn setup(prefix: &str) -> Option<(RedisServer, RedisStore)> {
    let server = RedisServer::start().expect("start redis-server")?;
    let store = RedisStore::connect(&server.url(), prefix)
        .await
        .expect("connect");
    Some((server, store))
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn put_get_round_trip_and_replace() {
    let Some((_server, store)) = setup("weir").await else {
        return;
    };
    let k = key("shared", "openai/gpt-4o", "abc");
    assert_eq!(store.get(&k).await.unwrap(), None);
    store
        .put(&k, Bytes::from_static(b"first"), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.get(&k).await.unwrap(),
        Some(Bytes::from_static(b"first"))
    );
    store
        .put(&k, Bytes::from_static(b"second, longer"), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.get(&k).await.unwrap(),
        Some(Bytes::from_static(b"second, longer"))
    );
    // Arbitrary bytes survive, and keys differing only in namespace are distinct.
    let other = key("tenant-1", "openai/gpt-4o", "abc");
    let binary = Bytes::from(vec![0u8, 255, 10, 13, 0, 1]);
    store.put(&other, binary.clone(), TTL).await.unwrap();
    assert_eq!(store.get(&other).await.unwrap(), Some(binary));
    assert_eq!(
        store.get(&k).await.unwrap(),
        Some(Bytes::from_static(b"second, longer"))
    );
    assert_eq!(store.name(), "redis");
    store.ping().await.unwrap();
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let Some((server, store)) = setup("weir").await else {
        return;
    };
    let k = key("shared", "m", "short");
    store
        .put(&k, Bytes::from_static(b"v"), Duration::from_millis(300))
        .await
        .unwrap();
    store
        .put(&key("shared", "m", "long"), Bytes::from_static(b"vv"), TTL)
        .await
        .unwrap();
    assert!(store.get(&k).await.unwrap().is_some());
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("weir:e:{}", k.flat()))
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    assert!((1..=300).contains(&pttl), "PX set from the ttl: {pttl}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.get(&k).await.unwrap(), None);
    // The expired entry left the stats; the live one is still counted.
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 1,
            bytes: 2
        }
    );
    // A zero TTL is stored as 1 ms: gone at once, not an error.
    store
        .put(&k, Bytes::from_static(b"v"), Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.get(&k).await.unwrap(), None);
}

#[tokio::test]
async fn two_gateways_share_entries() {
    let Some((server, a)) = setup("weir").await else {
        return;
    };
    let b = RedisStore::connect(&server.url(), "weir").await.unwrap();
    let elsewhere = RedisStore::connect(&server.url(), "weir-staging")
        .await
        .unwrap();
    let k1 = key("shared", "m1", "d1");
    let k2 = key("shared", "m2", "d2");
    a.put(&k1, Bytes::from_static(b"from a"), TTL)
        .await
        .unwrap();
    b.put(&k2, Bytes::from_static(b"from b"), TTL)
        .await
        .unwrap();
    assert_eq!(
        b.get(&k1).await.unwrap(),
        Some(Bytes::from_static(b"from a"))
    );
    assert_eq!(
        a.get(&k2).await.unwrap(),
        Some(Bytes::from_static(b"from b"))
    );
    // Both see the same stats, and a clear from one is seen by the other.
    assert_eq!(a.stats().await.unwrap(), b.stats().await.unwrap());
    assert_eq!(a.stats().await.unwrap().entries, 2);
    assert_eq!(b.clear(Some("m1")).await.unwrap(), 1);
    assert_eq!(a.get(&k1).await.unwrap(), None);
    // Another prefix is another cache.
    assert_eq!(elsewhere.get(&k2).await.unwrap(), None);
    assert_eq!(elsewhere.stats().await.unwrap(), StoreStats::default());
}

#[tokio::test]
async fn clear_one_model_leaves_the_others() {
    let Some((_server, store)) = setup("weir").await else {
        return;
    };
    for ns in ["shared", "t1", "t2"] {
        store
            .put(
                &key(ns, "openai/gpt-4o", "d"),
                Bytes::from_static(b"aaaa"),
                TTL,
            )
            .await
            .unwrap();
    }
    for digest in ["x", "y"] {
        store
            .put(
                &key("shared", "claude", digest),
                Bytes::from_static(b"bb"),
                TTL,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 5,
            bytes: 16
        }
    );
    assert_eq!(store.clear(Some("openai/gpt-4o")).await.unwrap(), 3);
    for ns in ["shared", "t1", "t2"] {
        assert_eq!(
            store.get(&key(ns, "openai/gpt-4o", "d")).await.unwrap(),
            None
        );
    }
    for digest in ["x", "y"] {
        assert!(
            store
                .get(&key("shared", "claude", digest))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 2,
            bytes: 4
        }
    );
    // Clearing again, or an unknown model, removes nothing.
    assert_eq!(store.clear(Some("openai/gpt-4o")).await.unwrap(), 0);
    assert_eq!(store.clear(Some("nope")).await.unwrap(), 0);
}

#[tokio::test]
async fn clear_model_works_in_batches() {
    let Some((_server, store)) = setup("weir").await else {
        return;
    };
    let n = CLEAR_BATCH + 37;
    for i in 0..n {
        store
            .put(
                &key("shared", "big", &i.to_string()),
                Bytes::from_static(b"z"),
                TTL,
            )
            .await
            .unwrap();
    }
    store
        .put(&key("shared", "small", "1"), Bytes::from_static(b"z"), TTL)
        .await
        .unwrap();
    assert_eq!(store.clear(Some("big")).await.unwrap(), n as u64);
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 1,
            bytes: 1
        }
    );
}

#[tokio::test]
async fn clear_all_leaves_foreign_keys() {
    // Glob characters in the prefix are matched literally.
    let prefix = "we*ir[1]";
    let Some((server, store)) = setup(prefix).await else {
        return;
    };
    let mut conn = raw(&server).await;
    let foreign = [
        "foreign:key",
        "weXXir1:e:v1:shared:m:d", // what an unescaped `we*ir[1]:*` would match
        "we*ir[1]x:e:v1",          // the prefix without its separator
        "we*ir[1]",                // the bare prefix
    ];
    for k in foreign {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("keep me")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for i in 0..30 {
        let model = if i % 2 == 0 { "m1" } else { "m2" };
        store
            .put(
                &key("shared", model, &i.to_string()),
                Bytes::from_static(b"v"),
                TTL,
            )
            .await
            .unwrap();
    }
    assert_eq!(store.clear(None).await.unwrap(), 30);
    for i in 0..30 {
        let model = if i % 2 == 0 { "m1" } else { "m2" };
        assert_eq!(
            store
                .get(&key("shared", model, &i.to_string()))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
    // Nothing of ours is left, and everything foreign is.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut keys = keys;
    keys.sort();
    let mut want: Vec<String> = foreign.iter().map(|k| (*k).to_owned()).collect();
    want.sort();
    assert_eq!(keys, want);
    // The store still works after a clear.
    let k = key("shared", "m1", "again");
    store.put(&k, Bytes::from_static(b"v"), TTL).await.unwrap();
    assert!(store.get(&k).await.unwrap().is_some());
}

#[tokio::test]
async fn stats_count_entries_and_value_bytes() {
    let Some((server, store)) = setup("weir").await else {
        return;
    };
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
    let k = key("shared", "m", "1");
    store
        .put(&k, Bytes::from(vec![1u8; 100]), TTL)
        .await
        .unwrap();
    store
        .put(&key("shared", "n", "2"), Bytes::from(vec![1u8; 50]), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 2,
            bytes: 150
        }
    );
    // Replacing an entry changes its bytes, not the count.
    store
        .put(&k, Bytes::from(vec![1u8; 10]), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 2,
            bytes: 60
        }
    );
    // Every key the store wrote carries a TTL: nothing outlives the entries.
    let mut conn = raw(&server).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("weir:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 0, "{k} has no TTL ({pttl})");
    }
}

#[tokio::test]
async fn stats_prune_many_expired_entries() {
    let Some((_server, store)) = setup("weir").await else {
        return;
    };
    let n = PRUNE_BATCH * 2 + 5;
    for i in 0..n {
        store
            .put(
                &key("shared", "m", &i.to_string()),
                Bytes::from_static(b"abc"),
                Duration::from_millis(200),
            )
            .await
            .unwrap();
    }
    store
        .put(
            &key("shared", "m", "live"),
            Bytes::from_static(b"abcd"),
            TTL,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            entries: 1,
            bytes: 4
        }
    );
}

fn assert_quick_error<T: fmt::Debug>(what: &str, took: Duration, result: Result<T, CacheError>) {
    assert!(result.is_err(), "{what} should fail: {result:?}");
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
}

#[tokio::test]
async fn dead_redis_fails_fast() {
    let Some((server, store)) = setup("weir").await else {
        return;
    };
    let k = key("shared", "m", "d");
    store.put(&k, Bytes::from_static(b"v"), TTL).await.unwrap();
    drop(server);
    for round in 0..3 {
        let t = Instant::now();
        let r = store.get(&k).await;
        assert_quick_error(&format!("get #{round}"), t.elapsed(), r);
        let t = Instant::now();
        let r = store.put(&k, Bytes::from_static(b"v"), TTL).await;
        assert_quick_error("put", t.elapsed(), r);
        let t = Instant::now();
        let r = store.clear(Some("m")).await;
        assert_quick_error("clear(model)", t.elapsed(), r);
        let t = Instant::now();
        let r = store.clear(None).await;
        assert_quick_error("clear(all)", t.elapsed(), r);
        let t = Instant::now();
        let r = store.stats().await;
        assert_quick_error("stats", t.elapsed(), r);
        let t = Instant::now();
        let r = store.ping().await;
        assert_quick_error("ping", t.elapsed(), r);
    }
    let message = store.ping().await.unwrap_err().to_string();
    assert!(message.contains("cache store redis failed"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
}

#[tokio::test]
async fn stalled_redis_times_out_then_recovers() {
    let Some((server, store)) = setup("weir").await else {
        return;
    };
    let k = key("shared", "m", "d");
    store.put(&k, Bytes::from_static(b"v"), TTL).await.unwrap();
    // Freeze every client (ours included) for 1.5 s: Redis is up but does not answer.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let t = Instant::now();
    let err = store.get(&k).await.unwrap_err().to_string();
    let took = t.elapsed();
    assert!(err.contains("timed out"), "{err}");
    assert!(
        took >= store.op_timeout() && took < Duration::from_secs(1),
        "bounded by the op timeout: {took:?}"
    );
    let t = Instant::now();
    assert!(store.put(&k, Bytes::from_static(b"w"), TTL).await.is_err());
    assert!(t.elapsed() < Duration::from_secs(1));
    // Once the pause ends, the same store answers again. The timed-out put was already
    // on the wire, so Redis may still apply it: either value is a correct cache state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let value = store.get(&k).await.unwrap();
    assert!(
        value == Some(Bytes::from_static(b"v")) || value == Some(Bytes::from_static(b"w")),
        "{value:?}"
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn connect_failure_names_the_url_without_its_password() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}/0");
    let t = Instant::now();
    let err = RedisStore::connect(&url, "weir")
        .await
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("user:***@"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let err = RedisStore::connect("not a url :secret@", "weir")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("secret"), "{err}");
    assert!(err.contains("invalid Redis URL"), "{err}");
}

#[tokio::test]
async fn empty_prefix_is_refused() {
    let Some(server) = RedisServer::start().unwrap() else {
        return;
    };
    let err = RedisStore::connect(&server.url(), "").await.unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[test]
fn redact_url_masks_passwords() {
    assert_eq!(
        redact_url("redis://:pw@host:6379/0"),
        "redis://:***@host:6379/0"
    );
    assert_eq!(
        redact_url("redis://alice:pw@host/"),
        "redis://alice:***@host/"
    );
    assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    assert_eq!(
        redact_url("redis+unix:///run/redis.sock?db=2&pass=pw"),
        "redis+unix:///run/redis.sock?db=2&pass=***"
    );
    assert!(!redact_url("garbage:pw@host").contains("pw@"));
}

#[test]
fn glob_escape_and_ttl_rounding() {
    assert_eq!(escape_glob("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
    assert_eq!(escape_glob("weir"), "weir");
    assert_eq!(ttl_millis(Duration::ZERO), 1);
    assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
    assert_eq!(ttl_millis(Duration::from_secs(3)), 3000);
    assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS);
}
