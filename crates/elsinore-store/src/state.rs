//! Elsinore's own SQLite file (config.json `state_database`): host keys,
//! the audit log and the events' run log, out of every handler's reach.
//!
//! [`StateStore::open`] creates the file 0600 before SQLite opens it (its
//! `-wal` and `-shm` take the main file's mode), switches it to WAL, and in
//! one transaction applies the [`MIGRATIONS`] and, the first time, moves
//! the tables an earlier Elsinore kept in the shared database
//! ([`crate::legacy`]). Everything that opens Elsinore's tables (`serve`,
//! `elsinore keys`, `elsinore events`) opens them through here, so
//! whichever runs first after an upgrade does the move.

use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{legacy, Result, StoreError};

/// The only mode the state database and its `-wal`/`-shm` files have.
pub const STATE_FILE_MODE: u32 = 0o600;

/// Elsinore's schema changes to the state database, in order. Each runs
/// once and its number is recorded; never edit a released entry, append
/// one. Numbers may be sparse: every entry not yet recorded in the file
/// runs. Versions 1-3 are the ones an earlier Elsinore applied to the
/// shared database: the same schema, so [`crate::legacy`] can move those
/// tables' rows here unchanged.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
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
    (
        4,
        "host_owners",
        // Recorded host owners (crate::owners): the project each declared
        // name (exact or `*.suffix`) was first served for. Named outside
        // `elsinore_*` on purpose: the one-time move out of the shared
        // file ([`crate::legacy`]) takes tables by that name, and no
        // earlier Elsinore kept owners there, so a `host_owners` table a
        // handler made in the shared file is never imported.
        "CREATE TABLE host_owners (
             host         TEXT PRIMARY KEY,
             project      TEXT NOT NULL,
             first_served INTEGER NOT NULL
         );",
    ),
];

/// Where Elsinore's databases are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Databases {
    /// The projects' shared file (`database`; handlers' `ELSINORE_DB`).
    pub shared: PathBuf,
    /// Elsinore's own file (`state_database`), never given to handlers.
    /// With [`Databases::state_url`] set it is not opened for keys and
    /// owners; its folder stays this machine's data folder.
    pub state: PathBuf,
    /// `state_database` given as a `postgres://` URL: keys, audit and
    /// host owners live there, shared by every front door.
    pub state_url: Option<elsinore_postgres::PostgresUrl>,
}

impl Databases {
    /// Both paths, as config.json resolved them.
    pub fn new(shared: &Path, state: &Path) -> Self {
        Self {
            shared: shared.to_owned(),
            state: state.to_owned(),
            state_url: None,
        }
    }

    /// The state database on PostgreSQL when `url` is set.
    pub fn with_state_url(mut self, url: Option<elsinore_postgres::PostgresUrl>) -> Self {
        self.state_url = url;
        self
    }
}

/// The state database, open and migrated.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    conn: Connection,
}

impl StateStore {
    /// Opens (creating 0600 if needed) and migrates the state database;
    /// when this creates its schema, moves the tables an earlier Elsinore
    /// kept in `databases.shared` into it, in the same transaction.
    pub fn open(databases: &Databases) -> Result<Self> {
        let path = crate::absolute(&databases.state);
        crate::create_parent(&path)?;
        create_private(&path)?;
        let conn = crate::open_connection(&path)?;
        let mut store = Self { path, conn };
        store.initialise(&crate::absolute(&databases.shared))?;
        Ok(store)
    }

    /// The absolute path of the file.
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
        schema_version(&self.conn)
            .map_err(|source| self.error("cannot read the schema version", source))
    }

    fn initialise(&mut self, shared: &Path) -> Result<()> {
        // Only a file without a schema yet takes the shared file's tables:
        // once the state database is in use, a table named host_secrets in
        // the shared file is something a handler made, and importing it
        // would be the very forgery this file exists to prevent.
        let fresh = !has_schema(&self.conn, "main")
            .map_err(|source| self.error("cannot read the schema", source))?;
        let attach = fresh && shared.is_file() && shared != self.path;
        if attach {
            self.conn
                .execute("ATTACH DATABASE ?1 AS shared", [shared.to_string_lossy()])
                .map_err(|source| self.error("cannot attach the shared database", source))?;
        }
        let done = self.migrate(attach.then_some(shared));
        if attach {
            // Detaching can only fail while a statement is open; none is.
            let _ = self.conn.execute("DETACH DATABASE shared", []);
        }
        let moved = done?;
        if !moved.is_empty() {
            let rows: i64 = moved.iter().map(|table| table.rows).sum();
            for table in &moved {
                tracing::info!(
                    table = %table.name,
                    rows = table.rows,
                    from = %shared.display(),
                    to = %self.path.display(),
                    "moved Elsinore's table out of the shared database"
                );
            }
            tracing::info!(
                tables = moved.len(),
                rows,
                from = %shared.display(),
                to = %self.path.display(),
                "Elsinore's state moved from the shared database to the state database; the shared one keeps only the projects' data"
            );
        }
        Ok(())
    }

    /// Applies the migrations not yet recorded (and, with `shared`
    /// attached, moves its tables) in one transaction.
    fn migrate(&mut self, shared: Option<&Path>) -> Result<Vec<legacy::MovedTable>> {
        let path = self.path.clone();
        let fail = |context| {
            let path = path.clone();
            move |source| StoreError::Sqlite {
                path,
                context,
                source,
            }
        };
        // IMMEDIATE: two processes opening a new file at once take turns,
        // and the second finds the schema (and the move) done.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail("cannot start the migration"))?;
        let fresh = !has_schema(&tx, "main").map_err(fail("cannot read the schema"))?;
        apply_migrations(&tx, &path)?;
        let moved = match shared {
            Some(shared) if fresh => legacy::move_tables(&tx, shared)?,
            _ => Vec::new(),
        };
        tx.commit().map_err(fail("cannot commit the migration"))?;
        Ok(moved)
    }

    fn error(&self, context: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            context,
            source,
        }
    }
}

/// Creates `path` with mode 0600 if it does not exist, so SQLite never
/// creates it with the umask's; tightens an existing file (and its
/// `-wal`/`-shm`) that others can read.
fn create_private(path: &Path) -> Result<()> {
    let file_error = |context| {
        move |source| StoreError::File {
            path: path.to_owned(),
            context,
            source,
        }
    };
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(STATE_FILE_MODE)
        .open(path)
        .map_err(file_error("cannot create the state database"))?;
    for file in [
        path.to_owned(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
    ] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode != STATE_FILE_MODE {
            std::fs::set_permissions(&file, Permissions::from_mode(STATE_FILE_MODE)).map_err(
                file_error("cannot make the state database private (mode 0600)"),
            )?;
            tracing::warn!(
                file = %file.display(),
                was = format!("{mode:o}"),
                "the state database was readable by others; its mode is now 0600"
            );
        }
    }
    Ok(())
}

/// `path` with `suffix` appended (`state.db-wal`).
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether `schema` holds `elsinore_migrations`, i.e. was set up already.
fn has_schema(conn: &Connection, schema: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM {schema}.sqlite_schema
                             WHERE type = 'table' AND name = 'elsinore_migrations')"
        ),
        [],
        |row| row.get(0),
    )
}

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM main.elsinore_migrations",
        [],
        |row| row.get(0),
    )
}

/// The highest version this build knows.
pub(crate) fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

fn apply_migrations(tx: &Transaction<'_>, path: &Path) -> Result<()> {
    let fail = |context| {
        move |source| StoreError::Sqlite {
            path: path.to_owned(),
            context,
            source,
        }
    };
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS main.elsinore_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(fail("cannot create elsinore_migrations"))?;
    let current = schema_version(tx).map_err(fail("cannot read the schema version"))?;
    let known = known_version();
    if current > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    // By "not recorded" rather than "above the highest": branches add
    // numbers independently, so a file may have 3 and still lack 2.
    let applied: Vec<i64> = {
        let mut stmt = tx
            .prepare("SELECT version FROM main.elsinore_migrations")
            .map_err(fail("cannot read the applied migrations"))?;
        let versions = stmt
            .query_map([], |row| row.get(0))
            .map_err(fail("cannot read the applied migrations"))?;
        versions
            .collect::<rusqlite::Result<_>>()
            .map_err(fail("cannot read the applied migrations"))?
    };
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| !applied.contains(&m.0)) {
        // The migrations name no schema. With the shared file attached,
        // CREATE still goes to main, and a name is looked up in main
        // before attached files: in order, each table exists in main
        // before a later migration alters it.
        tx.execute_batch(sql).map_err(fail("migration failed"))?;
        tx.execute(
            "INSERT INTO main.elsinore_migrations (version, name, applied_at)
             VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
            rusqlite::params![version, name],
        )
        .map_err(fail("migration failed"))?;
        tracing::info!(database = %path.display(), version, name, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn databases(dir: &Path) -> Databases {
        Databases::new(&dir.join("data/elsinore.db"), &dir.join("data/state.db"))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn creates_a_private_file_and_migrates_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = databases(dir.path());
        let store = StateStore::open(&databases).expect("open");
        assert_eq!(store.schema_version().expect("version"), known_version());
        let journal: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("pragma");
        assert_eq!(journal, "wal");
        // A write makes SQLite create -wal and -shm: they take the main
        // file's mode.
        store
            .conn
            .execute("INSERT INTO elsinore_audit (at, host, project, actor, action, client) VALUES (1, 'h', 'p', 'a', 'x', 'c')", [])
            .expect("write");
        for file in [
            databases.state.clone(),
            sidecar(&databases.state, "-wal"),
            sidecar(&databases.state, "-shm"),
        ] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        assert!(
            !databases.shared.exists(),
            "the state database does not create the shared one"
        );
        drop(store);

        let store = StateStore::open(&databases).expect("reopen");
        let count: i64 = store
            .conn
            .query_row("SELECT COUNT(*) FROM elsinore_migrations", [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(count, MIGRATIONS.len() as i64);
    }

    #[test]
    fn an_existing_file_readable_by_others_is_made_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = databases(dir.path());
        drop(StateStore::open(&databases).expect("open"));
        std::fs::set_permissions(&databases.state, Permissions::from_mode(0o644)).expect("chmod");
        drop(StateStore::open(&databases).expect("reopen"));
        assert_eq!(mode(&databases.state), 0o600);
    }

    #[test]
    fn applies_a_lower_numbered_migration_the_file_lacks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = databases(dir.path());
        let store = StateStore::open(&databases).expect("open");
        // As if this file had been migrated by a build without migration 3.
        store
            .conn
            .execute_batch(
                "DROP TABLE elsinore_event_runs; DELETE FROM elsinore_migrations WHERE version = 3;",
            )
            .expect("forget migration 3");
        drop(store);
        let store = StateStore::open(&databases).expect("reopen");
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
        let databases = databases(dir.path());
        let store = StateStore::open(&databases).expect("open");
        store
            .conn
            .execute(
                "INSERT INTO elsinore_migrations VALUES (999, 'future', 0)",
                [],
            )
            .expect("insert");
        drop(store);
        let err = StateStore::open(&databases).expect_err("too new");
        assert!(
            err.to_string().contains("schema version 999 is newer"),
            "{err}"
        );
    }
}
