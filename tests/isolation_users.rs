//! Issue 22, points 2 and 3: each project's handlers run as the project's
//! `user`, share the database through `database_group`, and cannot read
//! Elsinore's secrets (its environment, config.json, another project's
//! key). Two projects, alpha as `nobody` and beta as `daemon` (users every
//! Debian has); the tests that switch users need root and say so when
//! skipped.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{binary, run_cli, Server, Workspace};
use http::StatusCode;
use serde_json::{json, Value};

const ALPHA_KEY: &str = "alpha-secret-key-0123456789";
const BETA_KEY: &str = "beta-inline-key-0123456789";
/// A group every Debian has; the docs suggest a dedicated one.
const DATABASE_GROUP: &str = "users";
const USERS_GID: u32 = 100;

/// A handler that reports who it runs as and tries what a compromised
/// project would: read Elsinore's environment, its config.json, write the
/// shared database.
const PROBE: &str = r#"
import http.server, json, os, sqlite3

def attempt(path):
    try:
        with open(path, "rb") as f:
            return {"read": True, "text": f.read().decode("latin-1")}
    except OSError as err:
        return {"read": False, "error": str(err)}

class Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/whoami":
            body = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
                    "home": os.environ.get("HOME"), "env": dict(os.environ),
                    "project_key": self.headers.get("X-Elsinore-Project-Key")}
        elif self.path == "/environ":
            body = attempt("/proc/%d/environ" % os.getppid())
        elif self.path == "/config":
            body = attempt(os.environ["CONFIG_PATH"])
        elif self.path == "/write":
            conn = sqlite3.connect(os.environ["ELSINORE_DB"], timeout=5)
            conn.execute("CREATE TABLE IF NOT EXISTS isolation_probe (project TEXT)")
            conn.execute("INSERT INTO isolation_probe VALUES (?)", (os.environ["ELSINORE_PROJECT"],))
            conn.commit()
            body = {"rows": conn.execute("SELECT COUNT(*) FROM isolation_probe").fetchone()[0]}
        else:
            body = {"ok": True}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Probe).serve_forever()
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Projects `alpha` and `beta` running the probe, in a workspace other
/// users can pass through (the temp dir is created for root only).
fn workspace() -> Workspace {
    let ws = Workspace::new();
    chmod(ws.path(), 0o755);
    let probe = ws.path().join("probe.py");
    std::fs::write(&probe, PROBE).unwrap();
    chmod(&probe, 0o644);
    let config = ws.path().join("config.json");
    for name in ["alpha", "beta"] {
        let manifest = format!(
            "[[handler]]\nname = \"web\"\ncommand = [\"python3\", {:?}]\nroutes = [\"/\"]\nready = \"/health\"\nenv = {{ CONFIG_PATH = {:?} }}\n",
            probe.display().to_string(),
            config.display().to_string(),
        );
        let dir = ws.project(name, &[&format!("{name}.test")], &manifest);
        chmod(&dir, 0o755);
    }
    ws
}

async fn get(server: &Server, host: &str, path: &str) -> Value {
    let reply = server.get(host, path).send().await;
    assert_eq!(reply.status, StatusCode::OK, "{host}{path}: {reply:?}");
    reply.json()
}

#[tokio::test]
async fn handlers_run_as_their_project_users_and_share_the_database_through_its_group() {
    if !is_root() {
        eprintln!("skipped: switching handlers to other users needs root (CI runs as root)");
        return;
    }
    let ws = workspace();
    let config = ws.config_with(
        json!([
            {"path": "alpha", "user": "nobody", "key_env": "ALPHA_KEY"},
            {"path": "beta", "user": "daemon", "key": BETA_KEY},
        ]),
        json!({"database_group": DATABASE_GROUP}),
    );
    chmod(&config, 0o600);
    let server = Server::start_with_env(&config, &[("ALPHA_KEY", ALPHA_KEY)]);

    let alpha = get(&server, "alpha.test", "/whoami").await;
    assert_eq!(alpha["uid"], 65534, "alpha runs as nobody: {alpha}");
    assert_eq!(alpha["gid"], 65534, "nobody's own group: {alpha}");
    assert_eq!(alpha["home"], "/nonexistent", "nobody's HOME: {alpha}");
    let groups: Vec<u64> = serde_json::from_value(alpha["groups"].clone()).unwrap();
    assert!(
        groups.contains(&u64::from(USERS_GID)),
        "database_group is a supplementary group: {groups:?}"
    );
    let beta = get(&server, "beta.test", "/whoami").await;
    assert_eq!(
        (&beta["uid"], &beta["gid"]),
        (&json!(1), &json!(1)),
        "{beta}"
    );
    assert_eq!(beta["home"], "/usr/sbin", "daemon's HOME: {beta}");

    // Each gets its own key as a header, and no key in its environment.
    assert_eq!(alpha["project_key"], ALPHA_KEY);
    assert_eq!(beta["project_key"], BETA_KEY);
    for (who, seen) in [("alpha", &alpha), ("beta", &beta)] {
        let env = seen["env"].to_string();
        assert!(seen["env"].get("ALPHA_KEY").is_none(), "{who}: {env}");
        assert!(
            !env.contains(ALPHA_KEY) && !env.contains(BETA_KEY),
            "{who}: {env}"
        );
    }

    // The attacks: Elsinore's environment (beta's key_env would be there)
    // and config.json (beta's inline key).
    for host in ["alpha.test", "beta.test"] {
        let environ = get(&server, host, "/environ").await;
        assert_eq!(
            environ["read"], false,
            "{host} read Elsinore's environ: {environ}"
        );
        let file = get(&server, host, "/config").await;
        assert_eq!(file["read"], false, "{host} read config.json: {file}");
    }

    // Both users write the one database; its files are root:users 0660.
    assert_eq!(get(&server, "alpha.test", "/write").await["rows"], 1);
    assert_eq!(get(&server, "beta.test", "/write").await["rows"], 2);
    let db = ws.database();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", db.display());
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, USERS_GID, 0o660),
            "{file}"
        );
    }
}

#[tokio::test]
async fn a_handler_of_elsinores_own_user_cannot_read_its_environment() {
    if !is_root() {
        eprintln!("skipped: running Elsinore as another user needs root (CI runs as root)");
        return;
    }
    // Elsinore and its handlers as nobody: same user, so only
    // non-dumpability keeps /proc/<pid>/environ closed.
    let ws = workspace();
    let config = ws.config(json!([{"path": "alpha", "key_env": "ALPHA_KEY"}]));
    chmod(&config, 0o644);
    std::fs::create_dir(ws.path().join("data")).unwrap();
    std::os::unix::fs::chown(ws.path().join("data"), Some(65534), None).unwrap();
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            binary(),
        ])
        .args(["serve", "--config"])
        .arg(&config)
        .env("ALPHA_KEY", ALPHA_KEY);
    let server = Server::start_command(command);

    let seen = get(&server, "alpha.test", "/whoami").await;
    assert_eq!(seen["uid"], 65534, "{seen}");
    let environ = get(&server, "alpha.test", "/environ").await;
    assert_eq!(
        environ["read"], false,
        "a same-user handler read Elsinore's environ: {environ}"
    );
    assert!(
        environ["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Permission denied"),
        "{environ}"
    );
}

#[test]
fn user_while_not_root_is_refused_by_check() {
    if !is_root() {
        eprintln!("skipped: the test runs check as nobody through setpriv, which needs root");
        return;
    }
    let ws = workspace();
    let config = ws.config(json!(["alpha", {"path": "beta", "user": "daemon"}]));
    chmod(&config, 0o644);
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            binary(),
        ])
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check accepted it: {stderr}");
    assert!(
        stderr.contains("projects[1].user: handlers can run as \"daemon\" only when Elsinore runs as root (it runs as uid 65534)"),
        "{stderr}"
    );
}

#[test]
fn check_warns_about_inline_keys_in_a_readable_config() {
    let ws = workspace();
    let config = ws.config(json!([{"path": "alpha", "key": ALPHA_KEY}]));
    let warning = "holds project keys (projects[0].key) and is readable by every user (mode 644): run chmod 600";
    chmod(&config, 0o644);
    let out = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(warning), "{stdout}");
    assert!(
        !stdout.contains(ALPHA_KEY),
        "the key is never printed: {stdout}"
    );

    chmod(&config, 0o600);
    let out = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("holds project keys"), "{stdout}");
}
