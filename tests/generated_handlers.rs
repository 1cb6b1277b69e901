//! Generated handlers (`handlers_dir` in project.toml): every executable
//! `<Name>Handler` or `<Name>` in the folder serves `/api/<Name>`, and the
//! set follows the folder while the server runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use http::StatusCode;
use serde_json::json;

/// Hamlet's layout, relative to the project folder.
const GEN_DIR: &str = "server/.hamlet-gen/handlers";

fn manifest() -> String {
    format!("handlers_dir = {GEN_DIR:?}\n")
}

/// Writes an executable handler `file` into `dir` the recommended way (a
/// temporary name, then a rename over the old one). It runs the echo
/// fixture, answering with `label` as its `handler` and its
/// `ELSINORE_PUBLIC_URL` as `env_extra`. `exit_code`: exit at once with it
/// instead (a broken build).
fn deploy_with(dir: &Path, file: &str, label: &str, exit_code: Option<u8>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let body = match exit_code {
        Some(code) => format!("import sys\nsys.exit({code})\n"),
        None => format!(
            "import os, runpy\n\
             os.environ[\"HANDLER_NAME\"] = {label:?}\n\
             os.environ[\"EXTRA\"] = os.environ.get(\"ELSINORE_PUBLIC_URL\", \"\")\n\
             runpy.run_path({:?}, run_name=\"__main__\")\n",
            echo_handler().display().to_string()
        ),
    };
    let staged = dir.join(format!(".{file}.partial"));
    std::fs::write(&staged, format!("#!/usr/bin/env python3\n{body}")).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(file);
    std::fs::rename(&staged, &path).unwrap();
    path
}

fn deploy(dir: &Path, file: &str, label: &str) -> PathBuf {
    deploy_with(dir, file, label, None)
}

/// `GET path` on `host`.
async fn get(server: &Server, host: &str, path: &str) -> Reply {
    server.get(host, path).send().await
}

/// The label and pid of the handler answering `GET path` on `host`.
async fn answer(server: &Server, host: &str, path: &str) -> (String, i32) {
    let reply = get(server, host, path).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "GET {path} on {host}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    (
        body["handler"].as_str().unwrap_or_default().to_owned(),
        body["pid"].as_i64().expect("pid") as i32,
    )
}

/// Waits (bounded) until `GET path` on `host` is answered by `label`.
async fn wait_label(server: &Server, host: &str, path: &str, label: &str) {
    until(
        &format!("{path} on {host} answered by {label:?}"),
        || async {
            let reply = get(server, host, path).await;
            reply.status == StatusCode::OK && reply.json()["handler"] == label
        },
    )
    .await;
}

/// Waits (bounded) until `GET path` on `host` gets Elsinore's own 404.
async fn wait_no_route(server: &Server, host: &str, path: &str) {
    until(&format!("{path} on {host} has no handler"), || async {
        let reply = get(server, host, path).await;
        reply.status == StatusCode::NOT_FOUND && reply.json()["error"] == "no handler for this path"
    })
    .await;
}

/// Waits (bounded) until `needle` has been logged at least `n` times.
fn wait_logged(server: &Server, needle: &str, n: usize) {
    eventually(&format!("{n} log lines containing {needle:?}"), || {
        server
            .logs
            .all()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
            >= n
    });
}

fn assert_no_route(reply: &Reply, path: &str) {
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    let body = reply.json();
    assert_eq!(body["error"], "no handler for this path", "{body}");
    assert_eq!(body["path"], path, "{body}");
}

#[tokio::test]
async fn a_project_with_only_handlers_dir_serves_api_names_with_the_handler_context() {
    let ws = Workspace::new();
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    let gen = project.join(GEN_DIR);
    deploy(&gen, "GetFeedHandler", "feed v1");
    deploy(&gen, "SubmitItem", "submit v1");
    let config = ws.config_with(
        json!([{"path": "macbeth", "public_url": "https://macbeth.example"}]),
        json!({}),
    );
    let server = Server::start(&config);

    let reply = server
        .get("macbeth.test", "/api/GetFeed?since=1")
        .header("x-request-id", "gen-1")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["handler"], "feed v1");
    assert_eq!(body["path"], "/api/GetFeed?since=1");
    assert_eq!(body["project"], "macbeth", "ELSINORE_PROJECT");
    assert_eq!(
        body["db"],
        ws.database().display().to_string(),
        "ELSINORE_DB"
    );
    assert_eq!(
        body["env_extra"], "https://macbeth.example",
        "ELSINORE_PUBLIC_URL"
    );
    assert_eq!(reply.seen("x-elsinore-host"), ["macbeth.test"]);
    assert_eq!(reply.seen("x-elsinore-project"), ["macbeth"]);
    assert_eq!(reply.seen("x-elsinore-auth"), ["none"]);
    assert_eq!(reply.seen("x-request-id"), ["gen-1"]);

    // A trailing path goes to the same handler; a longer name does not.
    let (label, _) = answer(&server, "macbeth.test", "/api/GetFeed/123").await;
    assert_eq!(label, "feed v1");
    let (label, _) = answer(&server, "macbeth.test", "/api/SubmitItem").await;
    assert_eq!(label, "submit v1");
    assert_no_route(
        &get(&server, "macbeth.test", "/api/GetFeedX").await,
        "/api/GetFeedX",
    );
    assert_no_route(&get(&server, "macbeth.test", "/").await, "/");

    let routes = server.routes().await;
    let handlers = &routes["projects"]["macbeth"]["handlers"];
    assert_eq!(handlers[0]["name"], "GetFeed", "{routes}");
    assert_eq!(handlers[0]["routes"], json!(["/api/GetFeed"]));
    assert_eq!(handlers[1]["name"], "SubmitItem", "{routes}");

    // `check` lists them like declared handlers, saying where they come from.
    let output = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let feed = gen.join("GetFeedHandler");
    assert!(
        stdout.contains(&format!(
            "handler GetFeed [/api/GetFeed] command: {}, ready: tcp (from handlers_dir)",
            feed.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("handlers_dir {GEN_DIR} (2 generated handlers)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "macbeth.test  → macbeth  → GetFeed [/api/GetFeed], SubmitItem [/api/SubmitItem]"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn generated_handlers_appear_and_disappear_live() {
    let ws = Workspace::new();
    // The folder does not exist yet: no generated handler, not an error.
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    let server = Server::start(&ws.config_with(json!(["macbeth"]), json!({})));
    assert_no_route(
        &get(&server, "macbeth.test", "/api/GetFeed").await,
        "/api/GetFeed",
    );

    let gen = project.join(GEN_DIR);
    deploy(&gen, "SubmitItemHandler", "submit");
    server
        .logs
        .wait_for("~ project macbeth: + handler SubmitItem");
    let (_, submit_pid) = answer(&server, "macbeth.test", "/api/SubmitItem").await;

    deploy(&gen, "GetFeedHandler", "feed");
    server.logs.wait_for("~ project macbeth: + handler GetFeed");
    let (label, feed_pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;
    assert_eq!(label, "feed");

    std::fs::remove_file(gen.join("GetFeedHandler")).unwrap();
    server.logs.wait_for("~ project macbeth: - handler GetFeed");
    assert_no_route(
        &get(&server, "macbeth.test", "/api/GetFeed").await,
        "/api/GetFeed",
    );
    eventually("the removed handler's process ends", || !alive(feed_pid));

    // Every one of those reloads left the other handler running.
    let (_, pid) = answer(&server, "macbeth.test", "/api/SubmitItem").await;
    assert_eq!(pid, submit_pid, "SubmitItem was restarted");
    // So does a reload for something else entirely.
    std::fs::create_dir(project.join("hosts/more.test")).unwrap();
    server.logs.wait_for("+ host more.test → macbeth");
    let (_, pid) = answer(&server, "more.test", "/api/SubmitItem").await;
    assert_eq!(pid, submit_pid, "SubmitItem was restarted by a host change");
}

#[tokio::test]
async fn a_replaced_binary_is_served_by_a_new_process_and_the_old_one_stops() {
    let ws = Workspace::new();
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    let gen = project.join(GEN_DIR);
    deploy(&gen, "GetFeedHandler", "feed v1");
    let server = Server::start(&ws.config_with(json!(["macbeth"]), json!({})));
    let (label, old_pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;
    assert_eq!(label, "feed v1");

    deploy(&gen, "GetFeedHandler", "feed v2");
    server
        .logs
        .wait_for("~ project macbeth: handler GetFeed replaced");
    let (label, new_pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;
    assert_eq!(label, "feed v2");
    assert_ne!(new_pid, old_pid);
    eventually("the replaced process ends", || !alive(old_pid));
}

#[tokio::test]
async fn a_replacement_that_crashes_leaves_the_old_binary_serving() {
    let ws = Workspace::new();
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    let gen = project.join(GEN_DIR);
    deploy(&gen, "GetFeedHandler", "feed v1");
    let server = Server::start(&ws.config_with(json!(["macbeth"]), json!({})));
    let (_, pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;

    // A build that does not run (or a file caught half-written).
    deploy_with(&gen, "GetFeedHandler", "broken", Some(3));
    server.logs.wait_for("new handler GetFeed did not start");
    server.logs.wait_for("keeping its previous handlers");
    let (label, still) = answer(&server, "macbeth.test", "/api/GetFeed").await;
    assert_eq!((label.as_str(), still), ("feed v1", pid));

    // The next good build takes over.
    deploy(&gen, "GetFeedHandler", "feed v3");
    wait_label(&server, "macbeth.test", "/api/GetFeed", "feed v3").await;
    eventually("the first process ends", || !alive(pid));
}

#[tokio::test]
async fn a_generated_tree_removed_and_regenerated_is_followed() {
    tree_removed_and_regenerated(json!({}), true).await;
}

#[tokio::test]
async fn a_generated_tree_removed_and_regenerated_is_followed_when_polling() {
    // Not `at_once`: notify's poller compares modification times in whole
    // seconds, so a file replaced within the second of its last change is
    // not seen (documented with the poll mode). Appearing and vanishing
    // files and folders are.
    tree_removed_and_regenerated(
        json!({"watch": {"mode": "poll", "poll_interval": "100ms"}}),
        false,
    )
    .await;
}

/// `rm -rf server/.hamlet-gen`, then regenerate; `extra`: config.json keys.
/// `at_once`: also delete and regenerate within one burst of changes.
async fn tree_removed_and_regenerated(extra: serde_json::Value, at_once: bool) {
    let ws = Workspace::new();
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    let gen = project.join(GEN_DIR);
    let tree = project.join("server/.hamlet-gen");
    deploy(&gen, "GetFeedHandler", "feed v1");
    let server = Server::start(&ws.config_with(json!(["macbeth"]), extra));
    let (_, first_pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;

    // `rm -rf`, seen on its own: the handlers go.
    std::fs::remove_dir_all(&tree).unwrap();
    server.logs.wait_for("~ project macbeth: - handler GetFeed");
    wait_no_route(&server, "macbeth.test", "/api/GetFeed").await;
    eventually("the handler of the deleted tree ends", || !alive(first_pid));

    // Regenerated: the folders are new, and watched again.
    deploy(&gen, "GetFeedHandler", "feed v2");
    wait_label(&server, "macbeth.test", "/api/GetFeed", "feed v2").await;

    // Deleted and regenerated at once, as a code generator does: the new
    // files are served, and the new folder is watched (a file added to it
    // afterwards appears).
    if at_once {
        let (_, second_pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;
        std::fs::remove_dir_all(&tree).unwrap();
        deploy(&gen, "GetFeedHandler", "feed v3");
        wait_label(&server, "macbeth.test", "/api/GetFeed", "feed v3").await;
        eventually("the handler of the replaced tree ends", || {
            !alive(second_pid)
        });
    }
    deploy(&gen, "SubmitItemHandler", "submit");
    wait_label(&server, "macbeth.test", "/api/SubmitItem", "submit").await;
}

#[tokio::test]
async fn two_projects_with_the_same_generated_name_are_different_handlers() {
    let ws = Workspace::new();
    let macbeth = ws.project("macbeth", &["macbeth.test"], &manifest());
    let hamlet = ws.project("hamlet", &["hamlet.test"], &manifest());
    deploy(&macbeth.join(GEN_DIR), "GetFeedHandler", "macbeth feed");
    deploy(&hamlet.join(GEN_DIR), "GetFeedHandler", "hamlet feed");
    let server = Server::start(&ws.config_with(json!(["macbeth", "hamlet"]), json!({})));

    let macbeth_reply = get(&server, "macbeth.test", "/api/GetFeed").await;
    let hamlet_reply = get(&server, "hamlet.test", "/api/GetFeed").await;
    let (m, h) = (macbeth_reply.json(), hamlet_reply.json());
    assert_eq!(
        (&m["handler"], &m["project"]),
        (&json!("macbeth feed"), &json!("macbeth"))
    );
    assert_eq!(
        (&h["handler"], &h["project"]),
        (&json!("hamlet feed"), &json!("hamlet"))
    );
    assert_ne!(m["pid"], h["pid"]);
    assert_eq!(hamlet_reply.seen("x-elsinore-project"), ["hamlet"]);

    // One project's change is its own.
    std::fs::remove_file(macbeth.join(GEN_DIR).join("GetFeedHandler")).unwrap();
    server.logs.wait_for("~ project macbeth: - handler GetFeed");
    assert_no_route(
        &get(&server, "macbeth.test", "/api/GetFeed").await,
        "/api/GetFeed",
    );
    let (label, pid) = answer(&server, "hamlet.test", "/api/GetFeed").await;
    assert_eq!(label, "hamlet feed");
    assert_eq!(
        Some(i64::from(pid)),
        h["pid"].as_i64(),
        "hamlet's GetFeed was restarted"
    );
    assert!(
        !server
            .logs
            .all()
            .iter()
            .any(|l| l.contains("project hamlet: - handler")),
        "hamlet lost a handler"
    );
}

#[tokio::test]
async fn a_declared_handler_wins_over_a_generated_one_with_its_name_or_route() {
    let ws = Workspace::new();
    let manifest = format!(
        "{}\n{}\n{}\n{}",
        manifest(),
        echo_manifest_entry("web", &["/"], ""),
        echo_manifest_entry("GetFeed", &["/feed/"], ""),
        echo_manifest_entry("posts", &["/api/GetPosts"], ""),
    );
    let project = ws.project("macbeth", &["macbeth.test"], &manifest);
    let gen = project.join(GEN_DIR);
    deploy(&gen, "GetFeedHandler", "generated feed");
    deploy(&gen, "SubmitItemHandler", "generated submit");
    let server = Server::start(&ws.config_with(json!(["macbeth"]), json!({})));
    server.logs.wait_for(&format!(
        "skipped {}: handler \"GetFeed\" is declared in project.toml, which wins",
        gen.join("GetFeedHandler").display()
    ));

    // The declared GetFeed keeps its own route; /api/GetFeed falls to "/".
    assert_eq!(
        answer(&server, "macbeth.test", "/feed/x").await.0,
        "GetFeed"
    );
    assert_eq!(
        answer(&server, "macbeth.test", "/api/GetFeed").await.0,
        "web"
    );
    // Generated handlers win over a shorter declared prefix ("/").
    assert_eq!(
        answer(&server, "macbeth.test", "/api/SubmitItem").await.0,
        "generated submit"
    );

    // Added live with a declared route: not served, said once.
    deploy(&gen, "GetPostsHandler", "generated posts");
    server.logs.wait_for(&format!(
        "skipped {}: route \"/api/GetPosts\" is served by handler \"posts\" declared in project.toml, which wins",
        gen.join("GetPostsHandler").display()
    ));
    assert_eq!(
        answer(&server, "macbeth.test", "/api/GetPosts").await.0,
        "posts"
    );
    let routes = server.routes().await;
    let names: Vec<&str> = routes["projects"]["macbeth"]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "GetFeed", "posts", "SubmitItem"]);
}

#[tokio::test]
async fn an_invalid_handlers_dir_is_refused_and_the_last_good_state_keeps_serving() {
    let ws = Workspace::new();
    let project = ws.project("macbeth", &["macbeth.test"], &manifest());
    deploy(&project.join(GEN_DIR), "GetFeedHandler", "feed");
    let config = ws.config_with(json!(["macbeth"]), json!({}));
    let server = Server::start(&config);
    let (_, pid) = answer(&server, "macbeth.test", "/api/GetFeed").await;
    let manifest_file = project.join("project.toml");

    let cases = [
        (
            "/etc",
            "handlers_dir: \"/etc\": must be relative to the project folder",
        ),
        (
            "../elsewhere",
            "handlers_dir: \"../elsewhere\": must stay inside the project folder (no '..')",
        ),
    ];
    for (n, (dir, message)) in cases.into_iter().enumerate() {
        std::fs::write(&manifest_file, format!("handlers_dir = {dir:?}\n")).unwrap();
        let line = server.logs.wait_for(message);
        assert!(
            line.contains(&manifest_file.display().to_string()),
            "{line}"
        );
        wait_logged(&server, "keeping its previous handlers", n + 1);
        assert_eq!(
            answer(&server, "macbeth.test", "/api/GetFeed").await,
            ("feed".to_owned(), pid)
        );
        let output = run_cli(&["check"], &config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "check accepted {dir:?}");
        assert!(stderr.contains(message), "{stderr}");
    }

    // A folder that exists but cannot be listed (here: a file) is refused
    // too, rather than read as "no handlers".
    std::fs::write(project.join("server/handlers"), "not a folder").unwrap();
    std::fs::write(&manifest_file, "handlers_dir = \"server/handlers\"\n").unwrap();
    server.logs.wait_for(&format!(
        "handlers_dir: {}: cannot read",
        project.join("server/handlers").display()
    ));
    wait_logged(&server, "keeping its previous handlers", 3);
    assert_eq!(
        answer(&server, "macbeth.test", "/api/GetFeed").await,
        ("feed".to_owned(), pid)
    );

    // Fixed: applies again, and the unchanged binary keeps its process.
    std::fs::write(&manifest_file, manifest()).unwrap();
    server.logs.wait_for("previous refusal is resolved");
    assert_eq!(
        answer(&server, "macbeth.test", "/api/GetFeed").await,
        ("feed".to_owned(), pid)
    );
}

/// A current Hamlet checkout compiles its handlers into the Node server and
/// keeps `.generated/` for other files: pointing `handlers_dir` at it finds
/// nothing, and `check` must say so instead of "configuration OK" alone.
#[test]
fn check_warns_about_a_handlers_dir_without_handlers() {
    let ws = Workspace::new();
    let project = ws.project(
        "hamlet",
        &["blog.test"],
        "handlers_dir = \"server/.generated\"\n",
    );
    std::fs::create_dir_all(project.join("server/.generated")).unwrap();
    std::fs::write(project.join("server/.generated/schema.json"), "{}").unwrap();
    let config = ws.config(json!(["hamlet"]));
    let output = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "a warning, not an error: {stdout}");
    assert!(
        stdout.contains("project hamlet: handlers_dir server/.generated holds no handler")
            && stdout.contains("command = [\"node\", \"server/server.js\"]"),
        "{stdout}"
    );
}
