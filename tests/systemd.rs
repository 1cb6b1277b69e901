//! Running under systemd: `Type=notify` messages sent to `NOTIFY_SOCKET`,
//! and listeners passed by socket activation (`LISTEN_FDS`).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use common::*;
use http::StatusCode;
use nix::sys::signal::Signal;

/// What the service manager would be listening on: a datagram socket the
/// test reads.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind(dir: &Path) -> (Self, String) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        (Self { socket }, path.display().to_string())
    }

    /// The next message (bounded by [`WAIT`]).
    fn next(&self, waiting_for: &str) -> String {
        let mut buf = [0u8; 4096];
        let len = self.socket.recv(&mut buf).unwrap_or_else(|err| {
            panic!("no notify message ({waiting_for}) within {WAIT:?}: {err}")
        });
        String::from_utf8_lossy(&buf[..len]).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_socket_hears_ready_reloading_and_stopping() {
    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let config = ws.config(serde_json::json!(["site"]));
    let (notify, path) = NotifySocket::bind(ws.path());
    let mut server = Server::start_with_env(&config, &[("NOTIFY_SOCKET", &path)]);

    assert_eq!(notify.next("READY=1"), "READY=1\n");
    // Ready means ready: the first request is answered by the handler.
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    // Handlers are not told where the service manager listens.
    let reply = server
        .get("site.test", "/env?name=NOTIFY_SOCKET")
        .send()
        .await;
    assert_eq!(reply.json()["value"], serde_json::Value::Null);

    server.signal(Signal::SIGHUP);
    let reloading = notify.next("RELOADING=1");
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.first(), Some(&"RELOADING=1"), "{reloading:?}");
    let usec = lines
        .iter()
        .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading:?}");
    assert_eq!(notify.next("READY=1 after the reload"), "READY=1\n");

    server.signal(Signal::SIGTERM);
    assert_eq!(notify.next("STOPPING=1"), "STOPPING=1\n");
    assert!(server.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_fds_from_socket_activation_are_served() {
    use std::os::fd::AsRawFd as _;

    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    // Bound by "systemd": the test. Elsinore must not bind again (it
    // would fail: the address is taken) but use this very socket.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ws.write_config(&serde_json::json!({
        "listen": addr.to_string(),
        "database": "data/elsinore.db",
        "projects": ["site"],
    }));
    let fd = listener.as_raw_fd();
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    // As systemd does: the socket at fd 3, LISTEN_PID the server's own pid
    // (bash: dash only redirects descriptors below 10).
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --config "$1" {}"#,
            move_to_fd3(fd)
        ))
        .arg(binary())
        .arg(&config);
    let server = Server::start_command(command);
    let socket = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    drop(listener);
    assert_eq!(server.addr, addr);
    let reply = server.get("site.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    // The handler (a child of the server) never holds the passed listener.
    let children = std::process::Command::new("pgrep")
        .args(["-P", &server.pid().to_string()])
        .output()
        .unwrap();
    let children = String::from_utf8_lossy(&children.stdout).to_string();
    assert!(!children.trim().is_empty(), "no handler process found");
    for child in children.split_whitespace() {
        for entry in std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .flatten()
        {
            assert_ne!(
                std::fs::read_link(entry.path()).ok().as_ref(),
                Some(&socket),
                "handler {child} inherited the listening socket"
            );
        }
    }
}

/// A socket systemd passes for an address config.json does not name is a
/// mistake in the units: `serve` refuses to start and says which.
#[test]
fn a_passed_socket_config_json_does_not_name_is_refused() {
    use std::os::fd::AsRawFd as _;

    let ws = Workspace::new();
    ws.project("site", &["site.test"], &echo_manifest());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ws.write_config(&serde_json::json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "projects": ["site"],
    }));
    let fd = listener.as_raw_fd();
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --config "$1" {}"#,
            move_to_fd3(fd)
        ))
        .arg(binary())
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains(&addr.to_string()) && said.contains("fd 3"),
        "{said}"
    );
}

/// bash redirections putting `fd` at 3 and closing the original, as
/// systemd passes a socket; when the socket already is fd 3, closing "the
/// original" would close it (and the server's first file would take 3).
fn move_to_fd3(fd: std::os::fd::RawFd) -> String {
    if fd == 3 {
        String::new()
    } else {
        format!("3<&{fd} {fd}<&-")
    }
}
