//! The scrape-time half of `GET /metrics`: handler states and restarts
//! from the live table, swaps and reload failures from [`Live`], rows
//! deleted from the events scheduler. Read when scraped, never copied on
//! the request path.

use std::sync::Arc;

use elsinore_events::EventScheduler;
use elsinore_metrics::{AcmeSample, HandlerSample, ScrapeSource};

use elsinore_live::Live;

/// What `elsinore_handler_*`, `elsinore_table_swaps_total`,
/// `elsinore_reload_failures_total` and `elsinore_events_rows_deleted_total`
/// are read from.
#[derive(Debug)]
pub struct LiveSource {
    pub live: Arc<Live>,
    pub events: EventScheduler,
    /// Automatic certificates, when `acme` is configured.
    pub acme: Option<Arc<elsinore_acme::Acme>>,
}

impl ScrapeSource for LiveSource {
    fn acme(&self) -> Vec<AcmeSample> {
        let Some(acme) = &self.acme else {
            return Vec::new();
        };
        acme.status()
            .into_iter()
            .map(|(name, status)| AcmeSample {
                name,
                not_after: status.not_after.and_then(|time| {
                    let seconds = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                    i64::try_from(seconds).ok()
                }),
                failing: status.last_error.is_some(),
            })
            .collect()
    }

    fn handlers(&self) -> Vec<HandlerSample> {
        let table = self.live.table().load_full();
        table
            .projects
            .iter()
            .flat_map(|project| project.handlers.iter())
            .map(|handle| {
                let status = handle.status();
                HandlerSample {
                    project: handle.project().to_owned(),
                    handler: handle.name().to_owned(),
                    state: status.state.as_str(),
                    restarts: u64::from(status.restarts),
                    wakes: status.wakes,
                }
            })
            .collect()
    }

    fn table_swaps(&self) -> u64 {
        self.live.swaps()
    }

    fn reload_failures(&self) -> u64 {
        self.live.reload_failures()
    }

    fn events_rows_deleted(&self) -> u64 {
        self.events.rows_deleted()
    }
}
