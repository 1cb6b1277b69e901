//! The slow look inside folders that are not watched: each entry of a
//! swept folder (a project's `hosts/`) is `stat`ed in turn, and one whose
//! status changed since the previous sweep began is reported.
//!
//! Why: a host folder gains a `tls/` or a `public/` by an entry made
//! inside it, which an inotify watch on `hosts/` does not see, and a watch
//! on every host folder is what ran out of `max_user_watches` at about
//! 93,000 hosts. The sweep costs no watch and no memory per entry (it
//! compares each entry's ctime with the time the previous sweep began),
//! and its pace is bounded ([`STATS_PER_SECOND`]), so its CPU cost does
//! not grow with the number of hosts; what grows is how long a `tls/`
//! added to an existing host folder takes to be seen (about 50 s for
//! 1,000,000 hosts). A new host folder, or a change inside a `tls/` or
//! `public/` that exists, is seen at once by the watches.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// At most this many entries are looked at per second.
pub(crate) const STATS_PER_SECOND: u32 = 20_000;
/// Entries looked at between two pauses.
const BATCH: u32 = 2_000;
/// Changes within this much of a sweep's start are reported by the next
/// sweep too: the clock and a filesystem's timestamps may disagree a
/// little, and reporting an entry twice only re-reads it twice.
const SLACK: Duration = Duration::from_secs(1);

/// The folders a sweeper goes through, shared with its thread.
#[derive(Default)]
pub(crate) struct SweepList {
    dirs: Mutex<Vec<PathBuf>>,
}

impl SweepList {
    pub(crate) fn set(&self, dirs: Vec<PathBuf>) {
        *self.dirs.lock().unwrap_or_else(PoisonError::into_inner) = dirs;
    }

    fn get(&self) -> Vec<PathBuf> {
        self.dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Starts the sweeping thread: every `interval` at least, it goes through
/// each folder of `list` and calls `report` with each entry changed since
/// the previous sweep began. It stops when `list` is only held here.
pub(crate) fn spawn(
    list: Arc<SweepList>,
    interval: Duration,
    report: impl Fn(PathBuf) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("elsinore-sweep".into())
        .spawn(move || {
            let mut since: Option<SystemTime> = None;
            loop {
                let began = Instant::now();
                let began_at = SystemTime::now();
                if Arc::strong_count(&list) == 1 {
                    return;
                }
                for dir in list.get() {
                    sweep(&dir, since, &report);
                }
                since = Some(began_at.checked_sub(SLACK).unwrap_or(UNIX_EPOCH));
                std::thread::sleep(interval.saturating_sub(began.elapsed()));
            }
        })
        .map(drop)
}

/// One folder: each sub-folder whose status changed after `since` (the
/// first sweep only notes the time).
fn sweep(dir: &std::path::Path, since: Option<SystemTime>, report: &impl Fn(PathBuf)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let Some(since) = since else { return };
    // To the nanosecond: whole seconds widened the window by up to a
    // second, and a tree copied in just before start-up was then named
    // again entry by entry.
    let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
    let pause = Duration::from_secs(1) * BATCH / STATS_PER_SECOND;
    let mut batch = Instant::now();
    let mut count = 0u32;
    for entry in entries.flatten() {
        // Plain files in `hosts/` declare nothing: no `stat` for them.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name: OsString = entry.file_name();
        let path = dir.join(&name);
        // ctime: an entry made or removed inside the folder changes it,
        // and `touch` cannot set it back.
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir() && ctime(&m) >= since) {
            report(path);
        }
        count += 1;
        if count.is_multiple_of(BATCH) {
            std::thread::sleep(pause.saturating_sub(batch.elapsed()));
            batch = Instant::now();
        }
    }
}

/// An entry's ctime since the epoch (zero before it).
fn ctime(meta: &std::fs::Metadata) -> Duration {
    match (
        u64::try_from(meta.ctime()),
        u32::try_from(meta.ctime_nsec()),
    ) {
        (Ok(secs), Ok(nanos)) => Duration::new(secs, nanos),
        _ => Duration::ZERO,
    }
}
