//! Starts handlers and runs one state machine per supervised handler.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use elsinore_config::{HandlerKind, HandlerSpec, StartPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::handle::{HandlerHandle, HandlerState, WakeFailure};
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
    /// `url`) and returns the handle the request path uses. A
    /// `start = "on_demand"` handler begins asleep: its first request
    /// starts it.
    pub fn start(
        &self,
        project: &str,
        project_dir: &Path,
        spec: &HandlerSpec,
    ) -> Result<Arc<HandlerHandle>> {
        self.start_as(
            project,
            project_dir,
            spec,
            spec.start == StartPolicy::OnDemand,
        )
    }

    /// Like [`start`](Self::start), but the handler begins asleep
    /// whatever its `start`: the replacement of a handler that sleeps
    /// (a reload must not wake it).
    pub fn start_asleep(
        &self,
        project: &str,
        project_dir: &Path,
        spec: &HandlerSpec,
    ) -> Result<Arc<HandlerHandle>> {
        self.start_as(project, project_dir, spec, true)
    }

    fn start_as(
        &self,
        project: &str,
        project_dir: &Path,
        spec: &HandlerSpec,
        asleep: bool,
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
        let mut passed = None;
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
        } else if spec.listen_fd {
            let (listener, authority) =
                ports::reserve_listener().map_err(|source| SupervisorError::NoPort {
                    handler: format!("{project}/{}", spec.name),
                    source,
                })?;
            let addr = listener
                .local_addr()
                .map_err(|source| SupervisorError::NoPort {
                    handler: format!("{project}/{}", spec.name),
                    source,
                })?;
            passed = Some(Arc::new(listener));
            (Listen::Port(addr), HandlerAddress::Tcp(authority))
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
            if asleep {
                HandlerState::Sleeping
            } else {
                HandlerState::Starting
            },
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
            passed,
            ready: spec.ready.clone(),
            run_as: spec.run_as.clone(),
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            handle.clone(),
            process,
            Timing {
                start_timeout: spec.start_timeout,
                stop_grace: settings.stop_grace,
            },
            asleep,
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
    /// Quiet for `idle_stop`: marked sleeping, to be stopped.
    Idle,
    /// Woken by a request but not ready within `start_timeout`.
    WakeTimedOut,
}

/// How long a handler gets to start and to stop.
#[derive(Debug, Clone, Copy)]
struct Timing {
    start_timeout: Duration,
    stop_grace: Duration,
}

/// The state machine of one supervised handler: `Starting → Ready`,
/// `→ Backoff → Starting` after a crash, `Ready → Sleeping` after
/// `idle_stop` and `Sleeping → Starting` when a request wakes it (a wake
/// that fails goes back to `Sleeping`, not to backoff: requests, not a
/// timer, decide when to try again), `→ Stopping → Stopped` on purpose.
async fn supervise(
    handle: Arc<HandlerHandle>,
    spec: ProcessSpec,
    timing: Timing,
    mut asleep: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut crashes_in_a_row: u32 = 0;
    loop {
        let mut waking = false;
        if asleep {
            // Listened on while nothing else does (a passed socket already
            // is): no other local process can take the port and answer
            // the next wake's probe and requests.
            let held = match (&spec.listen, &spec.passed) {
                (Listen::Port(addr), None) => ports::hold_listening(*addr),
                _ => None,
            };
            tokio::select! {
                () = handle.wake_requested() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            // Closed just before the handler binds the port.
            drop(held);
            asleep = false;
            waking = true;
            tracing::info!(project = %spec.project, handler = %spec.handler, "waking handler for a request");
            handle.transition(HandlerState::Starting, |s| s.wakes += 1);
        }
        handle.transition(HandlerState::Starting, |s| s.restart_at = None);
        let started = Instant::now();
        if let Listen::Socket(path) = &spec.listen {
            // Left by the crashed run before: a bind would fail on it.
            socket_dir::remove_stale(path);
        }
        let reason = match process::spawn(&spec) {
            Err(err) => {
                let reason = format!("cannot start {:?}: {err}", spec.argv[0]);
                if waking {
                    tracing::warn!(project = %spec.project, handler = %spec.handler, "woken handler: {reason}; the next request tries again");
                    fail_wake(&handle, WakeFailure::Exited(reason), &spec.listen);
                    asleep = true;
                    continue;
                }
                reason
            }
            Ok(mut child) => {
                let pid = child.id();
                handle.transition(HandlerState::Starting, |s| s.pid = pid);
                tracing::info!(project = %spec.project, handler = %spec.handler, pid, listen = %spec.listen, "handler started");
                process::forward_output(&mut child, &spec.project, &spec.handler);
                let watch = Watch {
                    handle: &handle,
                    spec: &spec,
                    start_timeout: timing.start_timeout,
                    waking,
                };
                match watch.run_until_exit(&mut child, &mut stop).await {
                    Ended::StopRequested => {
                        handle.transition(HandlerState::Stopping, |_| {});
                        let status = process::terminate(&mut child, timing.stop_grace).await;
                        tracing::info!(project = %spec.project, handler = %spec.handler, ?status, "handler stopped");
                        break;
                    }
                    Ended::Idle => {
                        // Already marked sleeping: requests from now on
                        // wake it, and wait until this process is gone.
                        let status = process::terminate(&mut child, timing.stop_grace).await;
                        tracing::info!(project = %spec.project, handler = %spec.handler, ?status, "handler asleep after idle_stop");
                        handle.transition(HandlerState::Sleeping, |s| s.pid = None);
                        crashes_in_a_row = 0;
                        asleep = true;
                        continue;
                    }
                    Ended::WakeTimedOut => {
                        let status = process::terminate(&mut child, timing.stop_grace).await;
                        let why = WakeFailure::TimedOut(timing.start_timeout);
                        tracing::warn!(project = %spec.project, handler = %spec.handler, ?status, start_timeout = ?timing.start_timeout, "woken handler not ready within start_timeout; stopped, the next request tries again");
                        fail_wake(&handle, why, &spec.listen);
                        asleep = true;
                        continue;
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
                        let reason = match status {
                            Ok(status) => format!("exited unexpectedly ({status})"),
                            Err(err) => format!("lost track of the process: {err}"),
                        };
                        if waking && !was_ready {
                            tracing::warn!(project = %spec.project, handler = %spec.handler, "woken handler {reason} before it was ready; the next request tries again");
                            fail_wake(&handle, WakeFailure::Exited(reason), &spec.listen);
                            asleep = true;
                            continue;
                        }
                        reason
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
            // A handler nobody asked anything of for `idle_stop` sleeps
            // rather than crash-loop for nobody; the next request wakes it.
            () = quiet(&handle, handle.idle_after()) => {
                if handle.fall_asleep() {
                    tracing::info!(project = %spec.project, handler = %spec.handler, "crashed handler asleep after idle_stop instead of restarting");
                    handle.transition(HandlerState::Sleeping, |s| s.restart_at = None);
                    asleep = true;
                    continue;
                }
            }
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

/// Back to sleep after a wake that did not bring the handler up; the
/// requests that waited for it are told why.
fn fail_wake(handle: &HandlerHandle, why: WakeFailure, listen: &Listen) {
    if let Listen::Socket(path) = listen {
        socket_dir::remove_stale(path);
    }
    let reason = match &why {
        WakeFailure::TimedOut(after) => {
            format!("not ready within start_timeout ({after:?}) after a wake")
        }
        WakeFailure::Exited(reason) => reason.clone(),
    };
    handle.transition(HandlerState::Sleeping, |s| {
        s.pid = None;
        s.sleeps += 1;
        s.last_error = Some(reason);
        s.wake_failure = Some(why);
    });
}

/// One run of a handler process, watched.
struct Watch<'a> {
    handle: &'a HandlerHandle,
    spec: &'a ProcessSpec,
    start_timeout: Duration,
    /// Started by a request's wake: not ready within `start_timeout`
    /// means back to sleep.
    waking: bool,
}

impl Watch<'_> {
    /// Marks the process ready when its probe succeeds and returns when it
    /// exits, a stop is requested, it has been quiet for `idle_stop`, or
    /// (when woken) it is not ready in time.
    async fn run_until_exit(
        &self,
        child: &mut tokio::process::Child,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let (handle, spec, start_timeout) = (self.handle, self.spec, self.start_timeout);
        let probe = process::wait_until_ready(&spec.listen, spec.ready.as_deref());
        tokio::pin!(probe);
        let slow_start = tokio::time::sleep(start_timeout);
        tokio::pin!(slow_start);
        let idle_after = handle.idle_after();
        let mut ready = false;
        let mut warned = false;
        loop {
            tokio::select! {
                status = child.wait() => return Ended::Exited(status, ready),
                _ = stop.wait_for(|stop| *stop) => return Ended::StopRequested,
                () = &mut probe, if !ready => {
                    ready = true;
                    handle.mark_quiet();
                    handle.transition(HandlerState::Ready, |s| {
                        s.last_error = None;
                        s.wake_failure = None;
                    });
                }
                () = &mut slow_start, if !ready && !warned => {
                    if self.waking {
                        return Ended::WakeTimedOut;
                    }
                    warned = true;
                    let what = spec.ready.as_deref().map_or_else(
                        || format!("accepting connections on {}", spec.listen),
                        |path| format!("answering 2xx on {path}"),
                    );
                    tracing::warn!(project = %spec.project, handler = %spec.handler, ?start_timeout, "handler not ready yet: still waiting for it to start {what}");
                }
                // Recreated each turn: it reads the quiet time afresh.
                () = quiet(handle, idle_after), if ready && idle_after.is_some() => {
                    if handle.fall_asleep() {
                        return Ended::Idle;
                    }
                }
            }
        }
    }
}

/// Resolves once the handler has been quiet for `after`; never without.
async fn quiet(handle: &HandlerHandle, after: Option<Duration>) {
    match after {
        Some(after) => handle.quiet_for(after).await,
        None => std::future::pending().await,
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
