//! `elsinore keys list|create|revoke`: the operator's CLI on the shared
//! database, with and without a running server.

mod common;

use common::{auth_seen, echo_manifest, run_cli, until, Server, Workspace};
use serde_json::json;

fn workspace() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test", "*.wild.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let config = ws.config(json!([{"path": "alpha", "key": "alpha-project-key"}, "beta"]));
    (ws, config)
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn create_list_and_revoke_without_a_server() {
    let (ws, config) = workspace();
    let output = run_cli(
        &[
            "keys",
            "create",
            "--host",
            "Alpha.Test",
            "--label",
            "deploy bot",
        ],
        &config,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let key = stdout(&output).trim().to_owned();
    assert!(
        key.starts_with("ehk_") && key.len() == 47,
        "only the key on stdout: {key:?}"
    );
    assert!(
        stderr(&output).contains("created key 1 (")
            && stderr(&output).contains("for alpha.test (project alpha)"),
        "{}",
        stderr(&output)
    );

    // A host served through a wildcard belongs to its project too.
    let output = run_cli(&["keys", "create", "--host", "shop.wild.test"], &config);
    assert!(output.status.success(), "{}", stderr(&output));

    let output = run_cli(&["keys", "list", "--host", "alpha.test"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    assert!(
        listing.starts_with("keys for alpha.test (project alpha):\n"),
        "{listing}"
    );
    assert!(listing.contains(&key[..12]), "prefix shown: {listing}");
    assert!(!listing.contains(&key[4..]), "never the key: {listing}");
    assert!(
        listing.contains("live") && listing.contains("deploy bot"),
        "{listing}"
    );

    let output = run_cli(&["keys", "revoke", "--id", "1"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("revoked key 1 ("),
        "{}",
        stdout(&output)
    );
    let output = run_cli(&["keys", "revoke", "--id", "1"], &config);
    assert!(output.status.success());
    assert!(
        stdout(&output).contains("already revoked"),
        "{}",
        stdout(&output)
    );
    let listing = stdout(&run_cli(&["keys", "list", "--host", "alpha.test"], &config));
    assert!(listing.contains("revoked"), "{listing}");

    // The CLI's changes are audited as the operator's.
    let conn = rusqlite::Connection::open(ws.state_database()).expect("open db");
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT action, actor, client FROM elsinore_audit ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let expected = [
        ("create", "operator", "cli"),
        ("create", "operator", "cli"),
        ("revoke", "operator", "cli"),
    ];
    let rows: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(rows, expected);

    let output = run_cli(&["keys", "list", "--host", "beta.test"], &config);
    assert_eq!(stdout(&output), "no keys for beta.test (project beta)\n");
}

#[test]
fn the_cli_refuses_what_the_api_would() {
    let (_ws, config) = workspace();
    for (args, needle) in [
        (
            &["keys", "create", "--host", "nowhere.test"][..],
            "no project in",
        ),
        (
            &["keys", "list", "--host", "../alpha"][..],
            "--host: invalid host",
        ),
        (
            &["keys", "create", "--host", "alpha.test:80"][..],
            "--host: invalid host",
        ),
        (
            &["keys", "revoke", "--id", "42"][..],
            "there is no key with id 42",
        ),
        (
            &[
                "keys",
                "create",
                "--host",
                "alpha.test",
                "--label",
                "two\nlines",
            ][..],
            "invalid label",
        ),
    ] {
        let output = run_cli(args, &config);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            stderr(&output).contains(needle),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}: nothing on stdout");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_follows_keys_changed_by_the_cli() {
    let (_ws, config) = workspace();
    let server = Server::start(&config);

    let output = run_cli(&["keys", "create", "--host", "alpha.test"], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    let key = stdout(&output).trim().to_owned();
    let id = "1";
    // Waited for in the log, not by polling with the key: until the ring
    // has it, every try is a wrong key counted by the failure throttle.
    server.logs.wait_for("key ring reloaded");
    assert_eq!(
        auth_seen(&server, "alpha.test", "/", &[("x-hamlet-host-key", &key)]).await,
        "hostAdmin",
        "the server accepts a key created by the CLI"
    );

    let output = run_cli(&["keys", "revoke", "--id", id], &config);
    assert!(output.status.success(), "{}", stderr(&output));
    until("a key revoked by the CLI stops working", || {
        let (server, key) = (&server, key.clone());
        async move {
            auth_seen(server, "alpha.test", "/", &[("x-hamlet-host-key", &key)]).await == "none"
        }
    })
    .await;
}
