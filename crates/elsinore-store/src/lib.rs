//! The shared SQLite database: one file for every project's tables and for
//! Elsinore's own framework tables.
//!
//! [`Store::open`] creates the file (and its folder), switches it to WAL so
//! handlers can read while others write, sets a busy timeout, and applies
//! Elsinore's migrations, each recorded in `elsinore_migrations`. This crate
//! is never called on the request path: SQLite work is blocking and belongs
//! on its own thread.
//!
//! [`keys`]: the host keys' table and audit log ([`keys::KeyStore`]), and
//! the thread that refills the in-memory `elsinore_keys::KeyRing` when
//! another process changes them. They live here, beside the migrations
//! that create their tables, so that the request path (which links only
//! `elsinore-keys`) links no SQLite.

pub mod keys;
mod permissions;

pub use permissions::{restrict_database_files, GROUP_MODE, PRIVATE_MODE};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

/// How long a statement waits for another writer before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Elsinore's schema changes, in order. Each runs once, in a transaction,
/// and its number is recorded; never edit a released entry, append one.
/// Numbers may be sparse: every entry not yet recorded in the file runs.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "host_secrets",
        "CREATE TABLE host_secrets (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         host        TEXT NOT NULL,
         project     TEXT NOT NULL,
         label       TEXT NOT NULL DEFAULT '',
         key_hash    BLOB NOT NULL UNIQUE,
         key_prefix  TEXT NOT NULL,
         created_at  INTEGER NOT NULL,
         revoked_at  INTEGER
     );
     CREATE INDEX host_secrets_by_host ON host_secrets (host, revoked_at);",
    ),
    (
        2,
        "key_rotation_grace_and_audit",
        // `grace_until`: a key revoked by a rotation with a grace period
        // keeps working until then (epoch ms). The audit log records every
        // change to keys and host folders made through Elsinore.
        "ALTER TABLE host_secrets ADD COLUMN grace_until INTEGER;
     CREATE TABLE elsinore_audit (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         at          INTEGER NOT NULL,
         host        TEXT NOT NULL,
         project     TEXT NOT NULL,
         actor       TEXT NOT NULL,
         action      TEXT NOT NULL,
         key_id      INTEGER,
         key_prefix  TEXT,
         client      TEXT NOT NULL,
         detail      TEXT NOT NULL DEFAULT ''
     );
     CREATE INDEX elsinore_audit_by_host ON elsinore_audit (host, at);",
    ),
    (
        3,
        "elsinore_event_runs",
        // The framework events' run log (crate elsinore-events): one row per
        // (run, event, table); times in epoch milliseconds.
        "CREATE TABLE elsinore_event_runs (
             id           INTEGER PRIMARY KEY AUTOINCREMENT,
             run_id       INTEGER NOT NULL,
             trigger      TEXT NOT NULL,
             event        TEXT NOT NULL,
             table_name   TEXT NOT NULL,
             started_at   INTEGER NOT NULL,
             finished_at  INTEGER NOT NULL,
             rows_deleted INTEGER NOT NULL,
             unreadable   INTEGER NOT NULL,
             blocked      INTEGER NOT NULL,
             error        TEXT
         );
         CREATE INDEX elsinore_event_runs_by_run ON elsinore_event_runs (run_id);
         CREATE INDEX elsinore_event_runs_by_start ON elsinore_event_runs (started_at);",
    ),
];

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder for the file could not be created.
    #[error("{}: cannot create the database folder: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("{}: {context}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What Elsinore was doing.
        context: &'static str,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was migrated by a newer Elsinore.
    #[error("{}: schema version {found} is newer than this Elsinore knows ({known}); upgrade Elsinore", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Highest version recorded in the file.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// The database files' owner group or mode could not be set.
    #[error("{}: {context}: {source}", path.display())]
    Permissions {
        /// The file or folder.
        path: PathBuf,
        /// What Elsinore was doing.
        context: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open, migrated database.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let sqlite = |context| {
            let path = path.clone();
            move |source| StoreError::Sqlite {
                path,
                context,
                source,
            }
        };
        // Not world-readable: projects' data and Elsinore's tables.
        permissions::create_private(&path)?;
        let conn = Connection::open(&path).map_err(sqlite("cannot open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("cannot set the busy timeout"))?;
        // WAL lets handlers read while another writes; it is a property of
        // the file, so every handler's connection gets it too.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite("cannot switch to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(database = %path.display(), %mode, "SQLite refused WAL mode; handlers may block each other");
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(sqlite("cannot set pragmas"))?;
        let mut store = Self { path, conn };
        store.migrate()?;
        Ok(store)
    }

    /// The absolute path of the file (what handlers get as `ELSINORE_DB`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives up the store, keeping its open connection (busy timeout and
    /// pragmas set), for a component that runs its own queries.
    pub fn into_connection(self) -> Connection {
        self.conn
    }

    /// The highest migration applied.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM elsinore_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.error("cannot read the schema version", source))
    }

    fn migrate(&mut self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS elsinore_migrations (
                     version    INTEGER PRIMARY KEY,
                     name       TEXT NOT NULL,
                     applied_at INTEGER NOT NULL
                 )",
            )
            .map_err(|source| self.error("cannot create elsinore_migrations", source))?;
        let current = self.schema_version()?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: current,
                known,
            });
        }
        // By "not recorded" rather than "above the highest": branches add
        // numbers independently, so a file may have 3 and still lack 2.
        let applied = self.applied_versions()?;
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
            let path = self.path.clone();
            let fail = move |source| StoreError::Sqlite {
                path,
                context: "migration failed",
                source,
            };
            let tx = self.conn.transaction().map_err(fail.clone())?;
            tx.execute_batch(sql).map_err(fail.clone())?;
            tx.execute(
                "INSERT INTO elsinore_migrations (version, name, applied_at)
                 VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
                rusqlite::params![version, name],
            )
            .map_err(fail.clone())?;
            tx.commit().map_err(fail)?;
            tracing::info!(database = %self.path.display(), version, name, "applied migration");
        }
        Ok(())
    }

    fn applied_versions(&self) -> Result<Vec<i64>> {
        let read = || -> rusqlite::Result<Vec<i64>> {
            let mut stmt = self
                .conn
                .prepare("SELECT version FROM elsinore_migrations")?;
            let versions = stmt.query_map([], |row| row.get(0))?;
            versions.collect()
        };
        read().map_err(|source| self.error("cannot read the applied migrations", source))
    }

    fn error(&self, context: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            context,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_folder_sets_wal_and_migrates_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/data/elsinore.db");
        let store = Store::open(&path).expect("open");
        assert!(path.exists());
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        assert_eq!(store.schema_version().expect("version"), latest);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        drop(store);

        // Reopening applies nothing twice and keeps the data.
        let store = Store::open(&path).expect("reopen");
        let count: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM elsinore_migrations", [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(count, MIGRATIONS.len() as i64);
    }

    #[test]
    fn applies_a_lower_numbered_migration_the_file_lacks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("elsinore.db");
        let store = Store::open(&path).expect("open");
        // As if this file had been migrated by a build without migration 1.
        store
            .conn
            .execute_batch(
                "DROP TABLE host_secrets; DELETE FROM elsinore_migrations WHERE version = 1;",
            )
            .expect("forget migration 1");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        let tables: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('host_secrets', 'elsinore_event_runs')",
                [],
                |row| row.get(0),
            )
            .expect("tables");
        assert_eq!(tables, 2);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("elsinore.db");
        let store = Store::open(&path).expect("open");
        store
            .conn
            .execute(
                "INSERT INTO elsinore_migrations VALUES (999, 'future', 0)",
                [],
            )
            .expect("insert");
        drop(store);
        let err = Store::open(&path).expect_err("too new");
        assert!(
            err.to_string().contains("schema version 999 is newer"),
            "{err}"
        );
    }

    #[test]
    fn unwritable_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").expect("file");
        let err = Store::open(&blocker.join("elsinore.db")).expect_err("cannot create");
        assert!(
            err.to_string()
                .contains("cannot create the database folder"),
            "{err}"
        );
    }
}
