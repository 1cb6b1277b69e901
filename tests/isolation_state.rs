//! Issue 22, point 1: Elsinore's state (host keys, audit log, event runs)
//! lives in its own file, `state_database`, never given to handlers.
//!
//! Two projects: alpha's handler runs the attack from the issue (an
//! `INSERT INTO host_secrets` for beta's host on the file it gets as
//! `ELSINORE_DB`); beta's handler (the echo fixture) reports the
//! `X-Elsinore-Auth` it is given. And the upgrade: a shared database laid
//! out the earlier way is moved to the state file on the first start.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{auth_seen, echo_manifest, eventually, run_cli, Server, Workspace};
use http::StatusCode;
use serde_json::json;

/// A key of the right shape that nobody made through Elsinore.
const FORGED: &str = "ehk_FORGEDFORGEDFORGEDFORGEDFORGEDFORGEDFORGED";
const BETA_PROJECT_KEY: &str = "beta-project-key-0123456789";

/// alpha's handler: on `/attack` it writes a host key for beta's host into
/// whatever `host_secrets` it can reach in `ELSINORE_DB` (creating the
/// table with Elsinore's old schema when there is none), as an SQL
/// injection would.
const ATTACKER: &str = r#"
import hashlib, json, os, sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA = """CREATE TABLE IF NOT EXISTS host_secrets (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, project TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '', key_hash BLOB NOT NULL UNIQUE, key_prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL, revoked_at INTEGER, grace_until INTEGER)"""
INSERT = """INSERT INTO host_secrets (host, project, label, key_hash, key_prefix, created_at)
            VALUES ('b.test', 'beta', 'forged', ?, 'ehk_FORGEDFO', 0)"""

def attack():
    digest = hashlib.sha256(os.environ["FORGED_KEY"].encode()).digest()
    conn = sqlite3.connect(os.environ["ELSINORE_DB"], timeout=5)
    result = {}
    try:
        conn.execute(INSERT, (digest,))
        result["existing_table"] = "inserted"
    except sqlite3.Error as err:
        result["existing_table"] = str(err)
        conn.execute(SCHEMA)
        conn.execute(INSERT, (digest,))
        result["own_table"] = "inserted"
    conn.commit()
    return result

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps(attack() if self.path == "/attack" else {"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn two_projects() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    let alpha = ws.project(
        "alpha",
        &["a.test"],
        &format!(
            "[[handler]]\nname = \"web\"\ncommand = [\"python3\", \"attack.py\"]\nroutes = [\"/\"]\nready = \"/health\"\nenv = {{ FORGED_KEY = {FORGED:?} }}\n"
        ),
    );
    std::fs::write(alpha.join("attack.py"), ATTACKER).expect("attacker");
    ws.project("beta", &["b.test"], &echo_manifest());
    let config = ws.config(json!(["alpha", {"path": "beta", "key": BETA_PROJECT_KEY}]));
    (ws, config)
}

/// `elsinore keys create --host b.test`: the new key.
fn create_with_cli(config: &Path) -> String {
    let output = run_cli(&["keys", "create", "--host", "b.test"], config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until the key watcher has reloaded the ring `n` times. (Polling
/// with a key instead would count as failed key checks and be throttled.)
fn wait_for_reloads(server: &Server, n: usize) {
    eventually(&format!("{n} key ring reloads"), || {
        server
            .logs
            .all()
            .iter()
            .filter(|line| line.contains("key ring reloaded"))
            .count()
            >= n
    });
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Tables of the SQLite file at `path` named like Elsinore's own.
fn elsinore_tables(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open db");
    let mut statement = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table'
               AND (lower(name) GLOB 'elsinore_*' OR lower(name) GLOB 'host_secret*')
             ORDER BY name",
        )
        .expect("prepare");
    let names = statement.query_map([], |row| row.get(0)).expect("query");
    names.collect::<rusqlite::Result<_>>().expect("names")
}

/// Key prefixes stored in `host_secrets` of the file at `path`.
fn key_prefixes(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open db");
    let mut statement = conn
        .prepare("SELECT key_prefix FROM host_secrets ORDER BY id")
        .expect("host_secrets");
    let prefixes = statement.query_map([], |row| row.get(0)).expect("query");
    prefixes.collect::<rusqlite::Result<_>>().expect("prefixes")
}

#[tokio::test]
async fn a_key_forged_through_the_shared_database_opens_nothing() {
    let (ws, config) = two_projects();
    let server = Server::start(&config);

    // A real key, made by the operator's CLI in another process, reaches
    // the ring through the watcher.
    let first = create_with_cli(&config);
    wait_for_reloads(&server, 1);
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", &first)]).await,
        "hostAdmin"
    );

    // The attack, then a second real key: once the watcher has reloaded
    // for it, it has seen whatever the attack wrote (the earlier layout
    // gave the forged key hostAdmin this way).
    let reply = server.get("a.test", "/attack").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let attack = reply.json();
    let second = create_with_cli(&config);
    wait_for_reloads(&server, 2);
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", FORGED)]).await,
        "none",
        "a key written into the shared database must open nothing"
    );
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", &second)]).await,
        "hostAdmin"
    );
    // The file alpha's handler gets had no key table: it made its own.
    assert!(
        attack["existing_table"]
            .as_str()
            .is_some_and(|e| e.contains("no such table")),
        "the shared database holds no key table: {attack}"
    );

    // A key made through the admin API lands in the state file too.
    let reply = server
        .get("b.test", "/admin/api/_keys")
        .method("POST")
        .header("x-hamlet-project-key", BETA_PROJECT_KEY)
        .header("content-type", "application/json")
        .body(json!({"label": "api"}).to_string())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let api_prefix = reply.json()["prefix"]
        .as_str()
        .expect("prefix in body")
        .to_owned();
    let state = key_prefixes(&ws.state_database());
    assert_eq!(
        state,
        [&first[..12], &second[..12], &api_prefix],
        "the CLI's and the API's keys"
    );
    // The shared file holds only what the handler made, which nobody reads.
    assert_eq!(key_prefixes(&ws.database()), ["ehk_FORGEDFO"]);

    // The state file and its WAL files (present while Elsinore runs) are
    // private: 0600, whatever the umask.
    let state_db = ws.state_database();
    for file in [
        state_db.clone(),
        sidecar(&state_db, "-wal"),
        sidecar(&state_db, "-shm"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A restart neither imports the handler's table nor refuses to start:
    // it names it in a warning, and the forged key still opens nothing.
    let mut server = server;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let server = Server::start(&config);
    let warning = server
        .logs
        .wait_for("the shared database holds tables named like Elsinore's");
    assert!(warning.contains("host_secrets"), "{warning}");
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", FORGED)]).await,
        "none"
    );
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", &second)]).await,
        "hostAdmin"
    );

    // Another OS user (what a project with `user` runs as) cannot open it.
    let root = std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0);
    if root {
        let output = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('SELECT * FROM host_secrets').fetchall()",
            ])
            .arg(&state_db)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3 as nobody");
        assert!(!output.status.success(), "nobody read the state database");
    } else {
        eprintln!("skipped the other-user check: needs root");
    }
}

/// A shared database the way an earlier Elsinore left it: its three
/// migrations applied there and recorded, a host key for beta.test, an
/// audit row, an event run, and a project's own table.
fn earlier_layout(path: &Path, key: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("data dir");
    let conn = rusqlite::Connection::open(path).expect("open db");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE elsinore_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL);
         INSERT INTO elsinore_migrations VALUES
             (1, 'host_secrets', 1700000000000),
             (2, 'key_rotation_grace_and_audit', 1700000000001),
             (3, 'elsinore_event_runs', 1700000000002);
         CREATE TABLE host_secrets (
             id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, project TEXT NOT NULL,
             label TEXT NOT NULL DEFAULT '', key_hash BLOB NOT NULL UNIQUE,
             key_prefix TEXT NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER,
             grace_until INTEGER);
         CREATE INDEX host_secrets_by_host ON host_secrets (host, revoked_at);
         CREATE TABLE elsinore_audit (
             id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, host TEXT NOT NULL,
             project TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, key_id INTEGER,
             key_prefix TEXT, client TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
         CREATE INDEX elsinore_audit_by_host ON elsinore_audit (host, at);
         CREATE TABLE elsinore_event_runs (
             id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL,
             trigger TEXT NOT NULL, event TEXT NOT NULL, table_name TEXT NOT NULL,
             started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,
             rows_deleted INTEGER NOT NULL, unreadable INTEGER NOT NULL,
             blocked INTEGER NOT NULL, error TEXT);
         CREATE INDEX elsinore_event_runs_by_run ON elsinore_event_runs (run_id);
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO notes (body) VALUES ('a project''s row');",
    )
    .expect("earlier schema");
    let now = elsinore_keys::now_ms();
    conn.execute(
        "INSERT INTO host_secrets (id, host, project, label, key_hash, key_prefix, created_at)
         VALUES (5, 'b.test', 'beta', 'from before', ?1, ?2, ?3)",
        rusqlite::params![&elsinore_keys::KeyHash::of(key).0[..], &key[..12], now],
    )
    .expect("key");
    conn.execute(
        "INSERT INTO elsinore_audit (at, host, project, actor, action, key_id, key_prefix, client, detail)
         VALUES (?1, 'b.test', 'beta', 'operator', 'create', 5, ?2, 'cli', 'label \"from before\"')",
        rusqlite::params![now, &key[..12]],
    )
    .expect("audit");
    conn.execute(
        "INSERT INTO elsinore_event_runs
             (run_id, trigger, event, table_name, started_at, finished_at,
              rows_deleted, unreadable, blocked)
         VALUES (41, 'schedule', 'SessionExpiry', 'sessions', ?1, ?1, 3, 0, 0)",
        [now],
    )
    .expect("run");
}

fn count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .expect("open db")
        .query_row(sql, [], |row| row.get(0))
        .expect(sql)
}

#[tokio::test]
async fn the_earlier_layout_is_moved_once_and_nothing_is_lost() {
    let (ws, _) = two_projects();
    let config = ws.config_with(
        json!(["alpha", {"path": "beta", "key": BETA_PROJECT_KEY}]),
        json!({"events": {"interval": "off"}}),
    );
    let key = "ehk_KEYFROMBEFORETHEUPGRADEKEYFROMBEFORETHEUPG";
    earlier_layout(&ws.database(), key);

    let mut server = Server::start(&config);
    server
        .logs
        .wait_for("Elsinore's state moved from the shared database to the state database");
    // The key still opens its host.
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", key)]).await,
        "hostAdmin"
    );
    // The run is where GET /events reads the run log.
    let reply = server.op("GET", "/events").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let runs = reply.json()["runs"].clone();
    assert_eq!(runs[0]["run_id"], 41, "{runs}");
    assert_eq!(runs[0]["deleted"], 3, "{runs}");
    // The audit row and the key are in the state file, ids kept.
    let state = ws.state_database();
    assert_eq!(
        count(
            &state,
            "SELECT COUNT(*) FROM elsinore_audit WHERE key_id = 5 AND detail = 'label \"from before\"'"
        ),
        1
    );
    assert_eq!(
        count(&state, "SELECT COUNT(*) FROM host_secrets WHERE id = 5"),
        1
    );
    // The shared file keeps only the projects' data.
    assert_eq!(elsinore_tables(&ws.database()), Vec::<String>::new());
    assert_eq!(count(&ws.database(), "SELECT COUNT(*) FROM notes"), 1);

    // A second start moves nothing and duplicates nothing.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let server = Server::start(&config);
    assert_eq!(
        auth_seen(&server, "b.test", "/", &[("x-hamlet-host-key", key)]).await,
        "hostAdmin"
    );
    assert!(
        !server
            .logs
            .all()
            .iter()
            .any(|line| line.contains("moved Elsinore's table")),
        "a second start moves nothing"
    );
    assert_eq!(count(&state, "SELECT COUNT(*) FROM host_secrets"), 1);
    assert_eq!(count(&state, "SELECT COUNT(*) FROM elsinore_audit"), 1);
    assert_eq!(count(&state, "SELECT COUNT(*) FROM elsinore_event_runs"), 1);
    let output = run_cli(&["events", "list", "--json"], &config);
    assert!(output.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(listed[0]["run_id"], 41, "{listed}");
}
