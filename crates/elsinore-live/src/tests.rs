//! The reload plan, decided without processes or sockets: fake handlers
//! whose state each test sets, projects read from a temporary folder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elsinore_config::{Config, HostPattern, Manifest};
use elsinore_routes::HostScan;
use elsinore_supervisor::{HandlerState, HandlerStatus, SupervisorError};

use crate::{plan, to_start, Declared, DeclaredProject, Handler, ReloadPlan, Running, Started};

/// A handler whose state the test decides.
#[derive(Debug, Clone)]
struct Fake(Arc<Mutex<(HandlerState, u32)>>);

impl Fake {
    fn new(state: HandlerState) -> Self {
        Self(Arc::new(Mutex::new((state, 0))))
    }

    fn set(&self, state: HandlerState, restarts: u32) {
        *self.0.lock().expect("fake state") = (state, restarts);
    }
}

impl Handler for Fake {
    fn status(&self) -> HandlerStatus {
        let (state, restarts) = *self.0.lock().expect("fake state");
        HandlerStatus {
            state,
            pid: None,
            restarts,
            last_error: (restarts > 0).then(|| "exited with status 1".to_owned()),
            restart_at: None,
            sleeps: 0,
            wakes: 0,
            wake_failure: None,
        }
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Project folders in a temporary directory, and what each declares.
struct Disk {
    dir: tempfile::TempDir,
    /// By project: its handlers' `command` lines (handler name → version).
    handlers: HashMap<&'static str, Vec<(&'static str, &'static str)>>,
    /// By project: its host names.
    hosts: HashMap<&'static str, Vec<&'static str>>,
}

impl Disk {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            handlers: HashMap::new(),
            hosts: HashMap::new(),
        }
    }

    /// `project` with one handler `web` at `version`, and `hosts`.
    fn project(&mut self, name: &'static str, version: &'static str, hosts: &[&'static str]) {
        std::fs::create_dir_all(self.dir.path().join(name)).expect("project dir");
        self.handlers.insert(name, vec![("web", version)]);
        self.hosts.insert(name, hosts.to_vec());
    }

    /// config.json listing `projects` in that order.
    fn declared(&self, projects: &[&str]) -> Declared {
        let json = format!(
            r#"{{"projects": [{}]}}"#,
            projects
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config = Config::parse(&json, &self.dir.path().join("config.json"), |_| None)
            .expect("valid config.json");
        let projects = config
            .projects
            .iter()
            .map(|project| {
                let name = project.name.as_str();
                let toml: String = self.handlers[name]
                    .iter()
                    .map(|(handler, version)| {
                        format!(
                            "[[handler]]\nname = \"{handler}\"\ncommand = [\"serve\", \"{version}\"]\nroutes = [\"/\"]\n"
                        )
                    })
                    .collect();
                let manifest =
                    Manifest::parse(&toml, &project.path.join("project.toml")).expect("manifest");
                DeclaredProject {
                    config: project.clone(),
                    manifest,
                    scan: scan(&self.hosts[name]),
                }
            })
            .collect();
        Declared { config, projects }
    }
}

fn scan(hosts: &[&str]) -> HostScan {
    let hosts: Vec<HostPattern> = hosts
        .iter()
        .map(|h| HostPattern::parse(h).expect("host"))
        .collect();
    HostScan {
        folders: hosts.iter().map(|h| (h.clone(), h.to_string())).collect(),
        hosts,
        skipped: Vec::new(),
        ..HostScan::default()
    }
}

/// Plans `candidate`, starting what it asks for with handlers in `state`.
fn reload(current: &Running<Fake>, candidate: Declared, state: HandlerState) -> ReloadPlan<Fake> {
    let started = to_start(current, &candidate)
        .into_iter()
        .map(|s| Started {
            project: s.project,
            spec: s.spec,
            result: Ok(Fake::new(state)),
        })
        .collect();
    plan(current, candidate, started, Instant::now())
}

fn lines(items: &[impl ToString]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// The first state: `projects` applied, their handlers ready.
fn first(disk: &Disk, projects: &[&str]) -> Running<Fake> {
    let plan = reload(
        &Running::default(),
        disk.declared(projects),
        HandlerState::Ready,
    );
    assert!(plan.errors.is_empty(), "{:?}", lines(&plan.errors));
    plan.into_running()
}

#[test]
fn the_first_plan_adds_every_project_and_host() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let plan = reload(
        &Running::default(),
        disk.declared(&["alpha"]),
        HandlerState::Starting,
    );
    // A new project serves at once: requests wait for its handler.
    assert_eq!(
        lines(&plan.changes),
        ["+ project alpha (handlers: web)", "+ host a.test → alpha"]
    );
    assert_eq!(plan.projects.len(), 1);
    assert!(plan.pending.is_empty() && plan.retire.is_empty());
}

#[test]
fn an_added_host_is_one_change_and_nothing_restarts() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    disk.project("alpha", "1", &["a.test", "b.test", "*.c.test"]);
    let candidate = disk.declared(&["alpha"]);
    assert!(
        to_start(&running, &candidate).is_empty(),
        "same handler spec"
    );
    let plan = reload(&running, candidate, HandlerState::Starting);
    assert_eq!(
        lines(&plan.changes),
        ["+ host *.c.test → alpha", "+ host b.test → alpha"]
    );
    assert!(plan.projects[0].handlers[0].same(&running.projects[0].handlers[0]));
    assert!(plan.retire.is_empty());
    assert_eq!(plan.owners.lookup("x.c.test"), Some(&0));
}

#[test]
fn a_removed_project_loses_its_hosts_and_retires_its_handlers() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    disk.project("beta", "1", &["b.test"]);
    let running = first(&disk, &["alpha", "beta"]);
    let plan = reload(&running, disk.declared(&["alpha"]), HandlerState::Ready);
    assert_eq!(
        lines(&plan.changes),
        ["- project beta", "- host b.test (was beta)"]
    );
    assert_eq!(plan.retire.len(), 1);
    assert!(plan.retire[0].same(&running.projects[1].handlers[0]));
    assert!(plan.owners.lookup("b.test").is_none());
}

#[test]
fn a_replaced_handler_switches_only_once_ready() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    let old = running.projects[0].handlers[0].clone();
    disk.project("alpha", "2", &["a.test"]);

    // Still starting: the old one keeps serving, the new one is pending.
    let waiting = reload(&running, disk.declared(&["alpha"]), HandlerState::Starting);
    assert_eq!(
        lines(&waiting.changes),
        ["~ project alpha: handler web starting; the previous one serves until it is ready"]
    );
    assert!(waiting.projects[0].handlers[0].same(&old));
    assert_eq!(waiting.wake_when_ready.len(), 1);
    assert!(waiting.retire.is_empty(), "nothing retired while waiting");
    let new = waiting.pending["alpha"].handlers[0].1.clone();
    let running = waiting.into_running();

    // Ready: the next plan adopts it (nothing started again) and retires
    // the old one.
    new.set(HandlerState::Ready, 0);
    let candidate = disk.declared(&["alpha"]);
    assert!(to_start(&running, &candidate).is_empty());
    let switched = plan(&running, candidate, Vec::new(), Instant::now());
    assert_eq!(
        lines(&switched.changes),
        ["~ project alpha: handler web replaced"]
    );
    assert!(switched.projects[0].handlers[0].same(&new));
    assert!(switched.pending.is_empty());
    assert_eq!(switched.retire.len(), 1);
    assert!(switched.retire[0].same(&old));
}

#[test]
fn a_sleeping_handler_is_replaced_by_one_that_begins_asleep_and_takes_over_at_once() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    let old = running.projects[0].handlers[0].clone();
    old.set(HandlerState::Sleeping, 0);
    disk.project("alpha", "2", &["a.test"]);
    let candidate = disk.declared(&["alpha"]);

    // The executor is told to start the replacement asleep...
    let wanted = to_start(&running, &candidate);
    assert_eq!(wanted.len(), 1);
    assert!(
        wanted[0].asleep,
        "a sleeping handler's replacement must not be woken"
    );
    // ... and, asleep, it takes over at once: a request wakes it.
    let switched = reload(&running, candidate, HandlerState::Sleeping);
    assert_eq!(
        lines(&switched.changes),
        ["~ project alpha: handler web replaced"]
    );
    assert!(switched.pending.is_empty());
    assert_eq!(switched.retire.len(), 1);
    assert!(switched.retire[0].same(&old));

    // An awake handler's replacement starts awake.
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    disk.project("alpha", "2", &["a.test"]);
    assert!(!to_start(&running, &disk.declared(&["alpha"]))[0].asleep);
}

#[test]
fn a_replacement_that_crashes_is_given_up_and_the_old_one_serves() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    let old = running.projects[0].handlers[0].clone();
    disk.project("alpha", "2", &["a.test"]);
    let waiting = reload(&running, disk.declared(&["alpha"]), HandlerState::Starting);
    let new = waiting.pending["alpha"].handlers[0].1.clone();
    let running = waiting.into_running();

    new.set(HandlerState::Starting, 1);
    let plan = plan(
        &running,
        disk.declared(&["alpha"]),
        Vec::new(),
        Instant::now(),
    );
    assert_eq!(
        lines(&plan.errors),
        ["project alpha: new handler web did not start: exited with status 1; keeping its previous handlers"]
    );
    assert!(plan.projects[0].handlers[0].same(&old));
    assert_eq!(plan.retire.len(), 1);
    assert!(plan.retire[0].same(&new));
}

#[test]
fn a_replacement_past_its_start_timeout_is_given_up() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    disk.project("alpha", "2", &["a.test"]);
    let waiting = reload(&running, disk.declared(&["alpha"]), HandlerState::Starting);
    let running = waiting.into_running();
    let later = Instant::now() + Duration::from_secs(3600);
    let plan = plan(&running, disk.declared(&["alpha"]), Vec::new(), later);
    let errors = lines(&plan.errors);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("project alpha: new handler web did not start: not ready within"),
        "{errors:?}"
    );
}

#[test]
fn a_handler_the_supervisor_refuses_keeps_the_previous_ones() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let running = first(&disk, &["alpha"]);
    disk.project("alpha", "2", &["a.test", "b.test"]);
    let candidate = disk.declared(&["alpha"]);
    let started = to_start(&running, &candidate)
        .into_iter()
        .map(|s| Started {
            project: s.project,
            spec: s.spec,
            result: Err(SupervisorError::NoPort {
                handler: "alpha/web".to_owned(),
                source: std::io::Error::other("no free port"),
            }),
        })
        .collect();
    let plan = plan(&running, candidate, started, Instant::now());
    assert_eq!(lines(&plan.errors).len(), 1);
    assert!(lines(&plan.errors)[0].starts_with("project alpha: "));
    // The rest of the edit applies: the new host is served by the old
    // handler.
    assert_eq!(lines(&plan.changes), ["+ host b.test → alpha"]);
    assert!(plan.projects[0].handlers[0].same(&running.projects[0].handlers[0]));
    assert!(plan.retire.is_empty());
}

#[test]
fn conflicting_hosts_stay_with_the_project_that_serves_them() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    disk.project("beta", "1", &["shared.test"]);
    let running = first(&disk, &["alpha", "beta"]);
    // alpha, listed first, now declares beta's host too.
    disk.project("alpha", "1", &["a.test", "shared.test"]);
    let plan = reload(
        &running,
        disk.declared(&["alpha", "beta"]),
        HandlerState::Ready,
    );
    assert!(plan.changes.is_empty(), "{:?}", lines(&plan.changes));
    assert_eq!(
        lines(&plan.warnings),
        ["host shared.test is declared by both beta and alpha; beta keeps it"]
    );
    assert_eq!(plan.owners.lookup("shared.test"), Some(&1));
    assert_eq!(lines(&plan.kept_hosts[0]), ["a.test"]);
    // The same conflict is not warned about again.
    let running = plan.into_running();
    let again = reload(
        &running,
        disk.declared(&["alpha", "beta"]),
        HandlerState::Ready,
    );
    assert!(again.warnings.is_empty());
    // When beta lets go, alpha gets the name.
    disk.project("beta", "1", &[]);
    let moved = reload(
        &running,
        disk.declared(&["alpha", "beta"]),
        HandlerState::Ready,
    );
    assert_eq!(lines(&moved.changes), ["~ host shared.test: beta → alpha"]);
}

#[test]
fn at_start_the_recorded_owner_keeps_a_name_two_projects_declare() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["shared.test", "shop.wild.test"]);
    disk.project("beta", "1", &["shared.test", "*.wild.test"]);
    // A restart: nothing runs yet; the state database says beta served
    // shared.test and its wildcard before alpha made its folders.
    let running = Running {
        recorded: crate::RecordedOwners::from_rows(vec![
            ("shared.test".to_owned(), "beta".to_owned()),
            ("*.wild.test".to_owned(), "beta".to_owned()),
        ]),
        ..Running::default()
    };
    let plan = reload(
        &running,
        disk.declared(&["alpha", "beta"]),
        HandlerState::Ready,
    );
    assert_eq!(plan.owners.lookup("shared.test"), Some(&1));
    assert_eq!(plan.owners.lookup("shop.wild.test"), Some(&1));
    assert_eq!(lines(&plan.kept_hosts[0]), Vec::<String>::new());
    // Without the record, config.json order decides: alpha, listed first.
    let plan = reload(
        &Running::default(),
        disk.declared(&["alpha", "beta"]),
        HandlerState::Ready,
    );
    assert_eq!(plan.owners.lookup("shared.test"), Some(&0));
    assert_eq!(plan.owners.lookup("shop.wild.test"), Some(&0));
}

#[test]
fn a_default_project_that_is_not_serving_is_a_warning() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &["a.test"]);
    let mut candidate = disk.declared(&["alpha"]);
    candidate.config.default_project = Some("ghost".to_owned());
    let plan = reload(&Running::default(), candidate, HandlerState::Ready);
    assert_eq!(
        lines(&plan.warnings),
        ["default_project ghost is not serving (see the errors above): unknown hosts get 404"]
    );
    assert_eq!(plan.default_project, None);
}

/// Not a plan input: the files under the project are only read by
/// `Declared::reread`.
#[test]
fn a_broken_manifest_keeps_the_previous_one() {
    let mut disk = Disk::new();
    disk.project("alpha", "1", &[]);
    let running = first(&disk, &["alpha"]);
    let dir = disk.dir.path();
    std::fs::write(dir.join("config.json"), r#"{"projects": ["alpha"]}"#).expect("config");
    std::fs::write(dir.join("alpha/project.toml"), "[[handler]]\nname = 1\n").expect("toml");
    let reread = Declared::reread(&dir.join("config.json"), &running.projects);
    let errors = lines(&reread.errors);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].ends_with("\n(project alpha: keeping its previous handlers)"),
        "{errors:?}"
    );
    let declared = reread.declared.expect("config.json is fine");
    assert_eq!(
        declared.projects[0].manifest.handlers,
        running.projects[0].declared.manifest.handlers
    );
}

/// The incremental path: what one host folder's event does, alone.
mod incremental {
    use super::*;
    use crate::incremental::{plan_hosts, HostStep, Seen};

    fn seen(project: usize, folder: &str, is_dir: bool) -> Seen {
        Seen {
            project,
            folder: folder.to_owned(),
            is_dir,
        }
    }

    #[test]
    fn an_event_for_one_host_changes_that_host_only() {
        let mut disk = Disk::new();
        disk.project("alpha", "1", &["a.test", "b.test", "c.test"]);
        disk.project("beta", "1", &["d.test"]);
        let declared = disk.declared(&["alpha", "beta"]);
        let running = first(&disk, &["alpha", "beta"]);

        let (steps, changes) = plan_hosts(&running, &declared.config, &[seen(0, "new.test", true)])
            .expect("an unclaimed name is added alone");
        assert_eq!(
            steps,
            [HostStep::Add {
                project: 0,
                host: HostPattern::parse("new.test").expect("host"),
                folder: "new.test".into(),
            }]
        );
        assert_eq!(lines(&changes), ["+ host new.test → alpha"]);

        let (steps, changes) = plan_hosts(&running, &declared.config, &[seen(0, "b.test", false)])
            .expect("a removed host is removed alone");
        assert_eq!(lines(&changes), ["- host b.test (was alpha)"]);
        assert_eq!(steps.len(), 1);

        // Its folder changed inside (tls/, public/): re-read, no change
        // line of its own.
        let (steps, changes) = plan_hosts(&running, &declared.config, &[seen(0, "c.test", true)])
            .expect("a refreshed host");
        assert!(changes.is_empty());
        assert!(matches!(steps[..], [HostStep::Refresh { project: 0, .. }]));
    }

    #[test]
    fn what_depends_on_other_hosts_reads_everything_again() {
        let mut disk = Disk::new();
        disk.project("alpha", "1", &["a.test"]);
        disk.project("beta", "1", &["d.test", "*.wild.test"]);
        let declared = disk.declared(&["alpha", "beta"]);
        let running = first(&disk, &["alpha", "beta"]);
        let config = &declared.config;
        // Another project's name, a wildcard, a name under another
        // project's wildcard.
        assert!(plan_hosts(&running, config, &[seen(0, "d.test", true)]).is_none());
        assert!(plan_hosts(&running, config, &[seen(0, "*.x.test", true)]).is_none());
        assert!(plan_hosts(&running, config, &[seen(0, "shop.wild.test", true)]).is_none());
        // Its own wildcard does not stand in the way.
        assert!(plan_hosts(&running, config, &[seen(1, "shop.wild.test", true)]).is_some());
    }
}

/// The executor with `url` handlers only: nothing is spawned, nothing
/// listens.
mod executor {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use elsinore_supervisor::{Supervisor, SupervisorSettings};

    use crate::{Declared, Live};

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
        std::fs::write(path, text).expect("write");
    }

    /// Project `alpha` (one `url` handler) with host `a.test`, whose
    /// `tls/` holds files that are no certificate; HTTPS configured.
    fn setup(dir: &Path) -> PathBuf {
        let config = dir.join("config.json");
        write(
            &config,
            r#"{"projects": ["alpha"], "tls_listen": "127.0.0.1:8443"}"#,
        );
        write(
            &dir.join("alpha/project.toml"),
            "[[handler]]\nname = \"web\"\nurl = \"http://127.0.0.1:9\"\nroutes = [\"/\"]\n",
        );
        write(
            &dir.join("alpha/hosts/a.test/tls/cert.pem"),
            "not a certificate",
        );
        write(&dir.join("alpha/hosts/a.test/tls/key.pem"), "not a key");
        config
    }

    async fn start(config: &Path) -> Arc<Live> {
        let declared = Declared::reread(config, &[] as &[crate::Applied<()>])
            .declared
            .expect("valid config.json");
        let supervisor = Arc::new(Supervisor::new(SupervisorSettings {
            database: elsinore_supervisor::HandlerDatabase::File(config.with_file_name("db")),
            env_remove: Vec::new(),
            stop_grace: Duration::from_secs(1),
            run_dir: config.with_file_name("run"),
        }));
        Live::start(declared, Vec::new(), supervisor)
            .await
            .expect("a refused certificate does not stop startup")
    }

    #[tokio::test]
    async fn a_refused_certificate_keeps_the_rest_of_the_reload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = setup(dir.path());
        let live = start(&config).await;
        let first = live.last_reload();
        assert!(first.errors.iter().all(|e| e.is_certificate()));
        assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
        assert!(live.table().load().hosts.lookup("a.test").is_some());

        std::fs::create_dir_all(dir.path().join("alpha/hosts/b.test")).expect("host");
        let report = live.reload("test").await;
        assert!(report.swapped);
        let changes: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
        assert_eq!(changes, ["+ host b.test → alpha"]);
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].is_certificate());
        let table = live.table().load_full();
        assert!(table.hosts.lookup("a.test").is_some());
        assert!(table.hosts.lookup("b.test").is_some());
    }

    #[tokio::test]
    async fn a_restart_only_edit_waits_and_the_rest_applies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = setup(dir.path());
        let live = start(&config).await;
        write(
            &config,
            r#"{"projects": ["alpha"], "tls_listen": "127.0.0.1:8443", "listen": "127.0.0.1:1", "redirect_http": true}"#,
        );
        let report = live.reload("test").await;
        let warning = "config.json `listen` changed to 127.0.0.1:1; it takes effect after a restart (still using 127.0.0.1:8080)";
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert!(warnings.contains(&warning.to_owned()), "{warnings:?}");
        assert_eq!(live.pending_restart().as_slice(), [warning]);
        // redirect_http is reloadable: applied by the same reload.
        assert!(live.table().load().redirect_http);
    }

    #[tokio::test]
    async fn a_hosts_name_is_one_copy_shared_by_the_scan_and_the_route_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = setup(dir.path());
        for host in ["b.test", "c.test", "D.Test"] {
            std::fs::create_dir_all(dir.path().join("alpha/hosts").join(host)).expect("host");
        }
        let live = start(&config).await;
        let table = live.table().load_full();
        let running = live.lock_running().await;
        let scan = &running.projects[0].declared.scan;
        assert_eq!(scan.hosts.len(), 4);
        for host in &scan.hosts {
            let route = table.hosts.lookup(host.key()).expect("served");
            // The route's label (and key) is the scan's text, not a copy:
            // at a million hosts each copy was tens of megabytes.
            assert!(
                Arc::ptr_eq(&route.label, host.key()),
                "{host} has a copy of its name"
            );
        }
    }

    static RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_full_reload_of_a_big_table_gives_memory_back_and_a_small_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = setup(dir.path());
        let live = start(&config).await;
        live.set_memory_release(count_release);
        // Small: nothing to give back (checked at the end: a release it
        // started would have run before the big reload's).
        live.reload("test").await;

        for i in 0..=crate::live::RELEASE_AFTER_RELOAD_OF {
            std::fs::create_dir(dir.path().join(format!("alpha/hosts/h{i}.test"))).expect("host");
        }
        live.reload("test").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while RELEASES.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no memory release within 10 s of a full reload of 10,002 hosts"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Room for a stray second one to show.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            RELEASES.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the reload of 2 hosts gave memory back too"
        );
    }
}
