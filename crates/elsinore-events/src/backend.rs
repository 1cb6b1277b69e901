//! What a database must offer the events: its candidate tables, and
//! batched deletes on one of them. The planning (which tables, which
//! retention, which cutoff), the passes that give way to busy writers and
//! the report are the same for every database ([`crate::run`]); SQLite
//! ([`crate::sqlite`]) and PostgreSQL ([`crate::pg`]) differ only here.

use std::time::Duration;

use elsinore_config::parse_duration;

use crate::report::TableReport;
use crate::Result;

/// The schema annotation that sets a table's retention.
pub(crate) const ANNOTATION: &str = "elsinore:retention=";

/// What one step achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A full batch was handled; there may be more.
    More,
    /// Nothing left to delete.
    Done,
    /// Another connection held a lock past the wait allowed (SQLite's busy
    /// timeout, PostgreSQL's `lock_timeout`).
    Busy,
}

/// A table as discovery found it.
pub(crate) trait Table {
    /// The per-(event, table) work a backend carries out.
    type Work;

    /// The name reports, logs and the run log use.
    fn name(&self) -> &str;

    /// Another name `events.tables.<name>` may use for this table (on
    /// PostgreSQL the name without its schema); `None` when there is none.
    fn short_name(&self) -> Option<&str> {
        None
    }

    /// The column called `wanted`, as the table spells it.
    fn column(&self, wanted: &str) -> Option<&str>;

    /// The `elsinore:retention=7d` annotation: `None` when absent, the
    /// duration or why it is not one when present.
    fn annotation(&self) -> Option<Result<Duration, String>>;

    /// The work for deleting rows by `column` (as the table spells it)
    /// before `cutoff` (epoch ms), or why this table cannot be worked on.
    fn work(&self, column: &str, cutoff: i64) -> Result<Self::Work, String>;

    /// Whether `events.tables.<configured>` names this table.
    fn answers_to(&self, configured: &str) -> bool {
        self.name().eq_ignore_ascii_case(configured)
            || self
                .short_name()
                .is_some_and(|short| short.eq_ignore_ascii_case(configured))
    }
}

/// One open connection to the shared database.
pub(crate) trait Backend {
    /// The work of one (event, table).
    type Work;
    /// A candidate table.
    type Table: Table<Work = Self::Work>;

    /// Every table the events may work on (not Elsinore's, not the
    /// database's own), by name. `Err` fails the run.
    fn tables(&mut self) -> Result<Vec<Self::Table>>;

    /// Deletes up to `batch` more rows in one short transaction, adding
    /// to `report`'s tallies. `Err` ends this table's work (the others go
    /// on).
    fn step(
        &mut self,
        work: &mut Self::Work,
        report: &mut TableReport,
        batch: u32,
    ) -> Result<Step, String>;

    /// Counts non-NULL values the timestamp rule cannot read (a read: no
    /// lock that blocks writers).
    fn count_unreadable(&mut self, work: &Self::Work) -> Result<u64, String>;
}

/// The first `elsinore:retention=` annotation in `text` (compared without
/// regard to case), for the table called `table`.
pub(crate) fn annotation_in(text: &str, table: &str) -> Option<Result<Duration, String>> {
    // ASCII lowercasing keeps byte offsets, so `at` indexes `text` too.
    let at = text.to_ascii_lowercase().find(ANNOTATION)?;
    let value: String = text[at + ANNOTATION.len()..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    Some(match parse_duration(&value) {
        Ok(duration) if duration.is_zero() => Err(format!(
            "table {table}: annotation {ANNOTATION}{value}: must be more than 0"
        )),
        Ok(duration) => Ok(duration),
        Err(err) => Err(format!(
            "table {table}: annotation {ANNOTATION}{value}: {err}"
        )),
    })
}
