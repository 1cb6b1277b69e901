//! Elsinore's two databases.
//!
//! - The **shared database** (`database`, [`Store`]): the projects' data,
//!   given to every handler as `ELSINORE_DB`. [`Store::open`] creates the
//!   file (and its folder), switches it to WAL so handlers can read while
//!   others write, and sets a busy timeout. Elsinore keeps nothing of its
//!   own there: any handler can write it.
//! - The **state database** (`state_database`, [`state::StateStore`]):
//!   Elsinore's own tables, created 0600 and never given to handlers, with
//!   the migrations that make them ([`state`]). Opening it the first time
//!   moves the tables an earlier Elsinore kept in the shared file
//!   ([`legacy`]). Or, for a fleet of front doors, a PostgreSQL database
//!   with the same tables ([`pg`]), refreshed across the fleet by
//!   `LISTEN`/`NOTIFY`; [`StateHealth`] says whether it answers, [`transfer`]
//!   moves the state between the two, [`event_runs`] is the events' run
//!   log there.
//!
//! [`keys`]: the host keys' table and audit log ([`keys::KeyStore`], in the
//! state database), and the thread that refills the in-memory
//! `elsinore_keys::KeyRing` when another process changes them. They live
//! here, beside the migrations that create their tables, so that the
//! request path (which links only `elsinore-keys`) links no SQLite.
//!
//! This crate is never called on the request path: database work is
//! blocking and belongs on its own thread.

pub mod keys;
mod permissions;

pub use permissions::{restrict_database_files, GROUP_MODE, PRIVATE_MODE};
pub mod event_runs;
pub mod legacy;
pub mod owners;
pub mod pg;
pub mod state;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

/// Kept here too: the operator endpoints and the binary name it so.
pub use elsinore_postgres::StateHealth;
pub use owners::{OwnerChanges, OwnerRecords};
pub use pg::PgState;
pub use state::{Databases, StateStore};

/// How long a statement waits for another writer before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database could not be prepared.
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
    /// The state database file could not be created or made private.
    #[error("{}: {context}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What Elsinore was doing.
        context: &'static str,
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
    /// The PostgreSQL state database cannot be reached (connection refused,
    /// lost, or shut down): nothing was changed. Answered with a 503 by the
    /// admin API.
    #[error("state database unavailable: {reason}")]
    StateUnavailable {
        /// Why, with the URL's password hidden.
        reason: String,
    },
    /// PostgreSQL refused a statement of the state database.
    #[error("{url}: {context}: {source}")]
    Postgres {
        /// The URL, password hidden.
        url: String,
        /// What Elsinore was doing.
        context: &'static str,
        /// PostgreSQL's reason.
        #[source]
        source: elsinore_postgres::postgres::Error,
    },
    /// The PostgreSQL state database was migrated by a newer Elsinore.
    #[error("{url}: schema version {found} is newer than this Elsinore knows ({known}); upgrade Elsinore")]
    PostgresTooNew {
        /// The URL, password hidden.
        url: String,
        /// Highest version recorded.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// Moving Elsinore's tables out of the shared database copied a
    /// different number of rows than the table held; nothing was moved.
    #[error(
        "{}: moving table {table} to the state database copied {copied} rows of {expected}; nothing was moved",
        shared.display()
    )]
    MoveMismatch {
        /// The shared database.
        shared: PathBuf,
        /// The table.
        table: String,
        /// Rows in the state database after the copy.
        copied: i64,
        /// Rows in the shared database's table.
        expected: i64,
    },
}

impl StoreError {
    /// Whether this is the state database being out of reach (a 503, not a
    /// 500: retrying later works).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::StateUnavailable { .. })
    }
}

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The shared database, open: the projects' data only.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the shared database at `path` in WAL
    /// mode. Elsinore creates no table in it.
    pub fn open(path: &Path) -> Result<Self> {
        let path = absolute(path);
        create_parent(&path)?;
        // Not world-readable: the projects' data (0600, or the
        // `database_group`'s 0660 set at serve).
        permissions::create_private(&path)?;
        let conn = open_connection(&path)?;
        Ok(Self { path, conn })
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
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Opens `path` with the busy timeout, WAL and the pragmas every
/// connection of Elsinore's uses.
fn open_connection(path: &Path) -> Result<Connection> {
    let sqlite = |context| {
        move |source| StoreError::Sqlite {
            path: path.to_owned(),
            context,
            source,
        }
    };
    let conn = Connection::open(path).map_err(sqlite("cannot open"))?;
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
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_database_gets_wal_and_no_table_of_elsinore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nested/data/elsinore.db");
        let store = Store::open(&path).expect("open");
        assert!(path.exists());
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        let tables: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
            .expect("tables");
        assert_eq!(tables, 0, "the shared database holds only projects' data");
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
