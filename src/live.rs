//! The running configuration: which config and projects are applied, which
//! handlers serve them, and the route table built from both.
//!
//! Every change goes through [`Live::reload`], one at a time: read
//! config.json and every project again, start what is new, wait until
//! replacement handlers are ready, build a new [`RouteTable`], swap it in
//! with one atomic store, then drain and stop what is no longer used. A
//! request holds the snapshot it started with, so nothing in flight sees a
//! half-applied change, and nothing is stopped while it still serves.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use elsinore_config::{Config, HandlerSpec, Manifest, OperatorAccess, Startup, MANIFEST_FILE};
use elsinore_proxy::{ClientPolicy, HostRoute, Preview, ProjectCors, ProjectRoute, RouteTable};
use elsinore_routes::{scan_hosts, HOSTS_DIR};
use elsinore_static::{CacheSettings, Site, StaticFiles, PUBLIC_DIR};
use elsinore_supervisor::{HandlerHandle, HandlerState, Supervisor};
use elsinore_watch::{FolderWatcher, Target, TreeWatcher};
use tokio::sync::Mutex;

use elsinore_routes::decide_owners;

use crate::plan::{skipped_handler_warning, Plan, ProjectPlan};

/// What one reload did, for the log, `/routes` and `POST /reload`.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// When it finished.
    pub at: SystemTime,
    /// What asked for it (`startup`, `file change`, `SIGHUP`, `POST /reload`).
    pub trigger: String,
    /// How long it took, including waiting for replacement handlers.
    pub took: Duration,
    /// Whether a new table was swapped in.
    pub swapped: bool,
    /// One line per change (`+ host a.test → alpha`).
    pub changes: Vec<String>,
    /// What was refused; the previous state of that part keeps serving.
    pub errors: Vec<String>,
    /// Things applied but worth knowing (skipped folders, conflicts,
    /// settings that need a restart).
    pub warnings: Vec<String>,
    /// How many of `errors` are refused certificates: at startup those
    /// leave a host without HTTPS instead of stopping everything.
    pub certificate_errors: usize,
}

impl ReloadReport {
    fn new(trigger: &str) -> Self {
        Self {
            at: SystemTime::now(),
            trigger: trigger.to_owned(),
            took: Duration::ZERO,
            swapped: false,
            changes: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            certificate_errors: 0,
        }
    }

    /// No part of the edit was refused.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A project as applied: what was read, and the handlers running for it
/// (`handlers[i]` runs `manifest.handlers[i]`).
#[derive(Debug, Clone)]
struct AppliedProject {
    plan: ProjectPlan,
    handlers: Vec<Arc<HandlerHandle>>,
}

/// Everything applied, plus the replacement handlers still starting.
#[derive(Debug, Default)]
struct Applied {
    projects: Vec<AppliedProject>,
    /// By project: handlers started to replace running ones, not ready
    /// yet. The project keeps serving with its previous handlers until a
    /// reload finds these ready (their waiter triggers it).
    pending: HashMap<String, Pending>,
}

/// Replacement handlers waiting to be ready.
#[derive(Debug)]
struct Pending {
    /// Each with the spec it runs.
    handlers: Vec<(HandlerSpec, Arc<HandlerHandle>)>,
    /// When the first of them was started.
    since: Instant,
}

/// Where a set of new handlers stands, read without waiting.
enum Readiness {
    Ready,
    Starting,
    Failed(String),
}

/// The live state; see the module documentation.
#[derive(Debug)]
pub struct Live {
    config_path: PathBuf,
    supervisor: Arc<Supervisor>,
    table: Arc<ArcSwap<RouteTable>>,
    applied: Mutex<Applied>,
    /// The startup settings this process runs with.
    running: Startup,
    /// This `Live`, for the tasks it spawns (waiters of new handlers).
    me: std::sync::Weak<Live>,
    drain_limit: Duration,
    last_reload: ArcSwap<ReloadReport>,
    pending_restart: ArcSwap<Vec<String>>,
    /// `admin_hosts` and `admin_token_env` as of the last config.json that
    /// loaded: applied by every reload, not only at startup.
    operator_access: ArcSwap<OperatorAccess>,
    watch_targets: ArcSwap<Vec<Target>>,
    watcher: OnceLock<Arc<FolderWatcher>>,
    /// Every host's `public/` and the cache in front of them.
    static_files: StaticFiles,
    /// The `public/` folders of the current table, for the tree watcher.
    static_roots: ArcSwap<Vec<PathBuf>>,
    tree_watcher: OnceLock<Arc<TreeWatcher>>,
    swaps: AtomicU64,
    /// Reloads that refused something (for `elsinore_reload_failures_total`).
    reload_failures: AtomicU64,
}

impl Live {
    /// Starts every handler of `plan` and builds the first table. Any
    /// error is fatal here: there is no previous state to fall back to.
    pub async fn start(plan: Plan, supervisor: Arc<Supervisor>) -> anyhow::Result<Arc<Self>> {
        let live = Arc::new_cyclic(|me| Self {
            config_path: plan.config.file.clone(),
            supervisor,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            applied: Mutex::new(Applied::default()),
            running: plan.config.startup.clone(),
            me: me.clone(),
            drain_limit: plan.config.startup.shutdown_grace,
            last_reload: ArcSwap::from_pointee(ReloadReport::new("startup")),
            pending_restart: ArcSwap::from_pointee(Vec::new()),
            operator_access: ArcSwap::from_pointee(plan.config.operator_access.clone()),
            watch_targets: ArcSwap::from_pointee(Vec::new()),
            watcher: OnceLock::new(),
            static_files: StaticFiles::new(CacheSettings {
                max_bytes: plan.config.startup.static_files.cache_size,
                max_file: plan.config.startup.static_files.cache_file_max,
                recheck_after: plan.config.startup.static_files.recheck_after,
            }),
            static_roots: ArcSwap::from_pointee(Vec::new()),
            tree_watcher: OnceLock::new(),
            swaps: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        });
        let mut applied = live.applied.lock().await;
        let mut report = ReloadReport::new("startup");
        // Conflicts are reported by `apply`, like on every reload.
        report.warnings = plan.warnings(&[]);
        let candidate = Candidate {
            config: plan.config,
            projects: plan.projects,
        };
        live.apply(&mut applied, candidate, &mut report).await;
        drop(applied);
        for warning in &report.warnings {
            tracing::warn!("{warning}");
        }
        if report.errors.len() > report.certificate_errors {
            live.supervisor.shutdown().await;
            anyhow::bail!("{}", report.errors.join("\n"));
        }
        // Only refused certificates are left: their hosts are served
        // without HTTPS until the files are fixed.
        for error in &report.errors {
            tracing::error!("{error}");
        }
        live.last_reload.store(Arc::new(report));
        Ok(live)
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
    fn reload_when_ready(&self, started: Vec<Arc<HandlerHandle>>) {
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
            self.rewatch(false);
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
                tracing::error!(error = %err, "cannot watch static folders; cached files are checked again every few seconds");
            }
        }
    }

    /// Points the watcher at the folders of the applied projects;
    /// `look_again`: rescan once more if a folder is watched only now.
    fn rewatch(&self, look_again: bool) {
        self.rewatch_static();
        let Some(watcher) = self.watcher.get() else {
            return;
        };
        match watcher.set_targets(&self.watch_targets.load()) {
            // A folder watched only now (a new project, a new hosts/) may
            // have changed before its watch began: look once more.
            Ok(true) if look_again => watcher.poke(),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "cannot watch project folders"),
        }
    }

    /// Reads everything again and applies what changed; logs and returns
    /// what happened. Never takes anything down: a part that cannot be
    /// read or started keeps its previous state.
    pub async fn reload(&self, trigger: &str) -> Arc<ReloadReport> {
        let mut applied = self.applied.lock().await;
        let started = Instant::now();
        let mut report = ReloadReport::new(trigger);
        if let Some(candidate) = self.read_candidate(&applied.projects, &mut report) {
            self.apply(&mut applied, candidate, &mut report).await;
        }
        drop(applied);
        self.rewatch(true);
        report.took = started.elapsed();
        report.at = SystemTime::now();
        let previous_errors = &self.last_reload.load().errors;
        let repeated = report.changes.is_empty()
            && !report.errors.is_empty()
            && *previous_errors == report.errors;
        log_report(&report, repeated);
        if !report.errors.is_empty() {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
        if report.errors.is_empty() && !previous_errors.is_empty() {
            tracing::info!(trigger = %report.trigger, "reload: everything applies again; the previous refusal is resolved");
        }
        let report = Arc::new(report);
        self.last_reload.store(report.clone());
        report
    }

    /// config.json and every project, falling back per project to what is
    /// applied when a project's files are broken. `None` when config.json
    /// itself cannot be used.
    fn read_candidate(
        &self,
        applied: &[AppliedProject],
        report: &mut ReloadReport,
    ) -> Option<Candidate> {
        let config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(err) => {
                report.errors.push(format!(
                    "{err}\n(config.json refused; everything keeps serving as before)"
                ));
                return None;
            }
        };
        let pending: Vec<String> = self
            .running
            .differences(&config.startup)
            .iter()
            .map(ToString::to_string)
            .collect();
        report.warnings.extend(pending.iter().cloned());
        self.pending_restart.store(Arc::new(pending));
        self.operator_access
            .store(Arc::new(config.operator_access.clone()));

        let mut projects = Vec::with_capacity(config.projects.len());
        for project in &config.projects {
            let previous = applied
                .iter()
                .find(|a| a.plan.config.name == project.name && a.plan.config.path == project.path);
            let manifest = Manifest::load(&project.path)
                .map(|m| m.with_public_url(project.public_url.as_deref()));
            let scan = scan_hosts(&project.path);
            let keeping = |what: &str| match previous {
                Some(_) => format!("(project {}: keeping its previous {what})", project.name),
                None => format!("(project {} not added)", project.name),
            };
            let manifest = match (manifest, previous) {
                (Ok(manifest), _) => manifest,
                (Err(err), Some(previous)) => {
                    report
                        .errors
                        .push(format!("{err}\n{}", keeping("handlers")));
                    previous.plan.manifest.clone()
                }
                (Err(err), None) => {
                    report
                        .errors
                        .push(format!("{err}\n{}", keeping("handlers")));
                    continue;
                }
            };
            let scan = match (scan, previous) {
                (Ok(scan), _) => scan,
                (Err(err), Some(previous)) => {
                    report.errors.push(format!("{err}\n{}", keeping("hosts")));
                    previous.plan.scan.clone()
                }
                (Err(err), None) => {
                    report.errors.push(format!("{err}\n{}", keeping("hosts")));
                    continue;
                }
            };
            // Only newly skipped files and folders: the others were
            // reported before.
            for skipped in &manifest.skipped {
                let known = previous.is_some_and(|p| p.plan.manifest.skipped.contains(skipped));
                if !known {
                    report.warnings.push(skipped_handler_warning(
                        &project.path,
                        &manifest,
                        skipped,
                    ));
                }
            }
            for skipped in &scan.skipped {
                let known = previous.is_some_and(|p| p.plan.scan.skipped.contains(skipped));
                if !known {
                    report.warnings.push(format!(
                        "skipped {}/{HOSTS_DIR}/{}: {}",
                        project.path.display(),
                        skipped.name,
                        skipped.reason
                    ));
                }
            }
            projects.push(ProjectPlan {
                config: project.clone(),
                manifest,
                scan,
            });
        }
        Some(Candidate { config, projects })
    }

    /// Starts new handlers, swaps the table, then retires what is no
    /// longer used. A project whose handlers changed switches to the new
    /// ones only once they are ready; until then it keeps its previous
    /// handlers and the rest of the change applies at once, so a slow
    /// redeploy never holds up anyone else's new host.
    async fn apply(&self, state: &mut Applied, candidate: Candidate, report: &mut ReloadReport) {
        let applied = &state.projects;
        let mut waiting_before = std::mem::take(&mut state.pending);
        let mut pending_next: HashMap<String, Pending> = HashMap::new();
        let mut discard: Vec<Arc<HandlerHandle>> = Vec::new();
        self.supervisor.set_env_remove(
            candidate
                .config
                .secret_env_names()
                .map(str::to_owned)
                .collect(),
        );

        // 1. Reuse unchanged handlers (and replacements already
        //    starting), start the rest.
        let mut next: Vec<AppliedProject> = Vec::with_capacity(candidate.projects.len());
        let mut fresh: Vec<Arc<HandlerHandle>> = Vec::new();
        for plan in candidate.projects {
            let name = plan.config.name.clone();
            let previous = applied
                .iter()
                .find(|a| a.plan.config.name == name && a.plan.config.path == plan.config.path);
            let mut starting = waiting_before.remove(&name);
            let started_before = starting.as_ref().map(|p| p.since);
            let mut handlers = Vec::with_capacity(plan.manifest.handlers.len());
            let mut waiting: Vec<(HandlerSpec, Arc<HandlerHandle>)> = Vec::new();
            let mut started = Vec::new();
            let mut failed = None;
            for spec in &plan.manifest.handlers {
                let reusable = previous.and_then(|p| {
                    p.plan
                        .manifest
                        .handlers
                        .iter()
                        .position(|old| old == spec)
                        .map(|i| p.handlers[i].clone())
                });
                if let Some(handle) = reusable {
                    handlers.push(handle);
                    continue;
                }
                let already = starting.as_mut().and_then(|p| {
                    let i = p.handlers.iter().position(|(old, _)| old == spec)?;
                    Some(p.handlers.swap_remove(i).1)
                });
                let handle = match already {
                    Some(handle) => handle,
                    None => match self.supervisor.start(&name, &plan.config.path, spec) {
                        Ok(handle) => {
                            started.push(handle.clone());
                            handle
                        }
                        Err(err) => {
                            failed = Some(format!("project {name}: {err}"));
                            break;
                        }
                    },
                };
                waiting.push((spec.clone(), handle.clone()));
                handlers.push(handle);
            }
            fresh.extend(started.iter().cloned());
            // Replacements started for a manifest that changed again.
            discard.extend(
                starting
                    .into_iter()
                    .flat_map(|p| p.handlers)
                    .map(|(_, h)| h),
            );
            if let Some(err) = failed {
                report.errors.push(err);
                discard.extend(waiting.into_iter().map(|(_, h)| h));
                if let Some(previous) = previous {
                    next.push(keep_handlers(previous, plan));
                }
                continue;
            }
            let Some(previous) = previous.filter(|_| !waiting.is_empty()) else {
                // New project, or nothing to replace: use them at once
                // (requests wait for a handler still starting).
                next.push(AppliedProject { plan, handlers });
                continue;
            };
            // 2. A project whose handlers changed switches only once the
            //    new ones answer; until then (or if they never do) the old
            //    ones keep serving.
            // Start timeouts count from the oldest start still waited for;
            // a handler started by this reload restarts the count.
            let since = match started_before {
                Some(since) if started.is_empty() => since,
                _ => Instant::now(),
            };
            match readiness(&waiting, since) {
                Readiness::Ready => next.push(AppliedProject { plan, handlers }),
                Readiness::Failed(why) => {
                    report.errors.push(format!(
                        "project {name}: {why}; keeping its previous handlers"
                    ));
                    discard.extend(waiting.into_iter().map(|(_, h)| h));
                    next.push(keep_handlers(previous, plan));
                }
                Readiness::Starting => {
                    for (spec, _) in &waiting {
                        let replacing = previous
                            .plan
                            .manifest
                            .handlers
                            .iter()
                            .any(|h| h.name == spec.name);
                        // A new generated binary is an addition, not a
                        // replacement: say which, so the log is not read as
                        // something old still serving.
                        let until = if replacing {
                            "the previous one serves until it is ready"
                        } else {
                            "it is added once it is ready"
                        };
                        report.changes.push(format!(
                            "~ project {name}: handler {} starting; {until}",
                            spec.name
                        ));
                    }
                    if !started.is_empty() {
                        self.reload_when_ready(started);
                    }
                    pending_next.insert(
                        name,
                        Pending {
                            handlers: waiting,
                            since,
                        },
                    );
                    next.push(keep_handlers(previous, plan));
                }
            }
        }
        // Projects gone from config.json take their replacements with them.
        discard.extend(
            waiting_before
                .into_values()
                .flat_map(|p| p.handlers)
                .map(|(_, h)| h),
        );

        // 3. Build and swap.
        let old_table = self.table.load_full();
        let declared: Vec<(&str, &elsinore_routes::HostScan)> = next
            .iter()
            .map(|a| (a.plan.config.name.as_str(), &a.plan.scan))
            .collect();
        let (owners, conflicts) = decide_owners(&declared, |host| {
            old_table
                .hosts
                .get_pattern(host)
                .map(|route| route.project.name.as_str())
        });
        let mut routes = Vec::with_capacity(next.len());
        // By route: each kept host's `public/`, under the name it is
        // declared by.
        let mut sites: Vec<HashMap<String, Arc<Site>>> = Vec::with_capacity(next.len());
        let mut static_roots = Vec::new();
        // Beside `routes`: each route's host folders as spelled on disk.
        let mut scans: Vec<&elsinore_routes::HostScan> = Vec::with_capacity(next.len());
        for project in &next {
            let config = &project.plan.config;
            let handlers = project
                .handlers
                .iter()
                .cloned()
                .zip(
                    project
                        .plan
                        .manifest
                        .handlers
                        .iter()
                        .map(|s| s.routes.clone()),
                )
                .collect();
            let Some(mut route) = ProjectRoute::new(
                &config.name,
                config.path.clone(),
                config.key.as_ref().map(|k| k.expose()),
                handlers,
            ) else {
                // config.json validation refuses such names and keys.
                report.errors.push(format!(
                    "project {}: name or key is not valid header text",
                    config.name
                ));
                continue;
            };
            route.max_body = config.max_body;
            route.cors = ProjectCors::new(&config.cors_origins, config.cors_credentials);
            route.hosts = project
                .plan
                .scan
                .hosts
                .iter()
                .filter(|host| {
                    !conflicts
                        .iter()
                        .any(|c| c.refused_for == config.name && c.host == host.to_string())
                })
                .cloned()
                .collect();
            let project_sites = self.sites_of(&route, &project.plan.scan);
            static_roots.extend(project_sites.values().map(|site| site.root().to_path_buf()));
            sites.push(project_sites);
            routes.push(Arc::new(route));
            scans.push(&project.plan.scan);
        }
        for conflict in &conflicts {
            let known = old_table.conflicts.contains(conflict);
            if !known {
                report.warnings.push(format!(
                    "host {} is declared by both {} and {}; {} keeps it",
                    conflict.host, conflict.kept_by, conflict.refused_for, conflict.kept_by
                ));
            }
        }
        // Certificates belong to the same snapshot as the hosts they serve.
        let cert_sources = match self.running.tls_listen {
            Some(_) => elsinore_tls::cert_sources(
                routes
                    .iter()
                    .zip(scans.iter().copied())
                    .map(|(route, scan)| (route.path.as_path(), &route.hosts[..], scan)),
                candidate.config.tls_default.as_ref(),
            ),
            None => Vec::new(),
        };
        let certs = old_table.certs.rebuild(&cert_sources, SystemTime::now());
        let hosts = owners.map_named(|name, &index| HostRoute {
            project: routes[index].clone(),
            site: sites[index].get(name).cloned(),
            label: Arc::from(name),
        });
        let preview = candidate.config.preview_host.as_ref().map(|host| {
            if let Some(shadowed) = hosts.lookup(host.as_str()) {
                report.warnings.push(format!(
                    "host {host} is the preview_host: project {}'s folder for it is not used",
                    shadowed.project.name
                ));
            }
            Preview::new(host.as_str(), &routes)
        });
        let default_project = candidate
            .config
            .default_project
            .as_ref()
            .and_then(|name| {
                let found = routes.iter().find(|r| &r.name == name).cloned();
                if found.is_none() {
                    report.warnings.push(format!(
                        "default_project {name} is not serving (see the errors above): unknown hosts get 404"
                    ));
                }
                found
            });
        let new_table = RouteTable {
            hosts,
            projects: routes,
            conflicts,
            certs: Arc::new(certs.store),
            redirect_http: candidate.config.redirect_http,
            default_project,
            preview,
            client_policy: ClientPolicy::from_config(&candidate.config),
        };
        // The table's diff first, then the replacements still starting.
        let starting = std::mem::take(&mut report.changes);
        report.changes = describe_changes(&old_table, &new_table, applied, &next);
        report.changes.extend(starting);
        report.changes.extend(certs.changes);
        report.certificate_errors += certs.errors.len();
        report.errors.extend(certs.errors);
        report.warnings.extend(certs.warnings);
        self.table.store(Arc::new(new_table));
        self.swaps.fetch_add(1, Ordering::AcqRel);
        report.swapped = true;

        // 4. Retire what the new table no longer uses: after its in-flight
        //    requests finish (bounded by shutdown_grace), stop it.
        let kept: Vec<&Arc<HandlerHandle>> = next
            .iter()
            .flat_map(|a| &a.handlers)
            .chain(
                pending_next
                    .values()
                    .flat_map(|p| p.handlers.iter().map(|(_, h)| h)),
            )
            .collect();
        let retired = applied
            .iter()
            .flat_map(|a| a.handlers.iter())
            .chain(fresh.iter())
            .chain(discard.iter())
            .filter(|h| !kept.iter().any(|k| Arc::ptr_eq(k, h)))
            .cloned();
        for handle in retired {
            let supervisor = self.supervisor.clone();
            let limit = self.drain_limit;
            tokio::spawn(async move {
                if tokio::time::timeout(limit, handle.drained()).await.is_err() {
                    tracing::warn!(
                        project = handle.project(),
                        handler = handle.name(),
                        in_flight = handle.in_flight(),
                        ?limit,
                        "retired handler still busy after shutdown_grace; stopping it anyway"
                    );
                }
                supervisor.stop(&handle).await;
            });
        }

        let mut targets = watch_targets(&self.config_path, &next);
        targets.extend(crate::tls::watch_targets(&cert_sources));
        targets.extend(public_watch_targets(&next));
        self.watch_targets.store(Arc::new(targets));
        self.static_roots.store(Arc::new(static_roots));
        state.projects = next;
        state.pending = pending_next;
    }
}

impl Live {
    /// The `public/` folder of each host `route` keeps, by declared name
    /// (one `stat` per host).
    fn sites_of(
        &self,
        route: &ProjectRoute,
        scan: &elsinore_routes::HostScan,
    ) -> HashMap<String, Arc<Site>> {
        let hosts_dir = route.path.join(HOSTS_DIR);
        route
            .hosts
            .iter()
            .filter_map(|host| {
                let public = hosts_dir.join(scan.folder(host)?).join(PUBLIC_DIR);
                public
                    .is_dir()
                    .then(|| (host.to_string(), self.static_files.site(&public)))
            })
            .collect()
    }
}

/// Each host folder, where only a `public` entry matters: a `public/`
/// added or removed changes what the host serves.
fn public_watch_targets(projects: &[AppliedProject]) -> Vec<Target> {
    projects
        .iter()
        .flat_map(|project| {
            let hosts_dir = project.plan.config.path.join(HOSTS_DIR);
            let scan = &project.plan.scan;
            scan.hosts
                .iter()
                .filter_map(move |host| scan.folder(host).map(|folder| hosts_dir.join(folder)))
        })
        .map(|dir| Target::only(dir, [PUBLIC_DIR]))
        .collect()
}

/// What a reload is about to apply.
struct Candidate {
    config: Config,
    projects: Vec<ProjectPlan>,
}

/// `plan` with the handlers (and the manifest they run) of `previous`.
fn keep_handlers(previous: &AppliedProject, mut plan: ProjectPlan) -> AppliedProject {
    plan.manifest = previous.plan.manifest.clone();
    AppliedProject {
        plan,
        handlers: previous.handlers.clone(),
    }
}

/// Whether new handlers can take over, from their states now: failed if
/// one crashed, or is still not ready after its `start_timeout` counted
/// from `since`.
fn readiness(waiting: &[(HandlerSpec, Arc<HandlerHandle>)], since: Instant) -> Readiness {
    let mut starting = false;
    for (spec, handle) in waiting {
        let status = handle.status();
        match status.state {
            HandlerState::Ready | HandlerState::External => {}
            // Crashed and already starting again (the reload came after its
            // 100 ms backoff): still a failed replacement. Waiting on would
            // leave nobody to trigger the next look, as its waiter is spent.
            HandlerState::Starting if status.restarts > 0 => {
                let why = status.last_error.unwrap_or_else(|| "crashed".to_owned());
                return Readiness::Failed(format!(
                    "new handler {} did not start: {why}",
                    spec.name
                ));
            }
            HandlerState::Starting if since.elapsed() < spec.start_timeout => starting = true,
            HandlerState::Starting => {
                return Readiness::Failed(format!(
                    "new handler {} did not start: not ready within {:?} (start_timeout)",
                    spec.name, spec.start_timeout
                ))
            }
            state => {
                let why = status
                    .last_error
                    .unwrap_or_else(|| state.as_str().to_owned());
                return Readiness::Failed(format!(
                    "new handler {} did not start: {why}",
                    spec.name
                ));
            }
        }
    }
    if starting {
        Readiness::Starting
    } else {
        Readiness::Ready
    }
}

/// config.json's folder (only config.json matters there), each project's
/// folder (project.toml and hosts/), each project's hosts/, and each
/// `handlers_dir` with the folders leading to it.
fn watch_targets(config_path: &Path, projects: &[AppliedProject]) -> Vec<Target> {
    let mut targets = Vec::with_capacity(1 + 2 * projects.len());
    if let (Some(dir), Some(name)) = (config_path.parent(), config_path.file_name()) {
        targets.push(Target::only(dir, [name.to_owned()]));
    }
    for project in projects {
        let dir = &project.plan.config.path;
        targets.push(Target::only(dir, [MANIFEST_FILE, HOSTS_DIR]));
        targets.push(Target::all(dir.join(HOSTS_DIR)));
        if let Some(handlers_dir) = &project.plan.manifest.handlers_dir {
            targets.extend(handlers_dir_targets(dir, handlers_dir));
        }
    }
    targets
}

/// The generated handlers' folder (every entry matters: each file is a
/// handler) and, for each folder between the project and it, the one entry
/// leading there: code generators delete and recreate the whole tree
/// (`rm -rf server/.hamlet-gen`), and the folder may not exist yet.
fn handlers_dir_targets(project_dir: &Path, handlers_dir: &Path) -> Vec<Target> {
    let mut targets = Vec::new();
    let mut parent = project_dir.to_path_buf();
    for part in handlers_dir.iter() {
        targets.push(Target::only(parent.clone(), [part.to_owned()]));
        parent.push(part);
    }
    targets.push(Target::all(parent));
    targets
}

/// The one-line-per-change diff between two tables.
fn describe_changes<'a>(
    old: &RouteTable,
    new: &RouteTable,
    old_projects: &'a [AppliedProject],
    new_projects: &'a [AppliedProject],
) -> Vec<String> {
    let mut changes = Vec::new();
    let by_name = |projects: &'a [AppliedProject]| -> BTreeMap<&'a str, &'a AppliedProject> {
        projects
            .iter()
            .map(|p| (p.plan.config.name.as_str(), p))
            .collect()
    };
    let (before, after) = (by_name(old_projects), by_name(new_projects));
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        changes.push(format!("- project {name}"));
    }
    for (name, project) in &after {
        let handler_names = || {
            project
                .plan
                .manifest
                .handlers
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(previous) = before.get(name) else {
            changes.push(format!("+ project {name} (handlers: {})", handler_names()));
            continue;
        };
        if previous.plan.config.path != project.plan.config.path {
            changes.push(format!(
                "~ project {name}: moved to {}",
                project.plan.config.path.display()
            ));
        }
        if previous.plan.config.key != project.plan.config.key {
            changes.push(format!("~ project {name}: key changed"));
        }
        for (i, handle) in project.handlers.iter().enumerate() {
            let spec_name = &project.plan.manifest.handlers[i].name;
            let was = previous
                .plan
                .manifest
                .handlers
                .iter()
                .position(|h| &h.name == spec_name);
            match was {
                None => changes.push(format!("~ project {name}: + handler {spec_name}")),
                Some(j) if !Arc::ptr_eq(&previous.handlers[j], handle) => {
                    changes.push(format!("~ project {name}: handler {spec_name} replaced"));
                }
                Some(_) => {}
            }
        }
        for old in &previous.plan.manifest.handlers {
            if !project
                .plan
                .manifest
                .handlers
                .iter()
                .any(|h| h.name == old.name)
            {
                changes.push(format!("~ project {name}: - handler {}", old.name));
            }
        }
    }

    // Hosts: by lookup in the other table, not by sorting both (10,000
    // hosts, nearly always unchanged); only the changes are sorted.
    let mut host_changes: Vec<(String, String)> = Vec::new();
    for (host, route) in old.hosts.iter() {
        let project = &route.project.name;
        match new.hosts.get(host) {
            None => host_changes.push((host.to_string(), format!("- host {host} (was {project})"))),
            Some(now) if now.project.name != *project => host_changes.push((
                host.to_string(),
                format!("~ host {host}: {project} → {}", now.project.name),
            )),
            Some(_) => {}
        }
    }
    let removed_or_moved = host_changes.len();
    for (host, route) in new.hosts.iter() {
        if old.hosts.get(host).is_none() {
            host_changes.push((
                host.to_string(),
                format!("+ host {host} → {}", route.project.name),
            ));
        }
    }
    // As before: removals and moves by name, then additions by name.
    host_changes[..removed_or_moved].sort();
    host_changes[removed_or_moved..].sort();
    changes.extend(host_changes.into_iter().map(|(_, line)| line));
    changes
}

/// Logs a report; a `repeated` refusal (same errors as the last reload,
/// nothing applied) is logged at debug level only, so a broken file does
/// not flood the log each time something else changes.
fn log_report(report: &ReloadReport, repeated: bool) {
    if repeated {
        tracing::debug!(trigger = %report.trigger, errors = ?report.errors, "reload: still refused for the same reasons");
        return;
    }
    for change in &report.changes {
        tracing::info!(trigger = %report.trigger, "{change}");
    }
    for warning in &report.warnings {
        tracing::warn!(trigger = %report.trigger, "{warning}");
    }
    for error in &report.errors {
        tracing::error!(trigger = %report.trigger, "reload refused part of the change: {error}");
    }
    if report.changes.is_empty() {
        tracing::debug!(trigger = %report.trigger, took = ?report.took, "reload: nothing changed");
    } else {
        tracing::info!(
            trigger = %report.trigger,
            took = ?report.took,
            changes = report.changes.len(),
            errors = report.errors.len(),
            "reload applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handlers_dir_is_watched_with_every_folder_leading_to_it() {
        let targets = handlers_dir_targets(
            Path::new("/p/macbeth"),
            Path::new("server/.hamlet-gen/handlers"),
        );
        assert_eq!(
            targets,
            [
                Target::only("/p/macbeth", ["server"]),
                Target::only("/p/macbeth/server", [".hamlet-gen"]),
                Target::only("/p/macbeth/server/.hamlet-gen", ["handlers"]),
                Target::all("/p/macbeth/server/.hamlet-gen/handlers"),
            ]
        );
    }
}
