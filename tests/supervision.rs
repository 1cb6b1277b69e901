//! Handler processes under supervision: readiness, crashes, restarts,
//! shutdown, and handlers Elsinore does not run.

mod common;

use std::time::Duration;

use common::{alive, echo_handler, echo_manifest_entry, eventually, Server, Workspace};
use http::StatusCode;
use nix::sys::signal::Signal;
use serde_json::json;

fn read_pids(file: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// One project with one echo handler that ignores SIGTERM and records its
/// pid; returns the running server and the handler's pid once it served.
async fn start_stubborn_handler(ws: &Workspace, project: &str) -> (Server, Vec<i32>) {
    let pids = ws.path().join("pids");
    let env = format!(
        "PID_FILE = {:?}, IGNORE_SIGTERM = \"1\"",
        pids.display().to_string()
    );
    let server = ws.serve_single(project, &echo_manifest_entry("web", &["/"], &env));
    let host = format!("{project}.test");
    assert_eq!(server.get(&host, "/").send().await.status, StatusCode::OK);
    let handler_pids = read_pids(&pids);
    assert_eq!(handler_pids.len(), 1, "{handler_pids:?}");
    (server, handler_pids)
}

#[tokio::test]
async fn a_handler_binding_without_reuse_address_starts_on_its_second_try() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let env = format!(
        "PID_FILE = {:?}, NO_REUSE_ADDRESS = \"1\"",
        pids.display().to_string()
    );
    let server = ws.serve_single("plain", &echo_manifest_entry("web", &["/"], &env));
    // Its first bind meets the port's placeholder (on Linux) and fails;
    // the restart binds the port on its own. Requests meanwhile wait or
    // get 502/503, never another program's answer.
    if cfg!(target_os = "linux") {
        server.logs.wait_for("exited unexpectedly");
    }
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let status = server.get("plain.test", "/").send().await.status;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} while the handler restarts"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the handler never came up after its failed first bind"
        );
        // Backing off (100 ms) before the restart: nothing to wait on.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = read_pids(&pids).len();
    let expected = if cfg!(target_os = "linux") { 2 } else { 1 };
    assert_eq!(started, expected, "handler starts");
}

#[tokio::test]
async fn a_handler_crashing_mid_request_gives_502_then_is_restarted() {
    let ws = Workspace::new();
    let server = ws.serve_single("fragile", &echo_manifest_entry("web", &["/"], ""));

    let before = server.get("fragile.test", "/pid").send().await;
    assert_eq!(before.status, StatusCode::OK);
    let first_pid = before.json()["pid"].as_i64().expect("pid");

    let crash = server.get("fragile.test", "/crash").send().await;
    assert_eq!(crash.status, StatusCode::BAD_GATEWAY);
    assert_eq!(crash.header("content-type"), Some("application/json"));
    let body = crash.json();
    assert_eq!(body["error"], "handler failed");
    assert_eq!(body["handler"], "fragile/web");
    assert_eq!(
        body["reason"],
        "the handler closed the connection before responding"
    );
    server.logs.wait_for("exited unexpectedly (exit status: 3)");

    // The supervisor restarts it; requests then reach a new process. While
    // it is down a request may get 502 (crashed) — never a hang.
    let mut restarted_pid = None;
    for _ in 0..200 {
        let reply = server.get("fragile.test", "/pid").send().await;
        match reply.status {
            StatusCode::OK => {
                restarted_pid = reply.json()["pid"].as_i64();
                break;
            }
            StatusCode::BAD_GATEWAY => {
                // "unreachable" in the instant between the process dying
                // and the supervisor reaping it, "crashed" after that.
                let body = reply.json();
                let error = body["error"].as_str().unwrap_or_default();
                assert!(
                    ["handler crashed", "handler unreachable"].contains(&error),
                    "{body}"
                );
                assert!(body["reason"].is_string(), "{body}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => panic!(
                "unexpected status {other} while restarting: {:?}",
                reply.body
            ),
        }
    }
    let restarted_pid = restarted_pid.expect("handler came back");
    assert_ne!(restarted_pid, first_pid);
    server.logs.wait_for("handler backoff -> starting");
}

#[tokio::test]
async fn a_starting_handler_holds_requests_then_answers_503_with_retry_after() {
    let ws = Workspace::new();
    let flag = ws.path().join("ready-flag");
    let entry = echo_manifest_entry(
        "web",
        &["/"],
        &format!("NOT_READY_FILE = {:?}", flag.display().to_string()),
    ) + "start_timeout = \"300ms\"\n";
    let server = ws.serve_single("slow", &entry);

    let started = std::time::Instant::now();
    let reply = server.get("slow.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered before the start timeout"
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    let body = reply.json();
    assert_eq!(body["error"], "handler is starting");
    assert_eq!(body["handler"], "slow/web");

    // Readiness arrives: a request waiting at that moment is served.
    std::fs::write(&flag, "").expect("flag");
    server.logs.wait_for("handler starting -> ready");
    let reply = server.get("slow.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_waits_for_a_handler_that_is_still_binding() {
    let ws = Workspace::new();
    // Binds after 700 ms, well inside the default 10 s start timeout.
    let server = ws.serve_single(
        "late",
        &echo_manifest_entry("web", &["/"], "START_DELAY_MS = \"700\""),
    );
    let reply = server.get("late.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn a_crash_looping_handler_is_reported_and_answers_502() {
    let ws = Workspace::new();
    let server = ws.serve_single(
        "broken",
        &echo_manifest_entry("web", &["/"], "CRASH_ON_START = \"1\""),
    );
    server.logs.wait_for("handler is crash-looping");
    let reply = server.get("broken.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exit status: 2")),
        "{body}"
    );
}

#[tokio::test]
async fn sigterm_stops_every_handler_before_elsinore_exits() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let env = format!("PID_FILE = {:?}", pids.display().to_string());
    let manifest = [
        echo_manifest_entry("web", &["/"], &env),
        echo_manifest_entry("api", &["/api/"], &env),
    ]
    .join("\n");
    ws.project("one", &["one.test"], &manifest);
    ws.project(
        "two",
        &["two.test"],
        &echo_manifest_entry("web", &["/"], &env),
    );
    let mut server = Server::start(&ws.config(json!(["one", "two"])));
    for (host, path) in [("one.test", "/"), ("one.test", "/api/"), ("two.test", "/")] {
        assert_eq!(server.get(host, path).send().await.status, StatusCode::OK);
    }
    let handler_pids = read_pids(&pids);
    assert_eq!(handler_pids.len(), 3, "{handler_pids:?}");

    server.signal(Signal::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "elsinore exited with {status}");
    for pid in handler_pids {
        assert!(!alive(pid), "handler {pid} survived Elsinore's exit");
    }
    server.logs.wait_for("bye");
}

#[tokio::test]
async fn a_killed_elsinore_leaves_no_handler_behind() {
    let ws = Workspace::new();
    // It even ignores SIGTERM: only SIGKILL can end it.
    let (mut server, handler_pids) = start_stubborn_handler(&ws, "orphan").await;

    // SIGKILL: no chance to clean up; the parent-death signal must do it.
    server.signal(Signal::SIGKILL);
    server.wait_exit();
    eventually("handler to die after SIGKILL of elsinore", || {
        handler_pids.iter().all(|&pid| !alive(pid))
    });
}

// Multi-threaded: the request runs on one worker while the test thread
// blocks on the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_across_sigterm() {
    let ws = Workspace::new();
    let mut server = ws.serve_single("busy", &echo_manifest_entry("web", &["/"], ""));
    assert_eq!(
        server.get("busy.test", "/").send().await.status,
        StatusCode::OK
    );

    let slow = tokio::spawn(
        server
            .get("busy.test", "/slow?ms=800")
            .header("X-Request-Id", "in-flight-1")
            .send(),
    );
    server.logs.wait_for("slow request started: in-flight-1");
    server.signal(Signal::SIGTERM);
    let reply = slow.await.expect("task");
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "in-flight request was cut: {:?}",
        reply.body
    );
    assert!(server.wait_exit().success());
}

#[tokio::test]
async fn an_external_url_handler_is_proxied_and_its_failure_is_a_502() {
    // Run the echo fixture ourselves, as "somebody else's" server.
    let port = common::ports::free_port();
    let mut external = std::process::Command::new("python3")
        .arg(echo_handler())
        .env("PORT", port.to_string())
        .env("HANDLER_NAME", "external")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start external handler");

    let ws = Workspace::new();
    let manifest = format!("[[handler]]\nname = \"legacy\"\nurl = \"http://127.0.0.1:{port}\"\n");
    let server = ws.serve_single("legacy", &manifest);

    let mut reply = None;
    for _ in 0..200 {
        let attempt = server.get("legacy.test", "/hello?x=1").send().await;
        if attempt.status == StatusCode::OK {
            reply = Some(attempt);
            break;
        }
        // The external server may still be binding: 502 until it listens.
        assert_eq!(attempt.status, StatusCode::BAD_GATEWAY);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reply = reply.expect("external handler answered");
    assert_eq!(reply.json()["handler"], "external");
    assert_eq!(reply.json()["path"], "/hello?x=1");
    assert_eq!(reply.seen("x-elsinore-project"), ["legacy"]);

    external.kill().expect("kill external");
    external.wait().expect("reap external");
    let reply = server.get("legacy.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let body = reply.json();
    assert_eq!(body["error"], "handler unreachable");
    assert_eq!(body["handler"], "legacy/legacy");
}

#[tokio::test]
async fn a_handler_that_does_not_answer_in_time_gives_504() {
    let ws = Workspace::new();
    let entry = echo_manifest_entry("web", &["/"], "") + "response_timeout = \"300ms\"\n";
    let server = ws.serve_single("stuck", &entry);
    assert_eq!(
        server.get("stuck.test", "/").send().await.status,
        StatusCode::OK
    );

    // Each on a new connection, the request written at once: its bytes
    // are often there at the connection's first poll, before its timer
    // was ever armed (which once left the deadline unwatched).
    for _ in 0..3 {
        let reply = server.get("stuck.test", "/slow?ms=3000").send().await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        let body = reply.json();
        assert_eq!(body["error"], "handler timed out");
        assert_eq!(body["reason"], "no response within 300 ms");
    }
}

#[tokio::test]
async fn a_handler_ignoring_sigterm_is_killed_after_the_stop_grace() {
    let ws = Workspace::new();
    let (mut server, handler_pids) = start_stubborn_handler(&ws, "stubborn").await;

    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    server
        .logs
        .wait_for("handler ignored SIGTERM; sending SIGKILL");
    for pid in handler_pids {
        assert!(!alive(pid), "handler {pid} survived Elsinore's exit");
    }
}
