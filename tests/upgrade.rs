//! Zero-downtime binary upgrade (SIGUSR2): the listening sockets are
//! handed to a new process, which takes over once its handlers are ready;
//! a new process that cannot get ready leaves the old one serving.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use http::StatusCode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The process an upgrade started, stopped when the test ends (it is not
/// the test's child, so `Server`'s drop does not reach it).
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGTERM);
        eventually("the new process exits", || !alive(self.0));
    }
}

/// `pid=N` in a log line.
fn pid_in(line: &str) -> i32 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("pid="))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Requests sent and failed by the load below.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    sent: AtomicUsize,
    failed: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        self.errors.lock().unwrap().push(why);
    }
}

/// 4 keep-alive clients (reconnecting when the server closed their idle
/// connection, as every HTTP client does) and a stream of new connections.
fn start_load(addr: std::net::SocketAddr, load: &Arc<Load>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = KeepAlive::connect(addr).await;
            while !load.stop.load(Ordering::SeqCst) {
                match client.get("site.test", "/").await {
                    Ok((StatusCode::OK, _)) => {}
                    // Closed while idle, before this request was sent, or
                    // as it was sent (the keep-alive race every drain has:
                    // RFC 9112 section 9.3.1 lets a client retry an
                    // idempotent request on a new connection, and browsers
                    // do). Never a request the server had started on.
                    Err(why)
                        if why.starts_with("connection:")
                            || why.contains("connection closed before message completed") =>
                    {
                        client = KeepAlive::connect(addr).await;
                        continue;
                    }
                    Ok((status, body)) => load.fail(format!("keep-alive: {status} {body:?}")),
                    Err(why) => load.fail(format!("keep-alive: {why}")),
                }
                load.sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let load = load.clone();
    tasks.push(tokio::spawn(async move {
        while !load.stop.load(Ordering::SeqCst) {
            let reply = Req::new(addr, http::Method::GET, "/")
                .host("site.test")
                .send()
                .await;
            if reply.status != StatusCode::OK {
                load.fail(format!("new connection: {}", reply.status));
            }
            load.sent.fetch_add(1, Ordering::SeqCst);
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_hands_over_under_load_without_a_failed_request() {
    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let mut server = Server::start(&ws.config(serde_json::json!(["site"])));
    let old_pid = server.pid();
    let load = Arc::new(Load::default());
    let tasks = start_load(server.addr, &load);
    until("the load is running", || async {
        load.sent.load(Ordering::SeqCst) > 20
    })
    .await;

    server.signal(Signal::SIGUSR2);
    let line = server.logs.wait_for("serving projects=1 hosts=1");
    let line = if line.contains("generation=2") {
        line
    } else {
        // The first one is the old process's own.
        eventually("the new process logs `serving`", || {
            server
                .logs
                .all()
                .iter()
                .any(|l| l.contains("serving") && l.contains("generation=2"))
        });
        server
            .logs
            .all()
            .into_iter()
            .find(|l| l.contains("serving") && l.contains("generation=2"))
            .unwrap()
    };
    let successor = Successor(pid_in(&line));
    assert_ne!(successor.0, old_pid);
    server
        .logs
        .wait_for("upgrade: the new process is ready and serving");
    assert!(
        server.wait_exit().success(),
        "the old process drains and exits"
    );
    let sent_at_exit = load.sent.load(Ordering::SeqCst);
    until("requests go on after the old process left", || async {
        load.sent.load(Ordering::SeqCst) > sent_at_exit + 20
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        load.failed.load(Ordering::SeqCst),
        0,
        "failed requests: {:?}",
        load.errors.lock().unwrap()
    );
    assert!(alive(successor.0), "the new process serves");
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_successor_whose_handlers_never_get_ready_leaves_the_old_serving() {
    let ws = Workspace::new();
    // Ready only while this file exists: the new process's handler never
    // is, once it is gone.
    let ready_file = ws.path().join("ready");
    std::fs::write(&ready_file, "").unwrap();
    let env = format!("NOT_READY_FILE = {:?}", ready_file.display().to_string());
    let manifest = format!(
        "{}start_timeout = \"1s\"\n",
        echo_manifest_entry("web", &["/"], &env)
    );
    ws.project("site", &["site.test"], &manifest);
    let server = Server::start(&ws.config(serde_json::json!(["site"])));
    // start_timeout is short for the successor's sake; the first handler
    // gets all the time it needs on a loaded machine.
    server.logs.wait_for("handler starting -> ready");
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    std::fs::remove_file(&ready_file).unwrap();

    server.signal(Signal::SIGUSR2);
    let failed = server.logs.wait_for("upgrade failed, still serving");
    assert!(failed.contains("site/web"), "says which handler: {failed}");
    assert!(alive(server.pid()));
    for _ in 0..5 {
        let reply = server.get("site.test", "/").send().await;
        assert_eq!(reply.status, StatusCode::OK, "the old process still serves");
    }
}

/// `elsinore upgrade`: a binary that cannot take over is reported, with
/// the old server serving on; then the server's own binary takes over and
/// the command names the new pid.
#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_command_reports_failure_then_the_new_pid() {
    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let config = ws.config_with(
        serde_json::json!(["site"]),
        serde_json::json!({"admin_listen": "127.0.0.1:0"}),
    );
    let mut server = Server::start(&config);
    let old_pid = server.pid();
    let routes = server.op("GET", "/routes").send().await.json();
    assert_eq!(routes["generation"], 1, "{routes}");
    assert_eq!(routes["pid"], old_pid);

    let output = run_cli(&["upgrade", "--binary", "/bin/false"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "a failed upgrade exits non-zero");
    assert!(
        stderr.contains(&format!("upgrade failed, pid {old_pid} still serving"))
            && stderr.contains("exited before it was ready"),
        "says why: {stderr}"
    );
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "the old process still serves");

    let output = run_cli(&["upgrade"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let new_pid: i32 = stdout
        .strip_prefix("upgraded: pid ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("names the new pid: {stdout}"));
    let successor = Successor(new_pid);
    assert_ne!(successor.0, old_pid);
    assert!(server.wait_exit().success(), "the old process drains");
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "the new process serves");
    // The operator listener was handed over too, and says who serves.
    let routes = server.op("GET", "/routes").send().await.json();
    assert_eq!(routes["generation"], 2, "{routes}");
    assert_eq!(routes["pid"], new_pid);
}

#[test]
fn the_upgrade_command_without_a_running_server_says_so() {
    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let config = ws.config(serde_json::json!(["site"]));
    let output = run_cli(&["upgrade"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no running server found"), "{stderr}");
}

/// Streams open when the upgrade happens finish on the old process: an
/// SSE response goes on to its end and a WebSocket keeps echoing while
/// the new process already serves new connections.
#[tokio::test(flavor = "multi_thread")]
async fn open_streams_finish_on_the_old_process_across_an_upgrade() {
    use tokio::io::AsyncWriteExt as _;

    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let mut server = Server::start(&ws.config(serde_json::json!(["site"])));
    let old_pid = server.pid();

    let gate = ws.path().join("sse-gate");
    let mut sse = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /sse?gate={} HTTP/1.1\r\nHost: site.test\r\nAccept: text/event-stream\r\n\r\n",
        gate.display()
    );
    sse.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut sse, b"data: first").await;
    let mut socket = WebSocket::connect(server.addr, "site.test", "/ws").await;
    socket.echo("before").await;

    server.signal(Signal::SIGUSR2);
    // The old process names its successor's pid.
    let line = server
        .logs
        .wait_for("upgrade: the new process is ready and serving");
    let successor = Successor(pid_in(&line));
    assert_ne!(successor.0, old_pid);
    assert!(alive(old_pid), "the old process waits for its streams");
    socket.echo("during the drain").await;
    std::fs::write(&gate, "").unwrap();
    read_until(&mut sse, b"data: second").await;
    drop(socket);
    assert!(server.wait_exit().success(), "the old process drains");
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK, "the new process serves");
}

/// A pid file left by a server that died names a pid the kernel may give
/// to another process: `elsinore upgrade` must not signal that one
/// (SIGUSR2's default action kills).
#[test]
fn the_upgrade_command_never_signals_a_reused_pid() {
    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let config = ws.config(serde_json::json!(["site"]));
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep runs");
    let run = ws.path().join("data/run");
    std::fs::create_dir_all(&run).unwrap();
    // Its pid, but not its start time: what a stale file looks like once
    // the pid is reused.
    std::fs::write(run.join("elsinore.pid"), format!("{} 1\n", bystander.id())).unwrap();
    let output = run_cli(&["upgrade"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is not running"), "{stderr}");
    let pid = i32::try_from(bystander.id()).unwrap();
    assert!(alive(pid), "the bystander was signalled");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}
