//! Watching whole folder trees and saying which path changed, for caches
//! that drop what a change touches instead of reloading everything.
//!
//! Unlike [`crate::FolderWatcher`], which watches single folders and wakes
//! one reloader per burst, a [`TreeWatcher`] watches each root recursively
//! (one inotify watch per folder inside it) and calls its callback for
//! every change, at once and without debouncing: invalidating a cache entry
//! is cheap, and serving a stale file for 40 ms is not wanted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode};

use crate::watches::{folder_id, FolderId, MakeHandler, Watches, Wording};
use crate::{WatchError, WatchMode};

/// What a [`TreeWatcher`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeChange<'a> {
    /// Something at this path changed (a file, or a folder and all in it).
    Path(&'a Path),
    /// Events were lost: anything may have changed.
    Lost,
}

type Callback = Arc<dyn Fn(TreeChange<'_>) + Send + Sync>;

/// Watches folder trees; see the module documentation.
pub struct TreeWatcher {
    /// Each watched root with the identity of the folder watched, so a
    /// folder replaced under the same name is watched again.
    roots: Mutex<Watches>,
}

impl std::fmt::Debug for TreeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roots = self.roots.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TreeWatcher")
            .field("polling", &roots.polling())
            .field("roots", &roots.watched().len())
            .finish_non_exhaustive()
    }
}

impl TreeWatcher {
    /// A watcher with no roots yet that calls `on_change` (from the
    /// backend's thread) for every change under a root.
    pub fn new(
        mode: WatchMode,
        poll_interval: Duration,
        on_change: impl Fn(TreeChange<'_>) + Send + Sync + 'static,
    ) -> Result<Self, WatchError> {
        let on_change: Callback = Arc::new(on_change);
        let make_handler: MakeHandler = Box::new(move || Box::new(on_event(on_change.clone())));
        let wording = Wording {
            unavailable: "file notifications are unavailable; polling static folders instead",
            falling_back:
                "cannot watch static folders with file notifications; polling them instead",
            refused:
                "cannot watch static folder; its cached files are checked again every few seconds",
        };
        let roots = Watches::new(
            mode,
            RecursiveMode::Recursive,
            poll_interval,
            wording,
            make_handler,
        )?;
        Ok(Self {
            roots: Mutex::new(roots),
        })
    }

    /// Watches exactly `roots` (folders that do not exist are skipped;
    /// their creation is the caller's to notice).
    pub fn set_roots(&self, roots: &[PathBuf]) -> Result<(), WatchError> {
        let wanted: HashMap<PathBuf, FolderId> = roots
            .iter()
            .filter_map(|root| folder_id(root).map(|id| (root.clone(), id)))
            .collect();
        let mut watches = self.roots.lock().unwrap_or_else(PoisonError::into_inner);
        let stale: Vec<PathBuf> = watches
            .watched()
            .iter()
            .filter(|(root, id)| wanted.get(*root) != Some(*id))
            .map(|(root, _)| root.clone())
            .collect();
        for root in stale {
            watches.unwatch(&root);
        }
        for (root, id) in wanted {
            if !watches.watched().contains_key(&root) {
                watches.watch(root, id)?;
            }
        }
        Ok(())
    }
}

fn on_event(callback: Callback) -> impl FnMut(notify::Result<Event>) + Send + 'static {
    move |event| match event {
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) if event.need_rescan() => callback(TreeChange::Lost),
        Ok(event) => {
            for path in &event.paths {
                callback(TreeChange::Path(path));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "static folder watcher error; dropping cached files");
            callback(TreeChange::Lost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    fn watcher(mode: WatchMode) -> (TreeWatcher, mpsc::Receiver<Option<PathBuf>>) {
        let (send, receive) = mpsc::channel();
        let send = Mutex::new(send);
        let watcher = TreeWatcher::new(mode, Duration::from_millis(50), move |change| {
            let path = match change {
                TreeChange::Path(path) => Some(path.to_path_buf()),
                TreeChange::Lost => None,
            };
            let _ = send
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(path);
        })
        .expect("watcher");
        (watcher, receive)
    }

    /// Waits until a change at exactly `path` is reported.
    fn sees(changes: &mpsc::Receiver<Option<PathBuf>>, path: &Path) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match changes.recv_timeout(left) {
                Ok(Some(changed)) if changed == path => return,
                Ok(_) => {}
                Err(_) => panic!("no change reported for {} within {WAIT:?}", path.display()),
            }
        }
    }

    #[test]
    fn changes_deep_inside_a_root_are_reported_with_their_path() {
        for mode in [WatchMode::Auto, WatchMode::Poll] {
            let dir = tempfile::tempdir().expect("temp dir");
            let root = dir.path().join("public");
            std::fs::create_dir_all(root.join("css")).expect("mkdir");
            std::fs::write(root.join("css/site.css"), "a").expect("write");
            let (watcher, changes) = watcher(mode);
            watcher
                .set_roots(std::slice::from_ref(&root))
                .expect("roots");

            std::fs::write(root.join("css/site.css"), "bb").expect("write");
            // Polling compares modification times in whole seconds: make
            // this edit one a poller can see within the test's second.
            std::fs::File::options()
                .write(true)
                .open(root.join("css/site.css"))
                .and_then(|f| f.set_modified(std::time::SystemTime::now() + Duration::from_secs(2)))
                .expect("set mtime");
            sees(&changes, &root.join("css/site.css"));
            // A folder made after the watch began is watched too.
            std::fs::create_dir(root.join("img")).expect("mkdir");
            sees(&changes, &root.join("img"));
        }
    }

    #[test]
    fn a_replaced_root_is_watched_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("public");
        std::fs::create_dir(&root).expect("mkdir");
        let (watcher, changes) = watcher(WatchMode::Auto);
        watcher
            .set_roots(std::slice::from_ref(&root))
            .expect("roots");
        std::fs::rename(&root, dir.path().join("old")).expect("rename");
        std::fs::create_dir(&root).expect("mkdir");
        watcher
            .set_roots(std::slice::from_ref(&root))
            .expect("roots");
        while changes.try_recv().is_ok() {}
        std::fs::write(root.join("index.html"), "new").expect("write");
        sees(&changes, &root.join("index.html"));
    }
}
