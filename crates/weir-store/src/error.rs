//! The store's one error type.
//!
//! Variants are kinds of failure, not call sites. Each message says what went wrong and what to
//! do about it, and carries the cause as text (flattened, so `Display` alone is the whole story
//! in a log line). Nothing here ever holds a secret: targets are described as `sqlite /path` or
//! `postgres host:port/db`, never with a password, and key hashes are not printed at all.

use std::error::Error as StdError;

/// What every store operation returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or reached.
    #[error("cannot open the store {target}: {cause}; {}", open_hint(.target))]
    Open {
        /// `sqlite /path` or `postgres host:port/db` (never the password).
        target: String,
        cause: String,
    },
    /// The schema migrations could not be applied or verified.
    #[error(
        "cannot migrate the store {target} to weir's schema: {cause}; if the database was \
         changed by hand or by a newer weir, restore a backup or run the matching weir version"
    )]
    Migration { target: String, cause: String },
    /// A query failed (the connection broke, the disk is full, the database is locked...).
    #[error(
        "store query failed while {operation}: {cause}; retry, and if it keeps failing check the \
         database's health and logs"
    )]
    Query {
        /// What weir was doing: `creating a key`, `polling the key revision`...
        operation: &'static str,
        cause: String,
    },
    /// The change clashes with what is stored (a duplicate id or name, a revoked key...). The
    /// message names the clash and what to do instead.
    #[error("{0}")]
    Conflict(String),
    /// A value cannot be stored, or a stored value cannot be read back as weir's type.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The usage spool directory cannot be used (created, locked, read or written), or its
    /// writer cannot run. The cause says what to do.
    #[error("cannot use the usage spool directory {dir}: {cause}")]
    Spool { dir: String, cause: String },
    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed: {0}; weir cannot create keys or \
         secrets without it: check the host"
    )]
    Random(String),
}

/// What to check when a store cannot be opened, by backend.
fn open_hint(target: &str) -> &'static str {
    if target.starts_with("sqlite") {
        "check that weir may create and write that file and its directory"
    } else {
        "check that the server is running and reachable, and that the URL's user, password and \
         database are right"
    }
}

impl StoreError {
    /// A [`StoreError::Query`] for `operation`, with `cause` and its sources as the text.
    pub(crate) fn query(operation: &'static str, cause: &(dyn StdError + 'static)) -> Self {
        StoreError::Query {
            operation,
            cause: error_chain(cause),
        }
    }

    /// Whether this is a [`StoreError::Conflict`] (an HTTP 409 at the server edge).
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

/// `error: source: source...`, skipping a source whose text the previous one already contains
/// (many errors repeat their cause in their own message).
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_sources_once() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "outer: disk full");
        let q = StoreError::query("creating a key", &e);
        assert_eq!(
            q.to_string(),
            "store query failed while creating a key: outer: disk full; retry, and if it keeps \
             failing check the database's health and logs"
        );
    }

    #[test]
    fn open_hints_fit_the_backend() {
        let sqlite = StoreError::Open {
            target: "sqlite /x.db".into(),
            cause: "denied".into(),
        };
        assert!(
            sqlite
                .to_string()
                .ends_with("may create and write that file and its directory")
        );
        let pg = StoreError::Open {
            target: "postgres db:5432/weir".into(),
            cause: "refused".into(),
        };
        assert!(pg.to_string().contains("server is running"), "{pg}");
    }

    #[test]
    fn conflict_is_conflict() {
        assert!(StoreError::Conflict("x".into()).is_conflict());
        assert!(!StoreError::InvalidData("x".into()).is_conflict());
    }
}
