//! What the request path sees of a handler.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use elsinore_config::{HandlerKind, HandlerSpec};
use tokio::sync::{watch, Notify};

use crate::gate::{Busy, Gate, Turn};
use crate::HandlerAddress;

/// Where a handler is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HandlerState {
    /// Process started, readiness not yet seen.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Exited unexpectedly; waiting before the next start.
    Backoff = 2,
    /// Being stopped on purpose.
    Stopping = 3,
    /// Stopped on purpose; will not come back.
    Stopped = 4,
    /// A `url` handler: not supervised, always assumed up.
    External = 5,
    /// Stopped after `idle_stop` without requests, or never started
    /// (`start = "on_demand"`); the next request starts it.
    Sleeping = 6,
}

impl HandlerState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Backoff,
            3 => Self::Stopping,
            4 => Self::Stopped,
            6 => Self::Sleeping,
            _ => Self::External,
        }
    }

    /// Lower-case name, as shown in logs and route listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::External => "external",
            Self::Sleeping => "sleeping",
        }
    }
}

impl fmt::Display for HandlerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler's state with the details an operator wants.
#[derive(Debug, Clone)]
pub struct HandlerStatus {
    /// Current state.
    pub state: HandlerState,
    /// Process id while one runs.
    pub pid: Option<u32>,
    /// Unexpected exits so far.
    pub restarts: u32,
    /// Why it last failed, if it did.
    pub last_error: Option<String>,
    /// When the next start happens (in `Backoff`).
    pub restart_at: Option<Instant>,
    /// Times it went to sleep (beginning asleep counts): which sleep a
    /// request's wake is for.
    pub sleeps: u64,
    /// Times a request woke it.
    pub wakes: u64,
    /// Why the last wake did not bring it up, until one does.
    pub wake_failure: Option<WakeFailure>,
}

/// Why a wake ended with the handler asleep again instead of ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeFailure {
    /// Not ready within its `start_timeout`: stopped again.
    TimedOut(Duration),
    /// Exited before it was ready.
    Exited(String),
}

/// Why a request cannot be forwarded to a handler right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Still starting after the handler's start timeout.
    Starting {
        /// How long the request waited.
        waited: Duration,
    },
    /// Exited and waiting to be restarted.
    Crashed {
        /// The exit status or spawn error.
        reason: String,
        /// Time until the next start attempt.
        retry_in: Duration,
    },
    /// Stopped on purpose (shutdown or removal).
    Stopped,
}

/// Shared view of one handler: its address and state. Cheap to read.
#[derive(Debug)]
pub struct HandlerHandle {
    project: Arc<str>,
    name: Arc<str>,
    address: HandlerAddress,
    start_timeout: Duration,
    response_timeout: Duration,
    /// `reuse_after_body` (see [`HandlerHandle::reuses_after_body`]).
    reuse_after_body: bool,
    state: AtomicU8,
    status: watch::Sender<HandlerStatus>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// `idle_stop`, if the handler ever sleeps.
    idle_after: Option<Duration>,
    /// `listen_fd = true`: its listening socket is Elsinore's, so a
    /// request may be sent as soon as a process runs (the kernel queues
    /// it until the handler accepts), without waiting for readiness.
    passed_socket: bool,
    /// When `in_flight` last fell to 0 (or the handler became ready), as
    /// milliseconds since `born`; kept only with `idle_after`.
    quiet_since: AtomicU64,
    born: Instant,
    /// The highest `sleeps` a request asked to be woken from.
    wake_for: AtomicU64,
    wake: Notify,
    /// `max_concurrent`/`queue` (a default limit when the manifest sets
    /// none).
    gate: Gate,
    /// See [`HandlerHandle::request_state`].
    request_state: RequestState,
}

/// What the request path keeps per handler; opaque here.
#[derive(Default)]
struct RequestState(OnceLock<Box<dyn Any + Send + Sync>>);

impl fmt::Debug for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.get().is_some() {
            "set"
        } else {
            "unset"
        };
        f.write_str(state)
    }
}

/// Marks one request as using a handler until dropped; see
/// [`HandlerHandle::begin_request`].
#[derive(Debug)]
pub struct InFlight(Arc<HandlerHandle>, Option<Turn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.0.idle_after.is_some() {
                self.0.mark_quiet();
            }
            self.0.idle.notify_waiters();
        }
    }
}

/// Why a request cannot be let through to a handler; see
/// [`HandlerHandle::enter`].
#[derive(Debug)]
pub enum Refused {
    /// Not running, and could not be made to run in time.
    Unavailable(Unavailable),
    /// Running, but no turn came.
    Busy(Busy),
}

impl HandlerHandle {
    pub(crate) fn new(
        project: &str,
        spec: &HandlerSpec,
        address: HandlerAddress,
        state: HandlerState,
    ) -> Self {
        let (status, _) = watch::channel(HandlerStatus {
            state,
            pid: None,
            restarts: 0,
            last_error: None,
            restart_at: None,
            sleeps: u64::from(state == HandlerState::Sleeping),
            wakes: 0,
            wake_failure: None,
        });
        Self {
            project: project.into(),
            name: spec.name.as_str().into(),
            address,
            start_timeout: spec.start_timeout,
            response_timeout: spec.response_timeout,
            reuse_after_body: spec.reuse_after_body,
            state: AtomicU8::new(state as u8),
            status,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            idle_after: match spec.kind {
                HandlerKind::Command { .. } => spec.idle_after(),
                HandlerKind::Url { .. } => None,
            },
            passed_socket: spec.listen_fd && matches!(spec.kind, HandlerKind::Command { .. }),
            quiet_since: AtomicU64::new(0),
            born: Instant::now(),
            wake_for: AtomicU64::new(0),
            wake: Notify::new(),
            gate: Gate::for_spec(spec),
            request_state: RequestState::default(),
        }
    }

    /// State the request path keeps for this handler (its pool of
    /// connections), created by `init` on first use and dropped with the
    /// handle: a replaced handler's idle connections go with it, and
    /// requests reach it without a map lookup. `None` only if it was
    /// first created as another type.
    pub fn request_state<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.request_state
            .0
            .get_or_init(|| Box::new(init()))
            .downcast_ref()
    }

    /// A `url` handler: always `External`.
    pub fn external(project: &str, spec: &HandlerSpec, address: HandlerAddress) -> Self {
        Self::new(project, spec, address, HandlerState::External)
    }

    /// The project this handler belongs to.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The handler's name in `project.toml`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where to connect: `host:port` or a Unix socket.
    pub fn address(&self) -> &HandlerAddress {
        &self.address
    }

    /// Whether the handler promised to read every request body
    /// (`reuse_after_body`), so its connection may carry the next request
    /// after a POST, PUT or PATCH with a body.
    pub fn reuses_after_body(&self) -> bool {
        self.reuse_after_body
    }

    /// How long the handler has to send response headers.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The current state (one atomic load).
    pub fn state(&self) -> HandlerState {
        HandlerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// A copy of the full status.
    pub fn status(&self) -> HandlerStatus {
        self.status.borrow().clone()
    }

    /// Resolves when the handler can take a request: at once when ready,
    /// after waiting up to its start timeout while it starts. A sleeping
    /// handler counts as ready (a request wakes it, see
    /// [`enter`](Self::enter)) and is not woken: this is what readiness
    /// checks and reloads ask, and they must not wake anything.
    pub async fn ready(&self) -> Result<(), Unavailable> {
        self.wait_until_serving(false).await
    }

    /// Lets one request through to the handler: wakes it if it sleeps and
    /// waits (up to its start timeout) until it is ready, then waits for a
    /// turn under `max_concurrent` (see [`admit`](Self::admit)). The
    /// request path's one way in.
    pub async fn enter(self: &Arc<Self>, host: &str) -> Result<InFlight, Refused> {
        loop {
            self.awake().await.map_err(Refused::Unavailable)?;
            let in_flight = self.admit(host).await.map_err(Refused::Busy)?;
            // Counted in flight before this look (both sequentially
            // consistent, as in `fall_asleep`): either the supervisor saw
            // this request and stays awake, or this request sees it
            // falling asleep and wakes it again.
            if self.state.load(Ordering::SeqCst) != HandlerState::Sleeping as u8 {
                return Ok(in_flight);
            }
            drop(in_flight);
        }
    }

    /// Like [`ready`](Self::ready), but a sleeping handler is woken (one
    /// start, however many requests ask) and waited for. A wake that ends
    /// asleep again (not ready in time, or exited) fails the requests that
    /// waited for it; the next request wakes it again.
    async fn awake(&self) -> Result<(), Unavailable> {
        self.wait_until_serving(true).await
    }

    /// Waits up to the start timeout until the handler serves: for a
    /// request (`for_request`) a sleeping handler is woken and waited for,
    /// and a starting one whose passed socket already listens is enough;
    /// for readiness checks and reloads a sleeping handler counts as
    /// serving and is not woken.
    async fn wait_until_serving(&self, for_request: bool) -> Result<(), Unavailable> {
        match self.state() {
            HandlerState::Ready | HandlerState::External => return Ok(()),
            HandlerState::Sleeping if !for_request => return Ok(()),
            _ => {}
        }
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(self.start_timeout);
        tokio::pin!(deadline);
        // Subscribing before reading the state closes the race with a
        // transition that happens in between.
        let mut changes = self.status.subscribe();
        // The sleep this request asked to be woken from.
        let mut woke: Option<u64> = None;
        loop {
            let status = changes.borrow_and_update().clone();
            match status.state {
                HandlerState::Ready | HandlerState::External => return Ok(()),
                HandlerState::Sleeping if !for_request => return Ok(()),
                // Its process runs and the socket it accepts on is
                // listening: the request waits in the kernel's queue.
                HandlerState::Starting
                    if for_request && self.passed_socket && status.pid.is_some() =>
                {
                    return Ok(())
                }
                HandlerState::Starting => {}
                HandlerState::Sleeping => match woke {
                    // Asleep again after the wake asked for: it failed.
                    Some(sleep) if status.sleeps > sleep => {
                        return Err(match status.wake_failure {
                            Some(WakeFailure::Exited(reason)) => Unavailable::Crashed {
                                reason,
                                retry_in: Duration::ZERO,
                            },
                            Some(WakeFailure::TimedOut(_)) | None => Unavailable::Starting {
                                waited: started.elapsed(),
                            },
                        });
                    }
                    // Still going to sleep: the supervisor starts it again
                    // once the old process is gone.
                    Some(_) => {}
                    None => {
                        self.request_wake(status.sleeps);
                        woke = Some(status.sleeps);
                    }
                },
                HandlerState::Backoff => return Err(crashed(status)),
                HandlerState::Stopping | HandlerState::Stopped => return Err(Unavailable::Stopped),
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Unavailable::Stopped);
                    }
                }
                () = &mut deadline => {
                    return Err(Unavailable::Starting { waited: started.elapsed() });
                }
            }
        }
    }

    /// Asks the supervisor to wake the handler from its sleep number
    /// `sleep` (a wake asked during an earlier sleep is not one for this).
    fn request_wake(&self, sleep: u64) {
        self.wake_for.fetch_max(sleep, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Resolves once a request asked to wake the handler from its current
    /// sleep.
    pub(crate) async fn wake_requested(&self) {
        let sleep = self.status.borrow().sleeps;
        loop {
            // Registered before the check, so a wake in between is seen.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.wake_for.load(Ordering::SeqCst) >= sleep {
                return;
            }
            woken.await;
        }
    }

    /// Marks the handler sleeping if no request is in flight; `false`
    /// (and back in its state before) if one is. From here on a request
    /// wakes it.
    pub(crate) fn fall_asleep(&self) -> bool {
        let before = self.state();
        // The state is stored before the count is read, and a request
        // counts itself before it reads the state (`enter`): one of the
        // two sees the other.
        self.transition(HandlerState::Sleeping, |s| s.sleeps += 1);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return true;
        }
        self.transition(before, |_| {});
        false
    }

    /// `idle_stop`, if the handler ever sleeps.
    pub(crate) fn idle_after(&self) -> Option<Duration> {
        self.idle_after
    }

    /// Notes that the handler is quiet from now on (nothing in flight).
    pub(crate) fn mark_quiet(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.quiet_since.store(now, Ordering::Release);
    }

    /// Resolves once no request has been in flight for `after`.
    pub(crate) async fn quiet_for(&self, after: Duration) {
        loop {
            self.drained().await;
            let since = self.quiet_since.load(Ordering::Acquire);
            let at = self.born + Duration::from_millis(since) + after;
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            if self.in_flight() == 0 && self.quiet_since.load(Ordering::Acquire) == since {
                return;
            }
        }
    }

    /// Counts a request as in flight until the guard is dropped (the
    /// request path keeps it until the response body has been sent), so a
    /// replaced handler is stopped only once its last request is done.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        // Sequentially consistent: see `enter`.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone(), None)
    }

    /// Like [`begin_request`](Self::begin_request), but first waits for a
    /// turn under its `max_concurrent` limit; the turn is held by the
    /// returned guard. Requests waiting for a turn take turns by `host`
    /// (the tenant), see [`per_host_share`](crate::per_host_share).
    pub async fn admit(self: &Arc<Self>, host: &str) -> Result<InFlight, Busy> {
        let permit = self.gate.enter(host).await?;
        let mut in_flight = self.begin_request();
        in_flight.1 = Some(permit);
        Ok(in_flight)
    }

    /// Requests forwarded at once at most (`max_concurrent`, or its
    /// default).
    pub fn max_concurrent(&self) -> usize {
        self.gate.max_concurrent()
    }

    /// Requests waiting for a turn under `max_concurrent` right now.
    pub fn queued(&self) -> usize {
        self.gate.waiting()
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn drained(&self) {
        loop {
            // Registered before the check, so a drop in between still
            // wakes us.
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Moves to `state`, logging `prev -> next`.
    pub(crate) fn transition(&self, state: HandlerState, update: impl FnOnce(&mut HandlerStatus)) {
        let previous = self.state();
        self.status.send_modify(|status| {
            status.state = state;
            update(status);
        });
        // Sequentially consistent: see `fall_asleep`.
        self.state.store(state as u8, Ordering::SeqCst);
        if previous != state {
            tracing::info!(
                project = %self.project,
                handler = %self.name,
                "handler {previous} -> {state}"
            );
        }
    }
}

/// A handler in backoff, as a request sees it.
fn crashed(status: HandlerStatus) -> Unavailable {
    let retry_in = status
        .restart_at
        .map(|at| at.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    Unavailable::Crashed {
        reason: status.last_error.unwrap_or_else(|| "exited".into()),
        retry_in,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use elsinore_config::{IdleStop, StartPolicy};
    use http::uri::Authority;

    use super::*;

    fn sleeping_handle() -> Arc<HandlerHandle> {
        let spec = HandlerSpec {
            name: "web".into(),
            kind: HandlerKind::Command {
                argv: vec!["true".into()],
            },
            routes: vec!["/".into()],
            ready: None,
            env: BTreeMap::new(),
            start_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            max_concurrent: None,
            queue: 1,
            queue_timeout: Duration::from_secs(1),
            reuse_after_body: false,
            socket: false,
            idle_stop: Some(IdleStop::After(Duration::from_secs(60))),
            start: StartPolicy::OnDemand,
            listen_fd: false,
            generated: None,
            run_as: None,
            key_env: None,
        };
        let address = HandlerAddress::Tcp(Authority::from_static("127.0.0.1:1"));
        Arc::new(HandlerHandle::new(
            "p",
            &spec,
            address,
            HandlerState::Sleeping,
        ))
    }

    async fn woken(handle: &HandlerHandle) -> bool {
        tokio::time::timeout(Duration::from_millis(50), handle.wake_requested())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_wake_is_for_one_sleep_only() {
        let handle = sleeping_handle();
        assert_eq!(handle.status().sleeps, 1, "beginning asleep is sleep 1");
        assert!(!woken(&handle).await, "nobody asked");
        handle.request_wake(1);
        handle.request_wake(1);
        assert!(woken(&handle).await);

        // Awake, then asleep again: the wakes asked for sleep 1 (one of
        // them late) do not start it.
        handle.transition(HandlerState::Ready, |_| {});
        handle.request_wake(1);
        assert!(handle.fall_asleep());
        assert_eq!(handle.status().sleeps, 2);
        assert!(!woken(&handle).await, "a stale wake started a later sleep");
        handle.request_wake(2);
        assert!(woken(&handle).await);
    }

    #[tokio::test]
    async fn a_handler_with_a_request_in_flight_does_not_fall_asleep() {
        let handle = sleeping_handle();
        handle.transition(HandlerState::Ready, |_| {});
        let request = handle.begin_request();
        assert!(!handle.fall_asleep());
        assert_eq!(handle.state(), HandlerState::Ready);
        drop(request);
        assert!(handle.fall_asleep());
        assert_eq!(handle.state(), HandlerState::Sleeping);
    }

    #[tokio::test]
    async fn quiet_for_counts_from_the_last_request() {
        let handle = sleeping_handle();
        handle.transition(HandlerState::Ready, |_| {});
        handle.mark_quiet();
        let after = Duration::from_millis(200);
        let request = handle.begin_request();
        // In flight: never quiet.
        assert!(tokio::time::timeout(after * 2, handle.quiet_for(after))
            .await
            .is_err());
        drop(request);
        let ended = Instant::now();
        handle.quiet_for(after).await;
        assert!(ended.elapsed() >= after, "quiet before idle_stop passed");
    }
}
