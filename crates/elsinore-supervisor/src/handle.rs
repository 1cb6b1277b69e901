//! What the request path sees of a handler.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use elsinore_config::HandlerSpec;
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
}

impl HandlerState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Backoff,
            3 => Self::Stopping,
            4 => Self::Stopped,
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
            self.0.idle.notify_waiters();
        }
    }
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
    /// after waiting up to its start timeout while it starts.
    pub async fn ready(&self) -> Result<(), Unavailable> {
        match self.state() {
            HandlerState::Ready | HandlerState::External => return Ok(()),
            _ => {}
        }
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(self.start_timeout);
        tokio::pin!(deadline);
        // Subscribing before reading the state closes the race with a
        // transition that happens in between.
        let mut changes = self.status.subscribe();
        loop {
            let status = changes.borrow_and_update().clone();
            match status.state {
                HandlerState::Ready | HandlerState::External => return Ok(()),
                HandlerState::Starting => {}
                HandlerState::Backoff => {
                    let retry_in = status
                        .restart_at
                        .map(|at| at.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    return Err(Unavailable::Crashed {
                        reason: status.last_error.unwrap_or_else(|| "exited".into()),
                        retry_in,
                    });
                }
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

    /// Counts a request as in flight until the guard is dropped (the
    /// request path keeps it until the response body has been sent), so a
    /// replaced handler is stopped only once its last request is done.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
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
        self.state.store(state as u8, Ordering::Release);
        if previous != state {
            tracing::info!(
                project = %self.project,
                handler = %self.name,
                "handler {previous} -> {state}"
            );
        }
    }
}
