//! Live changes on a running server: host folders, config.json and
//! project.toml edits, bad edits, conflicts, forced reloads, and requests
//! that keep succeeding through all of it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use http::StatusCode;
use serde_json::{json, Value};

/// Status of `GET /` for `host` over a fresh connection.
async fn status(server: &Server, host: &str) -> StatusCode {
    server.get(host, "/").send().await.status
}

/// Waits (bounded) until `GET /` on `host` answers `expected`.
async fn wait_status(server: &Server, host: &str, expected: StatusCode) {
    until(&format!("{host} answers {expected}"), || async {
        status(server, host).await == expected
    })
    .await;
}

/// The pid of the echo handler answering for `host`.
async fn handler_pid(server: &Server, host: &str) -> i32 {
    let reply = server.get(host, "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "GET / on {host}");
    reply.json()["pid"].as_i64().expect("pid") as i32
}

fn echo_with(env: &str) -> String {
    echo_manifest_entry("web", &["/"], env)
}

#[tokio::test]
async fn host_folders_added_removed_and_renamed_go_live_and_away() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    assert_eq!(status(&server, "new.test").await, StatusCode::NOT_FOUND);

    std::fs::create_dir(project.join("hosts/new.test")).unwrap();
    wait_status(&server, "new.test", StatusCode::OK).await;
    server.logs.wait_for("+ host new.test → alpha");
    let reply = server.get("new.test", "/").send().await;
    assert_eq!(reply.seen("x-elsinore-host"), ["new.test"]);

    std::fs::rename(
        project.join("hosts/new.test"),
        project.join("hosts/renamed.test"),
    )
    .unwrap();
    until("renamed.test serves and new.test is gone", || async {
        status(&server, "renamed.test").await == StatusCode::OK
            && status(&server, "new.test").await == StatusCode::NOT_FOUND
    })
    .await;

    std::fs::remove_dir(project.join("hosts/renamed.test")).unwrap();
    wait_status(&server, "renamed.test", StatusCode::NOT_FOUND).await;
    server.logs.wait_for("- host renamed.test (was alpha)");
    // The project's own host was never affected.
    assert_eq!(status(&server, "alpha.test").await, StatusCode::OK);
}

#[tokio::test]
async fn hosts_folder_created_after_startup_is_watched() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &[], &echo_manifest());
    std::fs::remove_dir(project.join("hosts")).unwrap();
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    std::fs::create_dir_all(project.join("hosts/first.test")).unwrap();
    wait_status(&server, "first.test", StatusCode::OK).await;
    // A second folder in the now-watched hosts/ is seen too.
    std::fs::create_dir(project.join("hosts/second.test")).unwrap();
    wait_status(&server, "second.test", StatusCode::OK).await;
}

#[tokio::test]
async fn project_added_to_and_removed_from_config_starts_and_stops_its_handler() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let config = ws.config_with(json!(["alpha"]), json!({}));
    let server = Server::start(&config);
    assert_eq!(status(&server, "beta.test").await, StatusCode::NOT_FOUND);

    ws.config_with(json!(["alpha", "beta"]), json!({}));
    server.logs.wait_for("+ project beta");
    wait_status(&server, "beta.test", StatusCode::OK).await;
    let beta_pid = handler_pid(&server, "beta.test").await;
    assert_eq!(
        server
            .get("beta.test", "/")
            .send()
            .await
            .seen("x-elsinore-project"),
        ["beta"]
    );

    ws.config_with(json!(["alpha"]), json!({}));
    server.logs.wait_for("- project beta");
    wait_status(&server, "beta.test", StatusCode::NOT_FOUND).await;
    eventually("beta's handler process ends", || !alive(beta_pid));
    assert_eq!(status(&server, "alpha.test").await, StatusCode::OK);
}

/// Keeps `clients` keep-alive connections busy with `GET /` on `host`
/// until `stop` is set; returns (successes, failures described).
async fn load(
    addr: std::net::SocketAddr,
    host: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = KeepAlive::connect(addr).await;
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match conn.get(host, "/").await {
                    Ok((StatusCode::OK, _)) => ok += 1,
                    Ok((status, body)) => {
                        failed.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
                    }
                    Err(err) => {
                        failed.push(err);
                        conn = KeepAlive::connect(addr).await;
                    }
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for task in tasks {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_manifest_replaces_the_handler_without_a_failed_request() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_with("MARK = \"v1\""));
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let old_pid = handler_pid(&server, "alpha.test").await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load(server.addr, "alpha.test", 3, stop.clone()));

    std::fs::write(project.join("project.toml"), echo_with("MARK = \"v2\"")).unwrap();
    server
        .logs
        .wait_for("~ project alpha: handler web replaced");
    until("the new handler answers", || async {
        let reply = server.get("alpha.test", "/env?name=MARK").send().await;
        reply.status == StatusCode::OK && reply.json()["value"] == "v2"
    })
    .await;
    eventually("the old handler process ends", || !alive(old_pid));

    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = clients.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the redeploy: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 0, "the load clients sent nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_table_swaps_fail_no_request() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let swaps_before = server.routes().await["swaps"].as_u64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load(server.addr, "alpha.test", 4, stop.clone()));
    for i in 0..50 {
        let dir = project.join(format!("hosts/churn{i}.test"));
        std::fs::create_dir(&dir).unwrap();
        let reply = server.op("POST", "/reload").send().await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        std::fs::remove_dir(&dir).unwrap();
        let reply = server.op("POST", "/reload").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = clients.await.unwrap();
    let swaps = server.routes().await["swaps"].as_u64().unwrap() - swaps_before;
    assert!(swaps >= 100, "only {swaps} swaps happened");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during {swaps} swaps: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 0, "the load clients sent nothing");
}

#[tokio::test]
async fn invalid_config_json_keeps_the_old_table_and_says_where() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let config = ws.config_with(json!(["alpha"]), json!({}));
    let server = Server::start(&config);
    let good = std::fs::read_to_string(&config).unwrap();

    std::fs::write(
        &config,
        "{\n  \"listen\": \"127.0.0.1:0\",\n  \"projects\": [\"alpha\",]\n}\n",
    )
    .unwrap();
    let line = server.logs.wait_for("reload refused part of the change");
    assert!(
        line.contains("config.json:3:"),
        "no line:column in {line:?}"
    );
    assert_eq!(status(&server, "alpha.test").await, StatusCode::OK);
    let routes = server.routes().await;
    assert_eq!(routes["last_reload"]["ok"], false);
    assert!(routes["hosts"]["alpha.test"].is_object(), "{routes}");

    // Unknown key: named by its field.
    std::fs::write(&config, good.replace("\"projects\"", "\"projekts\"")).unwrap();
    server.logs.wait_for("unknown field `projekts`");
    assert_eq!(status(&server, "alpha.test").await, StatusCode::OK);

    // Fixed: applies again.
    std::fs::write(&config, &good).unwrap();
    server.logs.wait_for("previous refusal is resolved");
    assert_eq!(server.routes().await["last_reload"]["ok"], true);
}

#[tokio::test]
async fn broken_project_toml_keeps_its_handlers_while_host_changes_still_apply() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let pid = handler_pid(&server, "alpha.test").await;

    std::fs::write(
        project.join("project.toml"),
        "[[handler]]\nname = \"web\"\nroutes = \"/\"\n",
    )
    .unwrap();
    let line = server.logs.wait_for("reload refused part of the change");
    assert!(line.contains("project.toml"), "{line}");
    server.logs.wait_for("keeping its previous handlers");
    std::fs::create_dir(project.join("hosts/more.test")).unwrap();
    wait_status(&server, "more.test", StatusCode::OK).await;
    assert_eq!(
        handler_pid(&server, "alpha.test").await,
        pid,
        "the handler was restarted"
    );
    let errors = server.routes().await["last_reload"]["errors"].to_string();
    assert!(errors.contains("project.toml"), "{errors}");
}

#[tokio::test]
async fn a_new_handler_that_never_starts_leaves_the_old_one_serving() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let pid = handler_pid(&server, "alpha.test").await;
    std::fs::write(
        project.join("project.toml"),
        echo_with("CRASH_ON_START = \"1\""),
    )
    .unwrap();
    server.logs.wait_for("did not start");
    assert_eq!(handler_pid(&server, "alpha.test").await, pid);
    let reply = server.routes().await;
    assert_eq!(reply["projects"]["alpha"]["handlers"][0]["pid"], pid);
}

#[tokio::test]
async fn conflicts_keep_the_first_holder_and_resolve_when_a_folder_goes() {
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let beta = ws.project("beta", &["beta.test", "shared.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha", "beta"]), json!({})));

    // alpha comes first in config.json, but beta held the name first.
    std::fs::create_dir(alpha.join("hosts/shared.test")).unwrap();
    server
        .logs
        .wait_for("host shared.test is declared by both beta and alpha; beta keeps it");
    let routes = server.routes().await;
    assert_eq!(
        routes["conflicts"],
        json!([{"host": "shared.test", "kept_by": "beta", "refused_for": "alpha"}])
    );
    assert_eq!(routes["hosts"]["shared.test"]["project"], "beta");
    let reply = server.get("shared.test", "/").send().await;
    assert_eq!(reply.seen("x-elsinore-project"), ["beta"]);

    std::fs::remove_dir(beta.join("hosts/shared.test")).unwrap();
    server.logs.wait_for("~ host shared.test: beta → alpha");
    let reply = server.get("shared.test", "/").send().await;
    assert_eq!(reply.seen("x-elsinore-project"), ["alpha"]);
    assert_eq!(server.routes().await["conflicts"], json!([]));
}

#[tokio::test]
async fn restart_only_settings_are_refused_and_the_rest_applies() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));

    ws.config_with(
        json!(["alpha", "beta"]),
        json!({"listen": "127.0.0.1:1", "database": "other.db"}),
    );
    server
        .logs
        .wait_for("`listen` changed to 127.0.0.1:1; it takes effect after a restart");
    server.logs.wait_for("`database` changed to");
    wait_status(&server, "beta.test", StatusCode::OK).await;
    let pending = server.routes().await["pending_restart"].clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(2), "{pending}");
    assert!(
        !ws.path().join("other.db").exists(),
        "the database moved without a restart"
    );
}

#[tokio::test]
async fn sighup_and_post_reload_rescan_when_nothing_is_watched() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    // Polling once a day: only a forced reload can see the changes below.
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"watch": {"mode": "poll", "poll_interval": "1d"}}),
    ));

    std::fs::create_dir(project.join("hosts/hup.test")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.logs.wait_for("+ host hup.test → alpha");
    assert_eq!(status(&server, "hup.test").await, StatusCode::OK);

    std::fs::create_dir(project.join("hosts/post.test")).unwrap();
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let report = reply.json();
    assert_eq!(
        report["changes"],
        json!(["+ host post.test → alpha"]),
        "{report}"
    );
    assert_eq!(report["trigger"], "POST /reload");
    assert_eq!(status(&server, "post.test").await, StatusCode::OK);
}

#[tokio::test]
async fn polling_fallback_sees_new_hosts_when_forced() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"watch": {"mode": "poll", "poll_interval": "100ms"}}),
    ));
    assert_eq!(server.routes().await["watching"], "poll");
    std::fs::create_dir(project.join("hosts/polled.test")).unwrap();
    wait_status(&server, "polled.test", StatusCode::OK).await;
}

#[tokio::test]
async fn operator_health_readiness_and_routes() {
    let ws = Workspace::new();
    let ready_file = ws.path().join("ready");
    let env = format!("NOT_READY_FILE = {:?}", ready_file.display().to_string());
    ws.project("alpha", &["alpha.test", "*.alpha.test"], &echo_with(&env));
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));

    let health = server.op("GET", "/healthz").send().await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = server.op("GET", "/readyz").send().await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["not_ready"], json!(["alpha/web: starting"]));

    std::fs::write(&ready_file, "").unwrap();
    until("readyz turns 200", || async {
        server.op("GET", "/readyz").send().await.status == StatusCode::OK
    })
    .await;

    let routes: Value = server.routes().await;
    assert_eq!(routes["watching"], "native");
    assert_eq!(routes["hosts"]["*.alpha.test"]["project"], "alpha");
    assert_eq!(
        routes["hosts"]["alpha.test"]["handlers"][0]["state"],
        "ready"
    );
    let handler = &routes["projects"]["alpha"]["handlers"][0];
    assert_eq!(handler["name"], "web");
    assert_eq!(handler["routes"], json!(["/"]));
    assert!(handler["pid"].as_i64().is_some(), "{handler}");
    assert_eq!(routes["last_reload"]["trigger"], "startup");
    assert_eq!(routes["last_reload"]["ok"], true);

    let missing = server.op("GET", "/nope").send().await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let wrong = server.op("GET", "/reload").send().await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_project_finishes_its_in_flight_requests_before_its_handler_stops() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha", "beta"]), json!({})));
    let beta_pid = handler_pid(&server, "beta.test").await;

    let slow = tokio::spawn(
        server
            .get("beta.test", "/slow?ms=1500")
            .header("X-Request-Id", "draining-1")
            .send(),
    );
    server.logs.wait_for("slow request started: draining-1");
    ws.config_with(json!(["alpha"]), json!({}));
    server.logs.wait_for("- project beta");
    assert_eq!(status(&server, "beta.test").await, StatusCode::NOT_FOUND);
    assert!(
        alive(beta_pid),
        "beta's handler stopped while a request was in flight"
    );

    let reply = slow.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "in-flight request was cut: {:?}",
        reply.body
    );
    eventually("beta's handler process ends after its last request", || {
        !alive(beta_pid)
    });
}

#[tokio::test]
async fn a_project_added_by_post_reload_has_its_hosts_watched() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let beta = ws.project("beta", &["beta.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));

    ws.config_with(json!(["alpha", "beta"]), json!({}));
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    server.logs.wait_for("+ project beta");
    // Whichever reload added beta, its hosts/ is watched from then on.
    std::fs::create_dir(beta.join("hosts/later.test")).unwrap();
    wait_status(&server, "later.test", StatusCode::OK).await;
}

#[tokio::test]
async fn a_slow_redeploy_does_not_hold_up_other_changes() {
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["alpha.test"], &echo_with("MARK = \"v1\""));
    let beta = ws.project("beta", &["beta.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(json!(["alpha", "beta"]), json!({})));
    let mark = |reply: Reply| {
        reply.json()["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    // The new alpha handler takes 3 s to start.
    std::fs::write(
        alpha.join("project.toml"),
        echo_with("MARK = \"v2\", START_DELAY_MS = \"3000\""),
    )
    .unwrap();
    server.logs.wait_for(
        "~ project alpha: handler web starting; the previous one serves until it is ready",
    );

    // Meanwhile another project's new host goes live, and alpha keeps
    // answering from its previous handler.
    std::fs::create_dir(beta.join("hosts/quick.test")).unwrap();
    wait_status(&server, "quick.test", StatusCode::OK).await;
    assert!(
        !server
            .logs
            .all()
            .iter()
            .any(|l| l.contains("handler web replaced")),
        "the new host waited for alpha's redeploy"
    );
    let reply = server.get("alpha.test", "/env?name=MARK").send().await;
    assert_eq!(mark(reply), "v1");

    server
        .logs
        .wait_for("~ project alpha: handler web replaced");
    let reply = server.get("alpha.test", "/env?name=MARK").send().await;
    assert_eq!(mark(reply), "v2");
}
