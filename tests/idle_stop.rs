//! Idle handlers sleep and wake on the first request (`idle_stop`,
//! `start = "on_demand"`): the process is gone while asleep, a request
//! brings it back (one start for many requests), streams keep it awake, a
//! wake that fails is retried by the next request, and nothing but a
//! request wakes it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{alive, echo_manifest_entry, until, Server, WebSocket, Workspace, WAIT};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Short enough for tests, long enough that one request's gaps never
/// reach it.
const IDLE_STOP: &str = "300ms";

fn read_pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// An echo handler `web` serving `/` with `extra` lines in its table and
/// `env` in its environment, recording each start's pid in `pids`.
fn manifest(pids: &Path, extra: &str, env: &str) -> String {
    let mut env_line = format!("PID_FILE = {:?}", pids.display().to_string());
    if !env.is_empty() {
        env_line = format!("{env_line}, {env}");
    }
    format!("{}{extra}\n", echo_manifest_entry("web", &["/"], &env_line))
}

/// `alpha` on `alpha.test` with an operator listener.
fn serve(ws: &Workspace, manifest: &str, extra_config: Value) -> Server {
    ws.project("alpha", &["alpha.test"], manifest);
    Server::start(&ws.config_with(json!(["alpha"]), extra_config))
}

/// The `web` handler's entry in `/routes`.
async fn web(server: &Server) -> Value {
    let routes = server.routes().await;
    routes["projects"]["alpha"]["handlers"][0].clone()
}

async fn until_state(server: &Server, state: &str) -> Value {
    let what = format!("alpha/web to be {state}");
    until(&what, || async { web(server).await["state"] == state }).await;
    web(server).await
}

#[tokio::test]
async fn an_idle_handler_sleeps_and_the_next_request_wakes_it() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let server = serve(
        &ws,
        &manifest(&pids, &format!("idle_stop = {IDLE_STOP:?}"), ""),
        json!({}),
    );

    let first = server.get("alpha.test", "/").send().await;
    assert_eq!(first.status, StatusCode::OK);
    let first_pid = first.json()["pid"].as_i64().expect("pid") as i32;

    // Sleeping from the moment it is stopped; its pid goes once it exited.
    until("alpha/web asleep, its process gone", || async {
        let web = web(&server).await;
        web["state"] == "sleeping" && web["pid"].is_null()
    })
    .await;
    assert!(!alive(first_pid), "the idle handler's process still runs");
    let readyz = server.op("GET", "/readyz").send().await;
    assert_eq!(readyz.status, StatusCode::OK, "a sleeping handler is fine");
    let page = server.op("GET", "/").send().await;
    let page = String::from_utf8_lossy(&page.body).into_owned();
    assert!(
        page.contains("1 handler: <span class=\"sleeping\">1 sleeping</span>."),
        "the status page does not count the sleeping handler"
    );
    let metrics = server.op("GET", "/metrics").send().await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(
            "elsinore_handler_state{project=\"alpha\",handler=\"web\",state=\"sleeping\"} 1"
        ),
        "{metrics}"
    );

    // The next request is answered, by a new process, without an error.
    let woken = server.get("alpha.test", "/").send().await;
    assert_eq!(woken.status, StatusCode::OK, "{:?}", woken.body);
    let woken_pid = woken.json()["pid"].as_i64().expect("pid") as i32;
    assert_ne!(woken_pid, first_pid);
    assert!(alive(woken_pid));
    let awake = web(&server).await;
    assert_eq!(awake["state"], "ready", "{awake}");
    assert_eq!(awake["wakes"], 1, "{awake}");
    assert_eq!(read_pids(&pids), [first_pid, woken_pid]);
    let metrics = server.op("GET", "/metrics").send().await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("elsinore_handler_wakes_total{project=\"alpha\",handler=\"web\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_on_demand_handler_is_not_started_and_twenty_requests_start_it_once() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    // A slow start keeps all twenty requests waiting on the one wake.
    let project = ws.project(
        "alpha",
        &["alpha.test"],
        &manifest(
            &pids,
            "start = \"on_demand\"\nidle_stop = \"1h\"",
            "START_DELAY_MS = \"300\"",
        ),
    );
    let public = project.join("hosts/alpha.test/public");
    std::fs::create_dir_all(&public).expect("public/");
    std::fs::write(public.join("page.html"), "static").expect("static file");
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));

    let routes = web(&server).await;
    assert_eq!(routes["state"], "sleeping", "{routes}");
    let readyz = server.op("GET", "/readyz").send().await;
    assert_eq!(readyz.status, StatusCode::OK, "{:?}", readyz.body);
    // Static files are served without the handler.
    let page = server.get("alpha.test", "/page.html").send().await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "static");
    assert!(read_pids(&pids).is_empty(), "started at start-up");

    let requests: Vec<_> = (0..20)
        .map(|i| {
            let request = server.get("alpha.test", &format!("/n{i}"));
            tokio::spawn(request.send())
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    assert_eq!(read_pids(&pids).len(), 1, "one start for twenty requests");
    let awake = web(&server).await;
    assert_eq!(awake["wakes"], 1, "{awake}");
}

#[tokio::test]
async fn an_open_websocket_or_stream_keeps_its_handler_awake() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let server = serve(
        &ws,
        &manifest(&pids, &format!("idle_stop = {IDLE_STOP:?}"), ""),
        json!({}),
    );

    let mut socket = WebSocket::connect(server.addr, "alpha.test", "/ws").await;
    let pid = web(&server).await["pid"].as_i64().expect("pid") as i32;
    // Nothing signals "still awake": wait several idle_stops.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    socket.echo("still there").await;
    let during = web(&server).await;
    assert_eq!(during["state"], "ready", "{during}");
    assert!(alive(pid));
    socket.stream.shutdown().await.ok();
    drop(socket);
    until_state(&server, "sleeping").await;

    // A server-sent event stream, likewise.
    let gate = ws.path().join("gate");
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /sse?gate={} HTTP/1.1\r\nHost: alpha.test\r\n\r\n",
        gate.display()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    common::read_until(&mut stream, b"data: first").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = web(&server).await;
    assert_eq!(during["state"], "ready", "{during}");
    std::fs::write(&gate, "").expect("open the gate");
    common::read_until(&mut stream, b"data: second").await;
    drop(stream);
    until_state(&server, "sleeping").await;
    assert_eq!(read_pids(&pids).len(), 2, "one wake for the stream");
}

#[tokio::test]
async fn a_wake_that_never_becomes_ready_gives_503_and_the_next_request_tries_again() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let ready_file = ws.path().join("ready");
    let server = serve(
        &ws,
        &manifest(
            &pids,
            "start = \"on_demand\"\nstart_timeout = \"3s\"",
            &format!("NOT_READY_FILE = {:?}", ready_file.display().to_string()),
        ),
        json!({}),
    );

    let asked = Instant::now();
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        reply.json()["error"],
        "handler is starting",
        "{:?}",
        reply.body
    );
    assert!(asked.elapsed() < WAIT);
    let asleep = until_state(&server, "sleeping").await;
    assert!(
        asleep["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("start_timeout")),
        "{asleep}"
    );
    common::eventually("the unready process to be stopped", || {
        read_pids(&pids).iter().all(|&pid| !alive(pid))
    });

    // The next request tries again: a second start.
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        read_pids(&pids).len(),
        2,
        "the second request started it again"
    );
    until_state(&server, "sleeping").await;

    // Once the handler can become ready, a request is served.
    std::fs::write(&ready_file, "").expect("ready file");
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(read_pids(&pids).len(), 3);
}

#[tokio::test]
async fn a_reload_does_not_wake_a_sleeping_handler_but_replaces_its_spec() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let idle = format!("idle_stop = {IDLE_STOP:?}");
    // Only SIGHUP reloads: nothing is watched.
    let server = serve(
        &ws,
        &manifest(&pids, &idle, "VERSION = \"1\""),
        json!({"watch": {"mode": "poll", "poll_interval": "1d"}}),
    );
    assert_eq!(
        server.get("alpha.test", "/").send().await.status,
        StatusCode::OK
    );
    until_state(&server, "sleeping").await;

    std::fs::write(
        ws.path().join("alpha/project.toml"),
        manifest(&pids, &idle, "VERSION = \"2\""),
    )
    .expect("new project.toml");
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.logs.wait_for("reload applied");
    until_state(&server, "sleeping").await;

    // The replacement runs the new spec, started by this request's wake:
    // the reload started nothing.
    let reply = server.get("alpha.test", "/env?name=VERSION").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["value"], "2", "the new spec runs");
    let awake = web(&server).await;
    assert_eq!(awake["wakes"], 1, "woken by the request: {awake}");
    assert_eq!(read_pids(&pids).len(), 2, "the first run and the wake");
}

#[tokio::test]
async fn a_passed_socket_is_served_by_the_woken_handler_and_queues_meanwhile() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let server = serve(
        &ws,
        &manifest(
            &pids,
            &format!("listen_fd = true\nidle_stop = {IDLE_STOP:?}"),
            "",
        ),
        json!({}),
    );

    // The handler accepts on descriptor 3, told so by LISTEN_FDS and
    // LISTEN_PID (its own pid).
    let reply = server
        .get("alpha.test", "/env?name=LISTEN_FDS")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["value"], "1");
    let pid = web(&server).await["pid"].clone();
    let reply = server
        .get("alpha.test", "/env?name=LISTEN_PID")
        .send()
        .await;
    assert_eq!(
        reply.json()["value"],
        pid.to_string(),
        "LISTEN_PID is the handler's pid"
    );
    server
        .logs
        .wait_for("echo handler accepting on passed socket");

    // Asleep, its port still takes connections: they wait in the queue.
    let asleep = until_state(&server, "sleeping").await;
    let address = asleep["address"].as_str().expect("address").to_owned();
    let queued = tokio::net::TcpStream::connect(&address).await;
    assert!(
        queued.is_ok(),
        "connect to {address} while asleep: {queued:?}"
    );
    drop(queued);

    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(read_pids(&pids).len(), 2);
}

#[tokio::test]
async fn with_a_passed_socket_a_request_does_not_wait_for_readiness() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let never = ws.path().join("never-ready");
    // Its readiness probe never succeeds; its requests are answered.
    let server = serve(
        &ws,
        &manifest(
            &pids,
            "listen_fd = true\nstart = \"on_demand\"\nstart_timeout = \"5s\"",
            &format!(
                "NOT_READY_FILE = {:?}, START_DELAY_MS = \"200\"",
                never.display().to_string()
            ),
        ),
        json!({}),
    );
    until_state(&server, "sleeping").await;
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let state = web(&server).await;
    assert_eq!(state["state"], "starting", "{state}");
}

#[tokio::test]
async fn a_crashing_handler_with_idle_stop_sleeps_instead_of_restarting_forever() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let server = serve(
        &ws,
        &manifest(
            &pids,
            &format!("idle_stop = {IDLE_STOP:?}"),
            "CRASH_ON_START = \"1\"",
        ),
        json!({}),
    );
    let asleep = until_state(&server, "sleeping").await;
    assert!(
        asleep["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exited")),
        "{asleep}"
    );
    let starts = read_pids(&pids).len();
    // Asleep, it is not restarted (backoff would have by now: 100 ms, 200 ms, ...).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(read_pids(&pids).len(), starts, "restarted while asleep");

    // A request wakes it once; it exits again: 502 with why, then asleep.
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{:?}", reply.body);
    assert_eq!(reply.json()["error"], "handler crashed");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(read_pids(&pids).len(), starts + 1);
    until_state(&server, "sleeping").await;
}

#[tokio::test]
async fn no_other_process_can_listen_on_a_sleeping_handlers_port() {
    let ws = Workspace::new();
    let pids = ws.path().join("pids");
    let server = serve(
        &ws,
        &manifest(&pids, &format!("idle_stop = {IDLE_STOP:?}"), ""),
        json!({}),
    );
    assert_eq!(
        server.get("alpha.test", "/").send().await.status,
        StatusCode::OK
    );
    until("alpha/web asleep, its process gone", || async {
        let web = web(&server).await;
        web["state"] == "sleeping" && web["pid"].is_null()
    })
    .await;
    let address = web(&server).await["address"]
        .as_str()
        .expect("address")
        .to_owned();
    // std binds with SO_REUSEADDR, as servers do: what could otherwise
    // listen next to the port's placeholder while the handler sleeps.
    let squatter = std::net::TcpListener::bind(&address);
    assert!(
        squatter.is_err(),
        "another process listens on {address} while its handler sleeps"
    );
    // And the handler itself binds it again on its wake.
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}
