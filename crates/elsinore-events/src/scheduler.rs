//! [`EventScheduler`]: a dedicated thread that runs the events every
//! `interval` and whenever asked, one run at a time, and stops on shutdown.
//!
//! Async callers (the operator listener) talk to it through a channel and
//! await a oneshot reply; the thread owns all the blocking SQLite work.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use elsinore_store::Databases;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::report::{RunReport, Trigger};
use crate::run::{log_progress, now_ms, run_with};
use crate::runlog::{recent_runs_in, RunRecord};
use crate::settings::Settings;
use crate::{Error, Result};

/// The first scheduled run comes this long after start (or one interval,
/// if shorter): late enough not to compete with handlers starting up,
/// early enough that frequent restarts do not starve the events.
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

enum Command {
    Run(Trigger, oneshot::Sender<Result<RunReport>>),
}

/// Handle to the events thread; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct EventScheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    databases: Databases,
    settings: Settings,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

/// What the thread tells the handles.
#[derive(Debug, Default)]
struct Shared {
    cancel: AtomicBool,
    running: AtomicBool,
    /// Epoch ms of the next scheduled run; 0 when none.
    next_run_at: AtomicI64,
    /// Rows deleted by every run since start (for the metrics counter).
    rows_deleted: AtomicU64,
}

/// The body of `GET /events`: the schedule and the recent runs.
#[derive(Debug, Clone, Serialize)]
pub struct EventsStatus {
    /// Whether runs are scheduled (`events.interval` is not `"off"`).
    pub scheduled: bool,
    /// `events.interval` in milliseconds; `null` when off.
    pub interval_ms: Option<u64>,
    /// `events.retention` (the default retention) in milliseconds.
    pub retention_ms: u64,
    /// `events.batch`.
    pub batch: u32,
    /// Whether a run is in progress right now.
    pub running: bool,
    /// Epoch milliseconds of the next scheduled run; `null` when off.
    pub next_run_at: Option<i64>,
    /// Recent runs, newest first.
    pub runs: Vec<RunRecord>,
}

impl EventScheduler {
    /// Starts the events thread over the shared database (which `serve`
    /// has already created), logging runs in the state database. The first scheduled run
    /// comes after [`FIRST_RUN_AFTER`] or one interval, whichever is
    /// shorter; with `"interval": "off"` runs only happen on request.
    pub fn start(databases: &Databases, settings: Settings) -> Result<Self> {
        let (commands, receiver) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let thread = {
            let databases = databases.clone();
            let settings = settings.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("elsinore-events".to_owned())
                .spawn(move || event_loop(&databases, &settings, &receiver, &shared))
                .map_err(Error::Thread)?
        };
        match settings.events.interval {
            Some(interval) => tracing::info!(
                interval_ms = ms(interval),
                retention_ms = ms(settings.events.retention),
                batch = settings.events.batch,
                "events scheduled"
            ),
            None => tracing::info!(
                "events not scheduled (events.interval is \"off\"); they run only on request"
            ),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                databases: databases.clone(),
                settings,
                commands: Mutex::new(Some(commands)),
                thread: Mutex::new(Some(thread)),
                shared,
            }),
        })
    }

    /// Runs both events now (after any run in progress) and returns the
    /// report: the body of `POST /events/run`. Recorded with trigger
    /// `operator`.
    pub async fn run_now(&self) -> Result<RunReport> {
        self.run(Trigger::Operator).await
    }

    /// Like [`run_now`](Self::run_now) with another trigger.
    pub async fn run(&self, trigger: Trigger) -> Result<RunReport> {
        let (reply, answer) = oneshot::channel();
        {
            let commands = self
                .inner
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let sender = commands.as_ref().ok_or(Error::Stopped)?;
            sender
                .send(Command::Run(trigger, reply))
                .map_err(|_| Error::Stopped)?;
        }
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// The `limit` most recent runs, newest first (read on a blocking
    /// thread, without waiting for a run in progress).
    pub async fn recent(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let databases = self.inner.databases.clone();
        tokio::task::spawn_blocking(move || recent_runs_in(&databases, limit))
            .await
            .map_err(|_| Error::Stopped)?
    }

    /// The schedule and the `limit` most recent runs: the body of
    /// `GET /events`.
    pub async fn status(&self, limit: usize) -> Result<EventsStatus> {
        let runs = self.recent(limit).await?;
        let events = &self.inner.settings.events;
        let next = self.inner.shared.next_run_at.load(Ordering::Relaxed);
        Ok(EventsStatus {
            scheduled: events.interval.is_some(),
            interval_ms: events.interval.map(ms),
            retention_ms: ms(events.retention),
            batch: events.batch,
            running: self.inner.shared.running.load(Ordering::Relaxed),
            next_run_at: (next > 0).then_some(next),
            runs,
        })
    }

    /// Rows deleted by every run since this scheduler started: a
    /// monotonic counter for `elsinore_events_rows_deleted_total`.
    pub fn rows_deleted(&self) -> u64 {
        self.inner.shared.rows_deleted.load(Ordering::Relaxed)
    }

    /// Stops the thread: a run in progress stops after its current batch
    /// (the tables it had begun are logged as stopped), queued requests get
    /// [`Error::Stopped`]. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shared.cancel.store(true, Ordering::Relaxed);
        // Dropping the sender wakes the thread if it is waiting.
        drop(
            self.inner
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if tokio::task::spawn_blocking(move || thread.join())
                .await
                .is_err()
            {
                tracing::warn!("events thread did not stop cleanly");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without shutdown(): let the thread finish on its own.
        self.shared.cancel.store(true, Ordering::Relaxed);
    }
}

fn event_loop(
    databases: &Databases,
    settings: &Settings,
    commands: &mpsc::Receiver<Command>,
    shared: &Shared,
) {
    let interval = settings.events.interval;
    let mut next = interval.map(|interval| Instant::now() + interval.min(FIRST_RUN_AFTER));
    let run = |trigger| {
        shared.running.store(true, Ordering::Relaxed);
        let report = run_with(
            databases,
            settings,
            trigger,
            &shared.cancel,
            &mut log_progress,
        );
        shared.running.store(false, Ordering::Relaxed);
        match &report {
            Ok(done) => {
                shared
                    .rows_deleted
                    .fetch_add(done.deleted, Ordering::Relaxed);
            }
            Err(err) => tracing::warn!(trigger = trigger.as_str(), "events run failed: {err}"),
        }
        report
    };
    loop {
        if shared.cancel.load(Ordering::Relaxed) {
            break;
        }
        let wake = next.map(|at| {
            let wait = at.saturating_duration_since(Instant::now());
            shared
                .next_run_at
                .store(now_ms().saturating_add(ms(wait) as i64), Ordering::Relaxed);
            wait
        });
        let command = match wake {
            Some(wait) => commands.recv_timeout(wait),
            None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match command {
            Ok(Command::Run(trigger, reply)) => {
                // The caller may have gone away (client hung up); fine.
                let _ = reply.send(run(trigger));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = run(Trigger::Schedule);
                if let (Some(at), Some(interval)) = (next, interval) {
                    // Keep the rhythm unless a run outlasted the interval.
                    let now = Instant::now();
                    next = Some(
                        Some(at + interval)
                            .filter(|n| *n > now)
                            .unwrap_or(now + interval),
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    shared.next_run_at.store(0, Ordering::Relaxed);
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
