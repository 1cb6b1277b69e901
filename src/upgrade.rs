//! Zero-downtime binary upgrade, the running server's side: on SIGUSR2,
//! start the binary at this server's own path (the one it was started
//! from, which a package upgrade has since replaced) with the same
//! arguments, handing it every listening socket (the very sockets, so
//! nothing queued on them is lost). The successor starts its handlers
//! and, once they are ready, says so on a pipe; only then does this
//! server tell systemd (`MAINPID=`) and drain as on SIGTERM. If the
//! successor exits or reports its handlers not ready, it is stopped and
//! this server keeps serving as if nothing happened.
//!
//! The successor's side is in [`crate::inherited`].

use std::ffi::OsString;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Mutex};

use crate::inherited::{GENERATION_ENV, UPGRADE_FDS_ENV};
use crate::upgrade_files::{Outcome, UpgradeFiles};

/// How long a successor may take to report ready: its handlers' start
/// timeouts are each shorter; this only catches one that hangs.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// What this server hands over: descriptor copies of its listening
/// sockets, and how it was started.
#[derive(Debug)]
pub struct Handover {
    pub listen: Vec<TcpListener>,
    pub tls_listen: Vec<TcpListener>,
    pub admin_listen: Option<TcpListener>,
    pub generation: u64,
    /// This binary's path, read at startup (after a package upgrade
    /// replaced the file, `/proc/self/exe` says "(deleted)").
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    /// Where `elsinore upgrade` asks for another binary and reads the
    /// outcome.
    pub files: UpgradeFiles,
}

/// The executable and arguments this process was started with.
pub fn own_command() -> anyhow::Result<(PathBuf, Vec<OsString>)> {
    let binary = std::env::current_exe()?;
    Ok((binary, std::env::args_os().skip(1).collect()))
}

/// Upgrades on each SIGUSR2 (one at a time); a successful one sets `stop`
/// so this server drains and exits.
pub fn spawn_sigusr2_upgrades(handover: Handover, stop: watch::Sender<bool>) {
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::error!("cannot install the SIGUSR2 handler; `elsinore upgrade` will not work");
        return;
    };
    let handover = Arc::new(Mutex::new(handover));
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            let handover = handover.lock().await;
            // `elsinore upgrade --binary PATH` asks for another binary.
            let binary = handover
                .files
                .take_binary()
                .unwrap_or_else(|| handover.binary.clone());
            tracing::info!(generation = handover.generation + 1, binary = %binary.display(), "SIGUSR2: upgrading");
            let outcome = upgrade(&handover, &binary).await;
            let result = match &outcome {
                Ok(pid) => Outcome::Ok(*pid),
                Err(why) => Outcome::Failed(why.clone()),
            };
            if let Err(err) = handover.files.write_result(&result) {
                tracing::warn!(
                    "cannot write {}: {err}",
                    handover.files.result_file().display()
                );
            }
            match outcome {
                Ok(pid) => {
                    tracing::info!(
                        pid,
                        generation = handover.generation + 1,
                        "upgrade: the new process is ready and serving; draining this one"
                    );
                    crate::systemd::handed_over(pid);
                    let _ = stop.send(true);
                    return;
                }
                Err(why) => {
                    tracing::error!(
                        generation = handover.generation,
                        "upgrade failed, still serving: {why}"
                    );
                }
            }
        }
    });
}

/// Starts the successor and waits for it to be ready; its pid, or why not.
async fn upgrade(handover: &Handover, binary: &Path) -> Result<u32, String> {
    let (mut ready_rx, ready_tx) =
        std::io::pipe().map_err(|err| format!("cannot make a pipe: {err}"))?;
    let mut fds: Vec<RawFd> = Vec::new();
    let mut roles = Vec::new();
    for (role, sockets) in [
        ("listen", handover.listen.iter().collect::<Vec<_>>()),
        ("tls_listen", handover.tls_listen.iter().collect()),
        ("admin_listen", handover.admin_listen.iter().collect()),
    ] {
        if sockets.is_empty() {
            continue;
        }
        let numbers: Vec<String> = sockets.iter().map(|s| s.as_raw_fd().to_string()).collect();
        fds.extend(sockets.iter().map(|s| s.as_raw_fd()));
        roles.push(format!("{role}={}", numbers.join(",")));
    }
    fds.push(ready_tx.as_raw_fd());
    roles.push(format!("ready={}", ready_tx.as_raw_fd()));

    let mut command = tokio::process::Command::new(binary);
    command
        .args(&handover.args)
        .env(UPGRADE_FDS_ENV, roles.join(";"))
        .env(GENERATION_ENV, (handover.generation + 1).to_string())
        .stdin(std::process::Stdio::null());
    inherit_only_in_child(&mut command, fds);
    let mut child = command
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
    let pid = child.id().unwrap_or_default();
    // Our copy closed: the pipe ends (EOF) as soon as the successor exits.
    drop(ready_tx);
    let said = tokio::task::spawn_blocking(move || {
        let mut said = String::new();
        let _ = ready_rx.read_to_string(&mut said);
        said
    });
    let outcome = match tokio::time::timeout(READY_TIMEOUT, said).await {
        Ok(Ok(said)) if said.trim() == "ready" => return Ok(pid),
        Ok(Ok(said)) if said.trim().is_empty() => {
            "the new process exited before it was ready".to_owned()
        }
        Ok(Ok(said)) => format!("the new process is not ready: {}", said.trim()),
        Ok(Err(err)) => format!("cannot read the new process's answer: {err}"),
        Err(_) => format!(
            "the new process was not ready within {}",
            humantime::format_duration(READY_TIMEOUT)
        ),
    };
    // It serves nothing yet (it accepts only once ready): stop it, and
    // reap it so no zombie is left.
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let status = child.wait().await.ok();
    Err(match status {
        Some(status) => format!("{outcome} ({status})"),
        None => outcome,
    })
}

/// Clears close-on-exec on `fds` in the forked child only, so that a
/// handler started by this server at the same moment never inherits a
/// listening socket.
#[allow(unsafe_code)]
fn inherit_only_in_child(command: &mut tokio::process::Command, fds: Vec<RawFd>) {
    // SAFETY: runs in the forked child before exec; it only calls
    // fcntl(2), which is async-signal-safe, on descriptors this process
    // holds open (they are owned by `Handover` and the pipe, alive until
    // spawn returns), and allocates nothing (`fds` was built before fork).
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
