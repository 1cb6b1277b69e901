//! Wiring of host keys and the admin API into `serve`: the key store and
//! ring (with its watcher), and a minimal host rescan behind the admin
//! API's [`TableRefresh`] hook.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use elsinore_config::Config;
use elsinore_keys::{KeyRing, KeyStore, WATCH_INTERVAL};
use elsinore_proxy::{AdminApi, RouteTable, TableRefresh};
use elsinore_routes::{scan_hosts, HostTableBuilder};
use tokio::sync::Notify;

/// The key database and the in-memory ring, opened before anything runs.
#[derive(Debug)]
pub struct Keys {
    store: Arc<KeyStore>,
    ring: Arc<KeyRing>,
}

impl Keys {
    /// Opens the shared database's key tables, loads the accepted keys and
    /// starts the watcher that reloads them when another process (the
    /// `elsinore keys` CLI) changes them.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let store = KeyStore::open(&config.database)?;
        let ring = Arc::new(KeyRing::load(&store).context("cannot load host keys")?);
        ring.watch(&config.database, WATCH_INTERVAL)?;
        tracing::info!(keys = ring.len(), "host keys loaded");
        Ok(Self {
            store: Arc::new(store),
            ring,
        })
    }

    /// The admin API over these keys, rescanning `table` after host changes.
    /// Must be called inside the runtime (it spawns the rescan task).
    pub fn into_api(self, config: &Config, table: Arc<ArcSwap<RouteTable>>) -> AdminApi {
        AdminApi::new(self.store, self.ring, &config.cors_origins)
            .with_refresh(Arc::new(HostRescan::spawn(table)))
    }
}

/// Rebuilds the host table from every project's `hosts/` on request.
///
/// Minimal on purpose: the same projects and handlers (`Arc<ProjectRoute>`
/// reused, so `ProjectRoute::hosts` keeps its start-up value), only the
/// host → project map and the conflicts are recomputed. Meant to be
/// replaced by the watcher-driven reload.
#[derive(Debug)]
struct HostRescan {
    wake: Arc<Notify>,
}

impl HostRescan {
    fn spawn(table: Arc<ArcSwap<RouteTable>>) -> Self {
        let wake = Arc::new(Notify::new());
        let notified = wake.clone();
        tokio::spawn(async move {
            loop {
                notified.notified().await;
                let table = table.clone();
                if let Err(err) = tokio::task::spawn_blocking(move || rescan(&table)).await {
                    tracing::error!(%err, "host rescan task failed");
                }
            }
        });
        Self { wake }
    }
}

impl TableRefresh for HostRescan {
    fn request_rescan(&self) {
        // Requests while a rescan runs collapse into one more rescan.
        self.wake.notify_one();
    }
}

/// One rescan: on any unreadable `hosts/` the old table keeps serving.
fn rescan(table: &ArcSwap<RouteTable>) {
    let current = table.load_full();
    let mut builder = HostTableBuilder::new();
    for project in &current.projects {
        let scan = match scan_hosts(&project.path) {
            Ok(scan) => scan,
            Err(err) => {
                tracing::error!(project = %project.name, %err, "host rescan failed; keeping the current table");
                return;
            }
        };
        for host in &scan.hosts {
            builder.insert(&project.name, host, project.clone());
        }
    }
    let (hosts, conflicts) = builder.finish();
    let names = |table: &RouteTable| -> BTreeSet<(String, String)> {
        table
            .hosts
            .entries()
            .into_iter()
            .map(|(host, project)| (host, project.name.clone()))
            .collect()
    };
    let next = RouteTable {
        hosts,
        projects: current.projects.clone(),
        conflicts,
    };
    let (before, after) = (names(&current), names(&next));
    for (host, project) in after.difference(&before) {
        tracing::info!("+host {host} → {project}");
    }
    for (host, project) in before.difference(&after) {
        tracing::info!("-host {host} → {project}");
    }
    for conflict in next
        .conflicts
        .iter()
        .filter(|c| !current.conflicts.contains(c))
    {
        tracing::warn!(
            "host {} is declared by both {} and {}; {} keeps it (first in config.json)",
            conflict.host,
            conflict.kept_by,
            conflict.refused_for,
            conflict.kept_by
        );
    }
    table.store(Arc::new(next));
}
