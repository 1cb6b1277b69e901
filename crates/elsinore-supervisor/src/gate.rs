//! A handler's concurrency limit: at most `max_concurrent` requests run,
//! at most `queue` more wait (each up to `queue_timeout`), the rest are
//! refused at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elsinore_config::{HandlerSpec, DEFAULT_MAX_CONCURRENT};
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

/// The limit of one handler: its `max_concurrent`, or
/// [`DEFAULT_MAX_CONCURRENT`] when not set, so that no flood of clients
/// makes Elsinore open connections to one handler without bound.
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
    pub(crate) fn for_spec(spec: &HandlerSpec) -> Self {
        let max_concurrent = spec
            .max_concurrent
            .unwrap_or(DEFAULT_MAX_CONCURRENT)
            .min(Semaphore::MAX_PERMITS);
        Self {
            running: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            queue: spec.queue,
            queue_timeout: spec.queue_timeout,
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn max_concurrent(&self) -> usize {
        self.max_concurrent
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use elsinore_config::HandlerKind;

    use super::*;

    fn gate(max_concurrent: usize, queue: usize, queue_timeout: Duration) -> Gate {
        let spec = HandlerSpec {
            name: "web".into(),
            kind: HandlerKind::Command {
                argv: vec!["true".into()],
            },
            routes: vec!["/".into()],
            ready: None,
            env: BTreeMap::new(),
            start_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            max_concurrent: Some(max_concurrent),
            queue,
            queue_timeout,
            reuse_after_body: false,
            socket: false,
            generated: None,
            run_as: None,
            key_env: None,
        };
        Gate::for_spec(&spec)
    }

    #[tokio::test]
    async fn without_a_queue_the_next_request_is_refused_at_once() {
        let gate = gate(1, 0, Duration::from_secs(60));
        let _running = gate.enter().await.expect("first");
        assert_eq!(
            gate.enter().await.err(),
            Some(Busy::QueueFull {
                max_concurrent: 1,
                queue: 0
            })
        );
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_turn_given_back() {
        let gate = Arc::new(gate(1, 1, Duration::from_secs(60)));
        let running = gate.enter().await.expect("first");
        let queued = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.map(drop) }
        });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.enter().await, Err(Busy::QueueFull { .. })));
        drop(running);
        assert_eq!(queued.await.expect("join"), Ok(()));
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_queued_request_waits_queue_timeout_at_most() {
        let gate = gate(1, 5, Duration::from_millis(300));
        let _running = gate.enter().await.expect("first");
        assert_eq!(
            gate.enter().await.err(),
            Some(Busy::QueueTimeout {
                waited: Duration::from_millis(300)
            })
        );
        assert_eq!(
            gate.waiting.load(Ordering::Acquire),
            0,
            "the place is freed"
        );
    }
}
