//! `elsinore serve`: wire config, store, supervisor, live table, watcher,
//! proxy and operator listener together, and shut them down in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use elsinore_config::{Config, LogFormat};
use elsinore_events::EventScheduler;
use elsinore_proxy::{AccessLog, Proxy, TlsListener};
use elsinore_store::Store;
use elsinore_supervisor::{HandlerDatabase, Supervisor, SupervisorSettings};
use elsinore_watch::{FolderWatcher, TreeChange, TreeWatcher, WatchMode};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::inherited::Inherited;
use crate::tenant_api::{self, Keys};
use elsinore_live::{Declared, Live};
use elsinore_operator::Operator;

/// How long a handler gets between SIGTERM and SIGKILL.
const HANDLER_STOP_GRACE: Duration = Duration::from_secs(5);

/// Overrides how many request threads serve plain HTTP and HTTPS
/// (default: one per CPU); `0` serves both from the main runtime instead.
const HTTP_THREADS_ENV: &str = "ELSINORE_HTTP_THREADS";

/// Request threads for the plain-HTTP and HTTPS listeners: [`HTTP_THREADS_ENV`], else
/// one per CPU. One single-threaded runtime per thread, like nginx's worker
/// per core, measured 35 % more requests per second than one shared
/// work-stealing runtime on 2 cores (docs/performance.md).
fn http_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    match std::env::var(HTTP_THREADS_ENV) {
        Ok(value) => value.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(
                value,
                default = cpus,
                "{HTTP_THREADS_ENV} is not a number; using the default"
            );
            cpus
        }),
        Err(_) => cpus,
    }
}

pub fn run(config_path: &Path, log_format: LogFormat) -> anyhow::Result<()> {
    // First: the environment holds every key_env value from the start.
    elsinore_supervisor::refuse_inspection()
        .context("cannot mark Elsinore non-dumpable (prctl PR_SET_DUMPABLE)")?;
    let declared = Declared::load(config_path)?;
    // Created before any handler starts, so every handler finds the file
    // ready; Keys::open then creates (or migrates) the state database and,
    // on the first start after an upgrade, moves Elsinore's tables there.
    // Accepted by the config parser for the PostgreSQL work in progress;
    // refused here so that a URL never silently means a SQLite file.
    let shared = open_shared_database(&declared.config)?;
    let keys = Keys::open(&declared.config)?;
    // After Keys::open made the state database: host owners recorded
    // there. Opened here, off the async runtime: on PostgreSQL this
    // connects with the blocking client.
    let owner_records = Arc::new(elsinore_store::OwnerRecords::open(&tenant_api::databases(
        &declared.config,
    ))?);
    // Before any thread starts: this reads and removes variables.
    let inherited = Inherited::from_env(&declared.config)?;
    let own_command = crate::upgrade::own_command().context("cannot find Elsinore's own binary")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(
            declared,
            shared,
            keys,
            owner_records,
            log_format,
            inherited,
            own_command,
        ))
}

async fn serve(
    declared: Declared,
    shared: HandlerDatabase,
    keys: Keys,
    owner_records: Arc<elsinore_store::OwnerRecords>,
    log_format: LogFormat,
    mut inherited: Inherited,
    (binary, args): (std::path::PathBuf, Vec<std::ffi::OsString>),
) -> anyhow::Result<()> {
    let generation = inherited.generation;
    let config = declared.config.clone();
    let http_threads = http_threads();
    // What every listener is served with; its thread count also splits the
    // handler pools, the request metrics and the access log's buffers, one
    // part per request thread.
    let settings =
        elsinore_proxy::ServeSettings::from_config(&config).with_request_threads(http_threads);
    // Before anything starts: a file that cannot be opened stops here.
    let access_log = AccessLog::open(
        &config.startup.access_log,
        log_format,
        settings.threads,
        &config.file,
    )?;
    let listeners = match inherited.listen.take() {
        Some(sockets) => elsinore_proxy::ThreadListeners::from_sockets(sockets),
        None => elsinore_proxy::ThreadListeners::bind(config.startup.listen, http_threads),
    }
    .with_context(|| {
        format!(
            "cannot listen on {} (config.json `listen`)",
            config.startup.listen
        )
    })?;
    let local_addr = listeners.local_addr();
    // The HTTPS listener is served by the same request threads.
    let tls_listener = match (config.startup.tls_listen, inherited.tls_listen.take()) {
        (Some(addr), Some(sockets)) => Some(
            elsinore_proxy::ThreadListeners::from_sockets(sockets)
                .with_context(|| format!("inherited `tls_listen` socket ({addr})"))?,
        ),
        (Some(addr), None) => Some(
            elsinore_proxy::ThreadListeners::bind(addr, http_threads)
                .with_context(|| format!("cannot listen on {addr} (config.json `tls_listen`)"))?,
        ),
        (None, _) => None,
    };
    let tls_addr = tls_listener
        .as_ref()
        .map(elsinore_proxy::ThreadListeners::local_addr);
    let operator_listener =
        match (config.startup.admin_listen, inherited.admin_listen.take()) {
            (Some(addr), Some(socket)) => Some(
                socket
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(socket))
                    .with_context(|| format!("inherited `admin_listen` socket ({addr})"))?,
            ),
            (Some(addr), None) => Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (config.json `admin_listen`)")
            })?),
            (None, _) => None,
        };
    // Copies of every listening socket, for an upgrade to hand over.
    let handover = crate::upgrade::Handover {
        listen: listeners.try_clone_sockets()?,
        tls_listen: match &tls_listener {
            Some(tls) => tls.try_clone_sockets()?,
            None => Vec::new(),
        },
        admin_listen: match &operator_listener {
            Some(listener) => Some(socket2::SockRef::from(listener).try_clone()?.into()),
            None => None,
        },
        generation,
        binary,
        args,
        files: crate::upgrade_files::UpgradeFiles::for_state_database(
            &config.startup.state_database,
        ),
    };

    let database_name = match (&shared, &config.startup.database_url) {
        (HandlerDatabase::File(path), _) => path.display().to_string(),
        (HandlerDatabase::Url(_), url) => url.as_ref().map(|u| u.redacted()).unwrap_or_default(),
    };
    let supervisor = Arc::new(Supervisor::new(SupervisorSettings {
        database: shared,
        env_remove: config.secret_env_names().map(str::to_owned).collect(),
        stop_grace: HANDLER_STOP_GRACE,
        // `socket = true` handlers' folders, in Elsinore's own data area.
        run_dir: config.startup.state_database.with_file_name("run"),
    }));
    // Host conflicts are reported by the first reload's plan.
    let warnings = declared.warnings();
    let live = Live::start_recording(
        declared,
        warnings,
        supervisor.clone(),
        Some(owner_records.clone()),
    )
    .await?;
    // Start-up's garbage back to the system, once the host owners it
    // found are written (in the background when there are many); and
    // after each full reload of a big table.
    live.set_memory_release(crate::memory::release_freed_memory);
    let trimming = live.clone();
    tokio::spawn(async move {
        trimming.flush_owner_records().await;
        let _ = tokio::task::spawn_blocking(crate::memory::release_freed_memory).await;
        // The moment RSS is worth reading (bench/hosts.py waits for it).
        tracing::info!("start-up memory released");
    });
    let watcher = start_watching(&live, &config);
    spawn_sighup_reloads(live.clone());
    let (rescans, rescan_queue) = elsinore_tenant_admin::rescan_channel();
    tokio::spawn(tenant_api::serve_rescans(rescan_queue, live.clone()));
    let key_ring = keys.ring();
    let state_health = keys.health();
    let admin = Arc::new(keys.into_api(&config, rescans, owner_records));
    let metrics = Arc::new(
        elsinore_metrics::Metrics::new(config.startup.metrics.per_host)
            .with_request_threads(settings.threads),
    );
    // Automatic certificates: started before the listeners, so certificates
    // stored by an earlier run serve from the first handshake.
    // With a PostgreSQL state database, ACME's account and certificates
    // live there and the fleet orders each name once (docs/scaling.md).
    let acme = match (&config.startup.acme, config.startup.tls_listen) {
        (Some(acme), Some(_)) => Some(
            elsinore_acme::Acme::start(
                acme.clone(),
                live.table(),
                local_addr,
                config.startup.state_database_url.as_ref(),
            )
            .context("cannot start ACME (config.json `acme`)")?,
        ),
        _ => None,
    };
    let tracer = crate::tracing_setup::tracer(&config.startup.tracing, metrics.clone())?;
    let mut proxy = Proxy::new(live.table());
    if let Some(acme) = &acme {
        proxy = proxy.with_http01(acme.clone());
    }
    let proxy = Arc::new(
        proxy
            .with_request_threads(settings.threads)
            .with_reserved(admin)
            .with_key_ring(key_ring)
            .with_https_port(tls_addr.map(|a| a.port()))
            .with_limits(&config.startup.limits, &config.startup.timeouts)
            .with_metrics(metrics.clone())
            .with_access_log(access_log.clone())
            .with_tracer(tracer.clone()),
    );
    tokio::spawn(access_log.clone().flush_every(elsinore_proxy::FLUSH_EVERY));
    spawn_sigusr1_reopens(access_log.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    // Framework events run on their own thread, off the request path.
    let events = match EventScheduler::start(
        &tenant_api::databases(&config),
        elsinore_events::Settings::new(config.startup.events.clone())
            .with_shared_url(config.startup.database_url.clone()),
    ) {
        Ok(events) => events,
        Err(err) => {
            supervisor.shutdown().await;
            return Err(err.into());
        }
    };
    metrics.register_source(elsinore_operator::LiveSource {
        live: live.clone(),
        events: events.clone(),
        acme: acme.clone(),
    });
    let operator_task = match operator_listener {
        Some(listener) => {
            let operator = Operator {
                live: live.clone(),
                watcher: watcher.clone(),
                events: events.clone(),
                metrics: metrics.clone(),
                rates: Arc::default(),
                generation,
                acme: acme.clone(),
                state: state_health.clone(),
            };
            let has_token = config.operator_access.token.is_some();
            Some(
                elsinore_operator::start(listener, operator, stopping(), settings, has_token)
                    .context("operator listener has no address")?,
            )
        }
        None => None,
    };

    let table = live.table().load_full();
    tracing::info!(
        projects = table.projects.len(),
        hosts = table.hosts.len(),
        database = %database_name,
        watching = watcher.as_ref().map_or("off", |w| w.backend_name()),
        generation,
        pid = std::process::id(),
        "serving"
    );
    drop(table);
    // Caught before anyone is told we listen: a SIGTERM sent right after
    // that line must drain, not kill.
    let signals = ShutdownSignals::install();
    // Started by an upgrade: accept nothing until every handler is ready,
    // the old server serving meanwhile; if they cannot be, leave.
    if let Some(ready_pipe) = inherited.ready.take() {
        if let Err(failed) = crate::readiness::handlers_ready(&live.table()).await {
            let why = failed.join("; ");
            tell_upgrader(ready_pipe, &why);
            events.shutdown().await;
            live.supervisor().shutdown().await;
            anyhow::bail!("upgrade (generation {generation}): handlers not ready: {why}");
        }
        tell_upgrader(ready_pipe, "ready");
        tracing::info!(generation, "upgrade: took over the listening sockets");
    }
    // `elsinore upgrade` finds the serving process here.
    if let Err(err) = handover.files.write_pid() {
        tracing::warn!(
            "cannot write {} (`elsinore upgrade` will not find this server): {err}",
            handover.files.pid_file().display()
        );
    }
    crate::upgrade::spawn_sigusr2_upgrades(handover, stop_tx.clone());
    // Tests and scripts wait for this exact line.
    tracing::info!("listening on http://{local_addr}");
    let tls = match (tls_listener, tls_addr) {
        (Some(listeners), Some(tls_addr)) => {
            let tls = match &acme {
                Some(acme) => TlsListener::with_extra(live.table(), acme.clone())?,
                None => TlsListener::new(live.table())?,
            };
            let certs = live.table().load().certs.len();
            if certs == 0 {
                tracing::warn!("tls_listen is set but no certificate loaded yet: every handshake is refused until one is (see docs/tls.md)");
            }
            live.spawn_expiry_warnings();
            // Tests and scripts wait for this exact line too.
            tracing::info!(certificates = certs, "listening on https://{tls_addr}");
            Some(elsinore_proxy::TlsThreads { listeners, tls })
        }
        _ => None,
    };
    tokio::spawn(announce_ready(live.clone()));

    tokio::spawn(async move {
        shutdown_signal(signals, supervisor).await;
        let _ = stop_tx.send(true);
    });
    if http_threads == 0 {
        let listener = listeners
            .into_listener()
            .context("cannot serve on the main runtime")?;
        let tls_task = match tls {
            Some(elsinore_proxy::TlsThreads { listeners, tls }) => {
                let listener = listeners
                    .into_listener()
                    .context("cannot serve HTTPS on the main runtime")?;
                Some(tokio::spawn(elsinore_proxy::serve_tls(
                    listener,
                    tls,
                    proxy.clone(),
                    stopping(),
                    settings,
                )))
            }
            None => None,
        };
        elsinore_proxy::serve_with(listener, proxy, stopping(), settings).await;
        if let Some(tls_task) = tls_task {
            let _ = tls_task.await;
        }
    } else {
        elsinore_proxy::serve_threads(listeners, tls, proxy, stopping, settings).await;
    }
    // Every request thread is done, its in-flight requests finished or
    // cut at the grace period: all their lines are in the buffers.
    access_log.flush();
    // Drained at the same time as the public listeners, within the same
    // grace period.
    if let Some(operator_task) = operator_task {
        let _ = operator_task.await;
    }
    // Every span is finished too: send what waits for the next export,
    // within tracing.export_timeout.
    tracer.shutdown().await;
    events.shutdown().await;
    live.flush_owner_records().await;
    tracing::info!("stopping handlers");
    live.supervisor().shutdown().await;
    tracing::info!("bye");
    Ok(())
}

/// The shared database, ready before any handler starts. A SQLite file is
/// created (and its mode set) here, so every handler finds it; a
/// PostgreSQL database is the operator's, and nothing local is opened or
/// created for it. Start-up does not wait for PostgreSQL: a front door
/// must serve while the database is away (handlers report their own
/// errors, the events retry every interval), so reachability is only
/// checked, on a thread of its own, and logged.
fn open_shared_database(config: &Config) -> anyhow::Result<HandlerDatabase> {
    if let Some(url) = &config.startup.database_url {
        let handlers_get = HandlerDatabase::Url(url.expose().to_owned());
        let url = url.clone();
        let probe = std::thread::Builder::new()
            .name("elsinore-db-probe".to_owned())
            .spawn(move || match elsinore_postgres::connect(&url, "elsinore probe") {
                Ok(_) => tracing::info!(database = %url, "shared database (PostgreSQL) reachable"),
                // `:#` adds the causes ("Connection refused") to the
                // client's own "error connecting to server".
                Err(err) => tracing::warn!(
                    "shared database unreachable at start: {:#}; serving anyway (handlers get the URL, the events retry at their next run)",
                    anyhow::Error::new(err)
                ),
            });
        if let Err(err) = probe {
            tracing::warn!("cannot check the shared database at start: {err}");
        }
        return Ok(handlers_get);
    }
    let store = Store::open(&config.startup.database)?;
    let database_group = config.startup.database_group.as_ref();
    elsinore_store::restrict_database_files(store.path(), database_group.map(|g| g.gid))?;
    Ok(HandlerDatabase::File(store.path().to_owned()))
}

/// Answers the server that started this one by an upgrade.
fn tell_upgrader(mut pipe: std::io::PipeWriter, what: &str) {
    use std::io::Write as _;
    if let Err(err) = pipe.write_all(what.as_bytes()) {
        tracing::error!(error = %err, "cannot answer the upgrading server");
    }
}

/// Once every handler is ready (or has failed to become so): `READY=1`
/// to systemd. A handler that cannot start does not hold the others'
/// hosts back; it is logged, and `/readyz` lists it.
async fn announce_ready(live: Arc<Live>) {
    if let Err(failed) = crate::readiness::handlers_ready(&live.table()).await {
        tracing::warn!(not_ready = ?failed, "serving, but some handlers are not ready");
    }
    crate::systemd::ready();
}

/// Watches config.json and every project folder; each burst of changes
/// becomes one reload. Without a watcher (not even polling could start),
/// SIGHUP and `POST /reload` still work.
fn start_watching(live: &Arc<Live>, config: &Config) -> Option<Arc<FolderWatcher>> {
    let mode = match config.startup.watch.mode {
        elsinore_config::WatchMode::Auto => WatchMode::Auto,
        elsinore_config::WatchMode::Poll => WatchMode::Poll,
    };
    let watcher = match FolderWatcher::new(mode, config.startup.watch.poll_interval) {
        Ok(watcher) => Arc::new(watcher),
        Err(err) => {
            tracing::error!(error = %err, "changes will not be noticed; use SIGHUP or POST /reload after editing");
            return None;
        }
    };
    live.attach_watcher(watcher.clone());
    // Static files: every change inside a `public/` drops what it touches
    // from the cache at once (no reload).
    let files = live.static_files().clone();
    let invalidate = move |change: TreeChange<'_>| match change {
        TreeChange::Path(path) => files.invalidate(path),
        TreeChange::Lost => files.invalidate_all(),
    };
    match TreeWatcher::new(mode, config.startup.watch.poll_interval, invalidate) {
        Ok(trees) => live.attach_tree_watcher(Arc::new(trees)),
        Err(err) => {
            tracing::error!(error = %err, "changes to static files are only noticed when static_files.recheck_after passes");
        }
    }
    let (live, looping) = (live.clone(), watcher.clone());
    tokio::spawn(async move {
        loop {
            looping.changed().await;
            // Only the host folders named, when that is all that changed.
            live.reload_watched(looping.take_changes()).await;
        }
    });
    Some(watcher)
}

/// `kill -HUP` forces a rescan, for filesystems where no change is seen.
fn spawn_sighup_reloads(live: Arc<Live>) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            crate::systemd::reloading();
            live.reload("SIGHUP").await;
            tokio::spawn(announce_ready(live.clone()));
        }
    });
}

/// `kill -USR1` (logrotate's `postrotate`) reopens the `access_log` file:
/// after a rename, the old file keeps the lines written so far and the
/// new one gets the rest.
fn spawn_sigusr1_reopens(access_log: AccessLog) {
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::error!("cannot install the SIGUSR1 handler; the access log is not reopened");
        return;
    };
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            match access_log.reopen() {
                Ok(Some(path)) => {
                    tracing::info!(access_log = %path.display(), "SIGUSR1: access log reopened");
                }
                Ok(None) => {
                    tracing::info!("SIGUSR1: the access log is not a file; nothing to reopen")
                }
                Err(err) => tracing::error!("SIGUSR1: {err}"),
            }
        }
    });
}

/// SIGTERM and SIGINT, caught from the moment this is made (before that,
/// either would kill the process outright).
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Option<Self> {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(Self { term, int }),
            _ => {
                tracing::error!(
                    "cannot install signal handlers; Elsinore will only stop when killed"
                );
                None
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal(signals: Option<ShutdownSignals>, supervisor: Arc<Supervisor>) {
    let Some(ShutdownSignals { mut term, mut int }) = signals else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully (send again to stop at once)"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully (send again to stop at once)"),
    }
    crate::systemd::stopping();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: killing handlers and exiting now");
        // The parent-death signal only reaches each handler's main process;
        // killing the groups also ends whatever they started.
        supervisor.kill_now();
        std::process::exit(130);
    });
}
