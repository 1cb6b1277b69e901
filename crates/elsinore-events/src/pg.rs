//! The events on a shared PostgreSQL database.
//!
//! Discovery: every ordinary table (`relkind = 'r'`, partitions included,
//! each on its own) of every schema but PostgreSQL's own (`pg_catalog`,
//! `information_schema`, `pg_*`), whose name is not Elsinore's. The
//! retention annotation is read from the comments: the `deleted_at`
//! column's, then the table's, then the other columns' (on SQLite it is
//! anywhere in the `CREATE TABLE` statement, so anywhere in the table's
//! definition here too).
//!
//! Deletes: rows are addressed by `ctid` and walked in `ctid` order, a
//! batch at a time; each batch is one `DELETE … WHERE ctid = ANY(…)` in its
//! own transaction (autocommit), re-checking the time so that a row a
//! handler restored meanwhile stays. Only the rows being deleted are
//! locked, and `lock_timeout` (the busy timeout) bounds any wait for a
//! handler's row lock, which ends the table's turn as "busy" exactly like
//! `SQLITE_BUSY`.

use std::time::Duration;

use elsinore_config::{is_reserved_table, PostgresUrl};
use elsinore_postgres::postgres::error::SqlState;
use elsinore_postgres::postgres::Client;

use crate::backend::{annotation_in, Backend, Step, Table};
use crate::report::TableReport;
use crate::settings::Settings;
use crate::timestamp::{before_pg_sql, epoch_ms_pg_sql, quote_ident};
use crate::{Error, Result};

/// The advisory lock a front door holds while it runs the events on a
/// PostgreSQL shared database: "elsinore" in ASCII, read as a 64-bit
/// number. Other front doors (and `elsinore events run`) that find it
/// taken skip their run.
pub const EVENTS_LOCK: i64 = 0x656C_7369_6E6F_7265;

/// The cutoff's parameter in every statement of a job.
const CUTOFF: &str = "$2::bigint";

/// The `ctid` before every row's: line pointers start at 1.
const BEFORE_FIRST_ROW: &str = "(0,0)";

/// An open connection to the shared PostgreSQL database.
pub(crate) struct Pg {
    url: String,
    client: Client,
}

/// What [`Pg::while_locked`] did.
pub(crate) enum Pass<T> {
    /// This process held the lock and ran.
    Ran(T),
    /// Another held it; why, in words.
    HeldElsewhere(String),
}

impl Pg {
    /// Connects, with the session settings the events rely on.
    pub fn connect(url: &PostgresUrl, settings: &Settings) -> Result<Self> {
        let name = format!("elsinore events {}", std::process::id());
        let mut client = elsinore_postgres::connect(url, &name)?;
        let lock_timeout = settings
            .busy_timeout
            .max(Duration::from_millis(1))
            .as_millis();
        // UTC: `timestamp without time zone` and `date` are read as UTC, as
        // zone-less text is on SQLite.
        client
            .batch_execute(&format!(
                "SET TimeZone = 'UTC'; SET lock_timeout = '{lock_timeout}ms'"
            ))
            .map_err(|source| Error::Postgres {
                url: url.redacted(),
                context: "cannot set up the session",
                source,
            })?;
        Ok(Self {
            url: url.redacted(),
            client,
        })
    }

    /// Runs `work` while holding [`EVENTS_LOCK`]; when another session
    /// holds it, runs nothing and says who holds it.
    pub fn while_locked<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> Result<Pass<T>> {
        let got = elsinore_postgres::lock::try_lock(&mut self.client, EVENTS_LOCK)
            .map_err(|source| self.error("cannot take the events lock", source))?;
        if !got {
            let holder = elsinore_postgres::lock::holder(&mut self.client, EVENTS_LOCK)
                .ok()
                .flatten()
                .map_or_else(String::new, |who| format!(", held by {who}"));
            return Ok(Pass::HeldElsewhere(format!(
                "another front door is running the events on this database (advisory lock {EVENTS_LOCK}{holder})"
            )));
        }
        let done = work(self);
        // The lock also ends with the connection; unlocking says so at once.
        if let Err(err) = elsinore_postgres::lock::unlock(&mut self.client, EVENTS_LOCK) {
            tracing::debug!(
                "events: cannot release the events lock (the connection's end does): {err}"
            );
        }
        Ok(Pass::Ran(done))
    }

    fn error(&self, context: &'static str, source: elsinore_postgres::postgres::Error) -> Error {
        Error::Postgres {
            url: self.url.clone(),
            context,
            source,
        }
    }
}

/// One table as the catalog describes it.
#[derive(Debug)]
pub(crate) struct PgTable {
    /// `schema.table`.
    name: String,
    schema: String,
    table: String,
    comment: String,
    columns: Vec<PgColumn>,
}

#[derive(Debug)]
struct PgColumn {
    name: String,
    /// As `format_type` spells it (`timestamp with time zone`).
    data_type: String,
    comment: String,
}

impl Table for PgTable {
    type Work = PgJob;

    fn name(&self) -> &str {
        &self.name
    }

    fn short_name(&self) -> Option<&str> {
        Some(&self.table)
    }

    fn column(&self, wanted: &str) -> Option<&str> {
        self.columns
            .iter()
            .map(|c| c.name.as_str())
            .find(|name| name.eq_ignore_ascii_case(wanted))
    }

    fn annotation(&self) -> Option<Result<Duration, String>> {
        let marked = self.column("deleted_at");
        let (first, rest): (Vec<&PgColumn>, Vec<&PgColumn>) = self
            .columns
            .iter()
            .partition(|c| Some(c.name.as_str()) == marked);
        let text: Vec<&str> = first
            .iter()
            .map(|c| c.comment.as_str())
            .chain([self.comment.as_str()])
            .chain(rest.iter().map(|c| c.comment.as_str()))
            .collect();
        annotation_in(&text.join("\n"), &self.name)
    }

    fn work(&self, column: &str, cutoff: i64) -> Result<PgJob, String> {
        let data_type = self
            .columns
            .iter()
            .find(|c| c.name == column)
            .map_or("unknown", |c| c.data_type.as_str());
        let quoted = quote_ident(column);
        let rule =
            epoch_ms_pg_sql(&quoted, data_type).zip(before_pg_sql(&quoted, data_type, CUTOFF));
        let Some((when, before)) = rule else {
            return Err(format!(
                "column {column} is {data_type}; on PostgreSQL the events read timestamp with or without time zone, date, and integer or numeric epoch seconds or milliseconds"
            ));
        };
        Ok(PgJob {
            table: format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table)),
            column: quoted,
            expired: format!("{before} AND {when} < {CUTOFF}"),
            when,
            cutoff,
            cursor: BEFORE_FIRST_ROW.to_owned(),
        })
    }
}

/// The work for one (event, table) on PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgJob {
    /// `"schema"."table"`.
    table: String,
    column: String,
    /// The timestamp rule as SQL, for this column's type.
    when: String,
    /// The row is past the cutoff (`$2`): an index-friendly pre-filter
    /// and the exact rule.
    expired: String,
    cutoff: i64,
    /// Last `ctid` handled, as text; the next batch starts after it.
    cursor: String,
}

impl Backend for Pg {
    type Work = PgJob;
    type Table = PgTable;

    fn tables(&mut self) -> Result<Vec<PgTable>> {
        let rows = self
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text,
                        coalesce(obj_description(c.oid, 'pg_class'), ''),
                        a.attname::text, format_type(a.atttypid, NULL),
                        coalesce(col_description(c.oid, a.attnum), '')
                   FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  WHERE c.relkind = 'r'
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg\\_%'
                  ORDER BY n.nspname, c.relname, a.attnum",
                &[],
            )
            .map_err(|source| self.error("cannot list the tables", source))?;
        let mut tables: Vec<PgTable> = Vec::new();
        for row in rows {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            if is_reserved_table(&table) {
                continue;
            }
            let column = PgColumn {
                name: row.get(3),
                data_type: row.get(4),
                comment: row.get(5),
            };
            match tables.last_mut() {
                Some(last) if last.schema == schema && last.table == table => {
                    last.columns.push(column);
                }
                _ => tables.push(PgTable {
                    name: format!("{schema}.{table}"),
                    comment: row.get(2),
                    schema,
                    table,
                    columns: vec![column],
                }),
            }
        }
        Ok(tables)
    }

    fn step(
        &mut self,
        work: &mut PgJob,
        report: &mut TableReport,
        batch: u32,
    ) -> Result<Step, String> {
        match work.step(&mut self.client, report, batch) {
            Err(err) if is_busy(&err) => Ok(Step::Busy),
            other => other.map_err(|err| describe(&err)),
        }
    }

    fn count_unreadable(&mut self, work: &PgJob) -> Result<u64, String> {
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL AND {when} IS NULL",
            table = work.table,
            column = work.column,
            when = work.when,
        );
        let count: i64 = self
            .client
            .query_one(&sql, &[])
            .and_then(|row| row.try_get(0))
            .map_err(|err| describe(&err))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl PgJob {
    fn step(
        &mut self,
        client: &mut Client,
        report: &mut TableReport,
        batch: u32,
    ) -> Result<Step, elsinore_postgres::postgres::Error> {
        // Finding the rows is a plain read: it locks nothing a writer waits
        // for, however many rows the table keeps.
        let select = format!(
            "SELECT ctid::text FROM {table} WHERE ctid > $1::text::tid AND {expired} ORDER BY ctid LIMIT $3",
            table = self.table,
            expired = self.expired,
        );
        let rows = client.query(&select, &[&self.cursor, &self.cutoff, &i64::from(batch)])?;
        let ctids: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        let Some(last) = ctids.last().cloned() else {
            return Ok(Step::Done);
        };
        let full = ctids.len() as u64 >= u64::from(batch);
        // One statement, one transaction: the rows' locks are held only
        // for the delete itself.
        let delete = format!(
            "DELETE FROM {table} WHERE ctid = ANY($1::text[]::tid[]) AND {expired}",
            table = self.table,
            expired = self.expired,
        );
        match client.execute(&delete, &[&ctids, &self.cutoff]) {
            Ok(n) => {
                report.deleted += n;
                report.batches += 1;
                self.cursor = last;
            }
            // A foreign key or a trigger refused one of the rows: find which,
            // delete the others, and leave that one (counted) behind.
            Err(err) if is_constraint(&err) => {
                if self.one_by_one(client, report, ctids)? == Step::Busy {
                    return Ok(Step::Busy);
                }
            }
            Err(err) => return Err(err),
        }
        Ok(if full { Step::More } else { Step::Done })
    }

    fn one_by_one(
        &mut self,
        client: &mut Client,
        report: &mut TableReport,
        ctids: Vec<String>,
    ) -> Result<Step, elsinore_postgres::postgres::Error> {
        let delete = format!(
            "DELETE FROM {table} WHERE ctid = $1::text::tid AND {expired}",
            table = self.table,
            expired = self.expired,
        );
        for ctid in ctids {
            match client.execute(&delete, &[&ctid, &self.cutoff]) {
                Ok(n) => {
                    report.deleted += n;
                    report.batches += 1;
                }
                Err(err) if is_constraint(&err) => report.blocked += 1,
                Err(err) if is_busy(&err) => return Ok(Step::Busy),
                Err(err) => return Err(err),
            }
            self.cursor = ctid;
        }
        Ok(Step::More)
    }
}

/// A handler's transaction held a row past `lock_timeout`.
fn is_busy(err: &elsinore_postgres::postgres::Error) -> bool {
    err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// An integrity constraint (class 23: a foreign key, mostly) or a trigger's
/// `RAISE` refused the delete.
fn is_constraint(err: &elsinore_postgres::postgres::Error) -> bool {
    err.code()
        .is_some_and(|code| code.code().starts_with("23") || *code == SqlState::RAISE_EXCEPTION)
}

/// PostgreSQL's own message when there is one (the client's `Display` says
/// only "db error").
fn describe(err: &elsinore_postgres::postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(comment: &str, columns: &[(&str, &str, &str)]) -> PgTable {
        PgTable {
            name: "beta.post".to_owned(),
            schema: "beta".to_owned(),
            table: "post".to_owned(),
            comment: comment.to_owned(),
            columns: columns
                .iter()
                .map(|(name, data_type, comment)| PgColumn {
                    name: (*name).to_owned(),
                    data_type: (*data_type).to_owned(),
                    comment: (*comment).to_owned(),
                })
                .collect(),
        }
    }

    const DAY: u64 = 86_400;

    #[test]
    fn the_deleted_at_comment_beats_the_table_comment_which_beats_other_columns() {
        let days = |t: &PgTable| t.annotation().map(|a| a.map(|d| d.as_secs() / DAY));
        let both = table(
            "elsinore:retention=9d",
            &[
                ("note", "text", "elsinore:retention=1d"),
                ("Deleted_At", "bigint", "kept: Elsinore:Retention=7d"),
            ],
        );
        assert_eq!(days(&both), Some(Ok(7)));
        let table_only = table(
            "elsinore:retention=9d",
            &[
                ("note", "text", "elsinore:retention=1d"),
                ("deleted_at", "bigint", ""),
            ],
        );
        assert_eq!(days(&table_only), Some(Ok(9)));
        let other_column = table("", &[("note", "text", "elsinore:retention=1d")]);
        assert_eq!(days(&other_column), Some(Ok(1)));
        assert_eq!(days(&table("", &[("deleted_at", "bigint", "")])), None);
        let bad = table("", &[("deleted_at", "bigint", "elsinore:retention=soon")]);
        let err = bad
            .annotation()
            .expect("present")
            .expect_err("not a duration");
        assert!(
            err.starts_with("table beta.post: annotation elsinore:retention=soon"),
            "{err}"
        );
    }

    #[test]
    fn unread_types_are_skipped_with_the_reason_and_names_are_quoted() {
        let t = table(
            "",
            &[
                ("deleted_at", "text", ""),
                ("expires_at", "timestamp with time zone", ""),
            ],
        );
        let err = t.work("deleted_at", 0).expect_err("text is not read");
        assert!(err.starts_with("column deleted_at is text;"), "{err}");
        let job = t.work("expires_at", 0).expect("timestamptz is read");
        assert_eq!(job.table, "\"beta\".\"post\"");
        assert!(
            job.expired
                .starts_with("\"expires_at\" < to_timestamp($2::bigint / 1000.0) AND "),
            "{}",
            job.expired
        );
        assert!(t.answers_to("POST") && t.answers_to("Beta.Post") && !t.answers_to("alpha.post"));
    }
}
