//! What a run did, as returned to callers (`POST /events/run`, the CLI).

use serde::Serialize;

/// The two framework events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Event {
    /// Rows whose `deleted_at` is older than the table's retention.
    SoftDeleteCleanup,
    /// Rows whose `expires_at` has passed.
    SessionExpiry,
}

impl Event {
    /// The name used in reports, logs and the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoftDeleteCleanup => "SoftDeleteCleanup",
            Self::SessionExpiry => "SessionExpiry",
        }
    }

    /// The column that marks a table for this event.
    pub fn column(self) -> &'static str {
        match self {
            Self::SoftDeleteCleanup => "deleted_at",
            Self::SessionExpiry => "expires_at",
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The scheduler's interval.
    Schedule,
    /// The operator listener (`POST /events/run`).
    Operator,
    /// `elsinore events run`.
    Cli,
}

impl Trigger {
    /// The name used in reports and the run log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Operator => "operator",
            Self::Cli => "cli",
        }
    }
}

/// Where a table's retention came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionSource {
    /// `events.tables.<name>.retention` in config.json.
    Config,
    /// `elsinore:retention=…` in the table's `CREATE` statement (SQLite)
    /// or its comments (PostgreSQL).
    Annotation,
    /// `events.retention` (or its default, 30 days).
    Default,
}

impl RetentionSource {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Annotation => "annotation",
            Self::Default => "default",
        }
    }
}

/// One run of both events.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in `elsinore_event_runs`; `None` when nothing was
    /// processed or the run log could not be written.
    pub run_id: Option<i64>,
    /// What started it.
    pub trigger: Trigger,
    /// Epoch milliseconds.
    pub started_at: i64,
    /// Epoch milliseconds.
    pub finished_at: i64,
    /// Rows deleted, all tables.
    pub deleted: u64,
    /// Values left alone because they could not be read, all tables.
    pub unreadable: u64,
    /// Rows a foreign key kept from being deleted, all tables.
    pub blocked: u64,
    /// Tables whose work ended with an error.
    pub errors: u64,
    /// One entry per (event, table) processed, soft deletes first.
    pub tables: Vec<TableReport>,
    /// Tables that carry the column but were not processed, and why.
    pub skipped: Vec<Skipped>,
    /// Configuration that did not apply (unknown tables, bad annotations).
    pub warnings: Vec<String>,
    /// The run stopped early because Elsinore is shutting down.
    pub cancelled: bool,
    /// Why this run did nothing at all: on a PostgreSQL shared database,
    /// another front door (or `elsinore events run`) holds the events
    /// lock and is running them. `None` when the run ran.
    pub not_run: Option<String>,
    /// Why the run log could not be written, if it could not.
    pub log_error: Option<String>,
}

/// One event on one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Which event.
    pub event: Event,
    /// The table, as the database names it (`schema.table` on
    /// PostgreSQL).
    pub table: String,
    /// The marker column, as the table spells it.
    pub column: String,
    /// Soft deletes only: the retention applied, in milliseconds.
    pub retention_ms: Option<u64>,
    /// Soft deletes only: where the retention came from.
    pub retention_from: Option<RetentionSource>,
    /// Rows whose time is before this (epoch ms) are deleted.
    pub cutoff: i64,
    /// Rows deleted.
    pub deleted: u64,
    /// Non-NULL values that could not be read (left alone).
    pub unreadable: u64,
    /// Rows a foreign key kept from being deleted (left alone).
    pub blocked: u64,
    /// Delete transactions committed.
    pub batches: u64,
    /// Times this table met `SQLITE_BUSY` after waiting the busy timeout.
    pub busy: u64,
    /// Epoch milliseconds.
    pub started_at: i64,
    /// Epoch milliseconds.
    pub finished_at: i64,
    /// What went wrong, if anything; the other tables went on.
    pub error: Option<String>,
}

/// A table with the column that was not processed.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// Which event.
    pub event: Event,
    /// The table.
    pub table: String,
    /// Why, in words.
    pub reason: String,
}
