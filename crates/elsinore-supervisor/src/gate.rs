//! A handler's concurrency limit: at most `max_concurrent` requests run,
//! at most `queue` more wait (each up to `queue_timeout`), the rest are
//! refused at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elsinore_config::HandlerSpec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a request was not let through to a busy handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// `max_concurrent` requests run and `queue` more already wait.
    QueueFull {
        /// The handler's `max_concurrent`.
        max_concurrent: usize,
        /// The handler's `queue`.
        queue: usize,
    },
    /// The request waited `queue_timeout` without a turn.
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
    },
}

/// The limit of one handler (absent when `max_concurrent` is not set).
#[derive(Debug)]
pub(crate) struct Gate {
    running: Arc<Semaphore>,
    max_concurrent: usize,
    queue: usize,
    queue_timeout: Duration,
    waiting: AtomicUsize,
}

/// Undoes the `waiting` count however the wait ends (turn, timeout, or the
/// client leaving).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub(crate) fn for_spec(spec: &HandlerSpec) -> Option<Self> {
        let max_concurrent = spec.max_concurrent?.min(Semaphore::MAX_PERMITS);
        Some(Self {
            running: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            queue: spec.queue,
            queue_timeout: spec.queue_timeout,
            waiting: AtomicUsize::new(0),
        })
    }

    /// A turn: at once when a slot is free, else after queueing.
    pub(crate) async fn enter(&self) -> Result<OwnedSemaphorePermit, Busy> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // Count ourselves in before checking, so two racing requests cannot
        // both take the last queue place.
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if before >= self.queue {
            return Err(Busy::QueueFull {
                max_concurrent: self.max_concurrent,
                queue: self.queue,
            });
        }
        match tokio::time::timeout(self.queue_timeout, self.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout anyway.
            Ok(Err(_)) | Err(_) => Err(Busy::QueueTimeout {
                waited: self.queue_timeout,
            }),
        }
    }
}
