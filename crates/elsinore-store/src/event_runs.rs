//! The events' run log (`elsinore_event_runs`) on a PostgreSQL state
//! database: the rows the events crate writes after each run and reads
//! back for `GET /events`, the status page and `elsinore events list`.
//! (On SQLite the events crate runs its own statements on the state file.)

use elsinore_postgres::PostgresUrl;

use crate::pg::{classify, PgState};
use crate::Result;

/// The advisory lock run ids are handed out under: two front doors
/// recording a run at the same moment get different ids.
const RUN_ID_LOCK: i64 = 0x656c_7369_7275_6e73;

/// One row of `elsinore_event_runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRunRow {
    /// The run (assigned by [`record`]; ignored on the way in).
    pub run_id: i64,
    /// `schedule`, `operator` or `cli`.
    pub trigger: String,
    /// `SoftDeleteCleanup` or `SessionExpiry`.
    pub event: String,
    /// The table cleaned.
    pub table_name: String,
    /// Epoch ms.
    pub started_at: i64,
    /// Epoch ms.
    pub finished_at: i64,
    /// Rows deleted.
    pub rows_deleted: i64,
    /// Unreadable values left alone.
    pub unreadable: i64,
    /// Rows a foreign key kept.
    pub blocked: i64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Records `rows` as one new run and removes rows that started before
/// `prune_before` (epoch ms), in one transaction; returns the run id.
pub fn record(url: &PostgresUrl, rows: &[EventRunRow], prune_before: i64) -> Result<i64> {
    let state = PgState::open(url, "elsinore state events")?;
    let redacted = url.redacted();
    let fail = |context| classify(&redacted, context);
    state.with_client(|client| {
        let mut tx = client
            .transaction()
            .map_err(fail("cannot write elsinore_event_runs"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RUN_ID_LOCK])
            .map_err(fail("cannot take the run id lock"))?;
        let run_id: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(run_id), 0) + 1 FROM elsinore_event_runs",
                &[],
            )
            .map_err(fail("cannot write elsinore_event_runs"))?
            .get(0);
        for row in rows {
            tx.execute(
                "INSERT INTO elsinore_event_runs
                     (run_id, trigger, event, table_name, started_at, finished_at,
                      rows_deleted, unreadable, blocked, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &run_id,
                    &row.trigger,
                    &row.event,
                    &row.table_name,
                    &row.started_at,
                    &row.finished_at,
                    &row.rows_deleted,
                    &row.unreadable,
                    &row.blocked,
                    &row.error,
                ],
            )
            .map_err(fail("cannot write elsinore_event_runs"))?;
        }
        tx.execute(
            "DELETE FROM elsinore_event_runs WHERE started_at < $1",
            &[&prune_before],
        )
        .map_err(fail("cannot prune elsinore_event_runs"))?;
        tx.commit()
            .map_err(fail("cannot write elsinore_event_runs"))?;
        Ok(run_id)
    })
}

/// The rows of the `limit` most recent runs, newest run first, each run's
/// rows in the order they were written.
pub fn recent(url: &PostgresUrl, limit: usize) -> Result<Vec<EventRunRow>> {
    let state = PgState::open(url, "elsinore state events")?;
    let redacted = url.redacted();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    state.with_client(|client| {
        let rows = client
            .query(
                "SELECT run_id, trigger, event, table_name, started_at, finished_at,
                        rows_deleted, unreadable, blocked, error
                   FROM elsinore_event_runs
                  WHERE run_id IN (SELECT DISTINCT run_id FROM elsinore_event_runs
                                    ORDER BY run_id DESC LIMIT $1)
                  ORDER BY run_id DESC, id",
                &[&limit],
            )
            .map_err(classify(&redacted, "cannot read elsinore_event_runs"))?;
        Ok(rows
            .iter()
            .map(|row| EventRunRow {
                run_id: row.get(0),
                trigger: row.get(1),
                event: row.get(2),
                table_name: row.get(3),
                started_at: row.get(4),
                finished_at: row.get(5),
                rows_deleted: row.get(6),
                unreadable: row.get(7),
                blocked: row.get(8),
                error: row.get(9),
            })
            .collect())
    })
}
