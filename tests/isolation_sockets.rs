//! Issue 22, point 4: `socket = true` handlers listen on a Unix socket in
//! a private folder instead of a loopback port. A handler written by the
//! test serves over `AF_UNIX`; with `user` set (root only, skipped with a
//! message otherwise) another project's handler cannot connect to it.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{run_cli, until, Server, Workspace};
use http::StatusCode;
use serde_json::{json, Value};

/// A handler on `$ELSINORE_SOCKET` (or `$PORT` when it has none) that
/// reports what it got, echoes bodies, crashes on request, and tries to
/// connect to a socket path it is given, as a compromised project would.
const SOCKET_HANDLER: &str = r#"
import http.server, json, os, socket, socketserver, sys, urllib.parse

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == "/crash":
            os._exit(3)
        if url.path == "/hijack":
            # Alpha's user owns its folder: it puts a link to beta's socket
            # where Elsinore connects for alpha.
            target = urllib.parse.parse_qs(url.query)["path"][0]
            os.unlink(os.environ["ELSINORE_SOCKET"])
            os.symlink(target, os.environ["ELSINORE_SOCKET"])
            self.reply({"linked": target})
            return
        if url.path == "/connect":
            target = urllib.parse.parse_qs(url.query)["path"][0]
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(target)
                probe.sendall(b"GET /whoami HTTP/1.0\r\nHost: x\r\n\r\n")
                answer = probe.recv(65536).decode("latin-1")
                self.reply({"connected": True, "answer": answer})
            except OSError as err:
                self.reply({"connected": False, "error": str(err), "errno": err.errno})
            finally:
                probe.close()
            return
        self.reply({"pid": os.getpid(), "uid": os.getuid(),
                    "socket": os.environ.get("ELSINORE_SOCKET"),
                    "port": os.environ.get("PORT"),
                    "version": os.environ.get("VERSION")})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply({"received": body.decode()})

    # The default logs client_address[0], which a Unix peer does not have.
    def log_message(self, *args):
        pass

if "ELSINORE_SOCKET" in os.environ:
    class Server(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True
    server = Server(os.environ["ELSINORE_SOCKET"], Handler)
    # Careless on purpose (as a umask of 0 would be): only the folder
    # keeps other users out.
    os.chmod(os.environ["ELSINORE_SOCKET"], 0o777)
    server.serve_forever()
else:
    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The manifest of one handler `web` running the test's handler.
fn manifest(handler: &Path, socket: bool, version: &str) -> String {
    format!(
        "[[handler]]\nname = \"web\"\ncommand = [\"python3\", {:?}]\nsocket = {socket}\nready = \"/health\"\nenv = {{ VERSION = {version:?} }}\n",
        handler.display().to_string(),
    )
}

/// Projects `alpha` and `beta`, both `socket = true` unless told, in a
/// workspace other users can pass through.
fn workspace(beta_socket: bool) -> (Workspace, PathBuf) {
    let ws = Workspace::new();
    chmod(ws.path(), 0o755);
    let handler = ws.path().join("handler.py");
    std::fs::write(&handler, SOCKET_HANDLER).unwrap();
    chmod(&handler, 0o644);
    for (name, socket) in [("alpha", true), ("beta", beta_socket)] {
        let dir = ws.project(
            name,
            &[&format!("{name}.test")],
            &manifest(&handler, socket, "1"),
        );
        chmod(&dir, 0o755);
    }
    (ws, handler)
}

async fn get(server: &Server, host: &str, path: &str) -> Value {
    let reply = server.get(host, path).send().await;
    assert_eq!(reply.status, StatusCode::OK, "{host}{path}: {reply:?}");
    reply.json()
}

#[tokio::test]
async fn a_socket_handler_serves_over_its_private_socket_and_comes_back_after_a_crash() {
    let (ws, handler) = workspace(false);
    let config = ws.config_with(json!(["alpha", "beta"]), json!({}));
    let server = Server::start(&config);

    let seen = get(&server, "alpha.test", "/").await;
    let socket = PathBuf::from(seen["socket"].as_str().expect("ELSINORE_SOCKET set"));
    assert!(seen["port"].is_null(), "no PORT with socket = true: {seen}");
    let folder = ws.path().join("data/run/alpha");
    assert_eq!(socket.parent(), Some(folder.as_path()), "{seen}");
    assert_eq!(mode(&folder), 0o700, "alpha's socket folder");
    assert_eq!(mode(&ws.path().join("data/run")), 0o711, "the run folder");
    // A TCP handler next to it is unchanged.
    let beta = get(&server, "beta.test", "/").await;
    assert!(
        beta["socket"].is_null() && beta["port"].is_string(),
        "{beta}"
    );

    // The operator sees where it listens.
    let routes = server.routes().await;
    let address = routes.to_string();
    assert!(
        address.contains(&format!("unix:{}", socket.display())),
        "{routes}"
    );

    let posted = server
        .get("alpha.test", "/form")
        .method("POST")
        .body("name=ophelia")
        .send()
        .await;
    assert_eq!(posted.status, StatusCode::OK, "{posted:?}");
    assert_eq!(posted.json()["received"], "name=ophelia");

    // A crash: restarted on the same path (the stale file removed first).
    let pid = seen["pid"].clone();
    let _ = server.get("alpha.test", "/crash").send().await;
    until("alpha's handler restarted", || async {
        let reply = server.get("alpha.test", "/").send().await;
        reply.status == StatusCode::OK && reply.json()["pid"] != pid
    })
    .await;
    let again = get(&server, "alpha.test", "/").await;
    assert_eq!(again["socket"], seen["socket"], "same path after a restart");

    // Blue/green: a changed manifest starts a new process on a new path
    // while the old one still serves; the old socket is gone afterwards.
    std::fs::write(
        ws.path().join("alpha/project.toml"),
        manifest(&handler, true, "2"),
    )
    .unwrap();
    server.signal(nix::sys::signal::Signal::SIGHUP);
    until("alpha's replacement serves", || async {
        let reply = server.get("alpha.test", "/").send().await;
        reply.status == StatusCode::OK && reply.json()["version"] == "2"
    })
    .await;
    let replaced = get(&server, "alpha.test", "/").await;
    assert_ne!(replaced["socket"], seen["socket"], "a generation per start");
    until("the old socket file removed", || async { !socket.exists() }).await;
}

#[tokio::test]
async fn socket_with_a_url_handler_is_a_config_error_naming_the_field() {
    let ws = Workspace::new();
    ws.project(
        "alpha",
        &["alpha.test"],
        "[[handler]]\nname = \"web\"\nurl = \"http://127.0.0.1:9\"\nsocket = true\n",
    );
    let config = ws.config(json!(["alpha"]));
    let output = run_cli(&["check"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("alpha/project.toml")
            && stderr.contains("socket")
            && stderr.contains("only applies to handlers started with \"command\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn another_projects_handler_cannot_connect_to_a_private_socket() {
    if !is_root() {
        eprintln!("skipped: socket folders owned by project users need root (CI runs as root)");
        return;
    }
    let (ws, _) = workspace(true);
    let config = ws.config_with(
        json!([
            {"path": "alpha", "user": "nobody"},
            {"path": "beta", "user": "daemon"},
        ]),
        json!({}),
    );
    let server = Server::start(&config);

    let alpha = get(&server, "alpha.test", "/").await;
    assert_eq!(alpha["uid"], 65534, "{alpha}");
    let socket = alpha["socket"].as_str().unwrap().to_owned();
    // The attack: beta's handler connects to alpha's socket.
    let path = format!("/connect?path={socket}");
    let attempt = get(&server, "beta.test", &path).await;
    assert_eq!(attempt["connected"], false, "beta reached alpha: {attempt}");
    assert_eq!(attempt["errno"], 13, "EACCES: {attempt}");
    // The control: alpha's own handler can (so the refusal is the folder's).
    let own = get(&server, "alpha.test", &path).await;
    assert_eq!(own["connected"], true, "{own}");
    let folder = ws.path().join("data/run/alpha");
    let meta = std::fs::metadata(&folder).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (65534, 0o700),
        "alpha's folder is nobody's alone"
    );
    let beta_folder = std::fs::metadata(ws.path().join("data/run/beta")).unwrap();
    assert_eq!(beta_folder.uid(), 1, "beta's folder is daemon's");

    // Alpha replaces its socket with a link to beta's, which Elsinore
    // (root) can open: alpha's next request (HTTP/1.0 handler: a new
    // connection each time) must not reach beta's handler.
    let beta = get(&server, "beta.test", "/").await;
    let beta_socket = beta["socket"].as_str().unwrap();
    get(
        &server,
        "alpha.test",
        &format!("/hijack?path={beta_socket}"),
    )
    .await;
    let reply = server.get("alpha.test", "/").send().await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_GATEWAY,
        "alpha's request went through the link: {reply:?}"
    );
    assert_eq!(reply.json()["error"], "handler unreachable", "{reply:?}");
}
