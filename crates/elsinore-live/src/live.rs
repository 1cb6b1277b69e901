//! The running configuration: which config and projects are applied, which
//! handlers serve them, and the route table built from both.
//!
//! Every change goes through [`Live::reload`], one at a time (a mutex):
//! read config.json and every project again ([`Declared::reread`]), then
//! the executor (`executor.rs`) starts what is new, plans
//! ([`crate::plan`]), builds a new [`RouteTable`], swaps it in with one
//! atomic store, then drains and stops what is no longer used. A request
//! holds the snapshot it started with, so nothing in flight sees a
//! half-applied change, and nothing is stopped while it still serves.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use elsinore_config::{OperatorAccess, Startup};
use elsinore_routes::RouteTable;
use elsinore_static::{CacheSettings, StaticFiles};
use elsinore_store::OwnerRecords;
use elsinore_supervisor::{HandlerHandle, Supervisor};
use elsinore_watch::{FolderWatcher, Target, TreeWatcher};
use tokio::sync::Mutex;

use crate::declared::Declared;
use crate::error::{ReloadError, Warning};
use crate::plan::Running;
use crate::report::ReloadReport;

/// The first configuration could not start: every error found, which
/// the binary prints before it exits.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct StartRefused {
    /// Everything refused (refused certificates included).
    pub errors: Vec<ReloadError>,
}

/// What to do about folders watched only after a reload read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookAgain {
    /// Nothing (the first watch: nothing was applied before it).
    No,
    /// Read everything again.
    Rescan,
    /// Read again what is in those folders only (an incremental reload).
    Folders,
}

/// The live state; see the module documentation.
#[derive(Debug)]
pub struct Live {
    pub(crate) config_path: PathBuf,
    pub(crate) supervisor: Arc<Supervisor>,
    pub(crate) table: Arc<ArcSwap<RouteTable>>,
    running_state: Mutex<Running<Arc<HandlerHandle>>>,
    /// The startup settings this process runs with.
    pub(crate) running: Startup,
    /// This `Live`, for the tasks it spawns (waiters of new handlers).
    me: Weak<Live>,
    pub(crate) drain_limit: Duration,
    last_reload: ArcSwap<ReloadReport>,
    pending_restart: ArcSwap<Vec<String>>,
    /// `admin_hosts` and `admin_token_env` as of the last config.json that
    /// loaded: applied by every reload, not only at startup.
    operator_access: ArcSwap<OperatorAccess>,
    pub(crate) watch_targets: ArcSwap<Vec<Target>>,
    /// config.json as last applied: what an incremental reload checks a
    /// new host against (`host_owners`, `preview_host`). `None` before
    /// the first table.
    pub(crate) applied_config: arc_swap::ArcSwapOption<elsinore_config::Config>,
    /// Each project's `hosts/`, whose entries the watcher sweeps.
    pub(crate) swept: ArcSwap<Vec<PathBuf>>,
    watcher: OnceLock<Arc<FolderWatcher>>,
    /// Every host's `public/` and the cache in front of them.
    pub(crate) static_files: StaticFiles,
    /// The `public/` folders of the current table, for the tree watcher.
    pub(crate) static_roots: ArcSwap<Vec<PathBuf>>,
    tree_watcher: OnceLock<Arc<TreeWatcher>>,
    pub(crate) swaps: AtomicU64,
    /// Reloads that refused something (for `elsinore_reload_failures_total`).
    reload_failures: AtomicU64,
    /// The state database's `host_owners` (`None`: owners are not
    /// recorded, as in unit tests).
    pub(crate) owner_records: Option<Arc<OwnerRecords>>,
    /// Held while host owners are written: writes happen one at a time,
    /// in the order of the swaps, some in the background.
    pub(crate) owner_writes: Arc<Mutex<()>>,
    /// Gives freed memory back to the system (the binary's
    /// `malloc_trim`), after a full reload of a big table.
    release_memory: OnceLock<fn()>,
}

/// Above this many hosts, a full reload is followed by
/// [`Live::set_memory_release`]'s function: at 1,000,000 hosts each one
/// left about 100 MiB of freed memory that the allocator kept (RSS 253 →
/// 345 → 542 MiB over two `POST /reload`s).
pub(crate) const RELEASE_AFTER_RELOAD_OF: usize = 10_000;

impl Live {
    /// Starts every handler of `declared` and builds the first table;
    /// `warnings` are what `check` would say about it. Any error is fatal
    /// here (there is no previous state to fall back to), except a
    /// refused certificate: its host is served without HTTPS until the
    /// files are fixed.
    pub async fn start(
        declared: Declared,
        warnings: Vec<Warning>,
        supervisor: Arc<Supervisor>,
    ) -> Result<Arc<Self>, StartRefused> {
        Self::start_recording(declared, warnings, supervisor, None).await
    }

    /// As [`start`](Self::start), with host owners read from `records`
    /// before the first plan and written back after every swap.
    pub async fn start_recording(
        declared: Declared,
        warnings: Vec<Warning>,
        supervisor: Arc<Supervisor>,
        records: Option<Arc<OwnerRecords>>,
    ) -> Result<Arc<Self>, StartRefused> {
        let config = &declared.config;
        let live = Arc::new_cyclic(|me| Self {
            config_path: config.file.clone(),
            supervisor,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            running_state: Mutex::new(Running::default()),
            running: config.startup.clone(),
            me: me.clone(),
            drain_limit: config.startup.shutdown_grace,
            last_reload: ArcSwap::from_pointee(ReloadReport::new("startup")),
            pending_restart: ArcSwap::from_pointee(Vec::new()),
            operator_access: ArcSwap::from_pointee(config.operator_access.clone()),
            watch_targets: ArcSwap::from_pointee(Vec::new()),
            swept: ArcSwap::from_pointee(Vec::new()),
            applied_config: arc_swap::ArcSwapOption::empty(),
            watcher: OnceLock::new(),
            static_files: StaticFiles::new(CacheSettings {
                max_bytes: config.startup.static_files.cache_size,
                max_file: config.startup.static_files.cache_file_max,
                recheck_after: config.startup.static_files.recheck_after,
            }),
            static_roots: ArcSwap::from_pointee(Vec::new()),
            tree_watcher: OnceLock::new(),
            swaps: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            owner_records: records,
            owner_writes: Arc::default(),
            release_memory: OnceLock::new(),
        });
        let mut running = live.running_state.lock().await;
        if let Some(records) = &live.owner_records {
            running.recorded = crate::owners::load(records).await;
        }
        let mut report = ReloadReport::new("startup");
        // Conflicts are reported by `apply`, like on every reload.
        report.warnings = warnings;
        live.apply(&mut running, declared, &mut report).await;
        drop(running);
        for warning in &report.warnings {
            tracing::warn!(
                target: crate::LOG_TARGET,
                "{warning}");
        }
        if report.errors.iter().any(|e| !e.is_certificate()) {
            live.supervisor.shutdown().await;
            return Err(StartRefused {
                errors: report.errors,
            });
        }
        // Only refused certificates are left: their hosts are served
        // without HTTPS until the files are fixed.
        for error in &report.errors {
            tracing::error!(
                target: crate::LOG_TARGET,
                "{error}");
        }
        live.last_reload.store(Arc::new(report));
        Ok(live)
    }

    /// Sets what gives freed memory back to the system after a full
    /// reload of more than 10,000 hosts (once the owners it changed are
    /// written, on a blocking thread). Unset, nothing is done.
    pub fn set_memory_release(&self, release: fn()) {
        let _ = self.release_memory.set(release);
    }

    /// Runs the memory release in the background when the table is big
    /// enough for a full reload to leave much garbage.
    fn release_memory_after_reload(&self) {
        let Some(release) = self.release_memory.get().copied() else {
            return;
        };
        if self.table.load().hosts.len() <= RELEASE_AFTER_RELOAD_OF {
            return;
        }
        let owner_writes = self.owner_writes.clone();
        tokio::spawn(async move {
            // After any owners' write of this reload, which frees the
            // tables it compared.
            drop(owner_writes.lock().await);
            let _ = tokio::task::spawn_blocking(release).await;
        });
    }

    /// Waits for the host owners being written in the background (a big
    /// start's), so that a stop right after start-up loses none.
    pub async fn flush_owner_records(&self) {
        let _turn = self.owner_writes.lock().await;
    }

    /// The table the proxy serves from.
    pub fn table(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    /// The supervisor running every handler.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// The last reload's result.
    pub fn last_reload(&self) -> Arc<ReloadReport> {
        self.last_reload.load_full()
    }

    /// Who the operator listener answers (`admin_hosts`,
    /// `admin_token_env`).
    pub fn operator_access(&self) -> Arc<OperatorAccess> {
        self.operator_access.load_full()
    }

    /// Restart-only settings whose edit is waiting for a restart.
    pub fn pending_restart(&self) -> Arc<Vec<String>> {
        self.pending_restart.load_full()
    }

    /// Reloads since startup that refused something (the previous state
    /// of that part kept serving).
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// How many tables have been swapped in since startup (the first
    /// included).
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Acquire)
    }

    /// Reloads once every handler in `started` is ready (or has failed,
    /// or its start timeout passed), so a waiting replacement takes over
    /// as soon as it can.
    pub(crate) fn reload_when_ready(&self, started: Vec<Arc<HandlerHandle>>) {
        let me = self.me.clone();
        tokio::spawn(async move {
            for handle in &started {
                // Ready, crashed or timed out: the reload decides which.
                let _ = handle.ready().await;
            }
            if let Some(live) = me.upgrade() {
                live.reload("new handler ready").await;
            }
        });
    }

    /// Hands the watcher to the live state, which points it at the right
    /// folders now and after every reload, whatever triggered it.
    pub fn attach_watcher(&self, watcher: Arc<FolderWatcher>) {
        if self.watcher.set(watcher).is_ok() {
            // Nothing was applied without a watch yet: no second look.
            self.rewatch(LookAgain::No);
        }
    }

    /// The watcher, if one runs.
    pub fn watcher(&self) -> Option<&Arc<FolderWatcher>> {
        self.watcher.get()
    }

    /// The static files of every host, whose cache the tree watcher
    /// invalidates.
    pub fn static_files(&self) -> &StaticFiles {
        &self.static_files
    }

    /// Hands over the watcher of the `public/` trees; it follows the
    /// table's folders from now on.
    pub fn attach_tree_watcher(&self, watcher: Arc<TreeWatcher>) {
        if self.tree_watcher.set(watcher).is_ok() {
            self.rewatch_static();
        }
    }

    fn rewatch_static(&self) {
        if let Some(watcher) = self.tree_watcher.get() {
            if let Err(err) = watcher.set_roots(&self.static_roots.load()) {
                tracing::error!(
                target: crate::LOG_TARGET,
                error = %err, "cannot watch static folders; cached files are checked again every few seconds");
            }
        }
    }

    /// Points the watcher at the folders of the applied projects;
    /// `look_again`: look once more at a folder watched only now, with a
    /// full rescan (`Rescan`) or at that folder alone (`Folders`).
    pub(crate) fn rewatch(&self, look_again: LookAgain) {
        self.rewatch_static();
        let Some(watcher) = self.watcher.get() else {
            return;
        };
        watcher.set_swept(self.swept.load().to_vec());
        match watcher.set_targets_listing(&self.watch_targets.load()) {
            // A folder watched only now (a new project, a new hosts/, a
            // new tls/) may have changed before its watch began: look
            // once more.
            Ok(added) if added.is_empty() => {}
            Ok(added) => match look_again {
                LookAgain::No => {}
                LookAgain::Rescan => watcher.poke(),
                LookAgain::Folders => watcher.note(added),
            },
            Err(err) => tracing::error!(
                target: crate::LOG_TARGET,
                error = %err, "cannot watch project folders"),
        }
    }

    /// Reads everything again and applies what changed; logs and returns
    /// what happened. Never takes anything down: a part that cannot be
    /// read or started keeps its previous state.
    pub async fn reload(&self, trigger: &str) -> Arc<ReloadReport> {
        let running = self.running_state.lock().await;
        self.reload_locked(running, trigger).await
    }

    /// [`reload`](Self::reload) with the state already locked.
    pub(crate) async fn reload_locked(
        &self,
        running: tokio::sync::MutexGuard<'_, Running<Arc<HandlerHandle>>>,
        trigger: &str,
    ) -> Arc<ReloadReport> {
        self.reload_changed(running, trigger, None).await
    }

    /// [`reload_locked`](Self::reload_locked), listing the hosts of only
    /// the projects whose folders are in `changed` (`None`: all).
    pub(crate) async fn reload_changed(
        &self,
        mut running: tokio::sync::MutexGuard<'_, Running<Arc<HandlerHandle>>>,
        trigger: &str,
        changed: Option<Vec<std::path::PathBuf>>,
    ) -> Arc<ReloadReport> {
        let started = Instant::now();
        let mut report = ReloadReport::new(trigger);
        let reread =
            Declared::reread_changed(&self.config_path, &running.projects, changed.as_deref());
        report.errors = reread.errors;
        if let Some(declared) = reread.declared {
            let pending = self.running.differences(&declared.config.startup);
            self.pending_restart
                .store(Arc::new(pending.iter().map(ToString::to_string).collect()));
            report
                .warnings
                .extend(pending.into_iter().map(Warning::RestartNeeded));
            self.operator_access
                .store(Arc::new(declared.config.operator_access.clone()));
            report.warnings.extend(reread.warnings);
            self.apply(&mut running, declared, &mut report).await;
        }
        drop(running);
        self.rewatch(LookAgain::Rescan);
        report.took = started.elapsed();
        report.at = SystemTime::now();
        let report = self.finish_report(report);
        self.release_memory_after_reload();
        report
    }

    /// Logs `report`, counts a refusal and keeps it as the last reload.
    pub(crate) fn finish_report(&self, report: ReloadReport) -> Arc<ReloadReport> {
        let previous = self.last_reload.load_full();
        let repeated =
            report.changes.is_empty() && !report.errors.is_empty() && report.same_errors(&previous);
        if !report.errors.is_empty() {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        let resolved = report.errors.is_empty() && !previous.errors.is_empty();
        let report = Arc::new(report);
        // Kept before it is logged: whoever reads a log line and then asks
        // `/routes` sees this reload (a test did, and lost the race).
        self.last_reload.store(report.clone());
        report.log(repeated);
        if resolved {
            tracing::info!(
                target: crate::LOG_TARGET,
                trigger = %report.trigger, "reload: everything applies again; the previous refusal is resolved");
        }
        report
    }

    /// The state, for the incremental path.
    pub(crate) async fn lock_running(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Running<Arc<HandlerHandle>>> {
        self.running_state.lock().await
    }
}
