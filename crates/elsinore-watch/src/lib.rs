//! Watches the folders whose contents make up the route table and wakes
//! the reloader once per burst of changes.
//!
//! This crate knows nothing of config.json or projects: the caller names
//! folders ([`Target`]) and which entries in them matter, and awaits
//! [`FolderWatcher::changed`]. Every folder is watched non-recursively, so a
//! project's `node_modules/` or database never costs inotify watches nor
//! wakes anyone.
//!
//! A watched folder that is deleted and created again (build tools do
//! `rm -rf out && mkdir out`) is watched afresh at the next
//! [`FolderWatcher::set_targets`], even when both happened within one burst.
//!
//! The native backend (inotify on Linux) is used when it can be set up.
//! When it cannot (the per-user watch limit is reached, or the filesystem
//! does not support it) the watcher falls back to polling, logs that once,
//! and carries on; [`WatchMode::Poll`] forces polling from the start (for
//! network filesystems, where inotify silently sees nothing).
//!
//! [`TreeWatcher`] is the other kind: whole trees, watched recursively,
//! reporting each changed path (for the static-file cache).
//!
//! Each burst also leaves the paths it touched ([`FolderWatcher::take_changes`]),
//! so that the reloader re-reads only the entries named (one host folder
//! of a million) and rescans everything only when events were lost.
//! Folders given to [`FolderWatcher::set_swept`] are not watched inside
//! their entries: a slow, paced `stat` of each entry (`sweep.rs`) reports
//! the entries changed inside, so the number of watches does not grow
//! with the number of host folders.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode};
use tokio::sync::Notify;
use tokio::time::Instant;

mod sweep;
mod tree;
mod watches;

pub use tree::{TreeChange, TreeWatcher};
use watches::{folder_id, FolderId, MakeHandler, Watches, Wording};

/// A burst ends after this long without a new event...
const QUIET: Duration = Duration::from_millis(40);
/// ...or this long after it began, whichever comes first, so a folder that
/// never stops changing still gets reloaded regularly.
const MAX_BURST: Duration = Duration::from_millis(250);

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// The operating system's notifications, polling if they fail.
    Auto,
    /// Polling only.
    Poll,
}

/// One watched folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// The folder. It may not exist yet; then the caller should also watch
    /// its parent so that its creation is seen.
    pub dir: PathBuf,
    /// Entry names in `dir` whose changes matter; `None`: every entry.
    pub names: Option<Vec<OsString>>,
}

impl Target {
    /// Every entry of `dir` matters.
    pub fn all(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            names: None,
        }
    }

    /// Only the listed entries of `dir` matter.
    pub fn only<I, S>(dir: impl Into<PathBuf>, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            dir: dir.into(),
            names: Some(names.into_iter().map(Into::into).collect()),
        }
    }
}

/// The targets by folder, for the event callback: one lookup per event
/// path, whatever the number of targets (a project with 10,000 host
/// folders has more than 10,000 of them).
#[derive(Debug, Default)]
struct TargetIndex(HashMap<PathBuf, Option<Vec<OsString>>>);

impl TargetIndex {
    /// Several targets may name one folder: their entries add up, and
    /// "every entry" wins.
    fn new(targets: &[Target]) -> Self {
        let mut index: HashMap<PathBuf, Option<Vec<OsString>>> =
            HashMap::with_capacity(targets.len());
        for target in targets {
            match index.entry(target.dir.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(target.names.clone());
                }
                Entry::Occupied(mut slot) => match (slot.get_mut(), &target.names) {
                    (Some(names), Some(more)) => names.extend(more.iter().cloned()),
                    (names, None) => *names = None,
                    (None, Some(_)) => {}
                },
            }
        }
        Self(index)
    }

    /// Whether `path` is a target folder.
    fn is_target(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }

    /// Whether an event at `path` concerns a target: the folder itself, or
    /// one of its entries that matters.
    fn matches(&self, path: &Path) -> bool {
        if self.is_target(path) {
            return true;
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        match self.0.get(parent) {
            Some(None) => true,
            Some(Some(names)) => names.iter().any(|n| n == name),
            None => false,
        }
    }
}

/// The paths a burst touched, taken by [`FolderWatcher::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Each path an event named that concerns a target (a target folder
    /// itself, or one of its entries that matter), or that the sweep
    /// found changed.
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost (the kernel's queue overflowed, the backend
    /// failed) or someone asked for a full look ([`FolderWatcher::poke`]):
    /// anything may have changed.
    pub lost: bool,
}

/// What the event callback shares with [`FolderWatcher::set_targets`].
#[derive(Default)]
struct Shared {
    /// What changed since the last [`FolderWatcher::take_changes`].
    changes: Mutex<Changes>,
    targets: RwLock<TargetIndex>,
    /// Watched folders that events said were deleted, created or renamed
    /// since the last `set_targets`: their watch is gone or follows the
    /// old folder, so they are watched afresh.
    replaced: Mutex<BTreeSet<PathBuf>>,
}

/// Watches a set of folders; see the crate documentation.
pub struct FolderWatcher {
    /// The watched folders. A folder keeps the identity it was watched
    /// with; the events recorded in [`Shared::replaced`] say when it was
    /// replaced, and only then is it looked at again (inode numbers are
    /// reused at once, so the identity could not tell on its own).
    watches: Mutex<Watches>,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    poll_interval: Duration,
    /// The folders the sweeping thread goes through; the thread starts
    /// with the first [`FolderWatcher::set_swept`].
    swept: Arc<sweep::SweepList>,
    sweeping: std::sync::Once,
}

impl std::fmt::Debug for FolderWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatcher")
            .field("backend", &self.backend_name())
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Why no watcher at all could be set up (not even polling).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch for changes: {0}")]
pub struct WatchError(#[from] notify::Error);

impl FolderWatcher {
    /// A watcher with no targets yet. Polling, when used, looks every
    /// `poll_interval`.
    pub fn new(mode: WatchMode, poll_interval: Duration) -> Result<Self, WatchError> {
        let shared: Arc<Shared> = Arc::default();
        let wake = Arc::new(Notify::new());
        let make_handler: MakeHandler = {
            let (shared, wake) = (shared.clone(), wake.clone());
            Box::new(move || Box::new(on_event(shared.clone(), wake.clone())))
        };
        let wording = Wording {
            unavailable: "file notifications are unavailable; polling for changes instead",
            falling_back: "cannot watch with file notifications; polling for changes instead",
            refused: "cannot watch folder; its changes need SIGHUP or POST /reload",
        };
        let watches = Watches::new(
            mode,
            RecursiveMode::NonRecursive,
            poll_interval,
            wording,
            make_handler,
        )?;
        Ok(Self {
            watches: Mutex::new(watches),
            shared,
            wake,
            poll_interval,
            swept: Arc::default(),
            sweeping: std::sync::Once::new(),
        })
    }

    /// Sweeps the entries of `dirs` (see the crate documentation): each
    /// sub-folder changed inside is reported as a change of its path. The
    /// folders themselves still need a target to be watched.
    pub fn set_swept(&self, dirs: Vec<PathBuf>) {
        self.swept.set(dirs);
        self.sweeping.call_once(|| {
            let (shared, wake) = (self.shared.clone(), self.wake.clone());
            let report = move |path: PathBuf| {
                record(&shared, [path]);
                wake.notify_one();
            };
            // Polling already compares each entry's times at each look.
            let interval = self.poll_interval.max(Duration::from_secs(1));
            if let Err(err) = sweep::spawn(self.swept.clone(), interval, report) {
                tracing::warn!(error = %err, "cannot start the host folder sweep; a tls/ or public/ made inside an existing host folder needs POST /reload");
            }
        });
    }

    /// What changed since the previous call: the paths events named, or
    /// `lost` when anything may have.
    pub fn take_changes(&self) -> Changes {
        std::mem::take(
            &mut *self
                .shared
                .changes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Wakes [`changed`](Self::changed) for `paths`, as if events had
    /// named them (a folder watched only now: what changed in it before
    /// its watch began is looked at).
    pub fn note(&self, paths: impl IntoIterator<Item = PathBuf>) {
        record(&self.shared, paths);
        self.wake.notify_one();
    }

    /// `"native"` or `"poll"`: what is watching right now.
    pub fn backend_name(&self) -> &'static str {
        let watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if watches.polling() {
            "poll"
        } else {
            "native"
        }
    }

    /// Replaces the watched folders. Returns `true` when a folder is
    /// watched now that was not before (or is a new folder under a watched
    /// name): changes made inside it before this call were not seen, so the
    /// caller should rescan once more.
    pub fn set_targets(&self, targets: &[Target]) -> Result<bool, WatchError> {
        self.set_targets_listing(targets)
            .map(|added| !added.is_empty())
    }

    /// As [`set_targets`](Self::set_targets), returning the folders
    /// watched now that were not before.
    pub fn set_targets_listing(&self, targets: &[Target]) -> Result<Vec<PathBuf>, WatchError> {
        let index = TargetIndex::new(targets);
        let dirs: Vec<PathBuf> = index.0.keys().cloned().collect();
        *self
            .shared
            .targets
            .write()
            .unwrap_or_else(PoisonError::into_inner) = index;

        let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = std::mem::take(
            &mut *self
                .shared
                .replaced
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        // A folder watched already keeps the identity it was watched with
        // unless an event said it was replaced: the kernel reports the
        // deletion of a watched folder on its own watch, so a `stat` of
        // every watched folder at every reload (10,000 for 10,000 host
        // folders, the larger part of such a reload) would only repeat it.
        let mut wanted: Vec<(PathBuf, FolderId)> = dirs
            .into_iter()
            .filter_map(|dir| {
                let known = match replaced.contains(&dir) {
                    true => None,
                    false => watches.watched().get(&dir).copied(),
                };
                let id = known.or_else(|| folder_id(&dir))?;
                Some((dir, id))
            })
            .collect();
        // Sorted, so that folders are watched parents first.
        wanted.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        let stale: Vec<PathBuf> = watches
            .watched()
            .iter()
            .filter(|(dir, id)| {
                let still = wanted
                    .binary_search_by(|(w, _)| w.as_os_str().cmp(dir.as_os_str()))
                    .is_ok_and(|i| wanted[i].1 == **id);
                !still || replaced.contains(*dir)
            })
            .map(|(dir, _)| dir.clone())
            .collect();
        for gone in stale {
            watches.unwatch(&gone);
        }
        let mut added = Vec::new();
        for (dir, id) in wanted {
            if !watches.watched().contains_key(&dir) && watches.watch(dir.clone(), id)? {
                added.push(dir);
            }
        }
        Ok(added)
    }

    /// Resolves after a burst of relevant changes has settled.
    pub async fn changed(&self) {
        self.wake.notified().await;
        let began = Instant::now();
        loop {
            let left = MAX_BURST.saturating_sub(began.elapsed());
            if left.is_zero() {
                return;
            }
            if tokio::time::timeout(QUIET.min(left), self.wake.notified())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Wakes [`changed`](Self::changed) as if events had been lost: the
    /// next reload looks at everything.
    pub fn poke(&self) {
        lose(&self.shared);
        self.wake.notify_one();
    }
}

pub(crate) fn is_missing(err: &notify::Error) -> bool {
    match &err.kind {
        notify::ErrorKind::PathNotFound | notify::ErrorKind::WatchNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// Adds `paths` to what changed.
fn record(shared: &Shared, paths: impl IntoIterator<Item = PathBuf>) {
    shared
        .changes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .paths
        .extend(paths);
}

/// Marks events as lost: the reloader looks at everything.
fn lose(shared: &Shared) {
    let mut changes = shared
        .changes
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    changes.lost = true;
    // Everything is read again: the paths need not be kept.
    changes.paths.clear();
}

/// The callback both backends share: wake the reloader when an event
/// touches a target (or when the backend lost events and cannot say which),
/// noting the paths it names.
fn on_event(
    shared: Arc<Shared>,
    wake: Arc<Notify>,
) -> impl FnMut(notify::Result<Event>) + Send + 'static {
    move |event| match event {
        // Reading a file (as every reload does) is not a change; counting
        // it would make each reload trigger the next.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        Ok(event) => {
            let targets = shared
                .targets
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let moved = matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(notify::event::ModifyKind::Name(_))
            );
            if moved {
                let mut replaced = shared
                    .replaced
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for path in &event.paths {
                    if targets.is_target(path) {
                        replaced.insert(path.clone());
                    }
                }
            }
            let lost = event.need_rescan();
            let named: Vec<PathBuf> = event
                .paths
                .iter()
                .filter(|path| targets.matches(path))
                .cloned()
                .collect();
            drop(targets);
            if lost {
                lose(&shared);
            } else if !named.is_empty() {
                record(&shared, named);
            } else {
                return;
            }
            wake.notify_one();
        }
        Err(err) => {
            tracing::warn!(error = %err, "file watcher error; rescanning");
            lose(&shared);
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper bound for a change to be noticed; only reached when broken.
    const WAIT: Duration = Duration::from_secs(10);

    fn watcher(mode: WatchMode, dir: &Path) -> FolderWatcher {
        let watcher = FolderWatcher::new(mode, Duration::from_millis(50)).expect("watcher");
        watcher
            .set_targets(&[
                Target::only(dir, ["config.json", "hosts"]),
                Target::all(dir.join("hosts")),
            ])
            .expect("targets");
        watcher
    }

    async fn sees(watcher: &FolderWatcher, what: &str) {
        tokio::time::timeout(WAIT, watcher.changed())
            .await
            .unwrap_or_else(|_| panic!("change not seen within {WAIT:?}: {what}"));
    }

    #[test]
    fn targets_match_only_their_entries() {
        let target = TargetIndex::new(&[Target::only("/p", ["project.toml", "hosts"])]);
        assert!(target.matches(Path::new("/p/project.toml")));
        assert!(target.matches(Path::new("/p/hosts")));
        assert!(target.matches(Path::new("/p")));
        assert!(!target.matches(Path::new("/p/data.db-wal")));
        assert!(!target.matches(Path::new("/p/hosts/a.test")));
        assert!(TargetIndex::new(&[Target::all("/p/hosts")]).matches(Path::new("/p/hosts/a.test")));
    }

    #[test]
    fn targets_naming_one_folder_add_up() {
        let index = TargetIndex::new(&[
            Target::only("/p", ["project.toml"]),
            Target::only("/p", ["server"]),
            Target::only("/q", ["a"]),
            Target::all("/q"),
        ]);
        assert!(index.matches(Path::new("/p/project.toml")));
        assert!(index.matches(Path::new("/p/server")));
        assert!(!index.matches(Path::new("/p/other")));
        assert!(index.matches(Path::new("/q/anything")));
    }

    #[tokio::test]
    async fn native_sees_a_new_folder_and_a_replaced_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        let watcher = watcher(WatchMode::Auto, dir.path());
        assert_eq!(watcher.backend_name(), "native");

        std::fs::create_dir(dir.path().join("hosts/a.test")).expect("mkdir");
        sees(&watcher, "mkdir hosts/a.test").await;

        // Editors save by writing a temp file and renaming it over.
        std::fs::write(dir.path().join(".config.json.tmp"), "{}").expect("write");
        std::fs::rename(
            dir.path().join(".config.json.tmp"),
            dir.path().join("config.json"),
        )
        .expect("rename");
        sees(&watcher, "config.json replaced by rename").await;
    }

    #[tokio::test]
    async fn a_burst_leaves_the_paths_it_named_and_a_poke_loses_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        let watcher = watcher(WatchMode::Auto, dir.path());
        std::fs::create_dir(dir.path().join("hosts/a.test")).expect("mkdir");
        sees(&watcher, "mkdir hosts/a.test").await;
        let changes = watcher.take_changes();
        assert!(!changes.lost);
        assert!(
            changes.paths.contains(&dir.path().join("hosts/a.test")),
            "{changes:?}"
        );
        assert_eq!(watcher.take_changes(), Changes::default(), "taken once");
        watcher.poke();
        assert!(watcher.take_changes().lost);
    }

    #[tokio::test]
    async fn the_sweep_reports_a_folder_changed_inside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hosts = dir.path().join("hosts");
        std::fs::create_dir_all(hosts.join("a.test")).expect("mkdir");
        std::fs::create_dir_all(hosts.join("b.test")).expect("mkdir");
        let watcher = watcher(WatchMode::Auto, dir.path());
        watcher.set_swept(vec![hosts.clone()]);
        // Past the sweep's slack (timestamps in whole seconds), the
        // folders made above are no longer reported...
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let _ = watcher.take_changes();
        // ...and this one is, though nothing watches inside hosts/a.test.
        std::fs::create_dir(hosts.join("a.test/tls")).expect("mkdir tls");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the sweep did not report hosts/a.test");
            let _ = tokio::time::timeout(left, watcher.changed()).await;
            if watcher.take_changes().paths.contains(&hosts.join("a.test")) {
                break;
            }
        }
    }

    #[tokio::test]
    async fn irrelevant_files_do_not_wake() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        let watcher = watcher(WatchMode::Auto, dir.path());
        std::fs::write(dir.path().join("elsinore.db-wal"), "x").expect("write");
        let woke = tokio::time::timeout(Duration::from_millis(300), watcher.changed()).await;
        assert!(woke.is_err(), "a database file woke the reloader");
    }

    #[tokio::test]
    async fn polling_sees_a_new_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        let watcher = watcher(WatchMode::Poll, dir.path());
        assert_eq!(watcher.backend_name(), "poll");
        std::fs::create_dir(dir.path().join("hosts/b.test")).expect("mkdir");
        sees(&watcher, "mkdir hosts/b.test while polling").await;
    }

    #[tokio::test]
    async fn a_folder_deleted_and_created_again_is_watched_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        let watcher = watcher(WatchMode::Auto, dir.path());
        // Both before the caller looks again, as `rm -rf gen && mkdir gen`
        // within one burst: the path never looked unwatched.
        std::fs::remove_dir(dir.path().join("hosts")).expect("rmdir");
        std::fs::create_dir(dir.path().join("hosts")).expect("mkdir");
        sees(&watcher, "hosts/ deleted and created").await;
        let targets = vec![
            Target::only(dir.path(), ["config.json", "hosts"]),
            Target::all(dir.path().join("hosts")),
        ];
        let added = watcher.set_targets(&targets).expect("targets");
        assert!(added, "the new hosts/ should be newly watched");
        assert!(
            !watcher.set_targets(&targets).expect("targets"),
            "the same folder again is not new"
        );
        std::fs::create_dir(dir.path().join("hosts/d.test")).expect("mkdir");
        sees(&watcher, "mkdir inside the recreated hosts/").await;
    }

    #[tokio::test]
    async fn a_folder_created_later_is_watched_once_targeted_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let watcher = watcher(WatchMode::Auto, dir.path());
        std::fs::create_dir(dir.path().join("hosts")).expect("hosts");
        sees(&watcher, "hosts/ created").await;
        let added = watcher
            .set_targets(&[
                Target::only(dir.path(), ["config.json", "hosts"]),
                Target::all(dir.path().join("hosts")),
            ])
            .expect("targets");
        assert!(added, "hosts/ should be newly watched");
        std::fs::create_dir(dir.path().join("hosts/c.test")).expect("mkdir");
        sees(&watcher, "mkdir inside the new hosts/").await;
    }
}
