//! `elsinore_event_runs`, in the state database (not the shared one the
//! events clean, so no handler can write or forge it): one row per (run,
//! event, table), written at the end of each run in one short transaction,
//! read back for `GET /events`, the status page and `elsinore events list`.

use std::collections::BTreeMap;
use std::path::Path;

use elsinore_postgres::PostgresUrl;
use elsinore_store::event_runs::EventRunRow;
use elsinore_store::Databases;
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde::Serialize;

use crate::job::is_busy;
use crate::report::RunReport;
use crate::run::now_ms;
use crate::{Error, Result};

/// Run log rows older than this are removed when a run writes its own.
pub const RUN_LOG_KEEP_MS: i64 = 30 * 86_400_000;

/// Records `report`'s tables under a new run id, and prunes old rows.
pub(crate) fn write(
    conn: &mut Connection,
    report: &RunReport,
    attempts: u32,
) -> rusqlite::Result<i64> {
    let mut attempt = 1;
    loop {
        match try_write(conn, report) {
            Err(err) if is_busy(&err) && attempt < attempts.max(1) => attempt += 1,
            other => return other,
        }
    }
}

fn try_write(conn: &mut Connection, report: &RunReport) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let run_id: i64 = tx.query_row(
        "SELECT COALESCE(MAX(run_id), 0) + 1 FROM elsinore_event_runs",
        [],
        |row| row.get(0),
    )?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO elsinore_event_runs
                 (run_id, trigger, event, table_name, started_at, finished_at,
                  rows_deleted, unreadable, blocked, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for table in &report.tables {
            insert.execute(params![
                run_id,
                report.trigger.as_str(),
                table.event.as_str(),
                table.table,
                table.started_at,
                table.finished_at,
                saturate(table.deleted),
                saturate(table.unreadable),
                saturate(table.blocked),
                table.error,
            ])?;
        }
    }
    tx.execute(
        "DELETE FROM elsinore_event_runs WHERE started_at < ?1",
        [now_ms().saturating_sub(RUN_LOG_KEEP_MS)],
    )?;
    tx.commit()?;
    Ok(run_id)
}

fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One recorded run, newest first in [`recent_runs`].
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The run's id (increasing).
    pub run_id: i64,
    /// `schedule`, `operator` or `cli`.
    pub trigger: String,
    /// Epoch milliseconds: the earliest table's start.
    pub started_at: i64,
    /// Epoch milliseconds: the latest table's finish.
    pub finished_at: i64,
    /// Rows deleted, all tables.
    pub deleted: i64,
    /// Unreadable values left alone, all tables.
    pub unreadable: i64,
    /// Rows a foreign key kept, all tables.
    pub blocked: i64,
    /// Tables that ended with an error.
    pub errors: i64,
    /// One entry per (event, table), in the order they ran.
    pub tables: Vec<TableRecord>,
}

/// One row of `elsinore_event_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct TableRecord {
    /// `SoftDeleteCleanup` or `SessionExpiry`.
    pub event: String,
    /// The table.
    pub table: String,
    /// Epoch milliseconds.
    pub started_at: i64,
    /// Epoch milliseconds.
    pub finished_at: i64,
    /// Rows deleted.
    pub deleted: i64,
    /// Unreadable values left alone.
    pub unreadable: i64,
    /// Rows a foreign key kept.
    pub blocked: i64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// The `limit` most recent runs recorded in the state database at
/// `database`, newest first. Opens the file read-only; an empty list when no run was
/// ever recorded.
pub fn recent_runs(database: &Path, limit: usize) -> Result<Vec<RunRecord>> {
    if !database.is_file() {
        return Err(Error::Missing {
            path: database.to_owned(),
        });
    }
    let sqlite = |context| {
        move |source| Error::Sqlite {
            path: database.to_owned(),
            context,
            source,
        }
    };
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("cannot open"))?;
    conn.busy_timeout(elsinore_store::BUSY_TIMEOUT)
        .map_err(sqlite("cannot set the busy timeout"))?;
    read_recent(&conn, limit).map_err(sqlite("cannot read elsinore_event_runs"))
}

fn read_recent(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<RunRecord>> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'elsinore_event_runs')",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT run_id, trigger, event, table_name, started_at, finished_at,
                rows_deleted, unreadable, blocked, error
           FROM elsinore_event_runs
          WHERE run_id IN (SELECT DISTINCT run_id FROM elsinore_event_runs
                            ORDER BY run_id DESC LIMIT ?1)
          ORDER BY run_id DESC, id",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map([limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            TableRecord {
                event: row.get(2)?,
                table: row.get(3)?,
                started_at: row.get(4)?,
                finished_at: row.get(5)?,
                deleted: row.get(6)?,
                unreadable: row.get(7)?,
                blocked: row.get(8)?,
                error: row.get(9)?,
            },
        ))
    })?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(group(rows))
}

/// Rows (run id, trigger, table) into runs, newest first.
fn group(rows: Vec<(i64, String, TableRecord)>) -> Vec<RunRecord> {
    let mut runs: BTreeMap<i64, RunRecord> = BTreeMap::new();
    for (run_id, trigger, table) in rows {
        let run = runs.entry(run_id).or_insert_with(|| RunRecord {
            run_id,
            trigger,
            started_at: table.started_at,
            finished_at: table.finished_at,
            deleted: 0,
            unreadable: 0,
            blocked: 0,
            errors: 0,
            tables: Vec::new(),
        });
        run.started_at = run.started_at.min(table.started_at);
        run.finished_at = run.finished_at.max(table.finished_at);
        run.deleted += table.deleted;
        run.unreadable += table.unreadable;
        run.blocked += table.blocked;
        run.errors += i64::from(table.error.is_some());
        run.tables.push(table);
    }
    runs.into_values().rev().collect()
}

/// The `limit` most recent runs of the state database `databases` names
/// (the SQLite file, or PostgreSQL when `state_database` is a URL).
pub fn recent_runs_in(databases: &Databases, limit: usize) -> Result<Vec<RunRecord>> {
    let Some(url) = &databases.state_url else {
        return recent_runs(&databases.state, limit);
    };
    let rows = elsinore_store::event_runs::recent(url, limit)?;
    Ok(group(
        rows.into_iter()
            .map(|row| {
                (
                    row.run_id,
                    row.trigger,
                    TableRecord {
                        event: row.event,
                        table: row.table_name,
                        started_at: row.started_at,
                        finished_at: row.finished_at,
                        deleted: row.rows_deleted,
                        unreadable: row.unreadable,
                        blocked: row.blocked,
                        error: row.error,
                    },
                )
            })
            .collect(),
    ))
}

/// Records `report` in the PostgreSQL state database at `url`.
pub(crate) fn write_pg(url: &PostgresUrl, report: &RunReport) -> Result<i64> {
    let rows: Vec<EventRunRow> = report
        .tables
        .iter()
        .map(|table| EventRunRow {
            run_id: 0,
            trigger: report.trigger.as_str().to_owned(),
            event: table.event.as_str().to_owned(),
            table_name: table.table.clone(),
            started_at: table.started_at,
            finished_at: table.finished_at,
            rows_deleted: saturate(table.deleted),
            unreadable: saturate(table.unreadable),
            blocked: saturate(table.blocked),
            error: table.error.clone(),
        })
        .collect();
    Ok(elsinore_store::event_runs::record(
        url,
        &rows,
        now_ms().saturating_sub(RUN_LOG_KEEP_MS),
    )?)
}
