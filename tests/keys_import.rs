//! `elsinore keys import --project P FILE` (issue 23, item 4): Hamlet's
//! plaintext `hamlet_host_keys`, as psql's `\copy … CSV HEADER` or a JSON
//! array writes them, brought into Elsinore hashed, beside a running
//! server, with labels, dates and revocations kept, foreign hosts refused,
//! idempotent and audited.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{auth_seen, echo_manifest, run_cli, Server, Workspace};
use serde_json::json;

const KIM: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const OLD: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const NEWS: &str = "9a7b330a-a736-41e5-8c1f-8f4b0c2d6f11";
const FOREIGN: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";

/// Project `horatio` (key set; hosts `blog.localhost`, `news.localhost`)
/// and project `other` (host `other.localhost`).
fn workspace() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.project(
        "horatio",
        &["blog.localhost", "news.localhost"],
        &echo_manifest(),
    );
    ws.project("other", &["other.localhost"], &echo_manifest());
    let config = ws.config(json!([
        {"path": "horatio", "key": "horatio-project-key-0123456789"},
        "other",
    ]));
    (ws, config)
}

/// Exactly what `psql -c "\copy (SELECT target_host, key, label,
/// created_at, revoked_at FROM hamlet_host_keys) TO 'keys.csv' CSV HEADER"`
/// writes: NULL as an empty field, quotes only where needed.
fn psql_csv() -> String {
    format!(
        "target_host,key,label,created_at,revoked_at\n\
         blog.localhost,{KIM},\"editor, \"\"Kim\"\"\",2026-01-05 10:20:30.123+00,\n\
         blog.localhost,{OLD},,2025-11-30 08:00:00+00,2026-01-02 17:45:10.5+00\n\
         other.localhost,{FOREIGN},intruder,2026-01-05 10:20:30+00,\n\
         News.Localhost,{NEWS},newsroom,2026-01-05 10:20:30.999999+00,\n"
    )
}

fn import(config: &Path, file: &Path) -> std::process::Output {
    run_cli(
        &[
            "keys",
            "import",
            "--project",
            "horatio",
            file.to_str().unwrap(),
        ],
        config,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn import_audit_rows(ws: &Workspace) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open(ws.state_database()).unwrap();
    let mut statement = db
        .prepare(
            "SELECT host, actor, key_prefix FROM elsinore_audit WHERE action = 'import' ORDER BY id",
        )
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_csv_imports_beside_a_running_server() {
    let (ws, config) = workspace();
    let server = Server::start(&config);
    let file = ws.path().join("keys.csv");
    std::fs::write(&file, psql_csv()).unwrap();

    let output = import(&config, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!(
            "imported 3, already present 0, refused 1 (of 4 in {})\n",
            file.display()
        )
    );
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "{}, line 4: refused: other.localhost belongs to project other, not horatio\n",
            file.display()
        )
    );
    assert!(!stderr.contains(FOREIGN), "never the key: {stderr}");

    // The running server picks the keys up: an imported key is a host
    // admin of its own host only; the revoked one opens nothing.
    // Waited for in the log: every try before the ring has the keys would
    // count as a wrong key for the failure throttle.
    server.logs.wait_for("key ring reloaded");
    let kim = [("x-hamlet-host-key", KIM)];
    assert_eq!(
        auth_seen(&server, "blog.localhost", "/", &kim).await,
        "hostAdmin"
    );
    assert_eq!(
        auth_seen(
            &server,
            "news.localhost",
            "/",
            &[("x-hamlet-host-key", NEWS)]
        )
        .await,
        "hostAdmin"
    );
    assert_eq!(
        auth_seen(&server, "news.localhost", "/", &kim).await,
        "none"
    );
    assert_eq!(
        auth_seen(
            &server,
            "blog.localhost",
            "/",
            &[("x-hamlet-host-key", OLD)]
        )
        .await,
        "none"
    );
    assert_eq!(
        auth_seen(
            &server,
            "other.localhost",
            "/",
            &[("x-hamlet-host-key", FOREIGN)]
        )
        .await,
        "none"
    );

    // Labels and dates kept, the revoked one listed as revoked.
    let output = run_cli(&["keys", "list", "--host", "blog.localhost"], &config);
    let listing = text(&output.stdout);
    assert!(listing.contains("editor, \"Kim\""), "{listing}");
    assert!(listing.contains("2026-01-05T10:20:30Z"), "{listing}");
    assert!(
        listing.contains("revoked") && listing.contains("2026-01-02T17:45:10Z"),
        "{listing}"
    );

    // Audited, once per key stored; a second import adds nothing.
    let audited = import_audit_rows(&ws);
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(audited.iter().all(|(_, actor, _)| actor == "operator"));
    let output = import(&config, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("imported 0, already present 3, refused 1"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(import_audit_rows(&ws).len(), 3);

    // Stored hashed: no key appears in Elsinore's databases in plain text.
    for path in [ws.state_database(), ws.database()] {
        for file in [path.clone(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                let bytes = text(&bytes);
                for key in [KIM, OLD, NEWS, FOREIGN] {
                    assert!(!bytes.contains(key), "{key} in {}", file.display());
                }
            }
        }
    }
}

#[test]
fn json_array_imports_too() {
    let (ws, config) = workspace();
    let file = ws.path().join("keys.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!([
            {"id": "b5c4", "target_host": "blog.localhost", "key": KIM, "label": null,
             "created_at": "2026-01-05T10:20:30.123Z", "revoked_at": null},
            {"id": "c6d7", "target_host": "blog.localhost", "key": OLD, "label": "old",
             "created_at": "2025-11-30T08:00:00.000Z", "revoked_at": "2026-01-02T17:45:10.500Z"},
        ]))
        .unwrap(),
    )
    .unwrap();
    let output = import(&config, &file);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("imported 2, already present 0, refused 0"),
        "{}",
        text(&output.stdout)
    );
    let output = run_cli(&["keys", "list", "--host", "blog.localhost"], &config);
    let listing = text(&output.stdout);
    assert!(
        listing.contains("0f8fad5b") && listing.contains("2026-01-05T10:20:30Z"),
        "{listing}"
    );
    assert!(listing.contains("revoked"), "{listing}");
}

#[test]
fn a_malformed_file_names_its_line_and_imports_nothing() {
    let (ws, config) = workspace();
    let file = ws.path().join("keys.csv");
    std::fs::write(
        &file,
        format!(
            "target_host,key,label,created_at,revoked_at\n\
             blog.localhost,{KIM},ok,2026-01-05 10:20:30+00,\n\
             blog.localhost,{OLD},bad,last tuesday,\n"
        ),
    )
    .unwrap();
    let output = import(&config, &file);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: line 3: created_at \"last tuesday\" is not a timestamp",
            file.display()
        )),
        "{stderr}"
    );
    let output = run_cli(&["keys", "list", "--host", "blog.localhost"], &config);
    assert!(
        text(&output.stdout).starts_with("no keys for blog.localhost"),
        "{}",
        text(&output.stdout)
    );
}
