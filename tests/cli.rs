//! `elsinore check` and `elsinore routes` on good and bad configurations.

mod common;

use std::process::{Command, Output};

use common::{binary, echo_manifest, Workspace};
use serde_json::json;

fn run(verb: &str, config: &std::path::Path) -> Output {
    Command::new(binary())
        .args([verb, "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run elsinore")
}

fn text(bytes: &[u8], ws: &Workspace) -> String {
    // Replace the temp dir so messages can be compared exactly.
    let dir = ws
        .path()
        .canonicalize()
        .expect("canonical")
        .display()
        .to_string();
    let raw = ws.path().display().to_string();
    String::from_utf8_lossy(bytes)
        .replace(&dir, "DIR")
        .replace(&raw, "DIR")
}

fn good_workspace() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.project(
        "alpha",
        &["a.test", "*.wild.test", "not a host"],
        &echo_manifest(),
    );
    ws.project("beta", &["b.test", "a.test"], &echo_manifest());
    let config = ws.config(json!(["alpha", {"path": "beta", "key": "beta-project-key"}]));
    (ws, config)
}

#[test]
fn check_prints_the_table_warnings_and_ok() {
    let (ws, config) = good_workspace();
    let output = run("check", &config);
    let stdout = text(&output.stdout, &ws);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr, &ws)
    );
    for expected in [
        "listen:   http://127.0.0.1:0",
        "database: DIR/data/elsinore.db",
        "state:    DIR/data/elsinore-state.db",
        "events:   every 10m, retention 30d, batch 500",
        "limits:   max_header_bytes 64KB, max_body 10MB, max_connections 4096",
        "timeouts: header_read 30s, idle 1m, handler_connect 5s",
        "  alpha (DIR/alpha, 2 hosts, no key)",
        "  beta (DIR/beta, 2 hosts, key set)",
        "routes (3 hosts):",
        "  *.wild.test  → alpha  → web [/]",
        "  a.test       → alpha  → web [/]",
        "  b.test       → beta  → web [/]",
        "  skipped DIR/alpha/hosts/not a host: invalid host \"not a host\": not a DNS name",
        "  host a.test is declared by both alpha and beta; alpha keeps it (first in config.json)",
        "configuration OK",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing line {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("\"k\""), "check must not print keys");
}

#[test]
fn routes_prints_host_project_handlers() {
    let (ws, config) = good_workspace();
    let output = run("routes", &config);
    assert!(output.status.success());
    assert_eq!(
        text(&output.stdout, &ws),
        "*.wild.test  → alpha  → web [/]\na.test       → alpha  → web [/]\nb.test       → beta  → web [/]\n"
    );
}

#[test]
fn check_reports_bad_configs_exactly() {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test"], &echo_manifest());
    let cases: &[(&str, &str)] = &[
        (
            "{\n  \"projects\": [\"alpha\",]\n}",
            "error: DIR/config.json:2:24: trailing comma",
        ),
        (
            r#"{"projects": [{"path": "alpha", "kye": "x"}]}"#,
            "error: DIR/config.json:1:37: projects[0].kye: unknown field `kye`, expected one of `path`, `name`, `key`, `key_env`, `max_body`, `cors_origins`, `cors_credentials`, `public_url`, `user`, `group`, `admin_api`, `forward_host`, `handler_key_env`, `rate_limits`",
        ),
        (
            r#"{"projects": [{"path": "alpha", "key": "a", "key_env": "B"}]}"#,
            "error: DIR/config.json: projects[0]: set either \"key\" or \"key_env\", not both",
        ),
        (
            r#"{"projects": [{"path": "alpha", "key_env": "ELSINORE_TEST_SURELY_UNSET"}]}"#,
            "error: DIR/config.json: projects[0].key_env: environment variable ELSINORE_TEST_SURELY_UNSET is not set",
        ),
        (
            r#"{"projects": ["alpha", {"path": "alpha"}]}"#,
            "error: DIR/config.json: projects[1].name: duplicate project name \"alpha\" (already used by projects[0]); set \"name\" to tell them apart",
        ),
        (
            r#"{"projects": ["missing"]}"#,
            "error: DIR/config.json: projects[0].path: project folder DIR/missing not found (No such file or directory (os error 2))",
        ),
    ];
    for (json, expected) in cases {
        let config = ws.path().join("config.json");
        std::fs::write(&config, json).expect("write config");
        let output = run("check", &config);
        assert!(!output.status.success(), "accepted: {json}");
        assert_eq!(
            text(&output.stderr, &ws).trim_end(),
            *expected,
            "config: {json}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn check_reports_a_broken_project_toml_with_its_line() {
    let ws = Workspace::new();
    ws.project(
        "alpha",
        &["a.test"],
        "[[handler]]\nname = \"web\"\ncomand = [\"python3\"]\n",
    );
    ws.project("beta", &["b.test"], "[[handler]]\nname = \"web\"\n");
    let config = ws.config(json!(["alpha", "beta"]));
    let output = run("check", &config);
    assert!(!output.status.success());
    let stderr = text(&output.stderr, &ws);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "error: DIR/alpha/project.toml:3:1: unknown field `comand`, expected one of `name`, `command`, `url`, `routes`, `ready`, `env`, `start_timeout`, `response_timeout`, `max_concurrent`, `queue`, `queue_timeout`, `reuse_after_body`, `socket`, `idle_stop`, `start`, `listen_fd`",
            "DIR/beta/project.toml: handler[0]: set \"command\" (a process Elsinore runs) or \"url\" (a server already running)",
        ]
    );
}

#[test]
fn serve_refuses_to_start_on_a_bad_config() {
    let ws = Workspace::new();
    let config = ws.path().join("config.json");
    std::fs::write(&config, r#"{"projects": ["nowhere"]}"#).expect("write");
    let output = run("serve", &config);
    assert!(!output.status.success());
    assert!(text(&output.stderr, &ws)
        .contains("projects[0].path: project folder DIR/nowhere not found"));
}

#[test]
fn a_missing_config_file_is_named() {
    let ws = Workspace::new();
    let output = run("check", &ws.path().join("absent.json"));
    assert!(!output.status.success());
    assert_eq!(
        text(&output.stderr, &ws).trim_end(),
        "error: DIR/absent.json: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn check_warns_about_a_program_that_cannot_be_found() {
    let ws = Workspace::new();
    ws.project(
        "typo",
        &["t.test"],
        "[[handler]]\nname = \"web\"\ncommand = [\"pythn3\", \"app.py\"]\n",
    );
    let output = run("check", &ws.config(json!(["typo"])));
    assert!(
        output.status.success(),
        "a missing program is a warning, not an error"
    );
    let stdout = text(&output.stdout, &ws);
    assert!(
        stdout.contains("handler typo/web: program \"pythn3\" not found (relative to DIR/typo or on PATH); it will fail to start"),
        "{stdout}"
    );
}
