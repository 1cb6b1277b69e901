//! Incremental reloads: when every path a burst of watcher events named is
//! a host folder (or something inside one) of a project's `hosts/`, only
//! those host folders are read again and the table is updated in place of
//! a rebuild: the next snapshot is a clone of the current one (the host
//! table's shards and everything else shared) with those hosts changed.
//! Its cost depends on the hosts changed, not on how many exist.
//!
//! [`plan_hosts`] decides, without effects, what each named folder
//! becomes; it gives up (`None`: read everything again) whenever the
//! answer could depend on another host or project: a wildcard, a name
//! another project declares or a wildcard of another project covers, a
//! name `host_owners` or `preview_host` mentions, a conflict, two folders
//! spelling one name. Config.json, a `project.toml`, a `handlers_dir`, or
//! lost events (the kernel's queue overflowed) always read everything
//! again, as do `POST /reload`, SIGHUP, and any change while the last
//! reload refused something (so the report keeps saying what is refused
//! until it is fixed).

use std::collections::{BTreeSet, HashSet};
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use elsinore_config::{Config, HostPattern};
use elsinore_routes::{DeclaredName, HostRoute, SkippedFolder, HOSTS_DIR};
use elsinore_static::PUBLIC_DIR;
use elsinore_store::OwnerChanges;
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::{CertOwner, CertSource, TLS_DIR};
use elsinore_watch::{Changes, Target};

use crate::change::Change;
use crate::error::{ReloadError, Warning};
use crate::live::{Live, LookAgain};
use crate::plan::{Applied, Running};
use crate::report::ReloadReport;
use crate::watch;

/// One entry of a project's `hosts/` that events named, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Index into the running projects.
    pub project: usize,
    /// The entry's name.
    pub folder: String,
    /// Whether it is a folder now (symlinks followed).
    pub is_dir: bool,
}

/// What one host folder's change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostStep {
    /// A new exact name for `project`.
    Add {
        project: usize,
        host: HostPattern,
        folder: String,
    },
    /// A name whose folder is gone.
    Remove { project: usize, host: HostPattern },
    /// A name whose folder changed inside (`tls/`, `public/`).
    Refresh {
        project: usize,
        host: HostPattern,
        folder: String,
    },
    /// A folder that is no hostname, now there (`present`) or gone.
    Skipped {
        project: usize,
        folder: SkippedFolder,
        present: bool,
    },
}

/// The entries of `hosts/` folders that `paths` name, each once, with its
/// project's index; `None` when a path is anything else (config.json, a
/// `project.toml`, a `hosts/` itself, a handler): then everything is read
/// again.
pub(crate) fn host_entries<H>(
    projects: &[Applied<H>],
    paths: &BTreeSet<PathBuf>,
) -> Option<BTreeSet<(usize, String)>> {
    let dirs: Vec<PathBuf> = projects
        .iter()
        .map(|p| p.declared.config.path.join(HOSTS_DIR))
        .collect();
    let mut entries = BTreeSet::new();
    for path in paths {
        let (index, rest) = dirs
            .iter()
            .enumerate()
            .find_map(|(i, dir)| Some((i, path.strip_prefix(dir).ok()?)))?;
        let Some(Component::Normal(name)) = rest.components().next() else {
            return None;
        };
        entries.insert((index, name.to_str()?.to_owned()));
    }
    Some(entries)
}

/// Looks at each entry on disk (one `stat`).
pub(crate) fn look<H>(projects: &[Applied<H>], entries: BTreeSet<(usize, String)>) -> Vec<Seen> {
    entries
        .into_iter()
        .map(|(project, folder)| {
            let path = projects[project]
                .declared
                .config
                .path
                .join(HOSTS_DIR)
                .join(&folder);
            let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
            Seen {
                project,
                folder,
                is_dir,
            }
        })
        .collect()
}

/// What `seen` does to `running` under `config`, with the changes to
/// report; `None` when the answer may depend on more than these folders
/// (see the module documentation).
pub(crate) fn plan_hosts<H>(
    running: &Running<H>,
    config: &Config,
    seen: &[Seen],
) -> Option<(Vec<HostStep>, Vec<Change>)> {
    let mut steps = Vec::new();
    let mut changes = Vec::new();
    for entry in seen {
        let project = running.projects.get(entry.project)?;
        let name = project.declared.config.name.as_str();
        let scan = &project.declared.scan;
        if scan.spellings_differ {
            return None;
        }
        let host = match HostPattern::parse(&entry.folder) {
            Ok(host) => host,
            Err(err) => {
                let known = scan.skipped.iter().any(|s| s.name == entry.folder);
                if known != entry.is_dir {
                    steps.push(HostStep::Skipped {
                        project: entry.project,
                        folder: SkippedFolder {
                            name: entry.folder.clone(),
                            reason: err.to_string(),
                        },
                        present: entry.is_dir,
                    });
                }
                continue;
            }
        };
        let HostPattern::Exact(exact) = &host else {
            return None;
        };
        let owner = running.owners.get_pattern(&host).map(|o| &**o);
        let elsewhere = running
            .projects
            .iter()
            .enumerate()
            .any(|(i, p)| i != entry.project && p.declared.scan.folder(&host).is_some());
        let in_conflict = running.conflicts.iter().any(|c| c.host == exact.as_str());
        if elsewhere || in_conflict {
            return None;
        }
        match (entry.is_dir, scan.folder(&host)) {
            (true, Some(folder)) if folder == entry.folder => {
                if owner != Some(name) {
                    return None;
                }
                steps.push(HostStep::Refresh {
                    project: entry.project,
                    host,
                    folder: entry.folder.clone(),
                });
            }
            // A second spelling of a declared name.
            (true, Some(_)) => return None,
            (true, None) => {
                let decided = config.host_owners.get(&host);
                let covered = running
                    .owners
                    .covering_wildcard(exact.as_str())
                    .is_some_and(|(_, wildcard_owner)| &**wildcard_owner != name);
                let previewed = config
                    .preview_host
                    .as_ref()
                    .is_some_and(|p| p.as_str() == exact.as_str());
                if owner.is_some() || covered || previewed || decided.is_some_and(|d| d != name) {
                    return None;
                }
                changes.push(Change::HostAdded {
                    host: host.to_string(),
                    project: name.to_owned(),
                });
                steps.push(HostStep::Add {
                    project: entry.project,
                    host,
                    folder: entry.folder.clone(),
                });
            }
            (false, Some(folder)) if folder == entry.folder => {
                if owner != Some(name) {
                    return None;
                }
                changes.push(Change::HostRemoved {
                    host: host.to_string(),
                    was: name.to_owned(),
                });
                steps.push(HostStep::Remove {
                    project: entry.project,
                    host,
                });
            }
            // Gone, and it declared nothing (another spelling serves).
            (false, _) => {}
        }
    }
    Some((steps, changes))
}

impl Live {
    /// Reloads after the watcher saw `changes`: only the host folders they
    /// name when that is all they name (see the module documentation),
    /// else everything.
    pub async fn reload_watched(&self, changes: Changes) -> Arc<ReloadReport> {
        const TRIGGER: &str = "file change";
        let mut running = self.lock_running().await;
        let config = self.applied_config.load_full();
        // While something is refused (a broken project.toml, a bad
        // certificate) every reload reads everything: the report then
        // says what is still refused, and the fix is seen whatever it is.
        let refused = !self.last_reload().errors.is_empty();
        let entries = match (&config, changes.lost || refused) {
            (Some(_), false) => host_entries(&running.projects, &changes.paths),
            _ => None,
        };
        // Which projects' folders the events are in, when every event is
        // in one: a full reload then lists only those projects' hosts.
        let changed = match changes.lost || refused {
            false => changed_projects(&running.projects, &changes.paths),
            true => None,
        };
        let (Some(config), Some(entries)) = (config, entries) else {
            return self.reload_changed(running, TRIGGER, changed).await;
        };
        let started = Instant::now();
        let seen = look(&running.projects, entries);
        let table = self.table.load_full();
        // Every project a step touches must be serving (a project whose
        // name cannot be a header has no route).
        let planned = plan_hosts(&running, &config, &seen).filter(|(steps, _)| {
            steps.iter().all(|step| match step {
                HostStep::Add { project, .. } | HostStep::Refresh { project, .. } => {
                    let name = &running.projects[*project].declared.config.name;
                    table.projects.iter().any(|r| &r.name == name)
                }
                _ => true,
            })
        });
        let Some((steps, changes)) = planned else {
            return self.reload_changed(running, TRIGGER, changed).await;
        };
        let mut report = ReloadReport::new(TRIGGER);
        report.changes = changes;
        if !steps.is_empty() {
            self.apply_hosts(&mut running, steps, &mut report).await;
        }
        drop(running);
        self.rewatch(LookAgain::Folders);
        report.took = started.elapsed();
        report.at = SystemTime::now();
        self.finish_report(report)
    }

    /// Carries out `steps`: the running state, then the next table from
    /// the current one, swapped in with one store.
    async fn apply_hosts(
        &self,
        running: &mut Running<Arc<HandlerHandle>>,
        steps: Vec<HostStep>,
        report: &mut ReloadReport,
    ) {
        let old = self.table.load_full();
        let mut table = (*old).clone();
        let mut cert_sources: Vec<CertSource> = Vec::new();
        let mut cert_removed: Vec<CertOwner> = Vec::new();
        // Host folders looked at: their `tls/` and `public/` watches and
        // static roots are replaced by what exists now.
        let mut touched: Vec<PathBuf> = Vec::new();
        let mut publics: Vec<PathBuf> = Vec::new();
        let mut owners = OwnerChanges::default();
        for step in steps {
            let is_refresh = matches!(step, HostStep::Refresh { .. });
            match step {
                HostStep::Add {
                    project,
                    host,
                    folder,
                }
                | HostStep::Refresh {
                    project,
                    host,
                    folder,
                } => {
                    let applied = &mut running.projects[project];
                    let name = applied.declared.config.name.clone();
                    let host_dir = applied.declared.config.path.join(HOSTS_DIR).join(&folder);
                    let declared = DeclaredName::of(&host).name.to_owned();
                    // The name's text, shared by the scan, the owners and
                    // the route table (its key and label).
                    let key = host.key().clone();
                    if applied.declared.scan.folder(&host).is_none() {
                        applied.declared.scan.insert(host.clone(), folder);
                        running
                            .owners
                            .insert_exact_shared(key.clone(), Arc::from(name.as_str()));
                        owners.set.push((declared.clone(), name.clone()));
                    }
                    let Some(route) = old.projects.iter().find(|r| r.name == name) else {
                        continue;
                    };
                    let public = host_dir.join(PUBLIC_DIR);
                    let has_public = public.is_dir();
                    if is_refresh && unchanged_plain_host(&old, &host, &host_dir, has_public) {
                        // Still touched: a watch of a `tls/` or `public/`
                        // that came and went since is dropped below.
                        touched.push(host_dir);
                        continue;
                    }
                    let site = has_public.then(|| self.static_files.site(&public));
                    if site.is_some() {
                        publics.push(public);
                    }
                    let label = key.clone();
                    table.hosts.insert_exact_shared(
                        key,
                        HostRoute {
                            project: route.clone(),
                            site,
                            label,
                        },
                    );
                    cert_sources.push(CertSource::host(host, &host_dir));
                    touched.push(host_dir);
                }
                HostStep::Remove { project, host } => {
                    let applied = &mut running.projects[project];
                    if let Some(folder) = applied.declared.scan.folder(&host) {
                        touched.push(applied.declared.config.path.join(HOSTS_DIR).join(folder));
                    }
                    applied.declared.scan.remove(&host);
                    let declared = DeclaredName::of(&host).name;
                    running.owners.remove_exact(declared);
                    table.hosts.remove_exact(declared);
                    owners.released.push(declared.to_owned());
                    cert_removed.push(CertOwner::Host(host));
                }
                HostStep::Skipped {
                    project,
                    folder,
                    present,
                } => {
                    let applied = &mut running.projects[project];
                    let scan = &mut applied.declared.scan;
                    scan.skipped.retain(|s| s.name != folder.name);
                    if present {
                        scan.skipped.push(folder.clone());
                        scan.skipped.sort_by(|a, b| a.name.cmp(&b.name));
                        report.warnings.push(Warning::SkippedHostFolder {
                            project_dir: applied.declared.config.path.clone(),
                            folder,
                        });
                    }
                }
            }
        }
        let mut tls_dirs = Vec::new();
        if self.running.tls_listen.is_some()
            && !(cert_sources.is_empty() && cert_removed.is_empty())
        {
            let mut rebuilt =
                old.certs
                    .rebuild_some(&cert_sources, &cert_removed, SystemTime::now());
            tls_dirs = std::mem::take(&mut rebuilt.tls_dirs);
            table.certs = Arc::new(rebuilt.store);
            report
                .changes
                .extend(rebuilt.changes.into_iter().map(Change::Certificate));
            report
                .errors
                .extend(rebuilt.errors.into_iter().map(ReloadError::Certificate));
            report
                .warnings
                .extend(rebuilt.warnings.into_iter().map(Warning::Certificate));
        }

        // Swap.
        self.table.store(Arc::new(table));
        self.swaps.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        report.swapped = true;
        if let Some(records) = &self.owner_records {
            // After any write still running in the background.
            let _turn = self.owner_writes.lock().await;
            crate::owners::record(records, owners).await;
        }

        // What to watch: the touched hosts' `tls/` and `public/` as they
        // are now; every other target as it was.
        let stale: HashSet<PathBuf> = touched
            .iter()
            .flat_map(|dir| [dir.join(TLS_DIR), dir.join(PUBLIC_DIR)])
            .collect();
        let mut targets: Vec<Target> = self
            .watch_targets
            .load()
            .iter()
            .filter(|target| !stale.contains(&target.dir))
            .cloned()
            .collect();
        targets.extend(watch::cert_targets(&tls_dirs, &[]));
        targets.extend(watch::public_targets(&publics));
        self.watch_targets.store(Arc::new(targets));
        let mut roots: Vec<PathBuf> = self
            .static_roots
            .load()
            .iter()
            .filter(|root| !stale.contains(*root))
            .cloned()
            .collect();
        roots.extend(publics);
        self.static_roots.store(Arc::new(roots));
    }
}

/// Whether a host folder named again by an event (or by the sweep, which
/// names every folder made or changed since its previous pass: all of
/// them after a bulk copy) had neither `public/` nor `tls/` and still has
/// neither: then its route, certificate and watches stay as they are and
/// the step is skipped. Without this, a sweep naming thousands of plain
/// folders rebuilt their routes one by one (each copying its table shard)
/// and held up the reload of a new host behind it.
fn unchanged_plain_host(
    old: &elsinore_routes::RouteTable,
    host: &HostPattern,
    host_dir: &std::path::Path,
    has_public: bool,
) -> bool {
    let had_site = old
        .hosts
        .get_pattern(host)
        .is_some_and(|route| route.site.is_some());
    let had_cert = old.certs.slot(&CertOwner::Host(host.clone())).is_some();
    !has_public && !had_site && !had_cert && !host_dir.join(TLS_DIR).is_dir()
}

/// The folders of the projects `paths` are in, when each path is inside
/// one of them (else `None`: config.json's folder, a certificate elsewhere,
/// anything outside every project needs everything read again).
fn changed_projects<H>(
    projects: &[Applied<H>],
    paths: &std::collections::BTreeSet<PathBuf>,
) -> Option<Vec<PathBuf>> {
    let mut changed: Vec<PathBuf> = Vec::new();
    for path in paths {
        let project = projects
            .iter()
            .map(|p| &p.declared.config.path)
            .find(|folder| path.starts_with(folder))?;
        if !changed.contains(project) {
            changed.push(project.clone());
        }
    }
    Some(changed)
}
