//! Framework events through the binary: `elsinore events run|list` on a
//! database prepared by hand, and the scheduler inside `elsinore serve`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{binary, echo_manifest, Server, Workspace};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn elsinore(args: &[&str], config: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run elsinore")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ids(conn: &rusqlite::Connection, table: &str) -> Vec<i64> {
    let mut stmt = conn
        .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
        .expect("prepare");
    let ids = stmt.query_map([], |row| row.get(0)).expect("query");
    ids.collect::<rusqlite::Result<_>>().expect("ids")
}

/// Two projects' tables in one file, as their handlers would have made them.
fn prepare_database(path: &Path) -> rusqlite::Connection {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("data dir");
    let conn = rusqlite::Connection::open(path).expect("create db");
    let old = now_ms() - 40 * DAY_MS;
    let recent = now_ms() - DAY_MS;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         -- alpha (a Hamlet project): epoch milliseconds
         CREATE TABLE item (id INTEGER PRIMARY KEY, host TEXT, deleted_at BIGINT);
         CREATE TABLE item_comment (
             id INTEGER PRIMARY KEY,
             deleted_at BIGINT -- elsinore:retention=90d
         );
         CREATE TABLE audit_log (id INTEGER PRIMARY KEY, deleted_at BIGINT);
         CREATE TABLE sessions (id INTEGER PRIMARY KEY, expires_at BIGINT);
         -- beta: epoch seconds and ISO-8601 text
         CREATE TABLE post (id INTEGER PRIMARY KEY, deleted_at INTEGER);
         CREATE TABLE note (id INTEGER PRIMARY KEY, deleted_at TEXT);",
    )
    .expect("schema");
    let insert = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        conn.execute(sql, params).expect(sql);
    };
    // id 1 old, 2 recent, 3 live (NULL), 4 unreadable.
    insert(
        "INSERT INTO item VALUES (1, 'a.test', ?1), (2, 'a.test', ?2), (3, 'a.test', NULL), (4, 'a.test', 'n/a')",
        &[&old, &recent],
    );
    // 40 days old but kept: the annotation says 90 days, and config.json
    // says 7 days, which wins, so 1 and 2 (10 days old) go.
    insert(
        "INSERT INTO item_comment VALUES (1, ?1), (2, ?2), (3, ?3)",
        &[&old, &(now_ms() - 10 * DAY_MS), &recent],
    );
    insert("INSERT INTO audit_log VALUES (1, ?1)", &[&old]);
    insert(
        "INSERT INTO sessions VALUES (1, ?1), (2, ?2)",
        &[&(now_ms() - 60_000), &(now_ms() + DAY_MS)],
    );
    insert(
        "INSERT INTO post VALUES (1, ?1), (2, ?2), (3, NULL)",
        &[&(old / 1000), &(recent / 1000)],
    );
    conn.execute_batch(
        "INSERT INTO note VALUES
             (1, strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-40 days')),
             (2, datetime('now', '-1 day')),
             (3, 'whenever');",
    )
    .expect("notes");
    conn
}

fn workspace(events: serde_json::Value) -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test"], &echo_manifest());
    ws.project("beta", &["b.test"], &echo_manifest());
    let config = ws.write_config(&json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        // The CLI must not need variables only the server's environment has.
        "projects": [{"path": "alpha", "key_env": "ALPHA_KEY_ONLY_SERVE_HAS"}, "beta"],
        "events": events,
    }));
    (ws, config)
}

#[test]
fn events_run_deletes_prints_counts_and_logs_the_run() {
    let (ws, config) = workspace(json!({
        "interval": "off",
        "tables": {"item_comment": {"retention": "7d"}, "audit_log": {"soft_delete": false}}
    }));
    let conn = prepare_database(&ws.database());

    let output = elsinore(&["events", "run"], &config);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("database: {}", ws.database().display()));
    let expected = [
        "event              table         retention          deleted  unreadable  blocked",
        "SoftDeleteCleanup  item          30d (default)            1           1        0",
        "SoftDeleteCleanup  item_comment  7d (config)              2           0        0",
        "SoftDeleteCleanup  note          30d (default)            1           1        0",
        "SoftDeleteCleanup  post          30d (default)            1           0        0",
        "SessionExpiry      sessions      -                        1           0        0",
        "skipped: SoftDeleteCleanup audit_log: config.json events.tables.audit_log.soft_delete is false",
    ];
    assert_eq!(lines[1..=expected.len()], expected, "{text}");
    let total = lines.last().expect("total line");
    assert!(
        total.starts_with("total: 6 deleted, 2 unreadable, 0 blocked, 0 errors (run 1, "),
        "{total}"
    );

    assert_eq!(ids(&conn, "item"), [2, 3, 4]);
    assert_eq!(ids(&conn, "item_comment"), [3]);
    assert_eq!(ids(&conn, "audit_log"), [1]);
    assert_eq!(ids(&conn, "sessions"), [2]);
    assert_eq!(ids(&conn, "post"), [2, 3]);
    assert_eq!(ids(&conn, "note"), [2, 3]);

    // The run is in the log; --json gives the documented shapes.
    let output = elsinore(&["events", "list"], &config);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.starts_with("run 1 (cli) "), "{text}");
    assert!(
        text.contains("  SoftDeleteCleanup  item_comment: 2 deleted, 0 unreadable, 0 blocked"),
        "{text}"
    );
    let output = elsinore(&["events", "run", "--json"], &config);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["run_id"], 2);
    assert_eq!(report["deleted"], 0);
    assert_eq!(report["trigger"], "cli");
    let output = elsinore(&["events", "list", "--json", "--limit", "5"], &config);
    let runs: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json runs");
    assert_eq!(runs[0]["run_id"], 2);
    assert_eq!(runs[1]["run_id"], 1);
    assert_eq!(runs[1]["deleted"], 6);
    assert_eq!(runs[1]["tables"][0]["event"], "SoftDeleteCleanup");
}

#[test]
fn a_failing_table_is_reported_but_the_run_succeeds() {
    let (ws, config) = workspace(json!({}));
    let conn = prepare_database(&ws.database());
    conn.execute_batch(
        "CREATE TABLE gone (x);
         CREATE TRIGGER item_audit BEFORE DELETE ON item BEGIN INSERT INTO gone VALUES (1); END;
         DROP TABLE gone;",
    )
    .expect("broken trigger");

    let output = elsinore(&["events", "run"], &config);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("error: SoftDeleteCleanup item: no such table: main.gone"),
        "{text}"
    );
    assert!(text.contains(" 1 errors (run 1, "), "{text}");
    assert_eq!(ids(&conn, "item"), [1, 2, 3, 4]);
    assert_eq!(ids(&conn, "post"), [2, 3], "other tables still ran");
}

#[test]
fn events_run_fails_only_when_the_database_cannot_be_opened() {
    let (ws, config) = workspace(json!({}));
    let output = elsinore(&["events", "run"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database not found"), "{stderr}");
    assert!(!ws.database().exists(), "events never create the database");

    std::fs::create_dir_all(ws.database().parent().expect("parent")).expect("dir");
    std::fs::write(
        ws.database(),
        "this is not an SQLite file, not even a little",
    )
    .expect("junk");
    let output = elsinore(&["events", "run"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("file is not a database"), "{stderr}");
}

#[test]
fn serve_runs_the_events_on_its_interval_and_stops_cleanly() {
    let (ws, config) = workspace(json!({"interval": "1s", "batch": 1}));
    let conn = prepare_database(&ws.database());
    let mut server = Server::start_with_env(
        &config,
        &[("ALPHA_KEY_ONLY_SERVE_HAS", "alpha-key-only-serve-has")],
    );
    server.logs.wait_for("events scheduled");
    let line = server.logs.wait_for("events run finished");
    assert!(line.contains("trigger=\"schedule\""), "{line}");
    assert!(line.contains("deleted=5"), "{line}");
    assert_eq!(ids(&conn, "sessions"), [2]);
    assert_eq!(ids(&conn, "audit_log"), Vec::<i64>::new());
    // The run log is in Elsinore's own file, not the shared one.
    let state = rusqlite::Connection::open(ws.state_database()).expect("state db");
    let logged: i64 = state
        .query_row(
            "SELECT count(*) FROM elsinore_event_runs WHERE trigger = 'schedule'",
            [],
            |row| row.get(0),
        )
        .expect("run log");
    assert!(logged >= 6, "one row per (event, table)");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
    server.logs.wait_for("bye");
}

#[tokio::test]
async fn operator_endpoints_run_the_events_and_list_recent_runs() {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test"], &echo_manifest());
    // Scheduled runs are off, so every run below is the operator's.
    let config = ws.config_with(json!(["alpha"]), json!({"events": {"interval": "off"}}));
    let conn = prepare_database(&ws.database());
    let server = Server::start(&config);

    let reply = server.op("POST", "/events/run").send().await;
    assert_eq!(reply.status, http::StatusCode::OK, "{:?}", reply.body);
    let report = reply.json();
    assert_eq!(report["trigger"], "operator");
    let item = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["event"] == "SoftDeleteCleanup" && t["table"] == "item")
        .cloned()
        .expect("item processed");
    assert_eq!(item["deleted"], 1, "{item}");
    assert_eq!(item["unreadable"], 1, "{item}");
    assert_eq!(ids(&conn, "item"), [2, 3, 4]);
    assert_eq!(ids(&conn, "sessions"), [2]);

    let status = server.op("GET", "/events?limit=5").send().await;
    assert_eq!(status.status, http::StatusCode::OK);
    let status = status.json();
    assert_eq!(status["scheduled"], false);
    let runs = status["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{status}");
    assert_eq!(runs[0]["trigger"], "operator");
    assert_eq!(runs[0]["run_id"], report["run_id"]);

    let bad = server.op("GET", "/events?limit=lots").send().await;
    assert_eq!(bad.status, http::StatusCode::BAD_REQUEST);
    let wrong = server.op("GET", "/events/run").send().await;
    assert_eq!(wrong.status, http::StatusCode::METHOD_NOT_ALLOWED);
}
