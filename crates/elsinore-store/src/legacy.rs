//! The earlier layout: Elsinore's tables (`host_secrets`, `elsinore_audit`,
//! `elsinore_event_runs`, `elsinore_migrations`) in the shared database,
//! where any handler could write them.
//!
//! [`move_tables`] runs inside the transaction that creates the state
//! database's schema, with the shared file attached as `shared`: it copies
//! every table named like Elsinore's (`elsinore_*`, `host_secret*`, any
//! case), checks the row counts, and drops them from the shared file. It
//! runs only when the state database is new; after that, such a table in
//! the shared file is not Elsinore's (a handler made it, or an older
//! Elsinore run again) and is never read, only reported
//! ([`warn_about_leftovers`]).
//!
//! With WAL, a transaction over two files is atomic in each file, not
//! across them. The state database is `main`, which SQLite commits first:
//! a crash between the two commits leaves the rows in both files (the
//! state file in use, the shared copy reported as a leftover), never in
//! neither.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, Transaction};

use crate::{Result, StoreError};

/// Which tables of the shared file are Elsinore's, as SQL over
/// `sqlite_schema`. `_` is a wildcard in LIKE, hence GLOB on the lower-case
/// name (SQLite table names ignore case).
const RESERVED: &str = "type = 'table'
     AND (lower(name) GLOB 'elsinore_*' OR lower(name) GLOB 'host_secret*')";

/// One table moved from the shared database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedTable {
    /// Its name.
    pub name: String,
    /// The rows it held (and the state database now holds).
    pub rows: i64,
}

/// Moves every table named like Elsinore's from `shared` (attached under
/// that name) to `main`, in `tx`. Tables the migrations already made in
/// `main` get the columns both have (an older file may lack later ones);
/// any other is created from the shared file's own definition, with its
/// indexes. `elsinore_migrations` is dropped, not copied: `main` records
/// its own versions, and a version newer than this build refuses the move.
pub(crate) fn move_tables(tx: &Transaction<'_>, shared_path: &Path) -> Result<Vec<MovedTable>> {
    let fail = |context| {
        move |source| StoreError::Sqlite {
            path: shared_path.to_owned(),
            context,
            source,
        }
    };
    let tables: Vec<(String, Option<String>)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT name, sql FROM shared.sqlite_schema WHERE {RESERVED} ORDER BY name"
            ))
            .map_err(fail("cannot list Elsinore's tables in the shared database"))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(fail("cannot list Elsinore's tables in the shared database"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(fail("cannot list Elsinore's tables in the shared database"))?
    };
    let mut moved = Vec::new();
    for (name, sql) in tables {
        let quoted = quote(&name);
        if name.eq_ignore_ascii_case("elsinore_migrations") {
            refuse_newer(tx, shared_path)?;
        } else {
            let expected = count(tx, "shared", &quoted).map_err(fail("cannot count rows"))?;
            copy_table(tx, &name, sql.as_deref()).map_err(fail("cannot copy a table"))?;
            let copied = count(tx, "main", &quoted).map_err(fail("cannot count rows"))?;
            if copied != expected {
                return Err(StoreError::MoveMismatch {
                    shared: shared_path.to_owned(),
                    table: name,
                    copied,
                    expected,
                });
            }
            moved.push(MovedTable {
                name: name.clone(),
                rows: expected,
            });
        }
        // Its indexes and triggers go with it.
        tx.execute_batch(&format!("DROP TABLE shared.{quoted}"))
            .map_err(fail("cannot drop a moved table from the shared database"))?;
    }
    Ok(moved)
}

fn copy_table(tx: &Transaction<'_>, name: &str, sql: Option<&str>) -> rusqlite::Result<()> {
    let quoted = quote(name);
    if columns(tx, "main", name)?.is_empty() {
        // Not one of the migrations' tables: take the shared file's
        // definition. Unqualified CREATE statements go to main.
        let Some(sql) = sql else { return Ok(()) };
        tx.execute_batch(sql)?;
        let mut stmt = tx.prepare(
            "SELECT sql FROM shared.sqlite_schema
              WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL",
        )?;
        let indexes = stmt
            .query_map([name], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for index in indexes {
            tx.execute_batch(&index)?;
        }
    }
    let main = columns(tx, "main", name)?;
    let common: Vec<String> = columns(tx, "shared", name)?
        .into_iter()
        .filter(|column| main.iter().any(|m| m.eq_ignore_ascii_case(column)))
        .map(|column| quote(&column))
        .collect();
    let list = common.join(", ");
    tx.execute(
        &format!("INSERT INTO main.{quoted} ({list}) SELECT {list} FROM shared.{quoted}"),
        [],
    )?;
    // AUTOINCREMENT: never hand out an id the shared file already used
    // (a pruned run, a key id printed in an old audit row).
    let has_sequence: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM shared.sqlite_schema WHERE name = 'sqlite_sequence')",
        [],
        |row| row.get(0),
    )?;
    let sequence: Option<i64> = if has_sequence {
        tx.query_row(
            "SELECT MAX(seq) FROM shared.sqlite_sequence WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?
    } else {
        None
    };
    if let Some(sequence) = sequence {
        let updated = tx.execute(
            "UPDATE main.sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
            rusqlite::params![name, sequence],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO main.sqlite_sequence (name, seq) VALUES (?1, ?2)",
                rusqlite::params![name, sequence],
            )?;
        }
    }
    Ok(())
}

/// A shared file migrated by a newer Elsinore has tables this build does
/// not know how to move: leave everything as it is.
fn refuse_newer(tx: &Transaction<'_>, shared_path: &Path) -> Result<()> {
    let found: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM shared.elsinore_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(|source| StoreError::Sqlite {
            path: shared_path.to_owned(),
            context: "cannot read the schema version",
            source,
        })?;
    let known = crate::state::known_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: shared_path.to_owned(),
            found,
            known,
        });
    }
    Ok(())
}

fn count(tx: &Transaction<'_>, schema: &str, quoted: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        &format!("SELECT COUNT(*) FROM {schema}.{quoted}"),
        [],
        |row| row.get(0),
    )
}

fn columns(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, ?2)")?;
    let names = stmt.query_map([table, schema], |row| row.get(0))?;
    names.collect()
}

/// `name` as an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Tables named like Elsinore's in the shared file at `shared` (read-only;
/// empty when it cannot be read).
pub fn leftovers(shared: &Path) -> Vec<String> {
    let read = || -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open_with_flags(
            shared,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(crate::BUSY_TIMEOUT)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT name FROM sqlite_schema WHERE {RESERVED} ORDER BY name"
        ))?;
        let names = stmt.query_map([], |row| row.get(0))?;
        names.collect()
    };
    if !shared.is_file() {
        return Vec::new();
    }
    read().unwrap_or_default()
}

/// Logs tables named like Elsinore's that are in the shared file although
/// the state database is in use (`serve` calls it once at start, after
/// opening the state database). They are not merged (a handler may have
/// made them: merging is the forgery) and do not stop Elsinore (a handler
/// could then keep every tenant offline by creating one); they are left
/// as they are, unread.
pub fn warn_about_leftovers(shared: &Path, state: &Path) {
    let names = leftovers(shared);
    if !names.is_empty() {
        tracing::warn!(
            shared = %shared.display(),
            state = %state.display(),
            tables = %names.join(", "),
            "the shared database holds tables named like Elsinore's; Elsinore's state is in the state database and these are never read (made by a handler, or by an older Elsinore after the move). Inspect them, then drop them from the shared database"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MIGRATIONS;
    use crate::{Databases, StateStore};

    /// A shared database the way an earlier Elsinore left it: its
    /// migrations (up to `upto`) applied there, with rows, plus a
    /// project's own table.
    fn earlier_layout(path: &Path, upto: i64) -> Connection {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE elsinore_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
             CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO notes (body) VALUES ('a project''s row');",
        )
        .expect("schema");
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 <= upto) {
            conn.execute_batch(sql).expect("migration");
            conn.execute(
                "INSERT INTO elsinore_migrations VALUES (?1, ?2, 1)",
                rusqlite::params![version, name],
            )
            .expect("record");
        }
        conn.execute_batch(
            "INSERT INTO host_secrets (id, host, project, key_hash, key_prefix, created_at)
                 VALUES (7, 'b.test', 'beta', zeroblob(32), 'ehk_abc', 1);
             INSERT INTO host_secrets (id, host, project, key_hash, key_prefix, created_at)
                 VALUES (9, 'b.test', 'beta', randomblob(32), 'ehk_def', 2);
             DELETE FROM host_secrets WHERE id = 9;",
        )
        .expect("keys");
        conn
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name")
            .expect("prepare");
        let names = stmt.query_map([], |row| row.get(0)).expect("query");
        names.collect::<rusqlite::Result<_>>().expect("names")
    }

    #[test]
    fn moves_an_older_layout_keeping_ids_and_columns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = Databases::new(&dir.path().join("e.db"), &dir.path().join("s.db"));
        // Version 1 only: host_secrets without grace_until, no audit table.
        let shared = earlier_layout(&databases.shared, 1);
        shared
            .execute_batch(
                "CREATE TABLE elsinore_custom (x); INSERT INTO elsinore_custom VALUES (1), (2);",
            )
            .expect("custom");
        drop(shared);

        let state = StateStore::open(&databases)
            .expect("open")
            .into_connection();
        let shared = Connection::open(&databases.shared).expect("open shared");
        assert_eq!(tables(&shared), ["notes"], "only the project's table stays");
        let (id, grace): (i64, Option<i64>) = state
            .query_row("SELECT id, grace_until FROM host_secrets", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .expect("key");
        assert_eq!((id, grace), (7, None));
        let custom: i64 = state
            .query_row("SELECT COUNT(*) FROM elsinore_custom", [], |row| row.get(0))
            .expect("custom");
        assert_eq!(custom, 2);
        // Id 9 was used (and deleted) in the shared file: never reused.
        state
            .execute(
                "INSERT INTO host_secrets (host, project, key_hash, key_prefix, created_at)
                 VALUES ('b.test', 'beta', randomblob(32), 'ehk_new', 3)",
                [],
            )
            .expect("insert");
        assert_eq!(state.last_insert_rowid(), 10);
    }

    #[test]
    fn a_state_file_in_use_takes_nothing_from_the_shared_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = Databases::new(&dir.path().join("e.db"), &dir.path().join("s.db"));
        drop(StateStore::open(&databases).expect("open"));
        // A handler makes the old table and a forged key afterwards.
        drop(earlier_layout(&databases.shared, 3));
        let state = StateStore::open(&databases)
            .expect("reopen")
            .into_connection();
        let keys: i64 = state
            .query_row("SELECT COUNT(*) FROM host_secrets", [], |row| row.get(0))
            .expect("count");
        assert_eq!(keys, 0, "nothing merged");
        assert_eq!(
            leftovers(&databases.shared),
            [
                "elsinore_migrations",
                "host_secrets",
                "elsinore_audit",
                "elsinore_event_runs"
            ]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>(),
            "left where they are, unread"
        );
    }

    #[test]
    fn a_newer_shared_schema_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = Databases::new(&dir.path().join("e.db"), &dir.path().join("s.db"));
        let shared = earlier_layout(&databases.shared, 3);
        shared
            .execute(
                "INSERT INTO elsinore_migrations VALUES (999, 'future', 1)",
                [],
            )
            .expect("future");
        drop(shared);
        let err = StateStore::open(&databases).expect_err("too new");
        assert!(err.to_string().contains("schema version 999"), "{err}");
        assert!(leftovers(&databases.shared).contains(&"host_secrets".to_owned()));
        // Nothing committed in the state file: a fixed build still moves.
        let state = Connection::open(&databases.state).expect("state");
        assert_eq!(tables(&state), Vec::<String>::new());
    }
}
