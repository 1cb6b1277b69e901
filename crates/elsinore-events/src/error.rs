//! Why a run (not a table: table failures are part of the report) failed.

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file does not exist; events never create it.
    #[error("{}: database not found (nothing to clean; `elsinore serve` creates it)", path.display())]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Open(#[from] elsinore_store::StoreError),
    /// SQLite refused an operation outside any one table's work.
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
    /// The shared PostgreSQL database could not be reached (the message
    /// names its URL without the password).
    #[error("shared database: {0}")]
    Connect(#[from] elsinore_postgres::PgError),
    /// PostgreSQL refused an operation outside any one table's work.
    #[error("shared database {url}: {context}: {}", elsinore_postgres::describe(.source))]
    Postgres {
        /// The URL, password hidden.
        url: String,
        /// What Elsinore was doing.
        context: &'static str,
        /// PostgreSQL's reason.
        #[source]
        source: elsinore_postgres::postgres::Error,
    },
    /// The scheduler thread could not be started.
    #[error("cannot start the events thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The scheduler has stopped (Elsinore is shutting down).
    #[error("the events scheduler has stopped")]
    Stopped,
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
