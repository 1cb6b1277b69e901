//! The folders one watcher watches, over one notify backend: native
//! (inotify), or polling when file notifications cannot be had. Shared by
//! [`crate::FolderWatcher`] (single folders) and [`crate::TreeWatcher`]
//! (whole trees): only the recursion, the event handler and the words of
//! the log lines differ.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{Event, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::{is_missing, WatchError, WatchMode};

/// Which folder a path was when its watch began: `(device, inode)`.
/// inotify watches an inode, not a name, so a folder deleted and created
/// again under the same name (`rm -rf gen && mkdir gen`, faster than one
/// reload) needs a new watch even though its path was never unwatched.
pub(crate) type FolderId = (u64, u64);

/// The identity of `dir`, if it is a folder (symlinks followed).
pub(crate) fn folder_id(dir: &Path) -> Option<FolderId> {
    std::fs::metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// An event handler for a backend; one is made per backend, as switching
/// to polling needs a second.
pub(crate) type MakeHandler =
    Box<dyn Fn() -> Box<dyn FnMut(notify::Result<Event>) + Send> + Send + Sync>;

/// What the log says when notifications fail.
pub(crate) struct Wording {
    /// No native backend at all: polling from the start.
    pub unavailable: &'static str,
    /// A folder refused by the native backend: everything is polled now.
    pub falling_back: &'static str,
    /// A folder refused even by polling: what that means for the user.
    pub refused: &'static str,
}

/// The watched folders and the backend watching them.
pub(crate) struct Watches {
    watcher: Box<dyn notify::Watcher + Send>,
    polling: bool,
    /// Each watched folder with the identity it had when watched.
    watched: HashMap<PathBuf, FolderId>,
    recursive: RecursiveMode,
    poll_interval: Duration,
    make_handler: MakeHandler,
    wording: Wording,
}

impl Watches {
    /// No folders yet; `WatchMode::Auto` tries the native backend first.
    pub(crate) fn new(
        mode: WatchMode,
        recursive: RecursiveMode,
        poll_interval: Duration,
        wording: Wording,
        make_handler: MakeHandler,
    ) -> Result<Self, WatchError> {
        let native = match mode {
            WatchMode::Poll => None,
            WatchMode::Auto => {
                match RecommendedWatcher::new(make_handler(), notify::Config::default()) {
                    Ok(watcher) => Some(watcher),
                    Err(err) => {
                        tracing::warn!(error = %err, ?poll_interval, "{}", wording.unavailable);
                        None
                    }
                }
            }
        };
        let (watcher, polling): (Box<dyn notify::Watcher + Send>, bool) = match native {
            Some(watcher) => (Box::new(watcher), false),
            None => (Box::new(poll_watcher(&make_handler, poll_interval)?), true),
        };
        Ok(Self {
            watcher,
            polling,
            watched: HashMap::new(),
            recursive,
            poll_interval,
            make_handler,
            wording,
        })
    }

    /// Whether the backend polls (rather than being notified).
    pub(crate) fn polling(&self) -> bool {
        self.polling
    }

    pub(crate) fn watched(&self) -> &HashMap<PathBuf, FolderId> {
        &self.watched
    }

    /// Stops watching `dir` (a deleted folder has already lost its watch).
    pub(crate) fn unwatch(&mut self, dir: &Path) {
        let _ = self.watcher.unwatch(dir);
        self.watched.remove(dir);
    }

    /// Starts watching `dir`, which had identity `id`. A folder gone in the
    /// meantime is skipped; one the native backend refuses (the inotify
    /// watch limit, a filesystem without notifications) switches every
    /// folder to polling, logged once. Returns whether `dir` is watched now.
    pub(crate) fn watch(&mut self, dir: PathBuf, id: FolderId) -> Result<bool, WatchError> {
        match self.watcher.watch(&dir, self.recursive) {
            Ok(()) => {}
            Err(err) if is_missing(&err) => return Ok(false),
            Err(err) if !self.polling => {
                tracing::warn!(folder = %dir.display(), error = %err, poll_interval = ?self.poll_interval, "{}", self.wording.falling_back);
                let mut polling = poll_watcher(&self.make_handler, self.poll_interval)?;
                self.watched
                    .retain(|watched, _| polling.watch(watched, self.recursive).is_ok());
                self.watcher = Box::new(polling);
                self.polling = true;
                if self.watcher.watch(&dir, self.recursive).is_err() {
                    return Ok(false);
                }
            }
            Err(err) => {
                tracing::warn!(folder = %dir.display(), error = %err, "{}", self.wording.refused);
                return Ok(false);
            }
        }
        self.watched.insert(dir, id);
        Ok(true)
    }
}

fn poll_watcher(make_handler: &MakeHandler, interval: Duration) -> notify::Result<PollWatcher> {
    PollWatcher::new(
        make_handler(),
        notify::Config::default().with_poll_interval(interval),
    )
}
