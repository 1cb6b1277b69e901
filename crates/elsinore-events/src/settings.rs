//! What a run needs to know: the `events` config plus the SQLite waits.

use std::time::Duration;

use elsinore_config::{EventsConfig, PostgresUrl};

/// How long one attempt at a write transaction waits for other writers.
pub const DEFAULT_BUSY_TIMEOUT: Duration = elsinore_store::BUSY_TIMEOUT;
/// Passes over the tables that still met `SQLITE_BUSY`, the first included.
pub const DEFAULT_BUSY_PASSES: u32 = 3;

/// Settings of one run and of the scheduler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated `events` key of config.json.
    pub events: EventsConfig,
    /// SQLite busy timeout of the events connection: how long one batch
    /// waits for a handler's write transaction before giving way.
    pub busy_timeout: Duration,
    /// How many passes a run makes over tables that met `SQLITE_BUSY`
    /// before leaving them for the next run (at least 1).
    pub busy_passes: u32,
    /// `database` given as a PostgreSQL URL: the events run there (and
    /// the shared SQLite path is never opened).
    pub shared_url: Option<PostgresUrl>,
}

impl Settings {
    /// `events` with the default waits.
    pub fn new(events: EventsConfig) -> Self {
        Self {
            events,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            busy_passes: DEFAULT_BUSY_PASSES,
            shared_url: None,
        }
    }

    /// The same settings, run against PostgreSQL when `url` is set.
    pub fn with_shared_url(mut self, url: Option<PostgresUrl>) -> Self {
        self.shared_url = url;
        self
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(EventsConfig::default())
    }
}
