//! Carries out a [`ReloadPlan`]: the only part of a reload with effects.
//!
//! States, in order, and what a failure at each leaves serving:
//!
//! 1. **Start** what [`to_start`] lists. A handler the supervisor refuses
//!    (no free port) makes its project keep its previous handlers (a new
//!    project is not added); every other project goes on.
//! 2. **Plan** with the started handlers ([`plan`], pure). Replacements not
//!    ready yet stay pending and the project keeps serving with its
//!    previous handlers; a task reloads once they are ready, crashed or
//!    past `start_timeout`, and a failed replacement is dropped then.
//! 3. **Build** the table: each kept host's `public/` and `tls/` (one
//!    `stat` each, spread over the cores: `probe.rs`) and its
//!    certificates (`CertStore::rebuild`: a refused pair keeps the host's
//!    last good certificate, or leaves it without HTTPS). A project whose
//!    name or key is not header text is left out (config.json validation
//!    already refuses those).
//! 4. **Swap**: one atomic store. Nothing before it changed what requests
//!    see; from here on every new request uses the new table.
//! 5. **Retire** what the plan no longer uses, in the background: each
//!    handler drains (its in-flight responses finish, at most
//!    `shutdown_grace`), then it is stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use elsinore_config::HostPattern;
use elsinore_routes::{
    ClientPolicy, CorsPolicy, HostRoute, Preview, ProjectRoute, RouteTable, HOSTS_DIR,
};
use elsinore_static::{Site, PUBLIC_DIR};
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::CertSource;

use crate::change::Change;
use crate::declared::Declared;
use crate::error::{ReloadError, Warning};
use crate::live::Live;
use crate::plan::{plan, to_start, Applied, Running, Started};
use crate::report::ReloadReport;
use crate::{probe, watch};

impl Live {
    /// Applies `candidate` to `running`; see the module documentation.
    pub(crate) async fn apply(
        &self,
        running: &mut Running<Arc<HandlerHandle>>,
        candidate: Declared,
        report: &mut ReloadReport,
    ) {
        self.supervisor.set_env_remove(
            candidate
                .config
                .secret_env_names()
                .map(str::to_owned)
                .collect(),
        );

        // 1. Start.
        let mut started: Vec<Started<Arc<HandlerHandle>>> = Vec::new();
        let mut refused: Vec<&str> = Vec::new();
        let wanted = to_start(running, &candidate);
        for handler in &wanted {
            // After a refusal the project keeps its previous handlers:
            // starting the rest of it would only be undone.
            if refused.contains(&handler.project.as_str()) {
                continue;
            }
            let result = if handler.asleep {
                self.supervisor
                    .start_asleep(&handler.project, &handler.project_dir, &handler.spec)
            } else {
                self.supervisor
                    .start(&handler.project, &handler.project_dir, &handler.spec)
            };
            if result.is_err() {
                refused.push(&handler.project);
            }
            started.push(Started {
                project: handler.project.clone(),
                spec: handler.spec.clone(),
                result,
            });
        }

        // 2. Plan.
        let mut plan = plan(running, candidate, started, Instant::now());
        if !plan.wake_when_ready.is_empty() {
            self.reload_when_ready(std::mem::take(&mut plan.wake_when_ready));
        }
        report.errors.append(&mut plan.errors);
        report.warnings.append(&mut plan.warnings);

        // 3. Build.
        let old_table = self.table.load_full();
        let config = &plan.config;
        let mut routes: Vec<Option<Arc<ProjectRoute>>> = Vec::with_capacity(plan.projects.len());
        // By route: each kept host's `public/`, under the name it is
        // declared by.
        let mut sites: Vec<HashMap<String, Arc<Site>>> = Vec::with_capacity(plan.projects.len());
        let mut static_roots = Vec::new();
        // Certificates belong to the same snapshot as the hosts they serve.
        let want_tls = self.running.tls_listen.is_some();
        let mut cert_sources = Vec::new();
        for (project, kept) in plan.projects.iter().zip(&plan.kept_hosts) {
            let route = self.project_route(project);
            if route.is_none() {
                report.errors.push(ReloadError::HeaderText {
                    project: project.declared.config.name.clone(),
                });
            }
            let mut project_sites = HashMap::new();
            if route.is_some() {
                let scan = &project.declared.scan;
                let hosts_dir = project.declared.config.path.join(HOSTS_DIR);
                // `kept` is this scan's own list, so each host is declared:
                // its folder is the spelling kept for it, or else its name
                // (no binary search of a million names per host).
                let kept: Vec<(&HostPattern, &str)> = kept
                    .iter()
                    .filter_map(|host| {
                        let folder = match (scan.folders.get(host), host) {
                            (Some(folder), _) => folder.as_str(),
                            (None, HostPattern::Exact(name)) => name.as_str(),
                            (None, HostPattern::Wildcard(_)) => scan.folder(host)?,
                        };
                        Some((host, folder))
                    })
                    .collect();
                let folders: Vec<&str> = kept.iter().map(|(_, folder)| *folder).collect();
                let found = probe::probe(&hosts_dir, &folders, want_tls);
                for ((host, folder), inside) in kept.into_iter().zip(found) {
                    if !inside.public && !inside.tls {
                        continue;
                    }
                    let host_dir = hosts_dir.join(folder);
                    if inside.public {
                        let site = self.static_files.site(&host_dir.join(PUBLIC_DIR));
                        static_roots.push(site.root().to_path_buf());
                        project_sites.insert(host.to_string(), site);
                    }
                    if inside.tls {
                        cert_sources.push(CertSource::host(host.clone(), &host_dir));
                    }
                }
            }
            sites.push(project_sites);
            routes.push(route);
        }
        if want_tls {
            if let Some(default) = &config.tls_default {
                cert_sources.push(CertSource::default_cert(
                    default.cert.clone(),
                    default.key.clone(),
                ));
            }
        }
        let mut certs = old_table.certs.rebuild(&cert_sources, SystemTime::now());
        let tls_dirs = std::mem::take(&mut certs.tls_dirs);
        // A host's certificate comes only from its owner's folders (or the
        // default): never from another project's wildcard above it.
        certs.store.limit_wildcards(own_wildcards(&plan.owners));
        // Each route's key and label are the name's shared text: no copy
        // of a million names (a wildcard's label is made, `*.suffix`).
        let hosts = plan.owners.filter_map_keyed(|key, wildcard, &index| {
            let label: Arc<str> = match wildcard {
                false => key.clone(),
                true => Arc::from(format!("*.{key}")),
            };
            let site = match sites[index].is_empty() {
                true => None,
                false => sites[index].get(&*label).cloned(),
            };
            Some(HostRoute {
                project: routes[index].clone()?,
                site,
                label,
            })
        });
        let serving: Vec<Arc<ProjectRoute>> = routes.iter().flatten().cloned().collect();
        let preview = config
            .preview_host
            .as_ref()
            .map(|host| Preview::new(host.as_str(), &serving));
        let default_project = plan.default_project.and_then(|i| routes[i].clone());
        let new_table = RouteTable {
            hosts,
            projects: serving,
            conflicts: plan.conflicts.clone(),
            certs: Arc::new(certs.store),
            redirect_http: config.redirect_http,
            default_project,
            preview,
            client_policy: ClientPolicy::from_config(config),
        };
        report.changes.append(&mut plan.changes);
        report
            .changes
            .extend(certs.changes.into_iter().map(Change::Certificate));
        report
            .errors
            .extend(certs.errors.into_iter().map(ReloadError::Certificate));
        report
            .warnings
            .extend(certs.warnings.into_iter().map(Warning::Certificate));

        // 4. Swap.
        self.table.store(Arc::new(new_table));
        self.applied_config
            .store(Some(Arc::new(plan.config.clone())));
        self.swaps.fetch_add(1, Ordering::AcqRel);
        report.swapped = true;
        // 5. Retire.
        for handle in std::mem::take(&mut plan.retire) {
            self.retire(handle);
        }

        let mut targets = watch::config_targets(&self.config_path, &plan.projects);
        targets.extend(watch::cert_targets(&tls_dirs, &cert_sources));
        targets.extend(watch::public_targets(&static_roots));
        self.watch_targets.store(Arc::new(targets));
        self.swept.store(Arc::new(watch::swept(&plan.projects)));
        self.static_roots.store(Arc::new(static_roots));
        let before = running.owners.clone();
        let recorded = std::mem::take(&mut running.recorded);
        let many = before.len().max(plan.owners.len()) > OWNERS_IN_BACKGROUND;
        *running = plan.into_running();
        if let Some(records) = &self.owner_records {
            let after = running.owners.clone();
            // One write at a time, in the order of the swaps.
            let turn = self.owner_writes.clone().lock_owned().await;
            let records = records.clone();
            let write = async move {
                crate::owners::record_changes(&records, before, recorded, after).await;
                drop(turn);
            };
            // A big table's record (a first start with a million hosts
            // writes a million rows, seconds) is written while the new
            // table serves; a small one before the reload reports, as
            // the tenant admin API's listing reads it.
            match many {
                true => drop(tokio::spawn(write)),
                false => write.await,
            }
        }
    }

    /// The request path's view of `project`, serving `kept` hosts; `None`
    /// when its name or key is not header text.
    fn project_route(&self, project: &Applied<Arc<HandlerHandle>>) -> Option<Arc<ProjectRoute>> {
        let config = &project.declared.config;
        let handlers = project
            .handlers
            .iter()
            .cloned()
            .zip(
                project
                    .declared
                    .manifest
                    .handlers
                    .iter()
                    .map(|s| s.routes.clone()),
            )
            .collect();
        let mut route = ProjectRoute::new(
            &config.name,
            config.path.clone(),
            config.key.as_ref().map(|k| k.expose()),
            handlers,
        )?;
        route.max_body = config.max_body;
        route.forward_host = config.forward_host;
        route.set_rate_limits(config.rate_limits);
        route.cors = CorsPolicy::for_project(&config.cors_origins, config.cors_credentials);
        route.admin_api = config.admin_api;
        Some(Arc::new(route))
    }

    /// Stops `handle` once its in-flight requests finish (bounded by
    /// `shutdown_grace`), in the background.
    fn retire(&self, handle: Arc<HandlerHandle>) {
        let supervisor = self.supervisor.clone();
        let limit = self.drain_limit;
        tokio::spawn(async move {
            if tokio::time::timeout(limit, handle.drained()).await.is_err() {
                tracing::warn!(
                target: crate::LOG_TARGET,
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
}

/// Above this many hosts a full reload writes the host owners in the
/// background (see the end of `apply`).
const OWNERS_IN_BACKGROUND: usize = 10_000;

/// Exact names served by one project under another project's wildcard,
/// each with the suffixes of its own project's wildcards above it (see
/// `CertStore::limit_wildcards`).
fn own_wildcards(
    owners: &elsinore_routes::HostTable<usize>,
) -> std::collections::HashMap<String, Box<[String]>> {
    owners
        .iter()
        .filter(|(name, _)| !name.wildcard)
        .filter_map(|(name, &owner)| {
            let mut own = Vec::new();
            let mut foreign = false;
            let mut above = name.name;
            while let Some((suffix, &wildcard_owner)) = owners.covering_wildcard(above) {
                if wildcard_owner == owner {
                    own.push(suffix.to_owned());
                } else {
                    foreign = true;
                }
                above = suffix;
            }
            foreign.then(|| (name.name.to_owned(), own.into_boxed_slice()))
        })
        .collect()
}
