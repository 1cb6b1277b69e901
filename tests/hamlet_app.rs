//! A Hamlet app behind Elsinore, end to end: one handler that behaves like
//! Hamlet's Node server where Elsinore meets it
//! (`tests/fixtures/hamlet_like_handler.py`: tenant from `Host`, its key
//! from `HAMLET_PROJECT_KEY`, its own `/admin/api/_keys`), configured as
//! docs/hosting-hamlet.md says: `forward_host = "tenant"`,
//! `handler_key_env`, then `admin_api` `"handler"` (Hamlet keeps its
//! keys) and `"hamlet"` (Elsinore keeps them, imported from Hamlet's
//! export, and the admin UI's exact requests work).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{run_cli, Reply, Server, Workspace};
use http::StatusCode;
use serde_json::{json, Value};

const PROJECT_KEY: &str = "horatio-project-key-0123";

fn hamlet_like() -> PathBuf {
    common::repo_root().join("tests/fixtures/hamlet_like_handler.py")
}

/// project.toml for the app: one handler running the "Node server";
/// `trust_elsinore` adds the middleware of docs/hosting-hamlet.md.
fn manifest(trust_elsinore: bool) -> String {
    let env = if trust_elsinore {
        "env = { TRUST_ELSINORE = \"1\" }\n"
    } else {
        ""
    };
    format!(
        "[[handler]]\nname = \"hamlet\"\ncommand = [\"python3\", {:?}]\nready = \"/health\"\nreuse_after_body = true\n{env}",
        hamlet_like().display().to_string()
    )
}

fn config(ws: &Workspace, admin_api: &str) -> PathBuf {
    ws.write_config(&json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "projects": [{
            "path": "horatio",
            "key": PROJECT_KEY,
            "forward_host": "tenant",
            "handler_key_env": "HAMLET_PROJECT_KEY",
            "admin_api": admin_api,
        }],
    }))
}

fn setup(admin_api: &str) -> (Workspace, PathBuf, Server) {
    let ws = Workspace::new();
    ws.project(
        "horatio",
        &["blog.localhost", "news.localhost"],
        &manifest(false),
    );
    let config = config(&ws, admin_api);
    let server = Server::start(&config);
    (ws, config, server)
}

/// A request as Hamlet's admin UI sends it.
async fn ui(server: &Server, method: &str, host: &str, path: &str, body: Option<Value>) -> Reply {
    let mut req = server
        .get(host, path)
        .method(method)
        .header("x-hamlet-project-key", PROJECT_KEY);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    req.send().await
}

async fn submit(server: &Server, host: &str, host_key: Option<&str>) -> Reply {
    let mut req = server
        .get(host, "/api/SubmitItem")
        .method("POST")
        .header("content-type", "application/json")
        .body("{}");
    if let Some(key) = host_key {
        req = req.header("x-hamlet-host-key", key);
    }
    req.send().await
}

/// Polls `check` until it holds, for at most 10 s.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_admin_api_handler_the_app_keeps_its_own_keys_per_tenant() {
    let (_ws, _config, server) = setup("handler");
    // The project key was handed over under Hamlet's variable.
    server
        .logs
        .wait_for("Admin access protected by HAMLET_PROJECT_KEY");

    // The UI's request, on a Host spelled in capitals with a port: the app
    // answers it (not Elsinore: its keys are not `ehk_`), for the tenant
    // Elsinore routed.
    let made = ui(
        &server,
        "POST",
        "Blog.Localhost:8080",
        "/admin/api/_keys",
        Some(json!({"label": null})),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let made = made.json();
    assert_eq!(made["target_host"], "blog.localhost", "{made}");
    let key = made["key"].as_str().expect("the app's key").to_owned();
    assert!(!key.starts_with("ehk_"), "Elsinore answered: {made}");

    let listed = ui(&server, "GET", "blog.localhost", "/admin/api/_keys", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(1));

    // The app's own key opens its own tenant, and only that one.
    let reply = submit(&server, "BLOG.localhost", Some(&key)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"tenant": "blog.localhost", "auth": "hostAdmin"})
    );
    let reply = submit(&server, "news.localhost", Some(&key)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"], "Requires hostAdmin access");
}

#[tokio::test]
async fn with_admin_api_hamlet_elsinore_keeps_the_keys_imported_from_the_app() {
    let (ws, _, server) = setup("handler");
    server
        .logs
        .wait_for("Admin access protected by HAMLET_PROJECT_KEY");

    // Keys the app made while it kept them: one live, one revoked.
    let mut keys = Vec::new();
    for label in ["laptop", "old phone"] {
        let made = ui(
            &server,
            "POST",
            "blog.localhost",
            "/admin/api/_keys",
            Some(json!({ "label": label })),
        )
        .await
        .json();
        keys.push((
            made["id"].as_str().unwrap().to_owned(),
            made["key"].as_str().unwrap().to_owned(),
        ));
    }
    let revoke = format!("/admin/api/_keys/{}", keys[1].0);
    let reply = ui(&server, "DELETE", "blog.localhost", &revoke, None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // Its export, as `psql \copy ... CSV HEADER` writes it.
    let export = ui(
        &server,
        "GET",
        "blog.localhost",
        "/admin/api/_keys.csv",
        None,
    )
    .await;
    assert_eq!(export.status, StatusCode::OK);
    let csv = ws.path().join("keys.csv");
    std::fs::write(&csv, &export.body).unwrap();

    // Elsinore takes the keys over, and the app trusts its verdict.
    std::fs::write(ws.path().join("horatio/project.toml"), manifest(true)).unwrap();
    let config = config(&ws, "hamlet");
    until("the app trusting Elsinore serves", || async {
        let feed = server.get("blog.localhost", "/api/GetFeed").send().await;
        feed.status == StatusCode::OK && feed.json()["trusts_elsinore"] == json!(true)
    })
    .await;
    let output = run_cli(
        &[
            "keys",
            "import",
            "--project",
            "horatio",
            csv.to_str().unwrap(),
        ],
        &config,
    );
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("imported 2, already present 0, refused 0"),
        "{said}"
    );

    // The live imported key opens its tenant through Elsinore's check
    // (waited for in the log: a try before the ring has the key would
    // count as a wrong key for the failure throttle)...
    server.logs.wait_for("key ring reloaded");
    let live = keys[0].1.clone();
    assert_eq!(
        submit(&server, "blog.localhost", Some(&live)).await.json(),
        json!({"tenant": "blog.localhost", "auth": "hostAdmin"})
    );
    // ...the revoked one does not, nor a forged verdict.
    let reply = submit(&server, "blog.localhost", Some(&keys[1].1)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let forged = server
        .get("blog.localhost", "/api/SubmitItem")
        .method("POST")
        .header("x-elsinore-auth", "hostAdmin")
        .body("{}")
        .send()
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    // The admin UI's exact requests, now answered by Elsinore.
    let made = ui(
        &server,
        "POST",
        "blog.localhost",
        "/admin/api/_keys",
        Some(json!({"label": null})),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let made = made.json();
    let new_key = made["key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("ehk_"), "{made}");
    let listed = ui(&server, "GET", "blog.localhost", "/admin/api/_keys", None).await;
    // `keys.map(...)` over a bare array of Hamlet's rows.
    let listed = listed.json();
    let rows = listed.as_array().expect("a bare array");
    assert_eq!(rows.len(), 3, "{listed}");
    for row in rows {
        for field in [
            "id",
            "target_host",
            "key",
            "label",
            "created_at",
            "revoked_at",
        ] {
            assert!(row.get(field).is_some(), "{field} missing: {row}");
        }
    }
    let reply = submit(&server, "blog.localhost", Some(&new_key)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}
