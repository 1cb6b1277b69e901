//! Issue 22, points 5 and 6: recorded host owners. Two projects, beta
//! serving `*.wild.test` and `b.test`; alpha's side tries to take names
//! with `mkdir` (as its handler could), across reloads and restarts with
//! `projects` reordered, and through the admin API's `_hosts`.

mod common;

use common::{echo_manifest, until, Server, Workspace};
use http::StatusCode;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const ALPHA_KEY: &str = "alpha-project-key";

/// The project whose handler answered `host`.
async fn served_by(server: &Server, host: &str) -> String {
    let reply = server.get(host, "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "GET {host}");
    reply.seen("x-elsinore-project").join(",")
}

fn config(ws: &Workspace, order: [&str; 2], extra: Value) -> std::path::PathBuf {
    let projects: Vec<Value> = order
        .iter()
        .map(|name| match *name {
            "alpha" => json!({"path": "alpha", "key": ALPHA_KEY}),
            other => json!(other),
        })
        .collect();
    ws.config_with(json!(projects), extra)
}

fn restart(server: Server, config: &std::path::Path) -> Server {
    let mut server = server;
    server.signal(Signal::SIGTERM);
    server.wait_exit();
    Server::start(config)
}

#[tokio::test]
async fn host_capture_by_mkdir_never_moves_a_name_across_reloads_and_restarts() {
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["*.wild.test", "b.test"], &echo_manifest());
    let alpha_first = config(&ws, ["alpha", "beta"], json!({}));
    let server = Server::start(&alpha_first);
    assert_eq!(served_by(&server, "shop.wild.test").await, "beta");

    // The attack: alpha makes folders for a name under beta's wildcard and
    // for one of beta's exact names.
    std::fs::create_dir(alpha.join("hosts/shop.wild.test")).expect("mkdir shop.wild.test");
    std::fs::create_dir(alpha.join("hosts/b.test")).expect("mkdir b.test");
    server
        .logs
        .wait_for("host shop.wild.test is declared by both beta and alpha; beta keeps it");
    let routes = server.routes().await;
    let conflicts = routes["conflicts"].as_array().cloned().unwrap_or_default();
    for host in ["shop.wild.test", "b.test"] {
        assert!(
            conflicts.contains(&json!({"host": host, "kept_by": "beta", "refused_for": "alpha"})),
            "{host} in {conflicts:?}"
        );
    }
    assert_eq!(served_by(&server, "shop.wild.test").await, "beta");
    assert_eq!(served_by(&server, "b.test").await, "beta");
    // Names nobody claims exactly still go to the wildcard.
    assert_eq!(served_by(&server, "other.wild.test").await, "beta");

    // A restart (alpha still listed first) and one with projects
    // reordered: the recorded owner keeps both names.
    let server = restart(server, &alpha_first);
    assert_eq!(served_by(&server, "shop.wild.test").await, "beta");
    assert_eq!(served_by(&server, "b.test").await, "beta");
    let beta_first = config(&ws, ["beta", "alpha"], json!({}));
    let server = restart(server, &beta_first);
    let server = restart(server, &alpha_first);
    assert_eq!(served_by(&server, "shop.wild.test").await, "beta");
    assert_eq!(served_by(&server, "b.test").await, "beta");
    assert_eq!(served_by(&server, "alpha.test").await, "alpha");

    // The operator decides, live: host_owners gives shop.wild.test to
    // alpha, and the record follows it across a restart without it.
    config(
        &ws,
        ["alpha", "beta"],
        json!({"host_owners": {"shop.wild.test": "alpha"}}),
    );
    server.logs.wait_for("host shop.wild.test");
    until("shop.wild.test served by alpha", || async {
        served_by(&server, "shop.wild.test").await == "alpha"
    })
    .await;
    assert_eq!(served_by(&server, "other.wild.test").await, "beta");
    let routes = server.routes().await;
    assert!(
        !routes["conflicts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["host"] == "shop.wild.test")),
        "the operator's decision is no conflict: {}",
        routes["conflicts"]
    );
    let server = restart(server, &alpha_first);
    assert_eq!(served_by(&server, "shop.wild.test").await, "alpha");
    assert_eq!(served_by(&server, "b.test").await, "beta");
}

#[tokio::test]
async fn host_owners_naming_an_unknown_project_is_refused_naming_the_field() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["*.wild.test"], &echo_manifest());
    let path = config(
        &ws,
        ["alpha", "beta"],
        json!({"host_owners": {"shop.wild.test": "gamma"}}),
    );
    let out = common::run_cli(&["check"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("host_owners.\"shop.wild.test\"") && stderr.contains("gamma"),
        "{stderr}"
    );
}

#[tokio::test]
async fn admin_api_refuses_a_host_folder_for_a_name_another_project_covers() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["*.wild.test"], &echo_manifest());
    let server = Server::start(&config(&ws, ["alpha", "beta"], json!({})));
    let reply = server
        .get("alpha.test", "/admin/api/_hosts")
        .method("POST")
        .header("x-hamlet-project-key", ALPHA_KEY)
        .body(json!({"hostname": "shop.wild.test"}).to_string())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let body = reply.json();
    let error = body.to_string();
    assert!(
        error.contains("owned by project beta") && error.contains("*.wild.test"),
        "names the owner: {error}"
    );
    assert!(!ws.path().join("alpha/hosts/shop.wild.test").exists());
    assert_eq!(served_by(&server, "shop.wild.test").await, "beta");
}
