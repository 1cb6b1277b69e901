//! Handler processes: start, probe readiness, restart with backoff, stop.
//!
//! Each `command` handler gets one task running a small state machine
//! (`Starting → Ready → Backoff → Starting …`, `Ready → Sleeping` after
//! `idle_stop` without requests, `Sleeping → Starting` when a request
//! wakes it, or `→ Stopping → Stopped`), every transition logged. The
//! request path never talks to that task: it reads the handler's state
//! from an atomic in [`HandlerHandle`] and, only when the handler is not
//! ready, waits on a `watch` channel (after asking, through the handle,
//! for a wake when it sleeps). A `listen_fd` handler's listening socket is
//! bound by Elsinore and passed to each of its processes as descriptor 3.
//!
//! Handlers run in their own process group (so a handler's children are
//! stopped with it, and a terminal's Ctrl-C reaches Elsinore, which then
//! stops handlers in order) and get a parent-death signal (so they do not
//! outlive an Elsinore that was killed outright). A project with a `user`
//! gets that user's ids, groups and `HOME` before exec; Elsinore itself is
//! marked non-dumpable ([`refuse_inspection`]) so handlers cannot read its
//! memory or environment. A `socket = true` handler listens on a Unix
//! socket in a folder only its project's user can enter ([`socket_dir`])
//! instead of a loopback port any local process can reach.

mod address;
mod gate;
mod handle;
mod own_process;
mod ports;
mod process;
mod socket_dir;
mod supervisor;

pub use address::HandlerAddress;
pub use gate::{per_host_share, Busy, Turn};
pub use handle::{
    HandlerHandle, HandlerState, HandlerStatus, InFlight, Refused, Unavailable, WakeFailure,
};
pub use own_process::refuse_inspection;
pub use supervisor::{HandlerDatabase, Supervisor, SupervisorSettings};

/// Why a handler could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No free loopback port could be reserved.
    #[error("cannot find a free loopback port for handler {handler}: {source}")]
    NoPort {
        /// `project/handler`.
        handler: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The handler's private socket folder could not be prepared.
    #[error("cannot prepare the socket of handler {handler}: {source}")]
    NoSocket {
        /// `project/handler`.
        handler: String,
        /// What failed, naming the path.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this crate.
pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;
