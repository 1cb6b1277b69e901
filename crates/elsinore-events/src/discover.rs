//! Finding the tables events work on in SQLite: every ordinary table of the `main`
//! schema that is not Elsinore's or SQLite's, with its columns, key and
//! retention annotation.

use std::time::Duration;

use elsinore_config::is_reserved_table;
use rusqlite::Connection;

use crate::backend::{annotation_in, Table};
use crate::job::SqliteJob;
use crate::timestamp::quote_ident;

/// One candidate table.
#[derive(Debug)]
pub(crate) struct TableInfo {
    pub name: String,
    /// The `CREATE TABLE` statement as SQLite keeps it (comments included).
    pub sql: String,
    pub without_rowid: bool,
    /// (name, position in the primary key or 0).
    pub columns: Vec<(String, i64)>,
}

impl TableInfo {
    /// The column called `wanted`, as the table spells it.
    pub fn column(&self, wanted: &str) -> Option<&str> {
        self.columns
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| name.eq_ignore_ascii_case(wanted))
    }

    /// SQL expressions that identify a row and order the table: the rowid
    /// (under a name no column shadows) or, for `WITHOUT ROWID` tables, the
    /// primary key columns. `None` when every rowid name is a column.
    pub fn key(&self) -> Option<Vec<String>> {
        if self.without_rowid {
            let mut pk: Vec<&(String, i64)> = self.columns.iter().filter(|c| c.1 > 0).collect();
            pk.sort_by_key(|c| c.1);
            return Some(pk.iter().map(|c| quote_ident(&c.0)).collect());
        }
        // Unquoted on purpose: a quoted "rowid" that names no column would
        // be read by SQLite as a string literal.
        ["rowid", "_rowid_", "oid"]
            .into_iter()
            .find(|alias| self.column(alias).is_none())
            .map(|alias| vec![alias.to_owned()])
    }

    /// The `-- elsinore:retention=7d` annotation, anywhere in the `CREATE
    /// TABLE` statement: `None` when absent, the duration or why it is not
    /// one when present.
    pub fn annotation(&self) -> Option<Result<Duration, String>> {
        annotation_in(&self.sql, &self.name)
    }
}

impl Table for TableInfo {
    type Work = SqliteJob;

    fn name(&self) -> &str {
        &self.name
    }

    fn column(&self, wanted: &str) -> Option<&str> {
        TableInfo::column(self, wanted)
    }

    fn annotation(&self) -> Option<Result<Duration, String>> {
        TableInfo::annotation(self)
    }

    fn work(&self, column: &str, cutoff: i64) -> Result<SqliteJob, String> {
        let key = self.key().ok_or_else(|| {
            "its columns are named rowid, _rowid_ and oid, so rows cannot be addressed".to_owned()
        })?;
        Ok(SqliteJob::new(&self.name, column, key, cutoff))
    }
}

/// Every ordinary table in `main` that is not Elsinore's or SQLite's, by
/// name. Views, virtual tables and their shadow tables are left out.
pub(crate) fn tables(conn: &Connection) -> rusqlite::Result<Vec<TableInfo>> {
    let mut list = conn.prepare(
        "SELECT l.name, l.wr, s.sql
           FROM pragma_table_list AS l
           JOIN sqlite_schema AS s ON s.name = l.name AND s.type = 'table'
          WHERE l.schema = 'main' AND l.type = 'table'
          ORDER BY l.name",
    )?;
    let mut columns = conn.prepare("SELECT name, pk FROM pragma_table_info(?1, 'main')")?;
    let rows = list.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, bool>(1)?,
            row.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut tables = Vec::new();
    for row in rows {
        let (name, without_rowid, sql) = row?;
        if is_reserved_table(&name) {
            continue;
        }
        let columns = columns
            .query_map([&name], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        tables.push(TableInfo {
            name,
            sql: sql.unwrap_or_default(),
            without_rowid,
            columns,
        });
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(schema: &str) -> Connection {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(schema).expect("schema");
        conn
    }

    #[test]
    fn lists_ordinary_tables_only() {
        let conn = db("CREATE TABLE b (id INTEGER PRIMARY KEY, deleted_at BIGINT);
             CREATE TABLE a (x);
             CREATE VIEW v AS SELECT * FROM b;
             CREATE TABLE elsinore_event_runs (deleted_at);
             CREATE TABLE host_secrets (revoked_at, deleted_at);
             CREATE TABLE seq (id INTEGER PRIMARY KEY AUTOINCREMENT, deleted_at);
             CREATE TEMP TABLE tmp (deleted_at);");
        let names: Vec<String> = tables(&conn)
            .expect("tables")
            .into_iter()
            .map(|t| t.name)
            .collect();
        // sqlite_sequence (from AUTOINCREMENT) is SQLite's own.
        assert_eq!(names, ["a", "b", "seq"]);
    }

    #[test]
    fn keys_avoid_shadowed_rowid_names_and_use_the_primary_key_without_rowid() {
        let conn = db("CREATE TABLE plain (deleted_at);
             CREATE TABLE shadow (rowid, oid, deleted_at);
             CREATE TABLE hopeless (rowid, _rowid_, oid);
             CREATE TABLE wr (b TEXT, a INTEGER, \"we\"\"ird\" TEXT, PRIMARY KEY (a, \"we\"\"ird\")) WITHOUT ROWID;");
        let tables = tables(&conn).expect("tables");
        let key = |name: &str| tables.iter().find(|t| t.name == name).expect("table").key();
        assert_eq!(key("plain"), Some(vec!["rowid".to_owned()]));
        assert_eq!(key("shadow"), Some(vec!["_rowid_".to_owned()]));
        assert_eq!(key("hopeless"), None);
        assert_eq!(
            key("wr"),
            Some(vec!["\"a\"".to_owned(), "\"we\"\"ird\"".to_owned()])
        );
    }

    #[test]
    fn reads_the_annotation_from_the_create_statement() {
        let conn = db("CREATE TABLE c (
                 id INTEGER PRIMARY KEY,
                 Deleted_At BIGINT -- elsinore:retention=7d
             );
             CREATE TABLE d (deleted_at /* Elsinore:Retention=12h */);
             CREATE TABLE e (deleted_at -- elsinore:retention=soon
             );
             CREATE TABLE f (deleted_at);
             -- SQLite keeps the statement only up to its closing parenthesis.
             CREATE TABLE g (deleted_at) -- elsinore:retention=1d
             ;");
        let tables = tables(&conn).expect("tables");
        let find = |name: &str| tables.iter().find(|t| t.name == name).expect("table");
        assert_eq!(find("c").column("deleted_at"), Some("Deleted_At"));
        assert_eq!(
            find("c").annotation(),
            Some(Ok(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            find("d").annotation(),
            Some(Ok(Duration::from_secs(12 * 3600)))
        );
        let err = find("e").annotation().expect("present").expect_err("bad");
        assert!(
            err.starts_with("table e: annotation elsinore:retention=soon: invalid duration"),
            "{err}"
        );
        assert_eq!(find("f").annotation(), None);
        assert_eq!(find("g").annotation(), None);
    }
}
