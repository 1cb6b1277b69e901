//! The pure part of a reload: from what runs and what the files declare,
//! decide which handlers are kept, adopted, started or retired, which
//! project switches now and which waits for its replacements, who owns
//! each host, and every change, error and warning, as data.
//!
//! Nothing here spawns, stats, listens or sleeps: handler states come in
//! through [`Handler::status`] and time as `now`, so every decision is
//! unit-tested with fake handlers. The executor ([`crate::Live`]) asks
//! [`to_start`] what to start, starts it, then calls [`plan`] with the
//! results.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use elsinore_config::{Config, HandlerSpec, HostPattern};
use elsinore_routes::{decide_owners, Conflict, DeclaredName, HostScan, HostTable};
use elsinore_supervisor::{HandlerHandle, HandlerState, HandlerStatus, SupervisorError};

use crate::change::{Change, MAX_LISTED_HOSTS};
use crate::declared::{Declared, DeclaredProject};
use crate::error::{NotReady, ReloadError, Warning};
use crate::recorded::RecordedOwners;

/// A running handler as the plan sees it: its state, and its identity.
pub trait Handler: Clone {
    /// Its state now.
    fn status(&self) -> HandlerStatus;
    /// Whether `other` is the very same handler (not an equal spec).
    fn same(&self, other: &Self) -> bool;
}

impl Handler for Arc<HandlerHandle> {
    fn status(&self) -> HandlerStatus {
        HandlerHandle::status(self)
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

/// A project as applied: what was read, and the handlers running for it
/// (`handlers[i]` runs `declared.manifest.handlers[i]`).
#[derive(Debug, Clone)]
pub struct Applied<H> {
    /// What its files said when applied.
    pub declared: DeclaredProject,
    /// Its handlers, in manifest order.
    pub handlers: Vec<H>,
}

/// Replacement handlers started for a project that keeps serving with
/// its previous ones until these are ready.
#[derive(Debug)]
pub struct Pending<H> {
    /// Each with the spec it runs.
    pub handlers: Vec<(HandlerSpec, H)>,
    /// When the first of them was started.
    pub since: Instant,
}

/// What runs: the input of [`plan`], and the state a plan leaves.
#[derive(Debug)]
pub struct Running<H> {
    /// Every project applied, in config.json order.
    pub projects: Vec<Applied<H>>,
    /// By project: replacements still starting.
    pub pending: HashMap<String, Pending<H>>,
    /// Declared host → the project serving it.
    pub owners: HostTable<Arc<str>>,
    /// Names declared by two projects.
    pub conflicts: Vec<Conflict>,
    /// Declared name (`*.suffix` for wildcards) → project, as the state
    /// database recorded them: read at start, consulted by the first plan
    /// only (after it, `owners` is the record).
    pub recorded: RecordedOwners,
}

impl<H> Default for Running<H> {
    fn default() -> Self {
        Self {
            projects: Vec::new(),
            pending: HashMap::new(),
            owners: HostTable::default(),
            conflicts: Vec::new(),
            recorded: RecordedOwners::default(),
        }
    }
}

/// A handler the executor must start before [`plan`] can decide.
#[derive(Debug, Clone, PartialEq)]
pub struct ToStart {
    /// The project.
    pub project: String,
    /// Its folder (the handler's working directory).
    pub project_dir: PathBuf,
    /// What to run.
    pub spec: HandlerSpec,
    /// The handler it replaces sleeps: start it asleep too (a reload does
    /// not wake a handler, it only replaces its spec).
    pub asleep: bool,
}

/// The outcome of one [`ToStart`].
#[derive(Debug)]
pub struct Started<H> {
    /// The project.
    pub project: String,
    /// What was started.
    pub spec: HandlerSpec,
    /// The handler, or why the supervisor refused it.
    pub result: Result<H, SupervisorError>,
}

/// What a reload does, decided; the executor carries it out.
#[derive(Debug)]
pub struct ReloadPlan<H> {
    /// The config.json being applied.
    pub config: Config,
    /// The next applied projects, in config.json order: what the new
    /// table serves.
    pub projects: Vec<Applied<H>>,
    /// By project: replacements that keep starting.
    pub pending: HashMap<String, Pending<H>>,
    /// For each of `projects`, the hosts it keeps (conflicts left out).
    pub kept_hosts: Vec<Vec<HostPattern>>,
    /// Host → index into `projects`.
    pub owners: HostTable<usize>,
    /// Names declared by two projects.
    pub conflicts: Vec<Conflict>,
    /// `default_project`, as an index into `projects`.
    pub default_project: Option<usize>,
    /// Handlers started by this reload for a project that waits: once
    /// they are ready (or failed), reload again.
    pub wake_when_ready: Vec<H>,
    /// Handlers nothing uses any more: drain, then stop.
    pub retire: Vec<H>,
    /// What changed: the table's diff, then replacements starting.
    pub changes: Vec<Change>,
    /// What was refused.
    pub errors: Vec<ReloadError>,
    /// What is worth knowing.
    pub warnings: Vec<Warning>,
}

impl<H: Handler> ReloadPlan<H> {
    /// The state once this plan is carried out; `projects` must be the
    /// plan's (the executor takes them out to build the table).
    pub fn into_running(self) -> Running<H> {
        let names: Vec<Arc<str>> = self
            .projects
            .iter()
            .map(|p| Arc::from(p.declared.config.name.as_str()))
            .collect();
        Running {
            // The plan's table becomes the running one: same names and
            // shards, values swapped (no name hashed again, no garbage
            // table left behind).
            owners: self.owners.into_map(|i| names[i].clone()),
            projects: self.projects,
            pending: self.pending,
            conflicts: self.conflicts,
            recorded: RecordedOwners::default(),
        }
    }
}

/// The handlers `candidate` needs that neither run nor are starting, in
/// manifest order per project.
pub fn to_start<H: Handler>(current: &Running<H>, candidate: &Declared) -> Vec<ToStart> {
    let mut out = Vec::new();
    for project in &candidate.projects {
        let name = &project.config.name;
        let previous = previous_of(current, project);
        let pending = current.pending.get(name);
        for spec in &project.manifest.handlers {
            let runs = previous.is_some_and(|p| p.declared.manifest.handlers.contains(spec));
            let starting = pending.is_some_and(|p| p.handlers.iter().any(|(s, _)| s == spec));
            if !runs && !starting {
                let asleep = previous.is_some_and(|p| {
                    p.declared
                        .manifest
                        .handlers
                        .iter()
                        .zip(&p.handlers)
                        .any(|(old, handle)| {
                            old.name == spec.name && handle.status().state == HandlerState::Sleeping
                        })
                });
                out.push(ToStart {
                    project: name.clone(),
                    project_dir: project.config.path.clone(),
                    spec: spec.clone(),
                    asleep,
                });
            }
        }
    }
    out
}

/// Decides the reload of `current` to `candidate`, given the handlers
/// [`to_start`] asked for (`started`) and the time.
///
/// A handler whose spec is unchanged is kept; a replacement already
/// starting is adopted. A project whose handlers changed switches only
/// once all the new ones are ready; until then it keeps its previous
/// handlers and manifest (the rest of the edit applies at once), and a
/// replacement that crashed or passed its `start_timeout` is given up.
/// A new project serves at once (requests wait for a handler still
/// starting). Hosts keep the project that served them.
pub fn plan<H: Handler>(
    current: &Running<H>,
    candidate: Declared,
    mut started: Vec<Started<H>>,
    now: Instant,
) -> ReloadPlan<H> {
    let Declared {
        config,
        projects: declared,
    } = candidate;
    let started_ok: Vec<H> = started
        .iter()
        .filter_map(|s| s.result.as_ref().ok().cloned())
        .collect();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut starting_changes = Vec::new();
    let mut next: Vec<Applied<H>> = Vec::with_capacity(declared.len());
    let mut pending_next = HashMap::new();
    let mut wake_when_ready = Vec::new();

    for project in declared {
        let name = project.config.name.clone();
        let step = decide_project(current, project, &mut started, now);
        errors.extend(step.error);
        starting_changes.extend(step.starting);
        wake_when_ready.extend(step.wake);
        if let Some(pending) = step.pending {
            pending_next.insert(name, pending);
        }
        next.extend(step.next);
    }

    // Hosts: `host_owners`, then the current (or recorded) owner, so
    // neither a conflict nor a restart moves a tenant.
    let declared_hosts: Vec<(&str, &HostScan)> = next
        .iter()
        .map(|a| (a.declared.config.name.as_str(), &a.declared.scan))
        .collect();
    let (owners, conflicts) = decide_owners(
        &declared_hosts,
        |host| {
            current
                .owners
                .get_pattern(host)
                .map(|name| &**name)
                .or_else(|| current.recorded.get(DeclaredName::of(host)))
        },
        |host| config.host_owners.get(host),
    );
    let kept_hosts = next
        .iter()
        .map(|a| {
            let name = &a.declared.config.name;
            a.declared
                .scan
                .hosts
                .iter()
                .filter(|host| {
                    !conflicts
                        .iter()
                        .any(|c| &c.refused_for == name && c.host == host.to_string())
                })
                .cloned()
                .collect()
        })
        .collect();
    warnings.extend(
        conflicts
            .iter()
            .filter(|c| !current.conflicts.contains(c))
            .cloned()
            .map(Warning::Conflict),
    );
    if let Some(host) = &config.preview_host {
        if let Some(&index) = owners.lookup(host.as_str()) {
            warnings.push(Warning::PreviewShadows {
                host: host.to_string(),
                project: next[index].declared.config.name.clone(),
            });
        }
    }
    let default_project = config.default_project.as_ref().and_then(|name| {
        let found = next.iter().position(|a| &a.declared.config.name == name);
        if found.is_none() {
            warnings.push(Warning::DefaultProjectNotServing {
                project: name.clone(),
            });
        }
        found
    });

    let mut changes = describe_projects(&current.projects, &next);
    changes.extend(describe_hosts(&current.owners, &owners, &next));
    changes.extend(starting_changes);

    let retire = retired(current, &next, &pending_next, &started_ok);

    ReloadPlan {
        config,
        projects: next,
        pending: pending_next,
        kept_hosts,
        owners,
        conflicts,
        default_project,
        wake_when_ready,
        retire,
        changes,
        errors,
        warnings,
    }
}

/// What one project does in a reload.
struct ProjectStep<H> {
    /// What serves it next (`None`: a new project that failed to start).
    next: Option<Applied<H>>,
    /// Its replacements that keep starting.
    pending: Option<Pending<H>>,
    /// Why its new handlers were refused.
    error: Option<ReloadError>,
    /// Its replacements starting, as changes.
    starting: Vec<Change>,
    /// Handlers started for it that it waits for.
    wake: Vec<H>,
}

impl<H> ProjectStep<H> {
    fn serve(applied: Option<Applied<H>>) -> Self {
        Self {
            next: applied,
            pending: None,
            error: None,
            starting: Vec::new(),
            wake: Vec::new(),
        }
    }
}

/// Each handler of `project` kept, adopted or taken from `started`; then
/// whether the project switches now, waits, or keeps its previous ones.
fn decide_project<H: Handler>(
    current: &Running<H>,
    project: DeclaredProject,
    started: &mut Vec<Started<H>>,
    now: Instant,
) -> ProjectStep<H> {
    let name = project.config.name.clone();
    let previous = previous_of(current, &project);
    let pending = current.pending.get(&name);
    let mut handlers = Vec::with_capacity(project.manifest.handlers.len());
    let mut waiting: Vec<(HandlerSpec, H)> = Vec::new();
    let mut fresh = Vec::new();
    let mut failed = None;
    for spec in &project.manifest.handlers {
        let reusable = previous.and_then(|p| {
            let i = p
                .declared
                .manifest
                .handlers
                .iter()
                .position(|s| s == spec)?;
            p.handlers.get(i).cloned()
        });
        if let Some(handle) = reusable {
            handlers.push(handle);
            continue;
        }
        let adopted = pending
            .and_then(|p| p.handlers.iter().find(|(s, _)| s == spec))
            .map(|(_, h)| h.clone());
        let handle = match adopted {
            Some(handle) => handle,
            None => match take_started(started, &name, spec) {
                Some(Ok(handle)) => {
                    fresh.push(handle.clone());
                    handle
                }
                Some(Err(error)) => {
                    failed = Some(ReloadError::Start {
                        project: name.clone(),
                        error,
                    });
                    break;
                }
                // Not started: an earlier handler of the project failed
                // to start, and that error is the one to show.
                None => break,
            },
        };
        waiting.push((spec.clone(), handle.clone()));
        handlers.push(handle);
    }
    if handlers.len() < project.manifest.handlers.len() {
        let mut step = ProjectStep::serve(previous.map(|p| keep_handlers(p, project)));
        step.error = failed;
        return step;
    }
    let Some(previous) = previous.filter(|_| !waiting.is_empty()) else {
        // New project, or nothing to replace: use them at once (requests
        // wait for a handler still starting).
        return ProjectStep::serve(Some(Applied {
            declared: project,
            handlers,
        }));
    };
    // Start timeouts count from the oldest start still waited for; a
    // handler started by this reload restarts the count.
    let since = match pending.map(|p| p.since) {
        Some(since) if fresh.is_empty() => since,
        _ => now,
    };
    match readiness(&waiting, since, now) {
        Readiness::Ready => ProjectStep::serve(Some(Applied {
            declared: project,
            handlers,
        })),
        Readiness::Failed { handler, why } => {
            let mut step = ProjectStep::serve(Some(keep_handlers(previous, project)));
            step.error = Some(ReloadError::NotReady {
                project: name,
                handler,
                why,
            });
            step
        }
        Readiness::Starting => {
            let starting = waiting
                .iter()
                .map(|(spec, _)| Change::HandlerStarting {
                    project: name.clone(),
                    handler: spec.name.clone(),
                    replacing: previous
                        .declared
                        .manifest
                        .handlers
                        .iter()
                        .any(|h| h.name == spec.name),
                })
                .collect();
            ProjectStep {
                next: Some(keep_handlers(previous, project)),
                pending: Some(Pending {
                    handlers: waiting,
                    since,
                }),
                error: None,
                starting,
                wake: fresh,
            }
        }
    }
}

/// Everything running or started, minus what the next state uses, each
/// once.
fn retired<H: Handler>(
    current: &Running<H>,
    next: &[Applied<H>],
    pending_next: &HashMap<String, Pending<H>>,
    started: &[H],
) -> Vec<H> {
    let kept: Vec<&H> = next
        .iter()
        .flat_map(|a| &a.handlers)
        .chain(
            pending_next
                .values()
                .flat_map(|p| p.handlers.iter().map(|(_, h)| h)),
        )
        .collect();
    let everything = current
        .projects
        .iter()
        .flat_map(|a| a.handlers.iter())
        .chain(
            current
                .pending
                .values()
                .flat_map(|p| p.handlers.iter().map(|(_, h)| h)),
        )
        .chain(started);
    let mut retire: Vec<H> = Vec::new();
    for handle in everything {
        let used = kept.iter().any(|k| k.same(handle));
        if !used && !retire.iter().any(|r| r.same(handle)) {
            retire.push(handle.clone());
        }
    }
    retire
}

/// The applied project `project` continues: same name and folder.
fn previous_of<'a, H>(
    current: &'a Running<H>,
    project: &DeclaredProject,
) -> Option<&'a Applied<H>> {
    current.projects.iter().find(|a| {
        a.declared.config.name == project.config.name
            && a.declared.config.path == project.config.path
    })
}

fn take_started<H>(
    started: &mut Vec<Started<H>>,
    project: &str,
    spec: &HandlerSpec,
) -> Option<Result<H, SupervisorError>> {
    let i = started
        .iter()
        .position(|s| s.project == project && &s.spec == spec)?;
    Some(started.swap_remove(i).result)
}

/// `project` with the handlers (and the manifest they run) of `previous`.
fn keep_handlers<H: Clone>(previous: &Applied<H>, mut project: DeclaredProject) -> Applied<H> {
    project.manifest = previous.declared.manifest.clone();
    Applied {
        declared: project,
        handlers: previous.handlers.clone(),
    }
}

/// Where a set of new handlers stands.
enum Readiness {
    Ready,
    Starting,
    Failed { handler: String, why: NotReady },
}

/// Whether new handlers can take over, from their states now: failed if
/// one crashed, or is still not ready after its `start_timeout` counted
/// from `since`.
fn readiness<H: Handler>(waiting: &[(HandlerSpec, H)], since: Instant, now: Instant) -> Readiness {
    let mut starting = false;
    for (spec, handle) in waiting {
        let status = handle.status();
        let failed = |why| Readiness::Failed {
            handler: spec.name.clone(),
            why,
        };
        match status.state {
            // A sleeping replacement (of a sleeping handler, or `start =
            // "on_demand"`) takes over at once: a request wakes it.
            HandlerState::Ready | HandlerState::External | HandlerState::Sleeping => {}
            // Crashed and already starting again (the reload came after its
            // 100 ms backoff): still a failed replacement. Waiting on would
            // leave nobody to trigger the next look, as its waiter is spent.
            HandlerState::Starting if status.restarts > 0 => {
                let why = status.last_error.unwrap_or_else(|| "crashed".to_owned());
                return failed(NotReady::Failed(why));
            }
            HandlerState::Starting if now.saturating_duration_since(since) < spec.start_timeout => {
                starting = true;
            }
            HandlerState::Starting => return failed(NotReady::Timeout(spec.start_timeout)),
            state => {
                let why = status
                    .last_error
                    .unwrap_or_else(|| state.as_str().to_owned());
                return failed(NotReady::Failed(why));
            }
        }
    }
    if starting {
        Readiness::Starting
    } else {
        Readiness::Ready
    }
}

/// Projects and handlers added, removed, moved or replaced.
fn describe_projects<H: Handler>(before: &[Applied<H>], after: &[Applied<H>]) -> Vec<Change> {
    let by_name = |projects: &[Applied<H>]| -> BTreeMap<String, usize> {
        projects
            .iter()
            .enumerate()
            .map(|(i, p)| (p.declared.config.name.clone(), i))
            .collect()
    };
    let (old, new) = (by_name(before), by_name(after));
    let mut changes: Vec<Change> = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .map(|project| Change::ProjectRemoved {
            project: project.clone(),
        })
        .collect();
    for (name, &i) in &new {
        let project = &after[i];
        let specs = &project.declared.manifest.handlers;
        let Some(&j) = old.get(name) else {
            changes.push(Change::ProjectAdded {
                project: name.clone(),
                handlers: specs.iter().map(|h| h.name.clone()).collect(),
            });
            continue;
        };
        let previous = &before[j];
        let old_specs = &previous.declared.manifest.handlers;
        if previous.declared.config.path != project.declared.config.path {
            changes.push(Change::ProjectMoved {
                project: name.clone(),
                path: project.declared.config.path.clone(),
            });
        }
        if previous.declared.config.key != project.declared.config.key {
            changes.push(Change::KeyChanged {
                project: name.clone(),
            });
        }
        let (old_config, new_config) = (&previous.declared.config, &project.declared.config);
        // (`handler_key_env` is part of the handler specs: a change shows
        // as the handlers being replaced.)
        for (setting, from, to) in [
            (
                "admin_api",
                old_config.admin_api.as_str(),
                new_config.admin_api.as_str(),
            ),
            (
                "forward_host",
                old_config.forward_host.as_str(),
                new_config.forward_host.as_str(),
            ),
        ] {
            if from != to {
                changes.push(Change::SettingChanged {
                    project: name.clone(),
                    setting,
                    from,
                    to,
                });
            }
        }
        for (spec, handle) in specs.iter().zip(&project.handlers) {
            let handler = spec.name.clone();
            match old_specs.iter().position(|h| h.name == spec.name) {
                None => changes.push(Change::HandlerAdded {
                    project: name.clone(),
                    handler,
                }),
                Some(k) if !previous.handlers[k].same(handle) => {
                    changes.push(Change::HandlerReplaced {
                        project: name.clone(),
                        handler,
                    });
                }
                Some(_) => {}
            }
        }
        for old in old_specs {
            if !specs.iter().any(|h| h.name == old.name) {
                changes.push(Change::HandlerRemoved {
                    project: name.clone(),
                    handler: old.name.clone(),
                });
            }
        }
    }
    changes
}

/// Hosts removed or moved (by name), then added (by name). By lookup in
/// the other table, not by sorting both (10,000 hosts, nearly always
/// unchanged); only the changes are sorted.
fn describe_hosts<H>(
    old: &HostTable<Arc<str>>,
    new: &HostTable<usize>,
    projects: &[Applied<H>],
) -> Vec<Change> {
    let name = |i: usize| projects[i].declared.config.name.as_str();
    let mut gone: Vec<(String, Change)> = Vec::new();
    for (host, was) in old.iter() {
        match new.get(host) {
            None => gone.push((
                host.to_string(),
                Change::HostRemoved {
                    host: host.to_string(),
                    was: was.to_string(),
                },
            )),
            Some(&now) if name(now) != &**was => gone.push((
                host.to_string(),
                Change::HostMoved {
                    host: host.to_string(),
                    from: was.to_string(),
                    to: name(now).to_owned(),
                },
            )),
            Some(_) => {}
        }
    }
    // Only the names listed become lines: a first start with a million
    // hosts made a million changes (three strings each) and sorted them,
    // to print a thousand. `(!wildcard, name)` sorts as the names print
    // (`*` before any hostname character).
    let mut new_names: Vec<(DeclaredName<'_>, usize)> = new
        .iter()
        .filter(|(host, _)| old.get(*host).is_none())
        .map(|(host, &i)| (host, i))
        .collect();
    let added_count = new_names.len();
    let room = MAX_LISTED_HOSTS.saturating_sub(gone.len()).min(added_count);
    let order = |a: &(DeclaredName<'_>, usize), b: &(DeclaredName<'_>, usize)| {
        (!a.0.wildcard, a.0.name).cmp(&(!b.0.wildcard, b.0.name))
    };
    if room < added_count && room > 0 {
        new_names.select_nth_unstable_by(room - 1, order);
    }
    new_names.truncate(room);
    new_names.sort_unstable_by(order);
    let mut added: Vec<(String, Change)> = new_names
        .into_iter()
        .map(|(host, i)| {
            let change = Change::HostAdded {
                host: host.to_string(),
                project: name(i).to_owned(),
            };
            (host.to_string(), change)
        })
        .collect();
    // As the lines sort: by host, then by the line itself (only for one
    // host twice, never here: a line per comparison was most of a
    // million-host start-up).
    let by_line = |a: &(String, Change), b: &(String, Change)| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.to_string().cmp(&b.1.to_string()))
    };
    gone.sort_by(by_line);
    added.sort_by(by_line);
    let total = gone.len() + added_count;
    let mut changes: Vec<Change> = gone
        .into_iter()
        .chain(added)
        .take(MAX_LISTED_HOSTS)
        .map(|(_, c)| c)
        .collect();
    if total > MAX_LISTED_HOSTS {
        changes.push(Change::MoreHosts {
            count: total - MAX_LISTED_HOSTS,
        });
    }
    changes
}
