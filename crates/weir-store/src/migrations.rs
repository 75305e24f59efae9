//! Versioned schema migrations: one set of SQL files per backend (`migrations/sqlite/`,
//! `migrations/postgres/`, named `V{n}__{what}.sql`), embedded at build time and applied by
//! refinery when a store opens, recorded in `weir_schema_history`.
//!
//! Each backend applies all its pending migrations in one transaction (both databases have
//! transactional DDL), so a store is never left half-migrated. A database migrated by a newer
//! weir (an unknown version) or changed by hand (a different checksum) is refused with
//! [`StoreError::Migration`](crate::StoreError::Migration) rather than guessed at.
//!
//! A new record kind (sessions, jobs) adds the next `V{n}` file to both
//! directories; existing files are never edited.

use refinery::Runner;

/// The table recording which migrations ran.
pub const HISTORY_TABLE: &str = "weir_schema_history";

mod sqlite_files {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_files {
    refinery::embed_migrations!("migrations/postgres");
}

/// The runner for the SQLite migrations.
pub(crate) fn sqlite() -> Runner {
    configure(sqlite_files::migrations::runner())
}

/// The runner for the Postgres migrations.
pub(crate) fn postgres() -> Runner {
    configure(postgres_files::migrations::runner())
}

fn configure(runner: Runner) -> Runner {
    let mut runner = runner.set_grouped(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    runner
}

/// The highest version among a runner's migrations.
pub(crate) fn latest(runner: &Runner) -> i64 {
    runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_versions() {
        let versions = |r: Runner| {
            let mut v: Vec<(i64, String)> = r
                .get_migrations()
                .iter()
                .map(|m| (i64::from(m.version()), m.name().to_string()))
                .collect();
            v.sort();
            v
        };
        let (sqlite, postgres) = (versions(sqlite()), versions(postgres()));
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, postgres, "every migration exists for both backends");
        assert_eq!(latest(&super::sqlite()), latest(&super::postgres()));
        assert!(latest(&super::sqlite()) >= 1);
    }
}
