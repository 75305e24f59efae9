//! The budget store every backend must have, run against both: SQLite in a fresh temporary
//! file, Postgres in a fresh database on one throwaway server per test binary. Opening a
//! second handle on the same location models a second gateway replica.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use weir_store::{BudgetStore, StoreError, StoreLocation};
use weir_test_support::postgres::PostgresServer;

/// A fresh store location, removed (SQLite) when dropped.
struct Fresh {
    location: StoreLocation,
    dir: Option<PathBuf>,
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sqlite(name: &str) -> Fresh {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "weir-store-budgets-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Fresh {
        location: StoreLocation::Sqlite(dir.join("weir.db")),
        dir: Some(dir),
    }
}

/// `None` (skip) when Postgres is not installed and not required.
fn postgres(name: &str) -> Option<Fresh> {
    let server = PostgresServer::shared().expect("start the shared postgres server")?;
    let url = server
        .create_unique_database(name)
        .expect("create a fresh database");
    Some(Fresh {
        location: StoreLocation::Postgres(url),
        dir: None,
    })
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = crate::sqlite(stringify!($name));
                    crate::$name(&fresh.location).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(fresh) = crate::postgres(stringify!($name)) else {
                        eprintln!("postgres not installed: skipping");
                        return;
                    };
                    crate::$name(&fresh.location).await;
                }
            )*
        }
    };
}

suite!(
    put_list_and_remove_survive_reopening,
    revision_moves_with_every_change_across_handles,
    invalid_budgets_are_refused,
);

async fn open(location: &StoreLocation) -> Arc<dyn BudgetStore> {
    weir_store::open_store(location)
        .await
        .expect("open the store")
        .budgets
}

async fn put_list_and_remove_survive_reopening(location: &StoreLocation) {
    let store = open(location).await;
    assert!(store.list_budgets().await.unwrap().is_empty());
    let spec =
        json!({"id": "team-a", "scope": {"team": "a"}, "limit_usd": "25", "period": "weekly"});
    let put = store.put_budget("team-a", &spec).await.unwrap();
    assert_eq!(put.spec.as_ref(), Some(&spec));
    store
        .put_budget("all", &json!({"id": "all", "scope": "global"}))
        .await
        .unwrap();
    store.remove_budget("all").await.unwrap();
    // Removing what was never stored is kept too: it hides a configured budget.
    store.remove_budget("from-config").await.unwrap();
    drop(store);

    let reopened = open(location).await;
    let listed = reopened.list_budgets().await.unwrap();
    let by_id = |id: &str| listed.iter().find(|b| b.id == id).cloned();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(by_id("team-a").unwrap().spec, Some(spec.clone()));
    assert_eq!(by_id("all").unwrap().spec, None);
    assert_eq!(by_id("from-config").unwrap().spec, None);
    assert!(by_id("team-a").unwrap().updated_at > 1_700_000_000);

    // Setting again after a removal brings it back, with the new spec.
    let again = json!({"id": "all", "scope": "global", "limit_usd": "9"});
    reopened.put_budget("all", &again).await.unwrap();
    let listed = reopened.list_budgets().await.unwrap();
    let all = listed.iter().find(|b| b.id == "all").unwrap();
    assert_eq!(all.spec, Some(again));
}

async fn revision_moves_with_every_change_across_handles(location: &StoreLocation) {
    let (one, two) = (open(location).await, open(location).await);
    let start = two.budget_revision().await.unwrap();
    one.put_budget("x", &json!({"id": "x"})).await.unwrap();
    let after_put = two.budget_revision().await.unwrap();
    assert!(after_put > start);
    one.remove_budget("x").await.unwrap();
    let after_remove = two.budget_revision().await.unwrap();
    assert!(after_remove > after_put);
    assert_eq!(two.list_budgets().await.unwrap()[0].spec, None);
    // The keys' revision is another counter.
    let keys = weir_store::open(location).await.unwrap();
    assert_eq!(keys.key_revision().await.unwrap(), 0);
}

async fn invalid_budgets_are_refused(location: &StoreLocation) {
    let store = open(location).await;
    let err = store.put_budget("", &json!({})).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
    assert!(err.to_string().contains("1 to 128"), "{err}");
    let long = "x".repeat(129);
    assert!(store.remove_budget(&long).await.is_err());
    let err = store.put_budget("a", &json!([1, 2])).await.unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
    assert!(store.list_budgets().await.unwrap().is_empty());
    assert_eq!(store.budget_revision().await.unwrap(), 0);
}
