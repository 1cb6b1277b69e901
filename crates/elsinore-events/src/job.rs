//! One event on one SQLite table: batched deletes, each its own short
//! write transaction, walking the table in key order so each row is looked
//! at once per run.

use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, ErrorCode, TransactionBehavior};

use crate::backend::Step;
use crate::report::TableReport;
use crate::timestamp::{epoch_ms_sql, quote_ident};

/// The work for one (event, table) on SQLite.
#[derive(Debug)]
pub(crate) struct SqliteJob {
    table: String,
    column: String,
    key: Vec<String>,
    /// The timestamp rule as SQL, for this table's column.
    when: String,
    /// Rows whose time is before this (epoch ms) are deleted.
    cutoff: i64,
    /// Last key handled; the next batch starts after it.
    cursor: Option<Vec<Value>>,
}

impl SqliteJob {
    pub fn new(table: &str, column: &str, key: Vec<String>, cutoff: i64) -> Self {
        let column = quote_ident(column);
        Self {
            table: quote_ident(table),
            when: epoch_ms_sql(&column),
            column,
            key,
            cutoff,
            cursor: None,
        }
    }

    /// Deletes up to `batch` more rows in one transaction. `Err` is a
    /// failure other than `SQLITE_BUSY`: the job is over.
    pub fn step(
        &mut self,
        conn: &mut Connection,
        report: &mut TableReport,
        batch: u32,
    ) -> rusqlite::Result<Step> {
        match self.try_step(conn, report, batch) {
            Err(err) if is_busy(&err) => Ok(Step::Busy),
            other => other,
        }
    }

    fn try_step(
        &mut self,
        conn: &mut Connection,
        report: &mut TableReport,
        batch: u32,
    ) -> rusqlite::Result<Step> {
        // Finding the rows is a read (WAL: no lock), however many rows the
        // table keeps; only the delete by key range holds the write lock.
        let keys = self.select_keys(conn, batch)?;
        let Some(last) = keys.last().cloned() else {
            return Ok(Step::Done);
        };
        let full = keys.len() as u64 >= u64::from(batch);
        // IMMEDIATE takes the write lock up front, so the wait (up to the
        // busy timeout) happens here and never half-way through a batch.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = Instant::now();
        let deleted = self
            .delete_through(&tx, &last)
            .and_then(|n| tx.commit().map(|()| n));
        match deleted {
            Ok(n) => {
                give_way(held.elapsed());
                report.deleted += n as u64;
                report.batches += 1;
                self.cursor = Some(last);
            }
            // A foreign key or trigger refused one of the rows: find which,
            // delete the others, and leave that one (counted) behind.
            Err(err) if is_constraint(&err) => {
                if self.one_by_one(conn, report, keys)? == Step::Busy {
                    return Ok(Step::Busy);
                }
            }
            Err(err) => return Err(err),
        }
        Ok(if full { Step::More } else { Step::Done })
    }

    /// The keys of the next `batch` expired rows after the cursor.
    fn select_keys(&self, conn: &Connection, batch: u32) -> rusqlite::Result<Vec<Vec<Value>>> {
        let key = self.key.join(", ");
        let (after, mut params) = self.after_cursor();
        params.push(Value::Integer(self.cutoff));
        params.push(Value::Integer(i64::from(batch)));
        let sql = format!(
            "SELECT {key} FROM {table} WHERE {after} AND {when} < ?{cutoff} ORDER BY {key} LIMIT ?{limit}",
            table = self.table,
            when = self.when,
            cutoff = params.len() - 1,
            limit = params.len(),
        );
        let mut stmt = conn.prepare(&sql)?;
        let width = self.key.len();
        let rows = stmt.query_map(params_from_iter(&params), |row| {
            (0..width).map(|i| row.get::<_, Value>(i)).collect()
        })?;
        rows.collect()
    }

    /// Deletes the expired rows after the cursor up to `last`: the ones just
    /// selected, except any a handler restored since (the time is checked
    /// again), plus any that expired since.
    fn delete_through(&self, conn: &Connection, last: &[Value]) -> rusqlite::Result<usize> {
        let (after, mut params) = self.after_cursor();
        let first_last = params.len() + 1;
        params.extend(last.iter().cloned());
        params.push(Value::Integer(self.cutoff));
        let sql = format!(
            "DELETE FROM {table} WHERE {after} AND ({key}) <= ({slots}) AND {when} < ?{cutoff}",
            table = self.table,
            key = self.key.join(", "),
            slots = slots(first_last, last.len()),
            when = self.when,
            cutoff = params.len(),
        );
        conn.execute(&sql, params_from_iter(&params))
    }

    /// The batch again, one row per transaction, after a constraint refused
    /// the batch as a whole.
    fn one_by_one(
        &mut self,
        conn: &mut Connection,
        report: &mut TableReport,
        keys: Vec<Vec<Value>>,
    ) -> rusqlite::Result<Step> {
        let sql = format!(
            "DELETE FROM {table} WHERE ({key}) = ({slots}) AND {when} < ?{cutoff}",
            table = self.table,
            key = self.key.join(", "),
            slots = slots(1, self.key.len()),
            when = self.when,
            cutoff = self.key.len() + 1,
        );
        for key in keys {
            let mut params = key.clone();
            params.push(Value::Integer(self.cutoff));
            let one = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .and_then(|tx| {
                    let held = Instant::now();
                    let n = tx.execute(&sql, params_from_iter(&params))?;
                    tx.commit()?;
                    give_way(held.elapsed());
                    Ok(n)
                });
            match one {
                Ok(n) => {
                    report.deleted += n as u64;
                    report.batches += 1;
                }
                Err(err) if is_constraint(&err) => report.blocked += 1,
                Err(err) if is_busy(&err) => return Ok(Step::Busy),
                Err(err) => return Err(err),
            }
            self.cursor = Some(key);
        }
        Ok(Step::More)
    }

    /// Counts values the timestamp rule cannot read (a read: no lock taken).
    pub fn count_unreadable(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND {when} IS NULL",
            table = self.table,
            column = self.column,
            when = self.when,
        );
        conn.query_row(&sql, [], |row| row.get(0))
    }

    /// `(k1, k2) > (?1, ?2)` and its parameters, or `1` before the first batch.
    fn after_cursor(&self) -> (String, Vec<Value>) {
        match &self.cursor {
            None => ("1".to_owned(), Vec::new()),
            Some(cursor) => (
                format!("({}) > ({})", self.key.join(", "), slots(1, cursor.len())),
                cursor.clone(),
            ),
        }
    }
}

/// Pauses twice as long as the lock was held. Without a gap the next batch
/// would take the lock again at once, and a handler waiting for it (SQLite's
/// busy handler retries every 1 to 100 ms) could miss every short window
/// until its own busy timeout. With it, the events hold the lock at most a
/// third of the time, so a waiting handler's next retry likely finds it free.
fn give_way(held: Duration) {
    std::thread::sleep(held.saturating_mul(2));
}

/// `?first, ?first+1, …` (`count` of them).
fn slots(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Another connection holds the lock: wait for a later attempt.
pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_constraint(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}
