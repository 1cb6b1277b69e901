//! The control plane: what runs, what the files declare, and how a
//! reload gets from one to the other.
//!
//! - [`Declared`]: config.json and every project's manifest and host
//!   folders: read once for startup, `check` and `routes`
//!   ([`Declared::load`]: every error at once, or nothing), and again on
//!   each reload ([`Declared::reread`]; a broken project keeps what it
//!   had). What `check` and `routes` print of it is `render.rs`
//!   ([`Declared::render_check`], [`Declared::render_routes`]).
//! - [`plan`]: a pure function from what runs ([`Running`]) and what is
//!   declared to a [`ReloadPlan`]: handlers kept, adopted, started or
//!   retired, which project switches and which waits, host owners, and
//!   every [`Change`], [`ReloadError`] and [`Warning`] as typed values
//!   (their `Display` is what the log and the operator API print). It
//!   never spawns, stats, listens or sleeps, so it is unit-tested with
//!   fake handlers.
//! - [`Live`]: the state and the executor: start, plan, build the route
//!   table (static sites, certificates), swap it with one atomic store,
//!   retire; each step and what a failure there leaves serving is in
//!   `executor.rs`.
//! - [`Live::spawn_expiry_warnings`]: the daily look at the live table's
//!   certificates (`expiry.rs`).
//!
//! This crate does not parse the CLI, print, bind listeners or serve
//! requests (the rendered reports are strings the binary prints): it
//! builds an `elsinore_routes::RouteTable` and does not link the proxy;
//! the binary wires it to the proxy (which reads [`Live::table`]), the
//! watcher, signals and the operator listener.

mod change;
mod declared;
mod error;
mod executor;
mod expiry;
mod incremental;
mod live;
mod owners;
mod plan;
mod probe;
mod recorded;
mod render;
mod report;
#[cfg(test)]
mod tests;
mod watch;

pub use change::Change;
pub use declared::{skipped_handler, Declared, DeclaredProject, Reread};
pub use error::{LoadError, NotReady, ProjectError, ReloadError, Warning};
pub use live::{Live, StartRefused};
pub use plan::{plan, to_start, Applied, Handler, Pending, ReloadPlan, Running, Started, ToStart};
pub use recorded::RecordedOwners;
pub use report::ReloadReport;

/// Log lines keep the target they had when this was the binary's
/// `live` module, so `RUST_LOG=elsinore::live=debug` still selects them.
const LOG_TARGET: &str = "elsinore::live";
