//! weir's durable store for gateway state: an embedded SQLite file for one gateway, or a shared
//! Postgres database for several replicas, behind one small trait per record kind.
//!
//! - [`KeyStore`] ([`keys`]): gateway keys (virtual API keys): create, look up by hash,
//!   update, revoke, rotate, record use, and a revision replicas poll to keep caches fresh;
//! - [`KeyHasher`], [`generate_key`], [`generate_key_id`] ([`secret`]): new keys from the OS
//!   random number generator and the keyed hash that is all the store keeps of them;
//! - [`SqliteStore`] ([`sqlite`]) and [`PostgresStore`] ([`postgres`]): the two backends, each
//!   migrated to the latest schema when opened ([`migrations`]);
//! - [`LedgerStore`] ([`ledger`]): the usage ledger, one record per LLM call, fed through a
//!   local [`Spool`] by a [`LedgerWriter`] so the request path never waits for a database;
//! - [`BudgetStore`] ([`budgets`]): spend budgets set or removed at run time, with a revision
//!   replicas poll;
//! - [`open`]: the key store, from a [`StoreLocation`]; [`open_store`]: every store on one
//!   backend ([`Store`]).
//!
//! Sessions and jobs will join as sibling modules with their own traits, tables (the next
//! migration versions) and implementations in `sqlite/` and `postgres/`.
//!
//! ```
//! use secrecy::ExposeSecret;
//! use weir_store::{KeyHasher, NewKey, StoreLocation, generate_key, generate_key_id};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("weir-store-doc-{}", std::process::id()));
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let store = weir_store::open(&StoreLocation::Sqlite(dir.join("weir.db"))).await?;
//! let hasher = KeyHasher::new(&store.hashing_secret().await?);
//!
//! // Mint a key: show the secret once, store only its hash and hint.
//! let (secret, hint) = generate_key()?;
//! let new = NewKey::new(generate_key_id()?, hasher.hash(secret.expose_secret()), hint, "ci");
//! let created = store.create_key(&new).await?;
//!
//! // Authenticate a request: one hash, one indexed lookup.
//! let found = store.key_by_hash(&hasher.hash(secret.expose_secret())).await?;
//! assert_eq!(found.as_ref().map(|k| &k.id), Some(&created.id));
//! # Ok::<(), weir_store::StoreError>(()) })?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub mod budgets;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod migrations;
pub mod postgres;
pub mod secret;
pub mod sqlite;

pub use budgets::{BudgetStore, StoredBudget};
pub use error::{StoreError, StoreResult};
pub use keys::{KeyHash, KeyLimits, KeyLimitsUpdate, KeyRecord, KeyStore, KeyUpdate, NewKey};
pub use ledger::{
    Decimal, Dimension, LedgerHealth, LedgerRecord, LedgerStore, LedgerWriter, Savings, Spend,
    SpendFilter, Spool, SpoolError, SpoolOptions, SpoolRange, UsageQuery, UsageRow,
};
pub use postgres::PostgresStore;
pub use secret::{KEY_PREFIX, KeyHasher, generate_key, generate_key_id, key_hint};
pub use sqlite::SqliteStore;

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (created, with its directory, if missing).
    Sqlite(PathBuf),
    /// A Postgres URL (`postgres://user:password@host:port/db`) or `key=value` connection
    /// string. Connections are made without TLS.
    Postgres(String),
}

impl StoreLocation {
    /// `postgres://…` and `postgresql://…` name Postgres; `sqlite://PATH`, `sqlite:PATH` and
    /// anything else name a SQLite file.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return StoreLocation::Postgres(text.to_string());
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        StoreLocation::Sqlite(PathBuf::from(path))
    }

    /// `sqlite /path` or `postgres host:port/db`: never the password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => sqlite::describe(path),
            StoreLocation::Postgres(url) => postgres::describe_url(url),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreLocation::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&postgres::redact_url(url))
                .finish(),
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Open the key store at `location` (creating a SQLite file if needed) and migrate it to the
/// latest schema. [`open_store`] gives every store on the same backend.
pub async fn open(location: &StoreLocation) -> StoreResult<Arc<dyn KeyStore>> {
    Ok(open_store(location).await?.keys)
}

/// Every store weir keeps, on one backend (one SQLite file, or one Postgres pool shared by
/// all of them).
#[derive(Debug, Clone)]
pub struct Store {
    /// Gateway keys.
    pub keys: Arc<dyn KeyStore>,
    /// The usage ledger.
    pub ledger: Arc<dyn LedgerStore>,
    /// Budgets set at run time.
    pub budgets: Arc<dyn BudgetStore>,
}

/// Open the store at `location` (creating a SQLite file if needed), migrate it to the latest
/// schema, and hand out each record kind's trait object over the one connection set.
pub async fn open_store(location: &StoreLocation) -> StoreResult<Store> {
    Ok(match location {
        StoreLocation::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(path).await?);
            Store {
                keys: store.clone(),
                ledger: store.clone(),
                budgets: store,
            }
        }
        StoreLocation::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect(url).await?);
            Store {
                keys: store.clone(),
                ledger: store.clone(),
                budgets: store,
            }
        }
    })
}

/// Now, in unix seconds.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_scheme() {
        assert_eq!(
            StoreLocation::parse("postgres://weir@db:5432/weir"),
            StoreLocation::Postgres("postgres://weir@db:5432/weir".into())
        );
        assert!(matches!(
            StoreLocation::parse("postgresql://db/weir"),
            StoreLocation::Postgres(_)
        ));
        for text in [
            "sqlite:///var/lib/weir.db",
            "sqlite:/var/lib/weir.db",
            "/var/lib/weir.db",
        ] {
            assert_eq!(
                StoreLocation::parse(text),
                StoreLocation::Sqlite("/var/lib/weir.db".into()),
                "{text}"
            );
        }
    }

    #[test]
    fn locations_never_show_the_password() {
        let loc = StoreLocation::parse("postgres://weir:s3cr3t-pw@db.internal:6432/gateway");
        let shown = format!("{loc:?} {loc} {}", loc.describe());
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert_eq!(loc.describe(), "postgres db.internal:6432/gateway");
        assert!(
            shown.contains("postgres://weir@db.internal:6432/gateway"),
            "{shown}"
        );
        let kv = StoreLocation::Postgres("host=db password=s3cr3t-pw dbname=g".into());
        assert!(!format!("{kv:?} {kv}").contains("s3cr3t-pw"));
        let bad = StoreLocation::Postgres("postgres://weir:s3cr3t-pw@db:notaport/g".into());
        assert!(!format!("{bad:?} {bad}").contains("s3cr3t-pw"));
        assert_eq!(
            StoreLocation::Sqlite("/tmp/w.db".into()).to_string(),
            "sqlite /tmp/w.db"
        );
    }
}
