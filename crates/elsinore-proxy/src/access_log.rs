//! The access log's writer, at nginx's cost (`access_log … buffer=64k
//! flush=1s`): each request thread formats its lines into a buffer of its
//! own (see [`crate::access_line`]), and a buffer is written out in one
//! piece when it passes [`FLUSH_SIZE`], by [`AccessLog::flush_every`] at
//! least every [`FLUSH_EVERY`], by [`AccessLog::reopen`] (SIGUSR1) and by
//! [`AccessLog::flush`] at shutdown.
//!
//! A buffer only ever holds whole lines and is written while holding the
//! one lock of the output, so no line is split between two writes and the
//! writes of different threads never interleave; that lock is taken once
//! per buffer, not per line. A thread's buffer lock is its own (only the
//! once-a-second flusher also takes it), so logging a line costs no
//! contended lock and no allocation once the buffer has grown.
//!
//! A failed write (disk full) drops that buffer, is counted, and is
//! reported at most once a minute: a request never waits on a retry and
//! never panics over its log line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use elsinore_config::{AccessLogTarget, LogFormat};
use elsinore_metrics::{RequestThreads, ThreadShard};

use crate::access_line::Line;

/// A thread's buffer is written out once it holds this much (nginx's
/// `buffer=64k`).
pub const FLUSH_SIZE: usize = 64 * 1024;
/// Buffered lines are written out at least this often (nginx's
/// `flush=1s`), so an idle server's log is never more than this behind.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Write failures are reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// Mode of a log file Elsinore creates: the owner writes, the group (a
/// log shipper's, e.g. `adm`) reads; paths can be private, so no one else.
const FILE_MODE: u32 = 0o640;

/// The access log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The `access_log` file cannot be opened for appending.
    #[error("{}: access_log: cannot open {} for appending: {source}", config.display(), path.display())]
    Open {
        /// config.json, which names the file.
        config: PathBuf,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// SIGUSR1 could not open the file again; the old one stays in use.
    #[error("cannot reopen the access log {} (still writing to the file open before): {source}", path.display())]
    Reopen {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// Where access-log lines go, and each request thread's buffer of them.
/// Cheap to clone (shared); `off` holds nothing.
#[derive(Debug, Clone, Default)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    /// One per [`ThreadShard`] part.
    threads: Box<[Arc<ThreadLog>]>,
    output: Arc<Output>,
}

/// One request thread's buffer of formatted lines.
#[derive(Debug)]
pub(crate) struct ThreadLog {
    buffer: Mutex<Vec<u8>>,
    format: LogFormat,
    output: Arc<Output>,
}

/// The destination, behind the one lock every write takes.
#[derive(Debug)]
struct Output {
    sink: Mutex<Sink>,
    failures: Mutex<Failures>,
}

#[derive(Debug)]
enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

/// Writes that failed since the last report.
#[derive(Debug, Default)]
struct Failures {
    lines: u64,
    last_report: Option<Instant>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AccessLog {
    /// No access log.
    pub fn off() -> Self {
        Self::default()
    }

    /// The access log `target` names (config.json's `access_log`, a path
    /// already resolved against `config`'s folder), in `format`, with a
    /// buffer for each request thread of `threads` and one for every other
    /// thread. A file is created (mode 0640) if missing and appended to.
    pub fn open(
        target: &AccessLogTarget,
        format: LogFormat,
        threads: RequestThreads,
        config: &Path,
    ) -> Result<Self, AccessLogError> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(Self::off()),
            AccessLogTarget::Stdout => Sink::Stdout,
            AccessLogTarget::File(path) => Sink::File {
                file: open_file(path).map_err(|source| AccessLogError::Open {
                    config: config.to_owned(),
                    path: path.clone(),
                    source,
                })?,
                path: path.clone(),
            },
        };
        let output = Arc::new(Output {
            sink: Mutex::new(sink),
            failures: Mutex::default(),
        });
        let threads = (0..threads.shards())
            .map(|_| {
                Arc::new(ThreadLog {
                    buffer: Mutex::new(Vec::new()),
                    format,
                    output: output.clone(),
                })
            })
            .collect();
        Ok(Self {
            shared: Some(Arc::new(Shared { threads, output })),
        })
    }

    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// The buffer of the thread `shard` names; `None` when the log is off.
    /// Each thread clones its own `Arc`, so no reference count is shared
    /// between request threads.
    pub(crate) fn thread(&self, shard: ThreadShard) -> Option<Arc<ThreadLog>> {
        let shared = self.shared.as_ref()?;
        shared
            .threads
            .get(shard.index_in(shared.threads.len()))
            .cloned()
    }

    /// Writes out every thread's buffered lines now.
    pub fn flush(&self) {
        if let Some(shared) = &self.shared {
            for thread in &shared.threads {
                thread.flush();
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`], forever; spawn it.
    pub async fn flush_every(self, every: Duration) {
        if !self.is_on() {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.flush();
        }
    }

    /// For logrotate's `postrotate` (SIGUSR1): writes what is buffered to
    /// the file open now, then opens the configured path again (creating
    /// it) and writes there from now on. Returns the path reopened, `None`
    /// when the log is not a file. On error the old file stays in use.
    pub fn reopen(&self) -> Result<Option<PathBuf>, AccessLogError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let path = match &*lock(&shared.output.sink) {
            Sink::Stdout => return Ok(None),
            Sink::File { path, .. } => path.clone(),
        };
        let new = open_file(&path).map_err(|source| AccessLogError::Reopen {
            path: path.clone(),
            source,
        })?;
        self.flush();
        if let Sink::File { file, .. } = &mut *lock(&shared.output.sink) {
            *file = new;
        }
        Ok(Some(path))
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)
}

impl ThreadLog {
    /// Formats `line` into this thread's buffer, writing the buffer out
    /// when it is full.
    pub(crate) fn append(&self, line: &Line<'_>) {
        let mut buffer = lock(&self.buffer);
        line.write(self.format, &mut buffer);
        if buffer.len() >= FLUSH_SIZE {
            self.output.write(&mut buffer);
        }
    }

    fn flush(&self) {
        let mut buffer = lock(&self.buffer);
        if !buffer.is_empty() {
            self.output.write(&mut buffer);
        }
    }
}

impl Output {
    /// Writes all of `buffer` (whole lines) in one go and empties it,
    /// keeping its capacity; on failure its lines are lost and counted.
    fn write(&self, buffer: &mut Vec<u8>) {
        let written = match &mut *lock(&self.sink) {
            Sink::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(buffer).and_then(|()| stdout.flush())
            }
            Sink::File { file, .. } => file.write_all(buffer),
        };
        if let Err(err) = written {
            self.failed(buffer, &err);
        }
        buffer.clear();
    }

    fn failed(&self, buffer: &[u8], err: &io::Error) {
        let lost = buffer.iter().filter(|&&byte| byte == b'\n').count() as u64;
        let mut failures = lock(&self.failures);
        failures.lines += lost;
        if failures
            .last_report
            .is_none_or(|at| at.elapsed() >= REPORT_EVERY)
        {
            let destination = match &*lock(&self.sink) {
                Sink::Stdout => "stdout".to_owned(),
                Sink::File { path, .. } => path.display().to_string(),
            };
            tracing::error!(
                access_log = %destination,
                error = %err,
                lost_lines = failures.lines,
                "cannot write the access log; lines are lost (reported at most once a minute)"
            );
            failures.lines = 0;
            failures.last_report = Some(Instant::now());
        }
    }
}
