//! The shared backend: a Postgres database that several gateway replicas use at once, through
//! a deadpool pool of tokio-postgres connections (statements prepared once per connection and
//! cached).
//!
//! Opening migrates under a session advisory lock, on a connection taken out of the pool and
//! closed afterwards (closing releases the lock whatever happened), so replicas starting
//! together migrate one after the other and the later ones find nothing to do.
//!
//! Connections are made without TLS: a URL with `sslmode=require` fails to connect. Run the
//! database on a private network or through a local TLS proxy.

mod budgets;
mod keys;
mod ledger;

use std::fmt::Write as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use crate::error::{StoreError, StoreResult, error_chain};
use crate::migrations;

/// Connections kept open per replica.
const POOL_SIZE: usize = 16;
/// Connecting (TCP and start-up) gives up after this long, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a query waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// The advisory lock key serialising migrations ("weirmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7765_6972_6d69_6772;

/// A store in a Postgres database. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// `host:port/db`, for messages.
    target: String,
}

impl PostgresStore {
    /// Connect to `url` (a `postgres://` URL or a `key=value` string) and migrate to the
    /// latest schema.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Open {
            target: "postgres (URL not understood)".into(),
            cause: error_chain(&e),
        })?;
        let target = describe_config(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("weir");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Open {
                target: describe_target(&target),
                cause: error_chain(&e),
            })?;
        let store = PostgresStore { pool, target };
        store.migrate().await?;
        Ok(store)
    }

    /// The latest migration version recorded in the database.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let op = "reading the schema version";
        let client = self.client(op).await?;
        let sql = format!(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM {}",
            migrations::HISTORY_TABLE
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .map_err(|e| StoreError::query(op, &e))?;
        row.try_get(0).map_err(|e| StoreError::query(op, &e))
    }

    /// The version [`PostgresStore::connect`] migrates to.
    pub fn latest_schema_version() -> i64 {
        migrations::latest(&migrations::postgres())
    }

    /// A pooled connection.
    pub(crate) async fn client(&self, operation: &'static str) -> StoreResult<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::query(operation, &e))
    }

    async fn migrate(&self) -> StoreResult<()> {
        let target = describe_target(&self.target);
        let pooled = self.pool.get().await.map_err(|e| StoreError::Open {
            target: target.clone(),
            cause: error_chain(&e),
        })?;
        // Out of the pool: dropped (closed) at the end, which also releases the lock.
        let mut client = Object::take(pooled);
        let failed = |e: &(dyn std::error::Error + 'static)| StoreError::Migration {
            target: target.clone(),
            cause: error_chain(e),
        };
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| failed(&e))?;
        let report = migrations::postgres()
            .run_async(&mut *client)
            .await
            .map_err(|e| failed(&e))?;
        let applied = report.applied_migrations();
        if !applied.is_empty() {
            tracing::info!(
                store = %target,
                migrations = applied.len(),
                version = applied.iter().map(|m| m.version()).max().unwrap_or(0),
                "store schema migrated"
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// `postgres host:port/db`.
fn describe_target(target: &str) -> String {
    format!("postgres {target}")
}

/// `postgres host:port/db` for a URL, or a placeholder when it cannot be parsed.
pub(crate) fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => describe_target(&describe_config(&config)),
        Err(_) => "postgres (URL not understood)".into(),
    }
}

/// The URL without its password (nor any option but host, port, user and database).
pub(crate) fn redact_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let user = config
                .get_user()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            format!("postgres://{user}{}", describe_config(&config))
        }
        Err(_) => "postgres://(URL not understood)".into(),
    }
}

/// `host:port/db` (hosts comma-separated; default port 5432; database defaults to the user).
fn describe_config(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let mut text = String::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let _ = match host {
            Host::Tcp(name) if name.contains(':') => write!(text, "[{name}]:{port}"),
            Host::Tcp(name) => write!(text, "{name}:{port}"),
            Host::Unix(dir) => write!(text, "{}:{port}", dir.display()),
        };
    }
    if text.is_empty() {
        text.push_str("localhost");
    }
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    text.push('/');
    text.push_str(db);
    text
}
