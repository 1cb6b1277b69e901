//! One handler process: spawn, forward its output, probe, signal.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use elsinore_config::RunAs;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::process::{Child, Command};

/// Everything needed to start one handler process.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSpec {
    pub project: String,
    pub handler: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Set in this order; Elsinore's own variables come last and win.
    pub env: Vec<(String, String)>,
    /// Inherited variables to remove: every project's `key_env` variable
    /// (a key reaches its own project only as a header, or under the
    /// project's `handler_key_env`, which `env` then sets).
    pub env_remove: Vec<String>,
    pub listen: Listen,
    /// `listen_fd = true`: the listening socket on `listen`'s port,
    /// passed as descriptor 3.
    pub passed: Option<Arc<std::net::TcpListener>>,
    pub ready: Option<String>,
    /// The project's `user`: the process gets these ids before exec.
    pub run_as: Option<RunAs>,
}

/// Where the handler is told to listen.
#[derive(Debug, Clone)]
pub(crate) enum Listen {
    /// `PORT`, on 127.0.0.1 (held, see `ports`).
    Port(SocketAddr),
    /// `ELSINORE_SOCKET`: a Unix socket in the project's private folder.
    Socket(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Port(addr) => write!(f, "{addr}"),
            Self::Socket(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Starts the process in its own process group with piped output, as the
/// project's `user` when it has one.
pub(crate) fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    if let Some(run_as) = &spec.run_as {
        // Checked here too (config validation did it first): the folder may
        // have changed since, and "exited (status 1)" in a loop says nothing.
        run_as
            .can_reach(&spec.cwd)
            .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))?;
    }
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = match &spec.passed {
        // `LISTEN_PID` must be the handler's own pid, known only after
        // fork, and the child may not allocate before exec: a shell sets
        // it to its `$$` and execs the handler, which keeps that pid.
        Some(_) => {
            let mut command = Command::new("/bin/sh");
            command.args(["-c", PASS_LISTEN_PID, program]);
            command
        }
        None => Command::new(program),
    };
    command
        .args(args)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own group: signals from a terminal go to Elsinore only, and
        // stopping the group also stops whatever the handler spawned.
        .process_group(0);
    for name in spec
        .env_remove
        .iter()
        .map(String::as_str)
        .chain(MANAGER_ENV)
    {
        command.env_remove(name);
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if spec.passed.is_some() {
        command.env("LISTEN_FDS", "1");
    }
    prepare_child(
        &mut command,
        spec.run_as.as_ref().map(Identity::of),
        spec.passed.as_ref().map(|listener| listener.as_raw_fd()),
    );
    command.spawn().map_err(|err| match &spec.run_as {
        Some(run_as) => std::io::Error::new(
            err.kind(),
            format!("as user {} (uid {}): {err}", run_as.user, run_as.uid),
        ),
        None => err,
    })
}

/// The ids a child switches to, as numbers: nothing is looked up or
/// allocated after fork.
struct Identity {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

impl Identity {
    fn of(run_as: &RunAs) -> Self {
        Self {
            uid: Uid::from_raw(run_as.uid),
            gid: Gid::from_raw(run_as.gid),
            groups: run_as.groups.iter().copied().map(Gid::from_raw).collect(),
        }
    }
}

/// The service manager's variables (systemd `Type=notify` and socket
/// activation), meant for Elsinore alone: a handler holding
/// `NOTIFY_SOCKET` could, under `NotifyAccess=all`, tell systemd the
/// service is stopping or name itself its main process.
const MANAGER_ENV: [&str; 4] = [
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The shell line that starts a `listen_fd` handler: its own pid as
/// `LISTEN_PID`, then the handler itself (`$0`, its arguments `$@`) in the
/// shell's place.
const PASS_LISTEN_PID: &str = "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"";

/// The descriptor a passed socket gets in the handler (`SD_LISTEN_FDS_START`).
const PASSED_FD: RawFd = 3;

/// In the forked child, before exec: put a passed listening socket on
/// descriptor 3 (without close-on-exec), switch to the project's user (if
/// any), then ask Linux to SIGKILL the handler if the thread that spawned
/// it (a tokio worker, alive as long as Elsinore's runtime) dies, so even
/// `kill -9` of Elsinore leaves no handler behind. SIGKILL rather than
/// SIGTERM: this is the last resort, and a handler ignoring SIGTERM must
/// not survive it.
///
/// Not `CommandExt::uid`/`gid`: std then drops every supplementary group
/// (and setting them is unstable), but handlers need theirs and
/// `database_group`. The order matters: groups and gid while still root,
/// uid last; and the parent-death signal after the switch, because Linux
/// clears it when the credentials change.
#[allow(unsafe_code)]
fn prepare_child(command: &mut Command, identity: Option<Identity>, passed: Option<RawFd>) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It only
    // calls dup2(2), fcntl(2), setgroups(2), setgid(2), setuid(2),
    // prctl(2) and getppid(2), all async-signal-safe, and allocates
    // nothing (`identity` was built before fork and is only read). Any
    // failure aborts the spawn with that errno: a handler never runs as
    // root by mistake. `passed` is the listener the parent keeps open
    // for the handler's whole life (`ProcessSpec::passed`), so the
    // descriptor is valid here.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = passed {
                use std::os::fd::{BorrowedFd, IntoRawFd};
                let listener = BorrowedFd::borrow_raw(fd);
                // Kept open for exec: `into_raw_fd` so it is not closed.
                let _ = nix::unistd::dup2_raw(listener, PASSED_FD)
                    .map_err(std::io::Error::from)?
                    .into_raw_fd();
                // dup2 onto itself (the listener already was 3) keeps
                // close-on-exec: clear it either way.
                nix::fcntl::fcntl(
                    BorrowedFd::borrow_raw(PASSED_FD),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .map_err(std::io::Error::from)?;
            }
            if let Some(id) = &identity {
                nix::unistd::setgroups(&id.groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(id.gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(id.uid).map_err(std::io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // Elsinore may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

/// Turns each line of the handler's stdout/stderr into a tracing event.
pub(crate) fn forward_output(child: &mut Child, project: &str, handler: &str) {
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(
            stdout,
            project.to_owned(),
            handler.to_owned(),
            "stdout",
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(
            stderr,
            project.to_owned(),
            handler.to_owned(),
            "stderr",
        ));
    }
}

async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    project: String,
    handler: String,
    name: &'static str,
) {
    // A handler printing one endless line must not grow our memory.
    const MAX_LINE: u64 = 16 * 1024;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                // Handlers often print request targets; `?project_key=`
                // values must not reach Elsinore's log through them.
                let text = elsinore_config::redact_secrets(text);
                tracing::info!(target: "elsinore::handler", %project, %handler, stream = name, "{text}");
            }
        }
    }
}

/// Sends `signal` to the handler's whole process group.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is the expected outcome, not an error.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// SIGTERM the group, wait up to `grace`, then SIGKILL it.
pub(crate) async fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = child.id()?;
    signal_group(pid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(pid, ?grace, "handler ignored SIGTERM; sending SIGKILL");
            signal_group(pid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    // Children of the handler that outlived it.
    signal_group(pid, Signal::SIGKILL);
    status
}

/// Probes until the handler answers; never returns otherwise.
pub(crate) async fn wait_until_ready(listen: &Listen, ready: Option<&str>) {
    let mut pause = Duration::from_millis(5);
    loop {
        if probe(listen, ready).await {
            return;
        }
        tokio::time::sleep(pause).await;
        // Quick at first (most handlers bind within milliseconds), then
        // gentle on slow starters.
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A connect (TCP or Unix, as the handler listens), and with a readiness
/// path a `GET` answered with 2xx.
async fn probe(listen: &Listen, ready: Option<&str>) -> bool {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
    let attempt = async {
        match listen {
            Listen::Port(addr) => {
                let stream = TcpStream::connect(addr).await.ok()?;
                ask_ready(stream, &addr.to_string(), ready).await
            }
            // No host on a socket; handlers that check Host see a name.
            Listen::Socket(path) => {
                let stream = UnixStream::connect(path).await.ok()?;
                ask_ready(stream, "localhost", ready).await
            }
        }
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

/// On a connected `stream`: with a readiness path, whether a `GET` of it
/// is answered with 2xx; without one, yes. `None` when the exchange fails.
async fn ask_ready(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    host: &str,
    ready: Option<&str>,
) -> Option<bool> {
    const MAX_PROBE_ANSWER: u64 = 64 * 1024;
    const PROBE_DRAIN: Duration = Duration::from_millis(100);
    let Some(path) = ready else { return Some(true) };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: elsinore-readiness\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    // "HTTP/1.1 200": the status line decides.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    let ready = head.starts_with(b"HTTP/1.") && head[9] == b'2';
    // Then drain the rest briefly: closing with unread bytes makes the
    // kernel send a reset, which handlers log as an error. Bounded, so a
    // handler that ignores `Connection: close` cannot stall the probe.
    let mut rest = Vec::new();
    let mut limited = (&mut stream).take(MAX_PROBE_ANSWER);
    let _ = tokio::time::timeout(PROBE_DRAIN, limited.read_to_end(&mut rest)).await;
    Some(ready)
}
