//! Response caching: keys, tiers (memory, SQLite, Redis), single-flight, semantic lookup.
//!
//! The SQLite and Redis tiers are compiled in with the `sqlite` and `redis` features (both on
//! by default). A configuration that names a tier left out fails when the client is built,
//! saying which feature to turn on.

pub mod flight;
pub mod key;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod replay;
pub mod semantic;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod store;
pub mod tiered;

/// The Redis tier when the `redis` feature is off: its store type still exists, so code that
/// passes an optional connected tier around compiles, but no value of it can be made.
#[cfg(not(feature = "redis"))]
pub mod redis {
    /// A connected Redis tier; uninhabited without the `redis` feature.
    #[derive(Debug)]
    pub enum RedisStore {}
}

/// Why a configured tier cannot be opened: `feature` was left out of this build.
#[cfg(any(not(feature = "redis"), not(feature = "sqlite")))]
pub(crate) fn feature_missing(feature: &str) -> String {
    format!(
        "weir was built without the `{feature}` feature; rebuild it with `--features {feature}` \
         (on by default) to use this cache tier"
    )
}

#[cfg(all(test, any(not(feature = "redis"), not(feature = "sqlite"))))]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use crate::{Client, Config};

    fn config(cache_yaml: &str) -> Config {
        Config::from_yaml(&format!("cache:\n{cache_yaml}"), &|_: &str| None).unwrap()
    }

    fn assert_names_the_feature(err: &crate::Error, path: &str, feature: &str) {
        let crate::Error::Config(e) = err else {
            panic!("not a configuration error: {err}");
        };
        assert_eq!(e.problems.len(), 1, "{err}");
        assert_eq!(e.problems[0].path, path);
        let wanted = format!("built without the `{feature}` feature");
        assert!(e.problems[0].reason.contains(&wanted), "{err}");
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn an_sqlite_tier_needs_the_sqlite_feature() {
        let err = Client::new(config("  sqlite: { path: /nonexistent/cache.sqlite3 }\n"))
            .map(|_| ())
            .unwrap_err();
        assert_names_the_feature(&err, "cache.sqlite", "sqlite");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn a_redis_tier_needs_the_redis_feature() {
        let err = Client::builder(config("  redis: { url: \"redis://127.0.0.1:1\" }\n"))
            .build_async()
            .await
            .map(|_| ())
            .unwrap_err();
        assert_names_the_feature(&err, "cache.redis", "redis");
    }
}
