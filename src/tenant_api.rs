//! Wiring of the tenant admin API (`/admin/api/…` on the public
//! listeners, not the operator listener) into `serve`: the host key store
//! and ring (with its watcher), and the control-plane task that serves the
//! API's rescan requests with a live reload.

use std::sync::Arc;

use anyhow::Context as _;
use elsinore_config::Config;
use elsinore_keys::KeyRing;
use elsinore_store::keys::{watch_fleet, watch_ring, KeyStore, CHECK_INTERVAL, WATCH_INTERVAL};
use elsinore_store::{Databases, OwnerRecords, StateHealth};
use elsinore_tenant_admin::{RescanQueue, RescanRequests, TenantAdminApi};

use elsinore_live::Live;

/// The key database and the in-memory ring, opened before anything runs.
#[derive(Debug)]
pub struct Keys {
    store: Arc<KeyStore>,
    ring: Arc<KeyRing>,
    /// Whether the PostgreSQL state database answers (`None` on SQLite).
    health: Option<Arc<StateHealth>>,
}

impl Keys {
    /// Opens the state database's key tables, loads the accepted keys and
    /// starts the watcher that reloads them when another process (the
    /// `elsinore keys` CLI) changes them.
    ///
    /// With a PostgreSQL `state_database`, the watcher is instead the
    /// fleet's refresh thread (LISTEN/NOTIFY and a periodic check), which
    /// also keeps the reachability `/readyz` reports.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let databases = databases(config);
        let store = KeyStore::open(&databases)?;
        let ring = Arc::new(KeyRing::empty());
        store.refresh(&ring).context("cannot load host keys")?;
        let health = match &databases.state_url {
            Some(url) => {
                let health = Arc::new(StateHealth::new());
                watch_fleet(&ring, url, health.clone(), CHECK_INTERVAL)?;
                Some(health)
            }
            None => {
                elsinore_store::legacy::warn_about_leftovers(&databases.shared, &databases.state);
                watch_ring(&ring, &config.startup.state_database, WATCH_INTERVAL)?;
                None
            }
        };
        tracing::info!(keys = ring.len(), "host keys loaded");
        Ok(Self {
            store: Arc::new(store),
            ring,
            health,
        })
    }

    /// Reachability of a PostgreSQL state database, for `/readyz` and the
    /// status page; `None` with a SQLite one.
    pub fn health(&self) -> Option<Arc<StateHealth>> {
        self.health.clone()
    }

    /// The ring the request path checks host keys against.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.clone()
    }

    /// The admin API over these keys; it asks for rescans through
    /// `rescans` after changing a host folder, and reads when hosts were
    /// first served from `owners`.
    pub fn into_api(
        self,
        config: &Config,
        rescans: RescanRequests,
        owners: Arc<OwnerRecords>,
    ) -> TenantAdminApi {
        TenantAdminApi::new(self.store, self.ring, &config.startup.cors_origins)
            .with_rescans(rescans)
            .with_owner_records(owners)
    }
}

/// The databases of `config`, the state database's URL included.
pub fn databases(config: &Config) -> Databases {
    Databases::new(&config.startup.database, &config.startup.state_database)
        .with_state_url(config.startup.state_database_url.clone())
}

/// Serves the admin API's rescan requests on the main runtime, one reload
/// per batch. With native watches, the event for the folder the API made
/// or removed in `hosts/` brings it in (incrementally: a full look at a
/// million hosts takes seconds); a polling watcher is poked so the change
/// is seen at once; without a watcher, the reload runs here.
pub async fn serve_rescans(mut queue: RescanQueue, live: Arc<Live>) {
    while let Some(batch) = queue.next().await {
        match live.watcher() {
            Some(watcher) if watcher.backend_name() == "native" => {}
            Some(watcher) => watcher.poke(),
            None => {
                live.reload("admin API").await;
            }
        }
        batch.done();
    }
}
