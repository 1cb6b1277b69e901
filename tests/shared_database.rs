//! One SQLite file for every project: created by Elsinore in WAL mode and
//! handed to every handler, which read and write each other's tables.

mod common;

use common::{echo_manifest, repo_root, Server, Workspace};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn handlers_of_two_projects_share_one_database() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let server = Server::start(&ws.config(json!(["alpha", "beta"])));

    // Same absolute path for both, and Elsinore created it with WAL on.
    let alpha = server.get("alpha.test", "/").send().await.json();
    let beta = server.get("beta.test", "/").send().await.json();
    let db = ws.database();
    assert_eq!(alpha["db"], db.display().to_string());
    assert_eq!(beta["db"], alpha["db"]);
    let conn = rusqlite::Connection::open(&db).expect("open db");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
    // Elsinore's migrations are recorded in its own state file.
    let state = rusqlite::Connection::open(ws.state_database()).expect("open state db");
    let version: i64 = state
        .query_row("SELECT MAX(version) FROM elsinore_migrations", [], |r| {
            r.get(0)
        })
        .expect("migrations recorded");
    assert!(version >= 1);

    // alpha writes, beta reads alpha's rows (and adds its own).
    for value in ["one", "two"] {
        let reply = server
            .get(
                "alpha.test",
                &format!("/db/write?table=shared_notes&value={value}"),
            )
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = server
        .get("beta.test", "/db/write?table=shared_notes&value=three")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let rows = server
        .get("beta.test", "/db/read?table=shared_notes")
        .send()
        .await
        .json();
    assert_eq!(
        rows["rows"],
        json!([
            {"value": "one", "project": "alpha"},
            {"value": "two", "project": "alpha"},
            {"value": "three", "project": "beta"},
        ])
    );
}

#[tokio::test]
async fn handlers_get_their_environment_but_never_a_project_key_variable() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let config = ws.config(json!([{"path": "alpha", "key_env": "ALPHA_KEY"}, "beta"]));
    let server = Server::start_with_env(
        &config,
        &[
            ("ALPHA_KEY", "alpha-secret-project-key"),
            ("OTHER_VAR", "kept"),
        ],
    );

    let env = |host: &'static str, name: &'static str| {
        let req = server.get(host, &format!("/env?name={name}"));
        async move { req.send().await.json()["value"].clone() }
    };
    assert_eq!(env("alpha.test", "ELSINORE_PROJECT").await, "alpha");
    assert_eq!(env("beta.test", "ELSINORE_PROJECT").await, "beta");
    assert!(env("alpha.test", "PORT")
        .await
        .as_str()
        .is_some_and(|p| p.parse::<u16>().is_ok()));
    assert_eq!(env("beta.test", "OTHER_VAR").await, "kept");
    // Keys travel only in X-Elsinore-Project-Key, to their own project.
    assert_eq!(env("alpha.test", "ALPHA_KEY").await, json!(null));
    assert_eq!(env("beta.test", "ALPHA_KEY").await, json!(null));
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(
        reply.seen("x-elsinore-project-key"),
        ["alpha-secret-project-key"]
    );
}

/// The shipped example projects, served from the repository as the README
/// runs them, with a temp database.
#[tokio::test]
async fn the_example_projects_work_behind_elsinore() {
    let ws = Workspace::new();
    let root = repo_root();
    let config = ws.config(json!([
        {"path": root.join("projects/horatio"), "key": "horatio-dev-key-change-me"},
        root.join("projects/othello"),
    ]));
    let server = Server::start(&config);

    let reply = server
        .get("blog.localhost", "/api/SubmitItem")
        .method("POST")
        .header("content-type", "application/json")
        .body(r#"{"text": "To be, or not to be"}"#)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.json()["host"], "blog.localhost");

    let feed = server
        .get("blog.localhost:8080", "/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(feed["project"], "horatio");
    assert_eq!(feed["items"][0]["text"], "To be, or not to be");
    // Tenants of one project are separated by host.
    let other = server
        .get("news.localhost", "/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(other["items"], json!([]));

    let reply = server
        .get("theatre.localhost", "/api/SubmitPost")
        .method("POST")
        .body(r#"{"title": "Othello", "body": "Act I"}"#)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let posts = server
        .get("theatre.localhost", "/api/GetPosts")
        .send()
        .await
        .json();
    assert_eq!(posts["project"], "othello");
    assert_eq!(posts["posts"][0]["title"], "Othello");

    // Both projects' tables live in the one shared file.
    let conn = rusqlite::Connection::open(ws.database()).expect("open db");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(count("microblog_item"), 1);
    assert_eq!(count("theatre_post"), 1);
}
