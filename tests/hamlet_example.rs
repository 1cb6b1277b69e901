//! The shipped Hamlet-style example, `projects/macbeth`, served from the
//! repository as docs/hosting-hamlet.md walks through it: generated
//! handlers from `server/.hamlet-gen/handlers/`, each host's static front
//! page from `hosts/<host>/public/`, host keys from the admin API, soft
//! delete in the shared database, and the preview path.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const PROJECT_KEY: &str = "macbeth-dev-key-change-me";

#[tokio::test]
async fn the_hamlet_example_runs_behind_elsinore_with_its_host_keys() {
    let ws = Workspace::new();
    let root = repo_root();
    let config = ws.config_with(
        json!([{"path": root.join("projects/macbeth"), "key": PROJECT_KEY}]),
        json!({"preview_host": "preview.localhost"}),
    );
    let server = Server::start(&config);

    // Every generated binary became a handler on /api/<Name>.
    let routes = server.routes().await;
    let handlers: Vec<&str> = routes["hosts"]["castle.localhost"]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    for name in ["DeleteItem", "GetFeed", "SubmitItem"] {
        assert!(handlers.contains(&name), "{name} in {handlers:?}");
    }

    // Each tenant has its own static front page.
    let castle = server.get("castle.localhost", "/").send().await;
    assert_eq!(castle.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&castle.body).contains("Notices of the castle"));
    let heath = server.get("heath.localhost", "/").send().await;
    assert!(String::from_utf8_lossy(&heath.body).contains("When shall we three meet again"));
    let css = server.get("castle.localhost", "/style.css").send().await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    // Writing needs a host key: none yet.
    let submit = |host: &'static str, key: Option<String>, text: &str| {
        let mut request = server
            .get(host, "/api/SubmitItem")
            .method("POST")
            .body(json!({"text": text}).to_string());
        if let Some(key) = key {
            request = request.header("x-hamlet-host-key", &key);
        }
        request.send()
    };
    assert_eq!(
        submit("castle.localhost", None, "x").await.status,
        StatusCode::FORBIDDEN
    );

    // The project key makes a host key for castle.localhost.
    let created = server
        .get("castle.localhost", "/admin/api/_keys")
        .method("POST")
        .header("x-hamlet-project-key", PROJECT_KEY)
        .body(r#"{"label": "lady-m laptop"}"#)
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let key = created.json()["key"].as_str().unwrap().to_owned();

    let posted = submit(
        "castle.localhost",
        Some(key.clone()),
        "The king comes tonight",
    )
    .await;
    assert_eq!(posted.status, StatusCode::CREATED, "{:?}", posted.body);
    let id = posted.json()["id"].as_i64().unwrap();
    // The castle's key opens nothing on the heath.
    assert_eq!(
        submit("heath.localhost", Some(key.clone()), "x")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let feed = server
        .get("castle.localhost", "/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(feed["project"], "macbeth");
    assert_eq!(feed["items"][0]["text"], "The king comes tonight");
    let heath_feed = server
        .get("heath.localhost", "/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(
        heath_feed["items"],
        json!([]),
        "tenants are separated by host"
    );

    // Under the preview host the handler sees the prefix and keeps it in
    // its links.
    let preview = server
        .get("preview.localhost", "/projects/macbeth/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(
        preview["feed_url"],
        "http://preview.localhost/projects/macbeth/api/GetFeed"
    );

    // Deleting is a soft delete in epoch milliseconds, Hamlet's convention,
    // which Elsinore's SoftDeleteCleanup understands.
    let deleted = server
        .get("castle.localhost", "/api/DeleteItem")
        .method("POST")
        .header("x-hamlet-host-key", &key)
        .body(json!({"id": id}).to_string())
        .send()
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let conn = rusqlite::Connection::open(ws.database()).unwrap();
    let deleted_at: i64 = conn
        .query_row(
            "SELECT deleted_at FROM castle_notice WHERE id = ?",
            [id],
            |row| row.get(0),
        )
        .unwrap();
    assert!(deleted_at > 1_000_000_000_000, "milliseconds: {deleted_at}");
    let feed = server
        .get("castle.localhost", "/api/GetFeed")
        .send()
        .await
        .json();
    assert_eq!(feed["items"], json!([]));

    // Revoked: the key opens nothing any more.
    let key_id = created.json()["id"].as_i64().unwrap();
    let revoked = server
        .get("castle.localhost", &format!("/admin/api/_keys/{key_id}"))
        .method("DELETE")
        .header("x-hamlet-project-key", PROJECT_KEY)
        .send()
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        submit("castle.localhost", Some(key), "x").await.status,
        StatusCode::FORBIDDEN
    );
}
