//! Issue 30, part B: Elsinore's state (host keys, audit, host owners) on
//! PostgreSQL, shared by several front doors.
//!
//! Two Elsinore processes on this machine play two front doors: each has
//! its own config folder (its own ports, shared SQLite file and `run/`),
//! both serve the same project folder and share one PostgreSQL state
//! database. Every test skips (returns early, saying why) when no
//! PostgreSQL server can be started here.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::{auth_seen, echo_manifest, eventually, run_cli, Reply, Server, Workspace, WAIT};
use http::StatusCode;
use serde_json::{json, Value};

const ALPHA_KEY: &str = "alpha-project-key-0123456789";
const PROJECT_HEADER: &str = "x-hamlet-project-key";
const HOST_HEADER: &str = "x-hamlet-host-key";
const HOST: &str = "alpha.test";

/// What the issue promises: a change made on one front door is honoured
/// by every other within this.
const FLEET_DELAY: Duration = Duration::from_secs(1);

/// One project folder (`alpha`, host `alpha.test`, the echo handler),
/// served by every front door of the test.
fn project_tree() -> Workspace {
    let ws = Workspace::new();
    ws.project("alpha", &[HOST], &echo_manifest());
    ws
}

/// A front door's config: its own folder `door` (ports 0, its shared
/// SQLite file and data folder there), the common project tree, and
/// `state_database` as given (a URL, or a path).
fn door_config(ws: &Workspace, door: &str, state_database: &str) -> PathBuf {
    door_config_with(ws, door, state_database, json!({}))
}

/// [`door_config`] with `extra` top-level keys.
fn door_config_with(ws: &Workspace, door: &str, state_database: &str, extra: Value) -> PathBuf {
    let dir = ws.path().join(door);
    std::fs::create_dir_all(&dir).expect("door folder");
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "state_database": state_database,
        "projects": [{"path": ws.path().join("alpha"), "key": ALPHA_KEY}],
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).expect("json")).expect("config");
    path
}

/// A state database of its own on `pg`, as a URL.
fn state_url(pg: &Postgres, name: &str) -> String {
    format!("{}?sslmode=disable", pg.create_database(name))
}

/// Starts both front doors at the same moment (their migrations race).
fn start_two(a: &Path, b: &Path) -> (Server, Server) {
    let (a, b) = (a.to_owned(), b.to_owned());
    let first = std::thread::spawn(move || Server::start(&a));
    let second = std::thread::spawn(move || Server::start(&b));
    (
        first.join().expect("front door a"),
        second.join().expect("front door b"),
    )
}

async fn create_key(server: &Server, label: &str) -> Reply {
    server
        .get(HOST, "/admin/api/_keys")
        .method("POST")
        .header(PROJECT_HEADER, ALPHA_KEY)
        .header("content-type", "application/json")
        .body(json!({ "label": label }).to_string())
        .send()
        .await
}

async fn created_key(server: &Server, label: &str) -> (i64, String) {
    let reply = create_key(server, label).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    (
        body["id"].as_i64().expect("id"),
        body["key"].as_str().expect("key").to_owned(),
    )
}

/// How many times `server` has reloaded its key ring. (Polling with the
/// key instead would count as failed key checks and be throttled.)
fn reloads(server: &Server) -> usize {
    server
        .logs
        .all()
        .iter()
        .filter(|line| line.contains("key ring reloaded"))
        .count()
}

/// Waits until `server` reloads its ring past `seen`, then checks that
/// `key` gives `want` there; returns the time from `since`.
async fn honoured_after(
    server: &Server,
    seen: usize,
    key: &str,
    want: &str,
    since: Instant,
) -> Duration {
    eventually("the other front door reloads its key ring", || {
        reloads(server) > seen
    });
    assert_eq!(
        auth_seen(server, HOST, "/", &[(HOST_HEADER, key)]).await,
        want
    );
    since.elapsed()
}

async fn readyz(server: &Server) -> (StatusCode, Value) {
    let reply = server.op("GET", "/readyz").send().await;
    (reply.status, reply.json())
}

#[tokio::test]
async fn two_front_doors_share_keys_within_a_second() {
    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "fleet");
    let ws = project_tree();
    let (a, b) = start_two(&door_config(&ws, "a", &url), &door_config(&ws, "b", &url));

    // Both migrated the same database at once: every migration ran once.
    let applied: usize = [&a, &b]
        .iter()
        .map(|s| {
            s.logs
                .all()
                .iter()
                .filter(|l| l.contains("applied migration"))
                .count()
        })
        .sum();
    let versions = pg.psql(
        "fleet",
        "SELECT count(*), count(DISTINCT version) FROM elsinore_migrations",
    );
    assert_eq!(versions, "6|6");
    assert_eq!(applied, 6, "each migration applied by one front door only");

    // A key made through a's admin API opens b within a second.
    let seen = reloads(&b);
    let since = Instant::now();
    let (id, key) = created_key(&a, "fleet").await;
    let took = honoured_after(&b, seen, &key, "hostAdmin", since).await;
    assert!(took < FLEET_DELAY, "b honoured a's new key after {took:?}");
    assert_eq!(
        auth_seen(&a, HOST, "/", &[(HOST_HEADER, &key)]).await,
        "hostAdmin"
    );

    // Revoked on b: refused on a within a second.
    let seen = reloads(&a);
    let since = Instant::now();
    let reply = b
        .get(HOST, &format!("/admin/api/_keys/{id}"))
        .method("DELETE")
        .header(PROJECT_HEADER, ALPHA_KEY)
        .send()
        .await;
    assert!(reply.status.is_success(), "revoke: {}", reply.status);
    let took = honoured_after(&a, seen, &key, "none", since).await;
    assert!(
        took < FLEET_DELAY,
        "a still took b's revoked key after {took:?}"
    );

    // The operator's CLI against the same database reaches both.
    let (seen_a, seen_b) = (reloads(&a), reloads(&b));
    let since = Instant::now();
    let output = run_cli(
        &["keys", "create", "--host", HOST],
        &ws.path().join("a/config.json"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cli_key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    honoured_after(&a, seen_a, &cli_key, "hostAdmin", since).await;
    let took = honoured_after(&b, seen_b, &cli_key, "hostAdmin", since).await;
    assert!(
        took < FLEET_DELAY * 2,
        "the CLI's key reached b after {took:?}"
    );

    // Nothing of Elsinore's state went to a local state file.
    for door in ["a", "b"] {
        let file = ws.path().join(door).join("data/elsinore-state.db");
        if let Ok(conn) = rusqlite::Connection::open(&file) {
            let local: i64 = conn
                .query_row("SELECT count(*) FROM host_secrets", [], |row| row.get(0))
                .unwrap_or(0);
            assert_eq!(local, 0, "{door}: keys stored in the local file");
        }
    }
    let stored = pg.psql("fleet", "SELECT count(*) FROM host_secrets");
    assert_eq!(stored, "2");
    let audit = pg.psql(
        "fleet",
        "SELECT string_agg(action, ',' ORDER BY id) FROM elsinore_audit",
    );
    assert_eq!(audit, "create,revoke,create");
}

#[tokio::test]
async fn an_outage_keeps_serving_refuses_changes_and_catches_up() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = state_url(&pg, "outage");
    let ws = project_tree();
    let (a, b) = start_two(&door_config(&ws, "a", &url), &door_config(&ws, "b", &url));
    let seen = reloads(&b);
    let (_, key) = created_key(&a, "before").await;
    honoured_after(&b, seen, &key, "hostAdmin", Instant::now()).await;
    // Ready once its handler is (the state database has no say in that).
    common::until("a is ready", || async {
        readyz(&a).await.0 == StatusCode::OK
    })
    .await;
    let (_, body) = readyz(&a).await;
    assert_eq!(body["state_database"], "reachable", "{body}");

    pg.stop();

    // Both keep serving with the keys they hold.
    for door in [&a, &b] {
        assert_eq!(
            auth_seen(door, HOST, "/", &[(HOST_HEADER, &key)]).await,
            "hostAdmin"
        );
    }
    // A change cannot be stored: a prompt 503 in the one error shape.
    let started = Instant::now();
    let reply = create_key(&a, "during").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered promptly"
    );
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let error = reply.json();
    assert_eq!(error["error"], "state database unavailable", "{error}");
    assert!(error["request_id"].is_string(), "{error}");
    assert!(reply.header("retry-after").is_some());
    // Still ready for traffic; the detail says what is wrong since when.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = readyz(&b).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let state = body["state_database"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state.starts_with("unreachable since ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never reported the outage: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = b.op("GET", "/").send().await;
    assert!(
        String::from_utf8_lossy(&page.body).contains("PostgreSQL: unreachable since"),
        "status page"
    );

    pg.restart();

    // Back: b notices, and a key made on a reaches b.
    let deadline = Instant::now() + WAIT;
    while readyz(&b).await.1["state_database"] != "reachable" {
        assert!(Instant::now() < deadline, "b never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = reloads(&b);
    let since = Instant::now();
    let (_, after) = created_key(&a, "after").await;
    let took = honoured_after(&b, seen, &after, "hostAdmin", since).await;
    assert!(took < FLEET_DELAY, "after the outage: {took:?}");
}

#[tokio::test]
async fn export_from_sqlite_and_import_into_postgres_keeps_keys_working() {
    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "moved");
    let ws = project_tree();
    let old = door_config(&ws, "old", "data/elsinore-state.db");
    let output = run_cli(
        &["keys", "create", "--host", HOST, "--label", "laptop"],
        &old,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let file = ws.path().join("state.jsonl");
    let file_arg = file.to_str().expect("utf-8 path");
    let output = run_cli(&["state", "export", file_arg], &old);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("exported 1 keys, 1 audit rows"), "{said}");
    let exported = std::fs::read_to_string(&file).expect("export file");
    assert!(
        !exported.contains(&key[4..]),
        "no plaintext key in the export"
    );

    let new = door_config(&ws, "a", &url);
    for (round, want) in [
        (1, "imported 1 keys, 1 audit rows"),
        (2, "imported 0 keys, 0 audit rows"),
    ] {
        let output = run_cli(&["state", "import", file_arg], &new);
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "import {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(said.contains(want), "import {round}: {said}");
    }
    assert_eq!(pg.psql("moved", "SELECT count(*) FROM host_secrets"), "1");

    let server = Server::start(&new);
    assert_eq!(
        auth_seen(&server, HOST, "/", &[(HOST_HEADER, &key)]).await,
        "hostAdmin"
    );
    // The next key made does not take the imported key's id.
    let (id, _) = created_key(&server, "new").await;
    assert!(id > 1, "id {id}");
}

/// The number docs/scaling.md quotes: from sending a key creation to one
/// front door until the other has reloaded its ring, over 30 creations.
#[tokio::test]
async fn refresh_latency_between_two_front_doors() {
    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "latency");
    let ws = project_tree();
    let (a, b) = start_two(&door_config(&ws, "a", &url), &door_config(&ws, "b", &url));
    let mut took = Vec::new();
    for round in 0..30 {
        let seen = reloads(&b);
        let since = Instant::now();
        created_key(&a, &format!("round {round}")).await;
        let deadline = since + WAIT;
        while reloads(&b) <= seen {
            assert!(Instant::now() < deadline, "round {round}: b never reloaded");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took.push(since.elapsed());
    }
    took.sort();
    let (p50, p99) = (took[took.len() / 2], took[took.len() * 99 / 100]);
    eprintln!(
        "refresh latency over {} key creations: p50 {p50:?}, p99 {p99:?}, max {:?}",
        took.len(),
        took[took.len() - 1]
    );
    assert!(p99 < FLEET_DELAY, "p99 {p99:?}");
}

#[tokio::test]
async fn the_event_run_log_is_shared_by_the_fleet() {
    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "runs");
    let ws = project_tree();
    let off = json!({"events": {"interval": "off"}});
    let (a, b) = start_two(
        &door_config_with(&ws, "a", &url, off.clone()),
        &door_config_with(&ws, "b", &url, off),
    );
    // a's own shared database (per machine here) has a table to clean.
    let shared = rusqlite::Connection::open(ws.path().join("a/data/elsinore.db")).expect("open");
    // Deleted 40 days ago (epoch ms), past the 30-day default retention.
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 40 * 86_400_000;
    shared
        .execute_batch(&format!(
            "CREATE TABLE item (id INTEGER PRIMARY KEY, deleted_at BIGINT);
             INSERT INTO item VALUES (1, {old}), (2, NULL);"
        ))
        .expect("table");

    let reply = a.op("POST", "/events/run").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let report = reply.json();
    assert!(report["run_id"].is_i64(), "recorded: {report}");
    assert!(report["log_error"].is_null(), "{report}");

    // b lists a's run: the run log is in the shared state database.
    let status = b.op("GET", "/events").send().await.json();
    let runs = status["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{status}");
    assert_eq!(runs[0]["run_id"], report["run_id"]);
    assert_eq!(runs[0]["deleted"], 1, "{status}");
    assert_eq!(
        pg.psql(
            "runs",
            "SELECT count(*) FROM elsinore_event_runs WHERE table_name = 'item'"
        ),
        "1",
        "SoftDeleteCleanup's row"
    );
}

/// A listening connection whose server side stops answering (a network
/// path gone silent: here its backend is stopped with SIGSTOP) is noticed
/// by the periodic check's time limit and replaced; changes reach the
/// front door again through the new one.
#[tokio::test]
async fn a_silent_listening_connection_is_replaced() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "silent");
    let ws = project_tree();
    let (a, b) = start_two(&door_config(&ws, "a", &url), &door_config(&ws, "b", &url));
    let listeners = pg.psql(
        "silent",
        "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity
          WHERE application_name = 'elsinore state listen'",
    );
    let pids: Vec<Pid> = listeners
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .map(Pid::from_raw)
        .collect();
    assert_eq!(pids.len(), 2, "one listener per front door: {listeners}");
    for &pid in &pids {
        kill(pid, Signal::SIGSTOP).expect("stop a listener's backend");
    }
    let seen = reloads(&b);
    let since = Instant::now();
    let (_, key) = created_key(&a, "while silent").await;
    let took = honoured_after(&b, seen, &key, "hostAdmin", since).await;
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGCONT);
    }
    assert!(
        b.logs
            .all()
            .iter()
            .any(|l| l.contains("lost the change notifications")),
        "b noticed its silent connection"
    );
    // The periodic check (2 s) plus its 2 s limit, then a reconnect.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// docs/security.md: the state database's URL is never in a handler's
/// environment (a handler's SQL injection must not lead to the keys). Read
/// from the handler process's own environment, not one variable's name.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_url_never_reaches_a_handlers_environment() {
    let Some(pg) = Postgres::start() else { return };
    let url = state_url(&pg, "hidden");
    let ws = project_tree();
    let server = Server::start(&door_config(&ws, "a", &url));
    let reply = server.get(HOST, "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let pid = reply.json()["pid"].as_i64().expect("the handler's pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("handler environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("ELSINORE_DB="),
        "read the handler's environment: {environ}"
    );
    let database = url.split('?').next().unwrap_or(&url);
    assert!(
        !environ.contains("hidden") && !environ.contains(database),
        "the state URL reached the handler: {environ}"
    );
}

/// ACME's own listening connection (certificates stored by other front
/// doors) is reported in `/readyz` and `/routes` like the state database:
/// lost with the database, followed again when it is back, never a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_whether_acme_follows_the_fleets_certificates() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = state_url(&pg, "acme_refresh");
    let ws = project_tree();
    // A CA nobody answers at: no order can succeed, none is needed.
    let config = door_config_with(
        &ws,
        "a",
        &url,
        json!({"tls_listen": "127.0.0.1:0", "acme": {"directory": "https://127.0.0.1:9/directory"}}),
    );
    let a = Server::start(&config);
    let refresh = |body: &Value| body["acme_refresh"].as_str().unwrap_or_default().to_owned();
    let until_refresh = |want: &'static str| {
        let a = &a;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let (status, body) = readyz(a).await;
                if refresh(&body).starts_with(want) {
                    return (status, body);
                }
                assert!(
                    Instant::now() < deadline,
                    "acme_refresh never became {want:?}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Ready once its handler is (neither database has a say in that).
    common::until("a is ready", || async {
        readyz(&a).await.0 == StatusCode::OK
    })
    .await;
    until_refresh("reachable").await;
    let routes = a.routes().await;
    assert_eq!(
        routes["acme"]["fleet_refresh"], "reachable",
        "{}",
        routes["acme"]
    );

    pg.stop();
    let (status, body) = until_refresh("unreachable since ").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an ACME refresh outage made /readyz 503: {body}"
    );

    pg.restart();
    until_refresh("reachable").await;
}
