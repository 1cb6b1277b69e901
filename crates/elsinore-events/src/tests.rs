//! Runs against real SQLite files in temp dirs, with second connections
//! playing the handlers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use elsinore_config::{EventsConfig, TableEvents};
use elsinore_store::Databases;
use rusqlite::Connection;

use crate::run::{now_ms, run_with, Progress};
use crate::{
    recent_runs, run_once, Error, Event, EventScheduler, RetentionSource, RunReport, Settings,
    TableReport, Trigger,
};

/// Bound for anything a test waits for; reached only when broken.
const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: i64 = 86_400_000;

/// A shared database created the way `serve` does (with its state
/// database beside it), plus a handler's connection to fill it.
struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    databases: Databases,
    conn: Connection,
}

impl Db {
    fn new(schema: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/elsinore.db");
        drop(elsinore_store::Store::open(&path).unwrap());
        let databases = Databases::new(&path, &dir.path().join("data/elsinore-state.db"));
        drop(elsinore_store::StateStore::open(&databases).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.busy_timeout(WAIT).unwrap();
        conn.execute_batch(schema).unwrap();
        Self {
            _dir: dir,
            path,
            databases,
            conn,
        }
    }

    fn exec(&self, sql: &str) {
        self.conn.execute_batch(sql).unwrap();
    }

    /// `SELECT id FROM table ORDER BY id` as a list.
    fn ids(&self, table: &str) -> Vec<i64> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
            .unwrap();
        let ids = stmt.query_map([], |row| row.get(0)).unwrap();
        ids.collect::<rusqlite::Result<_>>().unwrap()
    }

    fn count(&self, table: &str) -> i64 {
        self.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    fn run(&self, settings: &Settings) -> RunReport {
        run_once(&self.databases, settings, Trigger::Cli).unwrap()
    }
}

fn settings(events: EventsConfig) -> Settings {
    Settings {
        events,
        busy_timeout: Duration::from_millis(50),
        busy_passes: 3,
        shared_url: None,
    }
}

fn table<'a>(report: &'a RunReport, event: Event, name: &str) -> &'a TableReport {
    report
        .tables
        .iter()
        .find(|t| t.event == event && t.table == name)
        .unwrap_or_else(|| panic!("no {event:?} entry for {name} in {report:#?}"))
}

fn ago(days: i64) -> i64 {
    now_ms() - days * DAY_MS
}

#[test]
fn soft_deletes_across_two_projects_in_every_value_format() {
    let db = Db::new(
        "-- horatio (Hamlet): epoch milliseconds in a BIGINT
         CREATE TABLE item (id INTEGER PRIMARY KEY, host TEXT NOT NULL, deleted_at BIGINT);
         -- othello: epoch seconds, and ISO text in another table
         CREATE TABLE post (id INTEGER PRIMARY KEY, deleted_at INTEGER);
         CREATE TABLE note (id INTEGER PRIMARY KEY, deleted_at TEXT);
         CREATE TABLE untouched (id INTEGER PRIMARY KEY, body TEXT);",
    );
    let iso = |ms: i64| -> String {
        db.conn
            .query_row(
                "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')",
                [ms],
                |row| row.get(0),
            )
            .unwrap()
    };
    // id 1: 40 days ago (goes), 2: yesterday (stays), 3: NULL (live),
    // 4, 5: unreadable (stay, counted).
    let ins = |table: &str, id: i64, value: rusqlite::types::Value| {
        db.conn
            .execute(
                &format!("INSERT INTO {table} (id, deleted_at) VALUES (?1, ?2)"),
                rusqlite::params![id, value],
            )
            .unwrap();
    };
    use rusqlite::types::Value::{Blob, Integer, Null, Text};
    db.exec("INSERT INTO item VALUES (1, 'blog.localhost', NULL), (2, 'blog.localhost', NULL)");
    db.conn
        .execute("UPDATE item SET deleted_at = ?1 WHERE id = 1", [ago(40)])
        .unwrap();
    db.conn
        .execute("UPDATE item SET deleted_at = ?1 WHERE id = 2", [ago(1)])
        .unwrap();
    db.exec("INSERT INTO item VALUES (3, 'news.localhost', NULL), (4, 'news.localhost', 0), (5, 'blog.localhost', 'soon')");
    ins("post", 1, Integer(ago(40) / 1000));
    ins("post", 2, Integer(ago(1) / 1000));
    ins("post", 3, Null);
    ins("post", 4, Integer(-5));
    ins("post", 5, Blob(vec![1]));
    ins("note", 1, Text(iso(ago(40))));
    ins("note", 2, Text(iso(ago(1))));
    ins("note", 3, Null);
    ins("note", 4, Text("last tuesday".into()));
    ins("note", 5, Text("2024-99-99".into()));
    // A date-only value and a SQLite datetime('now') style value, both old.
    ins("note", 6, Text("2001-10-01".into()));
    ins("note", 7, Text("2020-02-29 23:59:59".into()));
    db.exec("INSERT INTO untouched VALUES (1, 'x')");

    let report = db.run(&settings(EventsConfig::default()));

    assert_eq!(db.ids("item"), [2, 3, 4, 5]);
    assert_eq!(db.ids("post"), [2, 3, 4, 5]);
    assert_eq!(db.ids("note"), [2, 3, 4, 5]);
    assert_eq!(db.count("untouched"), 1);
    for (name, deleted) in [("item", 1), ("post", 1), ("note", 3)] {
        let t = table(&report, Event::SoftDeleteCleanup, name);
        assert_eq!(
            (t.deleted, t.unreadable, t.error.as_deref()),
            (deleted, 2, None),
            "{name}"
        );
        assert_eq!(t.column, "deleted_at");
        assert_eq!(t.retention_ms, Some(30 * DAY_MS as u64));
        assert_eq!(t.retention_from, Some(RetentionSource::Default));
    }
    assert_eq!(report.tables.len(), 3, "only tables with the column");
    assert_eq!(
        (report.deleted, report.unreadable, report.errors),
        (5, 6, 0)
    );
    assert!(report.run_id.is_some() && report.log_error.is_none());

    // Nothing left to do: a second run deletes nothing and still counts.
    let again = db.run(&settings(EventsConfig::default()));
    assert_eq!((again.deleted, again.unreadable), (0, 6));
}

#[test]
fn config_beats_annotation_beats_default() {
    let db = Db::new(
        "CREATE TABLE by_default (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE by_annotation (
             id INTEGER PRIMARY KEY,
             deleted_at BIGINT -- elsinore:retention=7d
         );
         CREATE TABLE by_config (
             id INTEGER PRIMARY KEY,
             deleted_at BIGINT -- elsinore:retention=7d
         );
         CREATE TABLE opted_out (id INTEGER PRIMARY KEY, deleted_at BIGINT /* elsinore:retention=1d */);
         CREATE TABLE bad_annotation (id INTEGER PRIMARY KEY, deleted_at BIGINT -- elsinore:retention=weekly
         );",
    );
    for table in [
        "by_default",
        "by_annotation",
        "by_config",
        "opted_out",
        "bad_annotation",
    ] {
        for (id, days) in [(1, 2), (2, 10), (3, 40), (4, 100)] {
            db.conn
                .execute(
                    &format!("INSERT INTO {table} VALUES (?1, ?2)"),
                    [id, ago(days)],
                )
                .unwrap();
        }
    }
    let mut tables = BTreeMap::new();
    let over = |retention: Option<u64>, soft_delete: bool| TableEvents {
        retention: retention.map(|d| Duration::from_secs(d * 86_400)),
        soft_delete,
        session_expiry: true,
    };
    tables.insert("BY_CONFIG".to_owned(), over(Some(30), true));
    tables.insert("opted_out".to_owned(), over(None, false));
    tables.insert("no_such_table".to_owned(), over(Some(1), true));
    let report = db.run(&settings(EventsConfig {
        retention: Duration::from_secs(60 * 86_400),
        tables,
        ..EventsConfig::default()
    }));

    assert_eq!(db.ids("by_default"), [1, 2, 3], "default 60d");
    assert_eq!(db.ids("by_annotation"), [1], "annotation 7d");
    assert_eq!(
        db.ids("by_config"),
        [1, 2],
        "config 30d beats annotation 7d"
    );
    assert_eq!(db.ids("opted_out"), [1, 2, 3, 4], "soft_delete false");
    assert_eq!(
        db.ids("bad_annotation"),
        [1, 2, 3],
        "bad annotation: default"
    );
    let from = |name| table(&report, Event::SoftDeleteCleanup, name).retention_from;
    assert_eq!(from("by_default"), Some(RetentionSource::Default));
    assert_eq!(from("by_annotation"), Some(RetentionSource::Annotation));
    assert_eq!(from("by_config"), Some(RetentionSource::Config));
    assert_eq!(from("bad_annotation"), Some(RetentionSource::Default));
    assert!(!report.tables.iter().any(|t| t.table == "opted_out"));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].table, "opted_out");
    assert_eq!(
        report.skipped[0].reason,
        "config.json events.tables.opted_out.soft_delete is false"
    );
    assert_eq!(
        report.warnings,
        [
            "table bad_annotation: annotation elsinore:retention=weekly: invalid duration \"weekly\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\"); using the default retention",
            "config.json events.tables.no_such_table: no table of that name in the database",
        ]
    );
}

#[test]
fn session_expiry_deletes_what_has_expired_in_rowid_and_without_rowid_tables() {
    let db = Db::new(
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at INTEGER);
         CREATE TABLE tokens (token TEXT PRIMARY KEY, id INTEGER, expires_at TEXT) WITHOUT ROWID;
         CREATE TABLE both_kinds (id INTEGER PRIMARY KEY, deleted_at BIGINT, expires_at BIGINT);",
    );
    let now = now_ms();
    let minute = 60_000;
    let rows = [
        (1, rusqlite::types::Value::Integer(now - minute)), // ms, expired
        (2, rusqlite::types::Value::Integer(now + DAY_MS)), // ms, future
        (3, rusqlite::types::Value::Integer((now - minute) / 1000)), // s, expired
        (4, rusqlite::types::Value::Integer((now + DAY_MS) / 1000)), // s, future
        (5, rusqlite::types::Value::Null),
        (6, rusqlite::types::Value::Text("never".into())),
    ];
    for (id, value) in &rows {
        db.conn
            .execute(
                "INSERT INTO sessions VALUES (?1, ?2)",
                rusqlite::params![id, value],
            )
            .unwrap();
    }
    db.exec(
        "INSERT INTO tokens VALUES
             ('a', 1, datetime('now', '-1 hour')),
             ('b', 2, datetime('now', '+1 hour')),
             ('c', 3, strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-2 days')),
             ('d', 4, NULL)",
    );
    // Expired yesterday but soft-deleted only yesterday: SessionExpiry
    // takes it even though SoftDeleteCleanup would keep it.
    db.conn
        .execute(
            "INSERT INTO both_kinds VALUES (1, ?1, ?1), (2, NULL, ?2)",
            [ago(1), now + DAY_MS],
        )
        .unwrap();

    let report = db.run(&settings(EventsConfig::default()));

    assert_eq!(db.ids("sessions"), [2, 4, 5, 6]);
    assert_eq!(db.ids("tokens"), [2, 4]);
    assert_eq!(db.ids("both_kinds"), [2]);
    let s = table(&report, Event::SessionExpiry, "sessions");
    assert_eq!(
        (s.deleted, s.unreadable, s.column.as_str()),
        (2, 1, "expires_at")
    );
    assert_eq!((s.retention_ms, s.retention_from), (None, None));
    assert!(s.cutoff >= now);
    let t = table(&report, Event::SessionExpiry, "tokens");
    assert_eq!((t.deleted, t.unreadable, t.error.as_deref()), (2, 0, None));
    assert_eq!(
        table(&report, Event::SoftDeleteCleanup, "both_kinds").deleted,
        0
    );
    assert_eq!(
        table(&report, Event::SessionExpiry, "both_kinds").deleted,
        1
    );
    // Soft deletes run first.
    assert_eq!(report.tables[0].event, Event::SoftDeleteCleanup);
}

#[test]
fn deletes_in_batches_of_batch_rows() {
    let db = Db::new(
        "CREATE TABLE comment (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE pair (a TEXT, b INTEGER, deleted_at BIGINT, PRIMARY KEY (a, b)) WITHOUT ROWID;",
    );
    let old = ago(90);
    for id in 1..=60_i64 {
        // Every sixth row is live, so batches skip over rows they keep.
        let value = (id % 6 != 0).then_some(old);
        db.conn
            .execute(
                "INSERT INTO comment VALUES (?1, ?2)",
                rusqlite::params![id, value],
            )
            .unwrap();
        db.conn
            .execute(
                "INSERT INTO pair VALUES (?1, ?2, ?3)",
                rusqlite::params![format!("k{}", id % 3), id, value],
            )
            .unwrap();
    }
    let report = db.run(&settings(EventsConfig {
        batch: 7,
        ..EventsConfig::default()
    }));
    assert_eq!(
        db.ids("comment"),
        (1..=10).map(|i| i * 6).collect::<Vec<_>>()
    );
    assert_eq!(db.count("pair"), 10);
    for name in ["comment", "pair"] {
        let t = table(&report, Event::SoftDeleteCleanup, name);
        // 50 rows: seven full batches of 7 and one of 1.
        assert_eq!(
            (t.deleted, t.batches, t.error.as_deref()),
            (50, 8, None),
            "{name}"
        );
    }
}

#[test]
fn waits_for_a_handlers_write_transaction_and_loses_nothing() {
    let db = Db::new(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, deleted_at BIGINT, body TEXT);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);",
    );
    for id in 1..=20_i64 {
        db.conn
            .execute(
                "INSERT INTO item VALUES (?1, ?2, 'old')",
                rusqlite::params![id, ago(60)],
            )
            .unwrap();
    }
    db.conn
        .execute("INSERT INTO sessions VALUES (1, ?1)", [ago(1)])
        .unwrap();

    // The "handler" takes the write lock and writes inside it, including
    // a row the run would delete if it could see it.
    let writer = Connection::open(&db.path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer
        .execute(
            "INSERT INTO item VALUES (100, NULL, 'new'), (101, ?1, 'soft-deleted in the tx')",
            [ago(60)],
        )
        .unwrap();
    writer
        .execute("UPDATE item SET body = 'edited' WHERE id = 1", [])
        .unwrap();

    let (busy_tx, busy_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let databases = db.databases.clone();
    let run = std::thread::spawn(move || {
        let mut first = true;
        let mut observe = |progress: Progress<'_>| {
            let Progress::Busy { table, .. } = progress;
            if std::mem::take(&mut first) {
                busy_tx.send(table.to_owned()).unwrap();
                // Hold the run here until the handler has committed.
                go_rx.recv_timeout(WAIT).unwrap();
            }
        };
        run_with(
            &databases,
            &settings(EventsConfig {
                batch: 5,
                ..EventsConfig::default()
            }),
            Trigger::Operator,
            &AtomicBool::new(false),
            &mut observe,
        )
    });
    let blocked_table = busy_rx
        .recv_timeout(WAIT)
        .expect("the run should meet the handler's lock");
    assert_eq!(blocked_table, "item");
    writer.execute_batch("COMMIT").unwrap();
    go_tx.send(()).unwrap();
    let report = run.join().unwrap().unwrap();

    assert_eq!(report.errors, 0, "{report:#?}");
    let item = table(&report, Event::SoftDeleteCleanup, "item");
    assert!(item.busy >= 1);
    // The 20 old rows and the one soft-deleted inside the handler's
    // transaction (committed before the retry) are gone; the handler's new
    // row is there.
    assert_eq!(item.deleted, 21);
    assert_eq!(db.ids("item"), [100]);
    assert_eq!(table(&report, Event::SessionExpiry, "sessions").deleted, 1);
    assert!(report.run_id.is_some());
}

#[test]
fn a_lock_held_through_the_whole_run_is_not_fatal() {
    let db = Db::new(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);
         CREATE TABLE third (id INTEGER PRIMARY KEY, deleted_at BIGINT);",
    );
    db.conn
        .execute("INSERT INTO item VALUES (1, ?1), (2, NULL)", [ago(60)])
        .unwrap();
    db.conn
        .execute("INSERT INTO sessions VALUES (1, ?1)", [ago(1)])
        .unwrap();
    let writer = Connection::open(&db.path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    writer
        .execute("INSERT INTO item VALUES (3, NULL)", [])
        .unwrap();

    let report = db.run(&settings(EventsConfig::default()));
    assert_eq!(report.deleted, 0);
    // Tables with rows to delete waited and were put back; `third` has
    // nothing to delete, which a read finds without the lock.
    assert_eq!(report.errors, 2);
    for name in ["item", "sessions"] {
        let t = report.tables.iter().find(|t| t.table == name).unwrap();
        assert!(
            t.error
                .as_deref()
                .is_some_and(|e| e.starts_with("database busy")),
            "{t:#?}"
        );
        assert_eq!(t.busy, 3, "one attempt per pass");
    }
    let third = table(&report, Event::SoftDeleteCleanup, "third");
    assert_eq!((third.error.as_deref(), third.busy), (None, 0));
    // The run log is in the state database, which the handler's lock on
    // the shared one does not hold up.
    assert!(report.run_id.is_some(), "{report:#?}");
    assert!(report.log_error.is_none());

    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(db.ids("item"), [1, 2, 3]);
    let report = db.run(&settings(EventsConfig::default()));
    assert_eq!((report.deleted, report.errors), (2, 0));
    assert_eq!(db.ids("item"), [2, 3]);
}

#[test]
fn a_failing_table_does_not_stop_the_others_and_foreign_keys_are_respected() {
    let db = Db::new(
        "CREATE TABLE a_broken (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE parent (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id));
         CREATE TABLE z_fine (id INTEGER PRIMARY KEY, deleted_at BIGINT);",
    );
    for table in ["a_broken", "parent", "z_fine"] {
        for id in 1..=3 {
            db.conn
                .execute(
                    &format!("INSERT INTO {table} VALUES (?1, ?2)"),
                    [id, ago(60)],
                )
                .unwrap();
        }
    }
    db.exec("INSERT INTO child VALUES (1, 2)");
    // A trigger that cannot run: every delete on a_broken fails.
    db.exec(
        "CREATE TABLE gone (x);
         CREATE TRIGGER a_broken_audit BEFORE DELETE ON a_broken
             BEGIN INSERT INTO gone VALUES (old.id); END;
         DROP TABLE gone;",
    );

    let report = db.run(&settings(EventsConfig::default()));

    let broken = table(&report, Event::SoftDeleteCleanup, "a_broken");
    assert!(
        broken
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no such table")),
        "{broken:#?}"
    );
    assert_eq!(db.count("a_broken"), 3);
    let parent = table(&report, Event::SoftDeleteCleanup, "parent");
    assert_eq!(
        (parent.deleted, parent.blocked, parent.error.as_deref()),
        (2, 1, None)
    );
    assert_eq!(db.ids("parent"), [2], "the referenced row stays");
    assert_eq!(
        table(&report, Event::SoftDeleteCleanup, "z_fine").deleted,
        3
    );
    assert_eq!((report.errors, report.blocked), (1, 1));
}

#[test]
fn elsinores_own_tables_are_never_touched() {
    let db = Db::new(
        "CREATE TABLE elsinore_scratch (id INTEGER PRIMARY KEY, deleted_at BIGINT, expires_at BIGINT);
         CREATE TABLE host_secrets_archive (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE host_secrets (host, project, key_hash, key_prefix, created_at, revoked_at);
         CREATE TABLE mine (id INTEGER PRIMARY KEY, deleted_at BIGINT);",
    );
    let old = ago(400);
    db.conn
        .execute("INSERT INTO elsinore_scratch VALUES (1, ?1, ?1)", [old])
        .unwrap();
    db.conn
        .execute("INSERT INTO host_secrets_archive VALUES (1, ?1)", [old])
        .unwrap();
    db.conn
        .execute(
            "INSERT INTO host_secrets (host, project, key_hash, key_prefix, created_at, revoked_at)
             VALUES ('a.test', 'a', x'00', 'k', ?1, ?1)",
            [old],
        )
        .unwrap();
    db.conn
        .execute("INSERT INTO mine VALUES (1, ?1)", [old])
        .unwrap();
    // An old run log row must outlive the run too (it is pruned only by age
    // of its own start, 30 days, and this one is recent).
    let report = db.run(&settings(EventsConfig::default()));
    assert_eq!(db.count("elsinore_scratch"), 1);
    assert_eq!(db.count("host_secrets_archive"), 1);
    assert_eq!(db.count("host_secrets"), 1);
    assert_eq!(db.count("mine"), 0);
    let names: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["mine"]);
    // The run was logged in the state database, not in the shared one.
    let state = Connection::open(&db.databases.state).unwrap();
    let logged: i64 = state
        .query_row("SELECT count(*) FROM elsinore_event_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 1);
    let shared_log: i64 = db
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'elsinore_event_runs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(shared_log, 0);
}

#[test]
fn the_run_log_records_every_table_of_every_run() {
    let db = Db::new(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);",
    );
    db.conn
        .execute("INSERT INTO item VALUES (1, ?1), (2, 'bad')", [ago(60)])
        .unwrap();
    db.conn
        .execute("INSERT INTO sessions VALUES (1, ?1), (2, ?1)", [ago(1)])
        .unwrap();
    let before = now_ms();
    let first = db.run(&settings(EventsConfig::default()));
    let second = run_once(
        &db.databases,
        &settings(EventsConfig::default()),
        Trigger::Schedule,
    )
    .unwrap();
    assert_eq!(second.run_id, first.run_id.map(|id| id + 1));

    let runs = recent_runs(&db.databases.state, 10).unwrap();
    assert_eq!(runs.len(), 2);
    let (newest, oldest) = (&runs[0], &runs[1]);
    assert_eq!(Some(newest.run_id), second.run_id);
    assert_eq!(newest.trigger, "schedule");
    assert_eq!(oldest.trigger, "cli");
    assert_eq!(
        (oldest.deleted, oldest.unreadable, oldest.errors),
        (3, 1, 0)
    );
    assert_eq!((newest.deleted, newest.unreadable), (0, 1));
    let rows: Vec<(&str, &str, i64, i64)> = oldest
        .tables
        .iter()
        .map(|t| (t.event.as_str(), t.table.as_str(), t.deleted, t.unreadable))
        .collect();
    assert_eq!(
        rows,
        [
            ("SoftDeleteCleanup", "item", 1, 1),
            ("SessionExpiry", "sessions", 2, 0),
        ]
    );
    for t in &oldest.tables {
        assert!(t.started_at >= before && t.finished_at >= t.started_at);
        assert_eq!(t.error, None);
    }
    assert_eq!(recent_runs(&db.databases.state, 1).unwrap().len(), 1);

    // The JSON shape documented in docs/events.md.
    let json = serde_json::to_value(&runs[1]).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "blocked",
            "deleted",
            "errors",
            "finished_at",
            "run_id",
            "started_at",
            "tables",
            "trigger",
            "unreadable"
        ]
    );
    let report = serde_json::to_value(&first).unwrap();
    assert_eq!(report["tables"][0]["event"], "SoftDeleteCleanup");
    assert_eq!(report["tables"][0]["retention_from"], "default");
    assert_eq!(report["trigger"], "cli");
}

#[test]
fn a_missing_database_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let databases = Databases::new(&path, &dir.path().join("state.db"));
    let err = run_once(&databases, &Settings::default(), Trigger::Cli).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(!path.exists());
    assert!(matches!(
        recent_runs(&databases.state, 5),
        Err(Error::Missing { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_runs_on_request_and_on_its_interval_then_stops() {
    let db = Db::new("CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);");
    db.conn
        .execute("INSERT INTO sessions VALUES (1, ?1)", [ago(1)])
        .unwrap();

    // Off: only on request.
    let off = EventScheduler::start(
        &db.databases,
        settings(EventsConfig {
            interval: None,
            ..EventsConfig::default()
        }),
    )
    .unwrap();
    let report = off.run_now().await.unwrap();
    assert_eq!((report.trigger, report.deleted), (Trigger::Operator, 1));
    let status = off.status(10).await.unwrap();
    assert!(!status.scheduled && status.next_run_at.is_none() && !status.running);
    assert_eq!(status.runs.len(), 1);
    assert_eq!(status.runs[0].trigger, "operator");
    off.shutdown().await;
    off.shutdown().await;
    assert!(matches!(off.run_now().await, Err(Error::Stopped)));

    // Every 100 ms: scheduled runs show up in the run log.
    db.conn
        .execute("INSERT INTO sessions VALUES (2, ?1)", [ago(1)])
        .unwrap();
    let every = EventScheduler::start(
        &db.databases,
        settings(EventsConfig {
            interval: Some(Duration::from_millis(100)),
            ..EventsConfig::default()
        }),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = every.status(50).await.unwrap();
        if status
            .runs
            .iter()
            .any(|r| r.trigger == "schedule" && r.deleted == 1)
        {
            assert!(status.scheduled);
            assert_eq!(status.interval_ms, Some(100));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled run within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(db.count("sessions"), 0);
    every.shutdown().await;
}

#[test]
fn cancelling_stops_the_run_after_the_current_batch() {
    let db = Db::new(
        "CREATE TABLE item (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);",
    );
    db.conn
        .execute("INSERT INTO item VALUES (1, ?1)", [ago(60)])
        .unwrap();
    db.conn
        .execute("INSERT INTO sessions VALUES (1, ?1)", [ago(1)])
        .unwrap();
    let writer = Connection::open(&db.path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();

    // Shutdown arrives while the first table waits for the lock.
    let cancel = AtomicBool::new(false);
    let report = run_with(
        &db.databases,
        &settings(EventsConfig::default()),
        Trigger::Schedule,
        &cancel,
        &mut |_| cancel.store(true, std::sync::atomic::Ordering::Relaxed),
    )
    .unwrap();
    writer.execute_batch("COMMIT").unwrap();

    assert!(report.cancelled);
    // The table it had begun is reported as stopped; the one it had not
    // reached is not reported at all.
    assert_eq!(report.tables.len(), 1, "{report:#?}");
    assert_eq!(report.tables[0].table, "item");
    assert_eq!(
        report.tables[0].error.as_deref(),
        Some("stopped: Elsinore is shutting down")
    );
    assert_eq!((db.count("item"), db.count("sessions")), (1, 1));
}
