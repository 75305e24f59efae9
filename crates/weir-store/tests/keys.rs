//! The gateway-key behaviour every backend must have, run against both: SQLite in a fresh
//! temporary file, Postgres in a fresh database on one throwaway server per test binary.
//!
//! Each scenario is an `async fn(&StoreLocation)`; the `suite!` macro makes a `sqlite::NAME`
//! and a `postgres::NAME` test of it. Opening a second handle on the same location models a
//! second gateway replica sharing the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use weir_store::{
    KeyHash, KeyLimits, KeyLimitsUpdate, KeyRecord, KeyStore, KeyUpdate, NewKey, PostgresStore,
    SqliteStore, StoreError, StoreLocation, generate_key_id,
};
use weir_test_support::postgres::PostgresServer;

mod common {
    use super::*;

    /// A fresh store location, removed (SQLite) when dropped.
    pub struct Fresh {
        pub location: StoreLocation,
        dir: Option<PathBuf>,
    }

    impl Drop for Fresh {
        fn drop(&mut self) {
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    pub fn sqlite(name: &str) -> Fresh {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-store-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Fresh {
            location: StoreLocation::Sqlite(dir.join("nested").join("weir.db")),
            dir: Some(dir),
        }
    }

    /// `None` (skip) when Postgres is not installed and not required.
    pub fn postgres(name: &str) -> Option<Fresh> {
        let server = PostgresServer::shared().expect("start the shared postgres server")?;
        let url = server
            .create_unique_database(name)
            .expect("create a fresh database");
        Some(Fresh {
            location: StoreLocation::Postgres(url),
            dir: None,
        })
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let fresh = crate::common::sqlite(stringify!($name));
                    crate::$name(&fresh.location).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(fresh) = crate::common::postgres(stringify!($name)) else {
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
    create_then_read_back,
    list_orders_by_created_at_then_id,
    update_changes_only_named_fields,
    update_from_json_null_clears,
    revoke_is_idempotent_and_frees_the_name,
    rotate_replaces_the_hash,
    touch_keeps_latest_use_without_revision,
    revision_tracks_changes_across_handles,
    hashing_secret_is_shared_and_stable,
    concurrent_first_secrets_agree,
    conflicts_and_invalid_data,
    migrations_run_once,
    concurrent_opens_migrate_once,
    divergent_schema_is_refused,
);

async fn open(location: &StoreLocation) -> Arc<dyn KeyStore> {
    weir_store::open(location).await.expect("open the store")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hash(n: u8) -> KeyHash {
    KeyHash([n; 32])
}

/// A key with every optional field set.
fn full_key(name: &str, hash: KeyHash) -> NewKey {
    let mut key = NewKey::new(generate_key_id().unwrap(), hash, "wk-Ab3x…9fQz", name);
    key.user = Some("alice".into());
    key.team = Some("platform".into());
    key.project = Some("search".into());
    key.models = vec!["gpt-4o*".into(), "claude-*".into()];
    key.limits = KeyLimits {
        rpm: Some(600),
        tpm: Some(1_000_000),
    };
    key.allow_user_override = true;
    key.expires_at = Some(4_000_000_000);
    key.metadata = json!({"owner": "ops", "ticket": 42})
        .as_object()
        .cloned()
        .unwrap_or_default();
    key
}

async fn create_then_read_back(location: &StoreLocation) {
    let store = open(location).await;
    let before = now();
    let new = full_key("ci", hash(1));
    let created = store.create_key(&new).await.expect("create");
    assert_eq!(created.id, new.id);
    assert_eq!(created.name, "ci");
    assert_eq!(created.hint, "wk-Ab3x…9fQz");
    assert_eq!(created.user.as_deref(), Some("alice"));
    assert_eq!(created.team.as_deref(), Some("platform"));
    assert_eq!(created.project.as_deref(), Some("search"));
    assert_eq!(created.models, new.models);
    assert_eq!(created.limits, new.limits);
    assert!(created.allow_user_override && created.enabled);
    assert_eq!(created.expires_at, Some(4_000_000_000));
    assert_eq!(created.revoked_at, None);
    assert_eq!(created.metadata, new.metadata);
    assert!(created.created_at >= before && created.created_at <= now());
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(created.last_used_at, None);

    let by_id = store.key(&new.id).await.expect("get");
    assert_eq!(by_id.as_ref(), Some(&created), "stored as returned");
    let by_hash = store.key_by_hash(&hash(1)).await.expect("get by hash");
    assert_eq!(by_hash.as_ref(), Some(&created));
    assert_eq!(store.list_keys().await.expect("list"), vec![created]);

    let minimal = NewKey::new(
        generate_key_id().unwrap(),
        hash(2),
        "wk-min…imal",
        "minimal",
    );
    let bare = store.create_key(&minimal).await.expect("create minimal");
    assert!(bare.models.is_empty() && bare.metadata.is_empty());
    assert_eq!(bare.limits, KeyLimits::default());
    assert_eq!((bare.user, bare.expires_at), (None, None));

    assert_eq!(store.key("key_missing").await.expect("get"), None);
    assert_eq!(store.key_by_hash(&hash(99)).await.expect("get"), None);
    let described = store.describe();
    assert!(
        described.starts_with("sqlite ") || described.starts_with("postgres "),
        "{described}"
    );
    assert_eq!(described, location.describe());
}

async fn list_orders_by_created_at_then_id(location: &StoreLocation) {
    let store = open(location).await;
    for (i, id) in ["key_c", "key_a", "key_b"].into_iter().enumerate() {
        let key = NewKey::new(id, hash(10 + i as u8), "wk-x…y", format!("k{i}"));
        store.create_key(&key).await.expect("create");
    }
    let listed = store.list_keys().await.expect("list");
    let order: Vec<(i64, &str)> = listed
        .iter()
        .map(|k| (k.created_at, k.id.as_str()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(listed.len(), 3);
}

async fn update_changes_only_named_fields(location: &StoreLocation) {
    let store = open(location).await;
    let created = store
        .create_key(&full_key("before", hash(1)))
        .await
        .expect("create");
    let update = KeyUpdate {
        name: Some("after".into()),
        user: Some(None),
        project: Some(Some("ranking".into())),
        models: Some(vec!["o3".into()]),
        limits: Some(KeyLimitsUpdate {
            rpm: Some(None),
            tpm: Some(Some(5)),
        }),
        enabled: Some(false),
        expires_at: Some(None),
        metadata: Some(serde_json::Map::new()),
        ..KeyUpdate::default()
    };
    let updated = store
        .update_key(&created.id, &update)
        .await
        .expect("update")
        .expect("exists");
    let mut expected = created.clone();
    update.apply(&mut expected);
    expected.updated_at = updated.updated_at;
    assert_eq!(updated, expected);
    assert_eq!(updated.name, "after");
    assert_eq!(updated.user, None);
    assert_eq!(updated.team.as_deref(), Some("platform"), "unchanged");
    assert_eq!(
        updated.limits,
        KeyLimits {
            rpm: None,
            tpm: Some(5)
        }
    );
    assert!(!updated.enabled && updated.allow_user_override);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(updated.created_at, created.created_at);
    assert_eq!(store.key(&created.id).await.expect("get"), Some(updated));

    let none = store
        .update_key("key_missing", &update)
        .await
        .expect("update");
    assert_eq!(none, None);
}

async fn update_from_json_null_clears(location: &StoreLocation) {
    let store = open(location).await;
    let created = store
        .create_key(&full_key("json", hash(1)))
        .await
        .expect("create");
    let update: KeyUpdate = serde_json::from_value(json!({
        "team": null,
        "project": null,
        "limits": {"tpm": null},
        "expires_at": null,
        "allow_user_override": false
    }))
    .expect("parse");
    let updated = store
        .update_key(&created.id, &update)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((updated.team, updated.project), (None, None));
    assert_eq!(
        updated.user.as_deref(),
        Some("alice"),
        "absent is unchanged"
    );
    assert_eq!(
        updated.limits,
        KeyLimits {
            rpm: Some(600),
            tpm: None
        }
    );
    assert_eq!(updated.expires_at, None);
    assert!(!updated.allow_user_override);
    assert_eq!(updated.name, "json");
}

async fn revoke_is_idempotent_and_frees_the_name(location: &StoreLocation) {
    let store = open(location).await;
    let created = store
        .create_key(&full_key("shared-name", hash(1)))
        .await
        .expect("create");
    let revoked = store
        .revoke_key(&created.id)
        .await
        .expect("revoke")
        .expect("exists");
    let at = revoked.revoked_at.expect("revoked_at set");
    assert!(at >= created.created_at);
    assert!(!revoked.enabled);
    assert!(revoked.is_revoked() && !revoked.is_usable(now()));
    let revision = store.key_revision().await.expect("revision");

    let again = store
        .revoke_key(&created.id)
        .await
        .expect("revoke again")
        .expect("exists");
    assert_eq!(
        again, revoked,
        "idempotent: same record, first revoked_at kept"
    );
    assert_eq!(
        store.key_revision().await.expect("revision"),
        revision,
        "nothing changed"
    );
    assert_eq!(
        store.list_keys().await.expect("list"),
        vec![revoked.clone()]
    );
    let found = store.key_by_hash(&hash(1)).await.expect("by hash");
    assert_eq!(found, Some(revoked), "still found, and marked revoked");

    let err = store
        .update_key(&created.id, &KeyUpdate::default())
        .await
        .expect_err("revoked keys do not change");
    assert!(err.is_conflict(), "{err}");
    let err = store
        .rotate_key(&created.id, &hash(2), "wk-new…hint")
        .await
        .expect_err("revoked keys do not rotate");
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("create a new key"), "{err}");

    store
        .create_key(&full_key("shared-name", hash(3)))
        .await
        .expect("a revoked key's name is free again");
    assert_eq!(store.revoke_key("key_missing").await.expect("revoke"), None);
}

async fn rotate_replaces_the_hash(location: &StoreLocation) {
    let store = open(location).await;
    let created = store
        .create_key(&full_key("rotating", hash(1)))
        .await
        .expect("create");
    let other = store
        .create_key(&full_key("other", hash(9)))
        .await
        .expect("create");
    let rotated = store
        .rotate_key(&created.id, &hash(2), "wk-Zz99…0000")
        .await
        .expect("rotate")
        .expect("exists");
    assert_eq!(rotated.hint, "wk-Zz99…0000");
    assert_eq!(rotated.id, created.id);
    assert!(rotated.updated_at >= created.updated_at);
    assert_eq!(store.key_by_hash(&hash(1)).await.expect("old"), None);
    assert_eq!(
        store.key_by_hash(&hash(2)).await.expect("new"),
        Some(rotated.clone())
    );

    let err = store
        .rotate_key(&created.id, &hash(9), "wk-dup…hash")
        .await
        .expect_err("hash in use");
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        store.key_by_hash(&hash(9)).await.expect("other"),
        Some(other),
        "the other key keeps its hash"
    );
    assert_eq!(
        store.key_by_hash(&hash(2)).await.expect("new"),
        Some(rotated)
    );
    let missing = store.rotate_key("key_missing", &hash(3), "wk-a…b").await;
    assert_eq!(missing.expect("rotate"), None);
}

async fn touch_keeps_latest_use_without_revision(location: &StoreLocation) {
    let store = open(location).await;
    let a = store
        .create_key(&full_key("a", hash(1)))
        .await
        .expect("create");
    let b = store
        .create_key(&full_key("b", hash(2)))
        .await
        .expect("create");
    let revision = store.key_revision().await.expect("revision");

    store.touch_keys(&[]).await.expect("empty batch");
    store
        .touch_keys(&[
            (a.id.clone(), 1_000),
            (a.id.clone(), 500),
            (b.id.clone(), 700),
            ("key_missing".into(), 10),
        ])
        .await
        .expect("touch");
    let got = |r: Option<KeyRecord>| r.expect("exists");
    let a1 = got(store.key(&a.id).await.expect("get"));
    assert_eq!(a1.last_used_at, Some(1_000), "latest of the batch");
    assert_eq!(a1.updated_at, a.updated_at, "use is not an update");
    assert_eq!(
        got(store.key(&b.id).await.expect("get")).last_used_at,
        Some(700)
    );

    store
        .touch_keys(&[(a.id.clone(), 800)])
        .await
        .expect("touch");
    assert_eq!(
        got(store.key(&a.id).await.expect("get")).last_used_at,
        Some(1_000),
        "never moves back"
    );
    store
        .touch_keys(&[(a.id.clone(), 2_000)])
        .await
        .expect("touch");
    assert_eq!(
        got(store.key(&a.id).await.expect("get")).last_used_at,
        Some(2_000)
    );
    assert_eq!(
        store.key_revision().await.expect("revision"),
        revision,
        "touching does not bump the revision"
    );
}

async fn revision_tracks_changes_across_handles(location: &StoreLocation) {
    let writer = open(location).await;
    let replica = open(location).await;
    let mut last = replica.key_revision().await.expect("revision");
    let mut changed = async |what: &str| {
        let now = replica.key_revision().await.expect("revision");
        assert!(now > last, "{what} bumps the revision ({last} -> {now})");
        last = now;
    };

    let created = writer
        .create_key(&full_key("r", hash(1)))
        .await
        .expect("create");
    changed("create").await;
    assert_eq!(
        replica
            .key_by_hash(&hash(1))
            .await
            .expect("replica sees it"),
        Some(created.clone())
    );

    let rename = KeyUpdate {
        name: Some("r2".into()),
        ..KeyUpdate::default()
    };
    writer
        .update_key(&created.id, &rename)
        .await
        .expect("update")
        .expect("exists");
    changed("update").await;
    let seen = replica
        .key(&created.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(seen.name, "r2");

    writer
        .rotate_key(&created.id, &hash(2), "wk-rot…ated")
        .await
        .expect("rotate")
        .expect("exists");
    changed("rotate").await;
    assert_eq!(replica.key_by_hash(&hash(1)).await.expect("old"), None);

    writer
        .revoke_key(&created.id)
        .await
        .expect("revoke")
        .expect("exists");
    changed("revoke").await;
    let seen = replica
        .key(&created.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(seen.is_revoked());

    replica
        .create_key(&full_key("from-replica", hash(3)))
        .await
        .expect("create");
    let seen_by_writer = writer.key_revision().await.expect("revision");
    assert_eq!(
        seen_by_writer,
        replica.key_revision().await.expect("revision")
    );
    assert!(
        seen_by_writer > last,
        "either handle's change is seen by both"
    );
}

async fn hashing_secret_is_shared_and_stable(location: &StoreLocation) {
    let a = open(location).await;
    let b = open(location).await;
    let secret = a.hashing_secret().await.expect("secret");
    assert_eq!(secret.len(), 32);
    assert_ne!(secret, vec![0u8; 32]);
    assert_eq!(a.hashing_secret().await.expect("again"), secret, "stable");
    assert_eq!(b.hashing_secret().await.expect("replica"), secret, "shared");
    drop((a, b));
    let reopened = open(location).await;
    assert_eq!(
        reopened.hashing_secret().await.expect("after reopen"),
        secret
    );
}

async fn concurrent_first_secrets_agree(location: &StoreLocation) {
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(open(location).await);
    }
    let secrets = futures::future::join_all(handles.iter().map(|h| h.hashing_secret())).await;
    let secrets: Vec<Vec<u8>> = secrets.into_iter().map(|s| s.expect("secret")).collect();
    assert!(secrets.iter().all(|s| *s == secrets[0]), "all agree");

    // And several replicas' tasks racing on one fresh database each time: spawn them.
    let tasks: Vec<_> = handles
        .iter()
        .cloned()
        .map(|h| tokio::spawn(async move { h.hashing_secret().await }))
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("join").expect("secret"), secrets[0]);
    }
}

async fn conflicts_and_invalid_data(location: &StoreLocation) {
    let store = open(location).await;
    let first = store
        .create_key(&full_key("taken", hash(1)))
        .await
        .expect("create");
    let revision = store.key_revision().await.expect("revision");

    let mut same_id = full_key("fresh-name", hash(2));
    same_id.id = first.id.clone();
    let err = store.create_key(&same_id).await.expect_err("duplicate id");
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains(&first.id), "{err}");

    let err = store
        .create_key(&full_key("taken", hash(3)))
        .await
        .expect_err("duplicate live name");
    assert!(err.is_conflict(), "{err}");
    assert!(err.to_string().contains("\"taken\""), "{err}");

    let err = store
        .create_key(&full_key("another", hash(1)))
        .await
        .expect_err("duplicate hash");
    assert!(err.is_conflict(), "{err}");

    let second = store
        .create_key(&full_key("second", hash(4)))
        .await
        .expect("create");
    let rename = KeyUpdate {
        name: Some("taken".into()),
        ..KeyUpdate::default()
    };
    let err = store
        .update_key(&second.id, &rename)
        .await
        .expect_err("rename onto a taken name");
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        store.key(&second.id).await.expect("get"),
        Some(second),
        "a failed update changes nothing"
    );

    let blank = NewKey::new(generate_key_id().unwrap(), hash(5), "wk-a…b", "  ");
    let err = store.create_key(&blank).await.expect_err("blank name");
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
    let mut huge = full_key("huge", hash(6));
    huge.limits.tpm = Some(u64::MAX);
    let err = store.create_key(&huge).await.expect_err("limit too big");
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");
    let err = store
        .rotate_key(&first.id, &hash(7), "")
        .await
        .expect_err("hint needed");
    assert!(matches!(err, StoreError::InvalidData(_)), "{err}");

    assert_eq!(
        store.key_revision().await.expect("revision"),
        revision + 1,
        "only the successful create of `second` bumped the revision"
    );
}

/// The schema version recorded in the store at `location`, through its concrete type.
async fn schema_version(location: &StoreLocation) -> (i64, i64) {
    match location {
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(path).await.expect("open");
            (
                store.schema_version().await.expect("version"),
                SqliteStore::latest_schema_version(),
            )
        }
        StoreLocation::Postgres(url) => {
            let store = PostgresStore::connect(url).await.expect("connect");
            (
                store.schema_version().await.expect("version"),
                PostgresStore::latest_schema_version(),
            )
        }
    }
}

async fn migrations_run_once(location: &StoreLocation) {
    let (version, latest) = schema_version(location).await;
    assert!(latest >= 1);
    assert_eq!(
        version, latest,
        "a fresh store is migrated to the latest version"
    );

    let store = open(location).await;
    let key = store
        .create_key(&full_key("survives", hash(1)))
        .await
        .expect("create");
    let revision = store.key_revision().await.expect("revision");
    drop(store);

    let (version, _) = schema_version(location).await;
    assert_eq!(version, latest, "opening again is a no-op");
    let reopened = open(location).await;
    assert_eq!(reopened.key(&key.id).await.expect("get"), Some(key));
    assert_eq!(reopened.key_revision().await.expect("revision"), revision);
}

async fn concurrent_opens_migrate_once(location: &StoreLocation) {
    let opens = futures::future::join_all((0..4).map(|_| weir_store::open(location))).await;
    for store in opens {
        let store = store.expect("every concurrent open succeeds");
        assert_eq!(store.key_revision().await.expect("revision"), 0);
    }
    let (version, latest) = schema_version(location).await;
    assert_eq!(version, latest);
}

async fn divergent_schema_is_refused(location: &StoreLocation) {
    drop(open(location).await);
    // Someone edited an applied migration: its recorded checksum no longer matches.
    let tamper = "UPDATE weir_schema_history SET checksum = '1' WHERE version = 1";
    match location {
        StoreLocation::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).expect("open directly");
            conn.execute(tamper, []).expect("tamper");
        }
        StoreLocation::Postgres(url) => {
            let server = PostgresServer::shared()
                .expect("shared server")
                .expect("running");
            let db = url.rsplit('/').next().expect("database name");
            server.execute(db, tamper).expect("tamper");
        }
    }
    let err = weir_store::open(location)
        .await
        .expect_err("a changed migration is refused");
    assert!(matches!(err, StoreError::Migration { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&location.describe()), "{text}");
    assert!(text.contains("restore a backup"), "{text}");
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let fresh = common::sqlite("private");
    let StoreLocation::Sqlite(path) = &fresh.location else {
        unreachable!()
    };
    drop(open(&fresh.location).await);
    let mode = std::fs::metadata(path).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

#[tokio::test]
async fn sqlite_open_error_names_the_path() {
    let err = SqliteStore::open("/dev/null/not-a-dir/weir.db")
        .await
        .expect_err("cannot create a directory under a file");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("sqlite /dev/null/not-a-dir/weir.db"),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_connect_error_hides_the_password() {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let url = "postgres://weir:pw-s3cret@127.0.0.1:1/gateway";
    let err = PostgresStore::connect(url).await.expect_err("refused");
    let text = format!("{err} {err:?}");
    assert!(matches!(err, StoreError::Open { .. }), "{text}");
    assert!(text.contains("postgres 127.0.0.1:1/gateway"), "{text}");
    assert!(!text.contains("pw-s3cret"), "{text}");

    let err = PostgresStore::connect("postgres://weir:pw-s3cret@127.0.0.1:notaport/g")
        .await
        .expect_err("bad URL");
    assert!(!format!("{err} {err:?}").contains("pw-s3cret"), "{err}");
}
