//! Framework events over the shared database, SQLite or PostgreSQL:
//! `SoftDeleteCleanup` (rows whose `deleted_at` is older than their
//! table's retention) and `SessionExpiry` (rows whose `expires_at` has
//! passed), across every project's tables. On PostgreSQL one front door
//! at a time runs them (an advisory lock, [`EVENTS_LOCK`]).
//!
//! This crate owns finding those tables, reading their timestamps (epoch
//! milliseconds, epoch seconds or date text, see [`timestamp`]), deleting in
//! short batched transactions that give way to handlers, the run log table
//! `elsinore_event_runs` (in the state database, out of handlers' reach),
//! and the [`EventScheduler`] thread that runs the
//! events every interval and on demand.
//!
//! It must not touch Elsinore's own tables (`elsinore_*`, `host_secret*`,
//! SQLite's `sqlite_*`, PostgreSQL's catalogs) other than its run log, and
//! must not run on the async runtime's worker threads: everything here is
//! blocking database work (SQLite, or the blocking PostgreSQL client), done on
//! the scheduler's own thread or in `spawn_blocking`. No HTTP lives here; the
//! operator listener calls [`EventScheduler::run_now`] and
//! [`EventScheduler::status`] and serialises what they return.

mod backend;
mod discover;
mod error;
mod job;
mod pg;
mod report;
mod run;
mod runlog;
mod scheduler;
mod settings;
mod sqlite;
pub mod timestamp;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use pg::EVENTS_LOCK;
pub use report::{Event, RetentionSource, RunReport, Skipped, TableReport, Trigger};
pub use run::run_once;
pub use runlog::{recent_runs, recent_runs_in, RunRecord, TableRecord};
pub use scheduler::{EventScheduler, EventsStatus};
pub use settings::Settings;
