//! Test support: run the real `elsinore` binary on port 0 in a temp dir,
//! with real handler processes, and talk to it over real sockets.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub mod inspect_tls;
pub mod pebble;
pub mod ports;
pub mod postgres;
pub mod stream;
#[allow(unused_imports)]
pub use stream::{read_until, WebSocket};

/// Upper bound for anything a test waits for; generous because CI machines
/// are shared, and only reached when something is actually broken.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_elsinore")
}

pub fn echo_handler() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo_handler.py")
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A temp folder holding `config.json` and project folders.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates `<name>/project.toml` and `<name>/hosts/<host>/` folders.
    pub fn project(&self, name: &str, hosts: &[&str], manifest: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(dir.join("hosts")).unwrap();
        for host in hosts {
            std::fs::create_dir_all(dir.join("hosts").join(host)).unwrap();
        }
        std::fs::write(dir.join("project.toml"), manifest).unwrap();
        dir
    }

    pub fn write_config(&self, json: &serde_json::Value) -> PathBuf {
        let path = self.path().join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(json).unwrap()).unwrap();
        path
    }

    /// A config on port 0 with a temp database serving `projects`.
    pub fn config(&self, projects: serde_json::Value) -> PathBuf {
        self.write_config(&serde_json::json!({
            "listen": "127.0.0.1:0",
            "database": "data/elsinore.db",
            "projects": projects,
        }))
    }

    /// The common case: one project `name` declaring host `<name>.test`,
    /// served by a freshly started Elsinore.
    pub fn serve_single(&self, name: &str, manifest: &str) -> Server {
        self.project(name, &[&format!("{name}.test")], manifest);
        Server::start(&self.config(serde_json::json!([name])))
    }

    pub fn database(&self) -> PathBuf {
        self.path().join("data/elsinore.db")
    }

    /// Elsinore's own file (`state_database`, its default): host keys,
    /// audit log, event runs.
    pub fn state_database(&self) -> PathBuf {
        self.path().join("data/elsinore-state.db")
    }
}

/// A `[[handler]]` running the echo fixture.
pub fn echo_manifest_entry(name: &str, routes: &[&str], extra_env: &str) -> String {
    let routes: Vec<String> = routes.iter().map(|r| format!("{r:?}")).collect();
    let env = if extra_env.is_empty() {
        format!("HANDLER_NAME = {name:?}")
    } else {
        format!("HANDLER_NAME = {name:?}, {extra_env}")
    };
    format!(
        "[[handler]]\nname = {name:?}\ncommand = [\"python3\", {:?}]\nroutes = [{}]\nready = \"/health\"\nenv = {{ {env} }}\n",
        echo_handler().display().to_string(),
        routes.join(", "),
    )
}

pub fn echo_manifest() -> String {
    echo_manifest_entry("web", &["/"], "")
}

/// Where an address logged as `http://ADDR` ends: a space in text logs, a
/// quote in JSON logs.
fn address_end(c: char) -> bool {
    c.is_whitespace() || c == '"'
}

/// How much of the server's log a failing test prints.
const LOG_TAIL: usize = 80;

/// Pushed when the server's stderr closes (it exited): waits fail at once.
const STDERR_CLOSED: &str = "<elsinore stderr closed>";
/// Pushed to [`Server::stdout`] when the server's stdout closes.
pub const STDOUT_CLOSED: &str = "<elsinore stdout closed>";

/// Log lines collected from the server's stderr.
#[derive(Clone, Default)]
pub struct Logs {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Logs {
    fn push(&self, line: String) {
        let (lines, changed) = &*self.inner;
        lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
        changed.notify_all();
    }

    pub fn all(&self) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let (lines, changed) = &*self.inner;
        let deadline = Instant::now() + WAIT;
        let mut guard = lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(line) = guard.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                guard
                    .last()
                    .is_none_or(|l| l != STDERR_CLOSED && l != STDOUT_CLOSED),
                "elsinore exited before logging {needle:?}; its log:\n{}",
                guard.join("\n")
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line containing {needle:?} within {WAIT:?}; log so far:\n{}",
                guard.join("\n")
            );
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A running `elsinore serve`.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
    /// Every line, from stderr (diagnostics) and stdout (the access log
    /// by default), in the order they were read.
    pub logs: Logs,
    /// Only what was written to stdout.
    pub stdout: Logs,
}

impl Server {
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(config, &[], env)
    }

    /// `elsinore serve --config <config> <args…>` with `env` added.
    pub fn start_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command.args(["serve", "--config"]).arg(config).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::start_command(command)
    }

    /// Runs `command` (which execs `elsinore serve …`, e.g. through
    /// `setpriv`) and waits until it listens.
    pub fn start_command(mut command: Command) -> Self {
        if command.get_envs().all(|(key, _)| key != "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start elsinore");
        let logs = Logs::default();
        let stdout = Logs::default();
        let out = child.stdout.take().unwrap();
        let (sink, only_stdout) = (logs.clone(), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ELSINORE_TEST_ECHO_LOGS").is_some() {
                    eprintln!("[elsinore stdout] {line}");
                }
                sink.push(line.clone());
                only_stdout.push(line);
            }
            only_stdout.push(STDOUT_CLOSED.to_owned());
        });
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("ELSINORE_TEST_ECHO_LOGS").is_some() {
                    eprintln!("[elsinore] {line}");
                }
                sink.push(line);
            }
            sink.push(STDERR_CLOSED.to_owned());
        });
        let line = logs.wait_for("listening on http://");
        let addr = line
            .rsplit("listening on http://")
            .next()
            .and_then(|rest| rest.split(address_end).next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the address from {line:?}"));
        Self {
            addr,
            child,
            logs,
            stdout,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "elsinore did not exit within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, host: &str, path: &str) -> Req {
        Req::new(self.addr, Method::GET, path).host(host)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test shows what the server said: the end of its log
        // (the output of a passing test is not shown anyway).
        if std::thread::panicking() {
            let lines = self.logs.all();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "--- last {} lines of the elsinore log ---\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        if self.child.try_wait().ok().flatten().is_none() {
            // SIGTERM so handlers are stopped in order; SIGKILL if stuck.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.1 request over a fresh connection.
pub struct Req {
    addr: SocketAddr,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    pub fn new(addr: SocketAddr, method: Method, path: &str) -> Self {
        Self {
            addr,
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn host(self, host: &str) -> Self {
        self.header("host", host)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn method(mut self, method: &str) -> Self {
        self.method = Method::from_bytes(method.as_bytes()).unwrap();
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub async fn send(self) -> Reply {
        tokio::time::timeout(WAIT, self.send_unbounded())
            .await
            .expect("request did not complete in time")
    }

    async fn send_unbounded(self) -> Reply {
        let stream = TcpStream::connect(self.addr)
            .await
            .expect("connect to elsinore");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.path);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(self.body)).unwrap();
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// For echo-handler replies: every value the handler saw for `name`.
    pub fn seen(&self, name: &str) -> Vec<String> {
        seen_in(&self.json(), name)
    }
}

/// Every value of header `name` in an echo-handler JSON body.
pub fn seen_in(body: &serde_json::Value, name: &str) -> Vec<String> {
    body["headers"]
        .as_array()
        .expect("echo body has headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Whether a process with this pid still exists (and is not a zombie of ours).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) until `check` holds.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Workspace {
    /// Like [`Workspace::config`], with `extra` top-level keys merged in
    /// (e.g. `admin_listen`, `watch`).
    pub fn config_with(&self, projects: serde_json::Value, extra: serde_json::Value) -> PathBuf {
        let mut config = serde_json::json!({
            "listen": "127.0.0.1:0",
            "database": "data/elsinore.db",
            "admin_listen": "127.0.0.1:0",
            "projects": projects,
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            for (key, value) in extra {
                config.insert(key.clone(), value.clone());
            }
        }
        self.write_config(&config)
    }
}

impl Server {
    /// The operator listener's address (the config must set `admin_listen`).
    pub fn operator(&self) -> SocketAddr {
        let line = self.logs.wait_for("operator API on http://");
        line.rsplit("operator API on http://")
            .next()
            .and_then(|rest| rest.split(address_end).next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the operator address from {line:?}"))
    }

    /// The HTTPS listener's address (the config must set `tls_listen`).
    pub fn https(&self) -> SocketAddr {
        let line = self.logs.wait_for("listening on https://");
        line.rsplit("listening on https://")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the HTTPS address from {line:?}"))
    }

    /// A request to the operator listener.
    pub fn op(&self, method: &str, path: &str) -> Req {
        Req::new(self.operator(), Method::GET, path)
            .method(method)
            .host("localhost")
    }

    /// `GET /routes` on the operator listener.
    pub async fn routes(&self) -> serde_json::Value {
        let reply = self.op("GET", "/routes").send().await;
        assert_eq!(reply.status, StatusCode::OK, "GET /routes");
        reply.json()
    }
}

/// Waits (bounded) until the async `check` holds.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client keep-alive connection, reused for every request it sends.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeepAlive {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to elsinore");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    /// `GET path` for `host`; an error says what failed instead of
    /// panicking, so load loops can count failures.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<(StatusCode, Bytes), String> {
        let request = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = tokio::time::timeout(WAIT, self.sender.send_request(request))
            .await
            .map_err(|_| "no response in time".to_owned())?
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// Runs `elsinore <args> --config <config>` to completion.
pub fn run_cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run elsinore")
}

/// The `X-Elsinore-Auth` the echo handler received for a GET of `/` on
/// `host` with these extra headers.
pub async fn auth_seen(
    server: &Server,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = server.get(host, path);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let reply = req.send().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let seen = reply.seen("x-elsinore-auth");
    assert_eq!(seen.len(), 1, "exactly one X-Elsinore-Auth: {seen:?}");
    seen[0].clone()
}
