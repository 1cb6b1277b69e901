//! The shared database on PostgreSQL (`"database": "postgres://…"`),
//! through the binary against a throwaway cluster: what handlers are told,
//! that no SQLite file appears, the framework events across schemas, the
//! fleet-wide events lock, and a database that goes away.
//!
//! Each test skips (returns early, saying why) when PostgreSQL's server
//! binaries are not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::postgres::Postgres;
use common::{binary, echo_manifest, until, Server, Workspace};
use http::StatusCode;
use serde_json::json;

/// A password trust authentication ignores: it must reach handlers and
/// never a log line or `check`'s output.
const PASSWORD: &str = "s3cret-pw";

/// `url` with [`PASSWORD`] in it.
fn with_password(url: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PASSWORD}@"),
        1,
    )
}

fn workspace(database: &str, events: serde_json::Value) -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test"], &echo_manifest());
    let config = ws.write_config(&json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "database": database,
        "state_database": "data/elsinore-state.db",
        "projects": ["alpha"],
        "events": events,
    }));
    (ws, config)
}

fn elsinore(args: &[&str], config: &Path) -> Output {
    std::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run elsinore")
}

/// `elsinore events run --json`, which must succeed.
fn events_run(config: &Path) -> serde_json::Value {
    let output = elsinore(&["events", "run", "--json"], config);
    assert!(
        output.status.success(),
        "events run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the report is JSON")
}

/// Every file under `dir` whose name starts with `elsinore.db`.
fn sqlite_shared_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with("elsinore.db")
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn handlers_get_the_url_and_no_sqlite_file_is_made() {
    let Some(pg) = Postgres::start() else { return };
    let url = with_password(&pg.create_database("shared"));
    let (ws, config) = workspace(&url, json!({"interval": "off"}));
    let redacted = url.replace(PASSWORD, "***");

    let check = elsinore(&["check"], &config);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check: {text}");
    assert!(text.contains(&format!("database: {redacted}")), "{text}");
    assert!(!text.contains(PASSWORD), "check shows the password: {text}");

    let server = Server::start(&config);
    for name in ["ELSINORE_DB", "DATABASE_URL"] {
        let reply = server
            .get("a.test", &format!("/env?name={name}"))
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["value"], json!(url), "{name}");
    }
    assert_eq!(sqlite_shared_files(ws.path()), Vec::<PathBuf>::new());
    server
        .logs
        .wait_for("shared database (PostgreSQL) reachable");
    let logs = server.logs.all().join("\n");
    assert!(!logs.contains(PASSWORD), "a log line shows the password");
}

/// Two schemas of tables, as two projects' handlers would have made them.
fn prepare(pg: &Postgres, db: &str) {
    pg.psql(
        db,
        "CREATE SCHEMA beta;
         -- timestamptz, default retention (30 days)
         CREATE TABLE public.item (id int PRIMARY KEY, deleted_at timestamptz);
         CREATE INDEX ON public.item (deleted_at);
         INSERT INTO public.item VALUES
             (1, now() - interval '40 days'), (2, now() - interval '1 day'), (3, NULL);
         -- epoch milliseconds, 7 days by its column's comment
         CREATE TABLE public.note (id int PRIMARY KEY, deleted_at bigint);
         COMMENT ON COLUMN public.note.deleted_at IS 'kept a week: elsinore:retention=7d';
         INSERT INTO public.note VALUES
             (1, (extract(epoch FROM now() - interval '10 days') * 1000)::bigint),
             (2, (extract(epoch FROM now() - interval '1 day') * 1000)::bigint),
             (3, 0);
         -- timestamp without time zone (UTC), no primary key, 7 days by the table's comment
         CREATE TABLE beta.post (id int, deleted_at timestamp);
         COMMENT ON TABLE beta.post IS 'elsinore:retention=7d';
         INSERT INTO beta.post VALUES
             (1, (now() - interval '8 days') AT TIME ZONE 'UTC'),
             (2, (now() - interval '1 day') AT TIME ZONE 'UTC');
         -- epoch seconds
         CREATE TABLE beta.sessions (id int PRIMARY KEY, expires_at bigint);
         INSERT INTO beta.sessions VALUES
             (1, extract(epoch FROM now())::bigint - 60),
             (2, extract(epoch FROM now())::bigint + 3600);
         -- a date is midnight UTC
         CREATE TABLE public.visit (id int PRIMARY KEY, expires_at date);
         INSERT INTO public.visit VALUES (1, current_date - 2), (2, current_date + 2);
         -- a row another table still points at stays
         CREATE TABLE beta.parent (id int PRIMARY KEY, deleted_at timestamptz);
         CREATE TABLE beta.child (id int, parent_id int REFERENCES beta.parent (id));
         INSERT INTO beta.parent VALUES (1, now() - interval '40 days'), (2, now() - interval '40 days');
         INSERT INTO beta.child VALUES (1, 1);
         -- neither column: untouched
         CREATE TABLE beta.plain (id int, created_at timestamptz);
         INSERT INTO beta.plain VALUES (1, now() - interval '400 days');
         -- a type the events do not read: skipped, with the reason
         CREATE TABLE beta.flags (id int, deleted_at boolean);
         INSERT INTO beta.flags VALUES (1, true);
         -- named like Elsinore's own: never touched
         CREATE TABLE public.elsinore_event_runs (id int, deleted_at timestamptz);
         INSERT INTO public.elsinore_event_runs VALUES (1, now() - interval '400 days');",
    );
}

fn ids(pg: &Postgres, db: &str, table: &str) -> String {
    pg.psql(
        db,
        &format!("SELECT string_agg(id::text, ',' ORDER BY id) FROM {table}"),
    )
}

fn table<'a>(report: &'a serde_json::Value, event: &str, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["event"] == event && t["table"] == name)
        .unwrap_or_else(|| panic!("no {event} {name} in {report:#}"))
}

#[test]
fn events_delete_exactly_the_rows_past_retention_across_schemas() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("shared");
    prepare(&pg, "shared");
    // Batches of one: every table takes several transactions.
    let (_ws, config) = workspace(&url, json!({"interval": "off", "batch": 1}));

    let report = events_run(&config);
    assert_eq!(report["not_run"], json!(null), "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    let item = table(&report, "SoftDeleteCleanup", "public.item");
    assert_eq!(
        (item["deleted"].clone(), item["retention_from"].clone()),
        (json!(1), json!("default"))
    );
    let note = table(&report, "SoftDeleteCleanup", "public.note");
    assert_eq!(note["retention_from"], "annotation", "{note:#}");
    assert_eq!(
        (note["deleted"].clone(), note["unreadable"].clone()),
        (json!(1), json!(1))
    );
    let post = table(&report, "SoftDeleteCleanup", "beta.post");
    assert_eq!(
        (post["deleted"].clone(), post["retention_from"].clone()),
        (json!(1), json!("annotation"))
    );
    assert_eq!(
        table(&report, "SessionExpiry", "beta.sessions")["deleted"],
        1
    );
    let parent = table(&report, "SoftDeleteCleanup", "beta.parent");
    assert_eq!(
        (parent["deleted"].clone(), parent["blocked"].clone()),
        (json!(1), json!(1))
    );
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains("beta.flags") && skipped.contains("boolean"),
        "{skipped}"
    );

    assert_eq!(ids(&pg, "shared", "public.item"), "2,3");
    assert_eq!(ids(&pg, "shared", "public.note"), "2,3");
    assert_eq!(ids(&pg, "shared", "beta.post"), "2");
    assert_eq!(ids(&pg, "shared", "beta.sessions"), "2");
    assert_eq!(ids(&pg, "shared", "public.visit"), "2");
    assert_eq!(ids(&pg, "shared", "beta.parent"), "1");
    assert_eq!(ids(&pg, "shared", "beta.plain"), "1");
    assert_eq!(ids(&pg, "shared", "beta.flags"), "1");
    assert_eq!(ids(&pg, "shared", "public.elsinore_event_runs"), "1");
    assert_eq!(report["deleted"], 6, "{report:#}");

    // Once: a second run finds nothing more to delete.
    let again = events_run(&config);
    assert_eq!(again["deleted"], 0, "{again:#}");
    // Logged in the state database (SQLite here), like any run.
    let list = elsinore(&["events", "list"], &config);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("run 1 (cli)") && text.contains("6 deleted"),
        "{text}"
    );
}

#[test]
fn a_pass_is_skipped_while_another_front_door_holds_the_events_lock() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("shared");
    prepare(&pg, "shared");
    let (_ws, config) = workspace(&url, json!({"interval": "off"}));

    // Another front door's pass, in progress: its session holds the lock.
    let mut other = elsinore_postgres::postgres::Client::connect(
        &format!("{url}?application_name=other-front-door"),
        elsinore_postgres::postgres::NoTls,
    )
    .expect("connect");
    let locked: bool = other
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&elsinore_events::EVENTS_LOCK],
        )
        .expect("lock")
        .get(0);
    assert!(locked);

    let report = events_run(&config);
    let why = report["not_run"]
        .as_str()
        .unwrap_or_else(|| panic!("ran: {report:#}"));
    assert!(
        why.contains("another front door") && why.contains("other-front-door"),
        "{why}"
    );
    assert_eq!(report["tables"], json!([]), "{report:#}");
    assert_eq!(
        ids(&pg, "shared", "public.item"),
        "1,2,3",
        "rows deleted without the lock"
    );
    let text = String::from_utf8_lossy(&elsinore(&["events", "run"], &config).stdout).into_owned();
    assert!(text.contains("not run: another front door"), "{text}");

    // Its pass over, the lock is free: this one runs.
    drop(other);
    let deadline = std::time::Instant::now() + common::WAIT;
    let report = loop {
        let report = events_run(&config);
        if report["not_run"].is_null() || std::time::Instant::now() > deadline {
            break report;
        }
        // The server notices the closed session a moment later.
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(report["not_run"], json!(null), "{report:#}");
    assert_eq!(ids(&pg, "shared", "public.item"), "2,3");
}

#[tokio::test]
async fn a_database_that_goes_away_leaves_the_front_door_serving_and_events_catch_up() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = pg.create_database("shared");
    prepare(&pg, "shared");
    let (ws, config) = workspace(&url, json!({"interval": "off"}));

    // Down before the front door even starts: it starts and serves anyway.
    pg.stop();
    let server = Server::start(&config);
    server.logs.wait_for("shared database unreachable at start");
    let reply = server.get("a.test", "/").send().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "served while PostgreSQL is down"
    );
    let reply = server.op("POST", "/events/run").send().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = reply.json().to_string();
    assert!(
        error.contains("shared database") && error.contains("cannot connect"),
        "{error}"
    );
    // The schedule and past runs (in the state database) still answer.
    let reply = server.op("GET", "/events").send().await;
    assert_eq!(reply.status, StatusCode::OK);

    // Back: the next run does the work.
    pg.restart();
    let reply = server.op("POST", "/events/run").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
    assert_eq!(reply.json()["deleted"], 6, "{:#}", reply.json());
    assert_eq!(ids(&pg, "shared", "public.item"), "2,3");

    // And it goes away while serving: requests go on.
    pg.stop();
    let reply = server.get("a.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    until("the events run reports the database gone", || async {
        server.op("POST", "/events/run").send().await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(sqlite_shared_files(ws.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn two_front_doors_on_one_database_delete_the_rows_once() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_database("shared");
    prepare(&pg, "shared");
    // Two front doors of one fleet: one project tree each, one database.
    let (_ws_a, config_a) = workspace(&url, json!({"interval": "off", "batch": 1}));
    let (_ws_b, config_b) = workspace(&url, json!({"interval": "off", "batch": 1}));
    let (a, b) = (Server::start(&config_a), Server::start(&config_b));

    let (ran_a, ran_b) = tokio::join!(
        a.op("POST", "/events/run").send(),
        b.op("POST", "/events/run").send()
    );
    let mut deleted = 0;
    for reply in [ran_a, ran_b] {
        assert_eq!(reply.status, StatusCode::OK);
        let report = reply.json();
        assert_eq!(report["errors"], 0, "{report:#}");
        deleted += report["deleted"].as_u64().expect("deleted");
    }
    assert_eq!(deleted, 6, "each row deleted once, by one of them");
    assert_eq!(ids(&pg, "shared", "public.item"), "2,3");
    assert_eq!(ids(&pg, "shared", "beta.sessions"), "2");
    // Both keep serving their hosts.
    for server in [&a, &b] {
        assert_eq!(
            server.get("a.test", "/").send().await.status,
            StatusCode::OK
        );
    }
}

/// libpq's form for a server on this machine, its Unix socket's folder as
/// `?host=`, is accepted by config.json's check and reached (over the
/// socket, where TLS does not apply).
#[test]
fn a_unix_socket_url_is_accepted_and_reached() {
    let Some(pg) = Postgres::start() else { return };
    let url = elsinore_postgres::PostgresUrl::parse(&pg.socket_url())
        .unwrap_or_else(|why| panic!("{why}"));
    let mut client =
        elsinore_postgres::connect(&url, "socket test").unwrap_or_else(|err| panic!("{err}"));
    let row = client
        .query_one("SELECT 1::int4", &[])
        .expect("a query over the socket");
    assert_eq!(row.get::<_, i32>(0), 1);
}
