//! `elsinore serve`: wire config, store, supervisor and proxy together, and
//! shut them down in order.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use elsinore_events::EventScheduler;
use elsinore_proxy::{ProjectRoute, Proxy, RouteTable};
use elsinore_store::Store;
use elsinore_supervisor::{Supervisor, SupervisorSettings};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::plan::Plan;

/// How long a handler gets between SIGTERM and SIGKILL.
const HANDLER_STOP_GRACE: Duration = Duration::from_secs(5);

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let plan = Plan::load(config_path)?;
    // Created (and migrated) before any handler starts, so every handler
    // finds the file ready.
    let store = Store::open(&plan.config.database)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(plan, store))
}

async fn serve(plan: Plan, store: Store) -> anyhow::Result<()> {
    let config = &plan.config;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (config.json `listen`)", config.listen))?;
    let local_addr = listener.local_addr().context("listener has no address")?;

    let supervisor = Arc::new(Supervisor::new(SupervisorSettings {
        database: store.path().to_owned(),
        env_remove: config.key_env_names().map(str::to_owned).collect(),
        stop_grace: HANDLER_STOP_GRACE,
    }));
    let table = match build_table(&plan, &supervisor) {
        Ok(table) => table,
        Err(err) => {
            supervisor.shutdown().await;
            return Err(err);
        }
    };
    // Framework events run on their own thread, off the request path.
    let events = match EventScheduler::start(
        store.path(),
        elsinore_events::Settings::new(config.events.clone()),
    ) {
        Ok(events) => events,
        Err(err) => {
            supervisor.shutdown().await;
            return Err(err.into());
        }
    };
    let table = Arc::new(ArcSwap::from_pointee(table));
    let proxy = Arc::new(Proxy::new(table.clone()));

    tracing::info!(
        projects = plan.projects.len(),
        hosts = table.load().hosts.len(),
        database = %store.path().display(),
        "serving"
    );
    // Tests and scripts wait for this exact line.
    tracing::info!("listening on http://{local_addr}");

    elsinore_proxy::serve(
        listener,
        proxy,
        shutdown_signal(supervisor.clone()),
        config.shutdown_grace,
    )
    .await;
    events.shutdown().await;
    tracing::info!("stopping handlers");
    supervisor.shutdown().await;
    tracing::info!("bye");
    Ok(())
}

/// Starts every project's handlers and builds the first table.
fn build_table(plan: &Plan, supervisor: &Supervisor) -> anyhow::Result<RouteTable> {
    // Who owns which host is decided once, by the plan, first come first
    // served; the live table maps each owner to its running project.
    let (owners, conflicts) = plan.host_owners();
    let mut routes = Vec::with_capacity(plan.projects.len());
    for project in &plan.projects {
        let name = &project.config.name;
        let mut handlers = Vec::with_capacity(project.manifest.handlers.len());
        for spec in &project.manifest.handlers {
            let handle = supervisor.start(name, &project.config.path, spec)?;
            handlers.push((handle, spec.routes.clone()));
        }
        let mut route = ProjectRoute::new(
            name,
            project.config.path.clone(),
            project.config.key.as_ref().map(|k| k.expose()),
            handlers,
        )
        .with_context(|| format!("project {name}: name or key is not valid header text"))?;
        route.hosts = project
            .scan
            .hosts
            .iter()
            .filter(|host| {
                !conflicts
                    .iter()
                    .any(|c| &c.refused_for == name && c.host == host.to_string())
            })
            .cloned()
            .collect();
        routes.push(Arc::new(route));
    }
    for warning in plan.warnings(&conflicts) {
        tracing::warn!("{warning}");
    }
    Ok(RouteTable {
        hosts: owners.map(|&index| routes[index].clone()),
        projects: routes,
        conflicts,
    })
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn shutdown_signal(supervisor: Arc<Supervisor>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; Elsinore will only stop when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully (send again to stop at once)"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully (send again to stop at once)"),
    }
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
