//! Starts handlers and runs one state machine per supervised handler.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use elsinore_config::{HandlerKind, HandlerSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::handle::{HandlerHandle, HandlerState};
use crate::process::{self, Listen, ProcessSpec};
use crate::{ports, socket_dir, HandlerAddress, Result, SupervisorError};

/// First restart delay; doubles per consecutive crash.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A run this long resets the crash count.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// Consecutive crashes after which the handler is reported as crash-looping.
const CRASH_LOOP: u32 = 5;

/// The shared database as handlers are told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerDatabase {
    /// A SQLite file: `ELSINORE_DB` is its path.
    File(PathBuf),
    /// A PostgreSQL URL: `ELSINORE_DB` and `DATABASE_URL` (the name most
    /// PostgreSQL libraries and frameworks read) are the URL. Unredacted:
    /// the password is the handlers' own, the one they connect with.
    Url(String),
}

impl HandlerDatabase {
    /// The variables a handler gets.
    fn env(&self) -> Vec<(String, String)> {
        match self {
            Self::File(path) => vec![("ELSINORE_DB".to_owned(), path.display().to_string())],
            Self::Url(url) => vec![
                ("ELSINORE_DB".to_owned(), url.clone()),
                ("DATABASE_URL".to_owned(), url.clone()),
            ],
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// The shared database, as handlers are told it.
    pub database: HandlerDatabase,
    /// Inherited variables no handler may see: every `key_env` variable.
    pub env_remove: Vec<String>,
    /// How long a handler gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Where `socket = true` handlers get their private folders, one per
    /// project (see `socket_dir`).
    pub run_dir: PathBuf,
}

#[derive(Debug)]
struct Running {
    handle: Arc<HandlerHandle>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Owns every supervised handler process.
#[derive(Debug)]
pub struct Supervisor {
    settings: Mutex<SupervisorSettings>,
    running: Mutex<Vec<Running>>,
}

impl Supervisor {
    /// A supervisor with no handlers yet.
    pub fn new(settings: SupervisorSettings) -> Self {
        Self {
            settings: Mutex::new(settings),
            running: Mutex::new(Vec::new()),
        }
    }

    /// Starts `spec` of `project` (a process for `command`, nothing for
    /// `url`) and returns the handle the request path uses.
    pub fn start(
        &self,
        project: &str,
        project_dir: &Path,
        spec: &HandlerSpec,
    ) -> Result<Arc<HandlerHandle>> {
        let argv = match &spec.kind {
            HandlerKind::Url { authority } => {
                return Ok(Arc::new(HandlerHandle::external(
                    project,
                    spec,
                    HandlerAddress::Tcp(authority.clone()),
                )));
            }
            HandlerKind::Command { argv } => argv.clone(),
        };
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (listen, address) = if spec.socket {
            let path = socket_dir::socket_path(
                &settings.run_dir,
                project,
                &spec.name,
                spec.run_as.as_ref(),
            )
            .map_err(|source| SupervisorError::NoSocket {
                handler: format!("{project}/{}", spec.name),
                source,
            })?;
            let uid = spec
                .run_as
                .as_ref()
                .map_or_else(|| nix::unistd::geteuid().as_raw(), |run_as| run_as.uid);
            (
                Listen::Socket(path.clone()),
                HandlerAddress::Unix { path, uid },
            )
        } else {
            let (addr, authority) =
                ports::reserve_port().map_err(|source| SupervisorError::NoPort {
                    handler: format!("{project}/{}", spec.name),
                    source,
                })?;
            (Listen::Port(addr), HandlerAddress::Tcp(authority))
        };
        let handle = Arc::new(HandlerHandle::new(
            project,
            spec,
            address,
            HandlerState::Starting,
        ));
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(match &listen {
            Listen::Port(addr) => ("PORT".to_owned(), addr.port().to_string()),
            Listen::Socket(path) => ("ELSINORE_SOCKET".to_owned(), path.display().to_string()),
        });
        env.extend(settings.database.env());
        env.push(("ELSINORE_PROJECT".to_owned(), project.to_owned()));
        if let Some(key_env) = &spec.key_env {
            // Set after `env_remove` has run (see `process::spawn`): when
            // this name is also another project's `key_env`, that
            // inherited value is removed and this project's own key set.
            env.push((key_env.name.clone(), key_env.key.expose().to_owned()));
        }
        if let Some(run_as) = &spec.run_as {
            // Elsinore's own HOME (root's) would be unusable, or worse,
            // shared by every project.
            env.extend([
                ("HOME".to_owned(), run_as.home.display().to_string()),
                ("USER".to_owned(), run_as.user.clone()),
                ("LOGNAME".to_owned(), run_as.user.clone()),
            ]);
        }
        let process = ProcessSpec {
            project: project.to_owned(),
            handler: spec.name.clone(),
            argv,
            cwd: project_dir.to_owned(),
            env,
            env_remove: settings.env_remove,
            listen,
            ready: spec.ready.clone(),
            run_as: spec.run_as.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            handle.clone(),
            process,
            spec.start_timeout,
            settings.stop_grace,
            stop_rx,
        ));
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Running {
                handle: handle.clone(),
                stop,
                task,
            });
        Ok(handle)
    }

    /// Replaces the variables kept out of handlers started from now on
    /// (after a reload changed the set of `key_env` names).
    pub fn set_env_remove(&self, env_remove: Vec<String>) {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .env_remove = env_remove;
    }

    /// Stops one handler (SIGTERM, then SIGKILL after the grace period) and
    /// waits until it has exited. A `url` handler has nothing to stop.
    pub async fn stop(&self, handle: &Arc<HandlerHandle>) {
        let running = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(index) = running.iter().position(|r| Arc::ptr_eq(&r.handle, handle)) else {
                return;
            };
            running.swap_remove(index)
        };
        let _ = running.stop.send(true);
        if let Err(err) = running.task.await {
            tracing::error!(project = handle.project(), handler = handle.name(), %err, "supervisor task failed");
        }
    }

    /// Every handler started so far.
    pub fn handles(&self) -> Vec<Arc<HandlerHandle>> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.iter().map(|r| r.handle.clone()).collect()
    }

    /// SIGKILLs every handler's process group at once, without waiting: for
    /// an exit that cannot wait for a graceful stop.
    pub fn kill_now(&self) {
        for handle in self.handles() {
            if let Some(pid) = handle.status().pid {
                process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Stops every handler (SIGTERM, then SIGKILL after the grace period)
    /// and waits until all have exited.
    pub async fn shutdown(&self) {
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        for handler in &running {
            let _ = handler.stop.send(true);
        }
        for handler in running {
            if let Err(err) = handler.task.await {
                tracing::error!(project = handler.handle.project(), handler = handler.handle.name(), %err, "supervisor task failed");
            }
        }
    }
}

/// Why the process ended.
enum Ended {
    /// With whether it had become ready first.
    Exited(std::io::Result<ExitStatus>, bool),
    StopRequested,
}

/// The state machine of one supervised handler.
async fn supervise(
    handle: Arc<HandlerHandle>,
    spec: ProcessSpec,
    start_timeout: Duration,
    stop_grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut crashes_in_a_row: u32 = 0;
    loop {
        handle.transition(HandlerState::Starting, |s| s.restart_at = None);
        let started = Instant::now();
        if let Listen::Socket(path) = &spec.listen {
            // Left by the crashed run before: a bind would fail on it.
            socket_dir::remove_stale(path);
        }
        let reason = match process::spawn(&spec) {
            Err(err) => format!("cannot start {:?}: {err}", spec.argv[0]),
            Ok(mut child) => {
                let pid = child.id();
                handle.transition(HandlerState::Starting, |s| s.pid = pid);
                tracing::info!(project = %spec.project, handler = %spec.handler, pid, listen = %spec.listen, "handler started");
                process::forward_output(&mut child, &spec.project, &spec.handler);
                match run_until_exit(&handle, &spec, &mut child, start_timeout, &mut stop).await {
                    Ended::StopRequested => {
                        handle.transition(HandlerState::Stopping, |_| {});
                        let status = process::terminate(&mut child, stop_grace).await;
                        tracing::info!(project = %spec.project, handler = %spec.handler, ?status, "handler stopped");
                        break;
                    }
                    Ended::Exited(status, was_ready) => {
                        if let Some(pid) = pid {
                            // Whatever the handler left running in its group.
                            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                        }
                        if let (false, Listen::Port(addr)) = (was_ready, &spec.listen) {
                            // Perhaps it cannot bind next to the placeholder.
                            ports::stop_holding(addr.port());
                        }
                        match status {
                            Ok(status) => format!("exited unexpectedly ({status})"),
                            Err(err) => format!("lost track of the process: {err}"),
                        }
                    }
                }
            }
        };

        if started.elapsed() >= STABLE_RUN {
            crashes_in_a_row = 0;
        }
        crashes_in_a_row += 1;
        let delay = backoff(crashes_in_a_row);
        if crashes_in_a_row >= CRASH_LOOP {
            tracing::error!(project = %spec.project, handler = %spec.handler, crashes = crashes_in_a_row, ?delay, "handler is crash-looping: {reason}");
        } else {
            tracing::warn!(project = %spec.project, handler = %spec.handler, ?delay, "handler {reason}; restarting");
        }
        handle.transition(HandlerState::Backoff, |s| {
            s.pid = None;
            s.restarts += 1;
            s.last_error = Some(reason);
            s.restart_at = Some(Instant::now() + delay);
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    handle.transition(HandlerState::Stopped, |s| {
        s.pid = None;
        s.restart_at = None;
    });
    match &spec.listen {
        Listen::Port(addr) => ports::release_port(addr.port()),
        Listen::Socket(path) => socket_dir::remove_stale(path),
    }
}

/// Watches a running process: marks it ready when its probe succeeds and
/// returns when it exits or a stop is requested.
async fn run_until_exit(
    handle: &HandlerHandle,
    spec: &ProcessSpec,
    child: &mut tokio::process::Child,
    start_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let probe = process::wait_until_ready(&spec.listen, spec.ready.as_deref());
    tokio::pin!(probe);
    let slow_start = tokio::time::sleep(start_timeout);
    tokio::pin!(slow_start);
    let mut ready = false;
    let mut warned = false;
    loop {
        tokio::select! {
            status = child.wait() => return Ended::Exited(status, ready),
            _ = stop.wait_for(|stop| *stop) => return Ended::StopRequested,
            () = &mut probe, if !ready => {
                ready = true;
                handle.transition(HandlerState::Ready, |s| s.last_error = None);
            }
            () = &mut slow_start, if !ready && !warned => {
                warned = true;
                let what = spec.ready.as_deref().map_or_else(
                    || format!("accepting connections on {}", spec.listen),
                    |path| format!("answering 2xx on {path}"),
                );
                tracing::warn!(project = %spec.project, handler = %spec.handler, ?start_timeout, "handler not ready yet: still waiting for it to start {what}");
            }
        }
    }
}

fn backoff(crashes_in_a_row: u32) -> Duration {
    let exponent = crashes_in_a_row.saturating_sub(1).min(16);
    (BACKOFF_BASE * 2u32.pow(exponent)).min(BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(100), BACKOFF_CAP);
    }
}
