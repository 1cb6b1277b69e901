//! The scrape-time half of `GET /metrics`: handler states and restarts
//! from the live table, swaps and reload failures from [`Live`], rows
//! deleted from the events scheduler. Read when scraped, never copied on
//! the request path.

use std::sync::Arc;

use elsinore_events::EventScheduler;
use elsinore_metrics::{HandlerSample, ScrapeSource};

use elsinore_live::Live;

/// What `elsinore_handler_*`, `elsinore_table_swaps_total`,
/// `elsinore_reload_failures_total` and `elsinore_events_rows_deleted_total`
/// are read from.
#[derive(Debug)]
pub struct LiveSource {
    pub live: Arc<Live>,
    pub events: EventScheduler,
}

impl ScrapeSource for LiveSource {
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
