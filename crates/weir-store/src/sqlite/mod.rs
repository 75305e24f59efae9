//! The embedded backend: one SQLite file in WAL mode, for a single gateway (or a few
//! processes on one host sharing the file).
//!
//! Two connections, each behind a `std::sync::Mutex` and used only on tokio's blocking pool:
//! a writer, whose write transactions start `IMMEDIATE` (so they take SQLite's write lock
//! first and wait up to the busy timeout for it, instead of failing halfway when another
//! process writes), and a read-only reader, so lookups by hash and revision polls never queue
//! behind a write's commit. WAL lets the reader see every committed write, from this handle or
//! any other on the same file.
//!
//! The file is created owner-only (0600 on Unix): it holds key hashes and the hashing secret.
//! `synchronous = NORMAL` is durable across process crashes in WAL mode; a power loss may drop
//! the last commits, which for keys means re-running the last admin change.

mod budgets;
mod keys;
mod ledger;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{StoreError, StoreResult, error_chain};
use crate::migrations;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Migration attempts: a second run after losing a race with another process opening the
/// same new file finds the schema migrated and does nothing.
const MIGRATION_ATTEMPTS: usize = 3;

/// A store in a SQLite file. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// Which connection a closure runs on.
#[derive(Clone, Copy)]
enum Role {
    Reader,
    Writer,
}

/// What closures on a connection fail with: SQLite's error (mapped to a
/// [`StoreError::Query`] naming the operation) or one of ours, as is.
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl SqliteStore {
    /// Open (creating the file and its directory if needed) and migrate to the latest schema.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let target = describe(&path);
        let inner = tokio::task::spawn_blocking(move || open_blocking(path))
            .await
            .map_err(|e| StoreError::Open {
                target,
                cause: error_chain(&e),
            })??;
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The latest migration version recorded in the file.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        self.read("reading the schema version", |c| {
            let sql = format!(
                "SELECT COALESCE(MAX(version), 0) FROM {}",
                migrations::HISTORY_TABLE
            );
            Ok(c.query_row(&sql, [], |r| r.get(0))?)
        })
        .await
    }

    /// The version [`SqliteStore::open`] migrates to.
    pub fn latest_schema_version() -> i64 {
        migrations::latest(&migrations::sqlite())
    }

    /// Run `f` on the read-only connection, on the blocking pool.
    pub(crate) async fn read<T, F>(&self, operation: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.run(Role::Reader, operation, f).await
    }

    /// Run `f` on the writing connection, on the blocking pool.
    pub(crate) async fn write<T, F>(&self, operation: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        self.run(Role::Writer, operation, f).await
    }

    async fn run<T, F>(&self, role: Role, operation: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Fail> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mutex = match role {
                Role::Reader => &inner.reader,
                Role::Writer => &inner.writer,
            };
            // A panic while holding the lock leaves the connection usable (an open transaction
            // rolls back on drop), so a poisoned lock is taken over rather than failing forever.
            let mut conn = mutex.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn).map_err(|fail| match fail {
                Fail::Sql(e) => StoreError::query(operation, &e),
                Fail::Store(e) => e,
            })
        })
        .await
        .map_err(|e| StoreError::query(operation, &e))?
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// `sqlite /path`.
pub(crate) fn describe(path: &Path) -> String {
    format!("sqlite {}", path.display())
}

fn open_blocking(path: PathBuf) -> StoreResult<Inner> {
    let target = describe(&path);
    let open_err = |cause: String| StoreError::Open {
        target: target.clone(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| open_err(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    create_private(&path).map_err(|e| open_err(format!("cannot create the file: {e}")))?;

    let mut writer = connect(&path).map_err(|e| open_err(error_chain(&e)))?;
    let mode: String = writer
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_err(error_chain(&e)))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(store = %target, mode, "SQLite WAL mode unavailable, using {mode}");
    }
    migrate(&mut writer, &target)?;

    let reader = connect(&path).map_err(|e| open_err(error_chain(&e)))?;
    reader
        .pragma_update(None, "query_only", true)
        .map_err(|e| open_err(error_chain(&e)))?;
    Ok(Inner {
        path,
        writer: Mutex::new(writer),
        reader: Mutex::new(reader),
    })
}

/// A connection with weir's settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, target: &str) -> StoreResult<()> {
    let runner = migrations::sqlite();
    let mut attempt = 1;
    loop {
        match runner.run(conn) {
            Ok(report) => {
                let applied = report.applied_migrations();
                if !applied.is_empty() {
                    tracing::info!(
                        store = %target,
                        migrations = applied.len(),
                        version = applied.iter().map(|m| m.version()).max().unwrap_or(0),
                        "store schema migrated"
                    );
                }
                return Ok(());
            }
            Err(e) if attempt < MIGRATION_ATTEMPTS => {
                tracing::debug!(store = %target, error = %e, attempt, "store migration failed, retrying");
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(StoreError::Migration {
                    target: target.to_string(),
                    cause: error_chain(&e),
                });
            }
        }
    }
}

/// Create the file readable by its owner only, unless it exists already.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
