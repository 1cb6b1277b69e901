//! Wiring of host keys and the admin API into `serve`: the key store and
//! ring (with its watcher), and the admin API's [`TableRefresh`] hook,
//! which is a live reload.

use std::sync::Arc;

use anyhow::Context as _;
use elsinore_config::Config;
use elsinore_keys::{KeyRing, KeyStore, WATCH_INTERVAL};
use elsinore_proxy::{AdminApi, TableRefresh};

use elsinore_live::Live;

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
        let store = KeyStore::open(&config.startup.database)?;
        let ring = Arc::new(KeyRing::load(&store).context("cannot load host keys")?);
        ring.watch(&config.startup.database, WATCH_INTERVAL)?;
        tracing::info!(keys = ring.len(), "host keys loaded");
        Ok(Self {
            store: Arc::new(store),
            ring,
        })
    }

    /// The admin API over these keys; `refresh` reloads the live state
    /// after the API changed a host folder.
    pub fn into_api(self, config: &Config, refresh: Arc<dyn TableRefresh>) -> AdminApi {
        AdminApi::new(self.store, self.ring, &config.startup.cors_origins).with_refresh(refresh)
    }
}

/// The admin API's rescan hook: a reload of the live state. With a watcher
/// running, the watcher loop does it (so new folders also get watched);
/// without one, the reload runs directly.
#[derive(Debug)]
pub struct LiveRescan {
    live: Arc<Live>,
}

impl LiveRescan {
    pub fn new(live: Arc<Live>) -> Self {
        Self { live }
    }
}

impl TableRefresh for LiveRescan {
    fn request_rescan(&self) {
        match self.live.watcher() {
            Some(watcher) => watcher.poke(),
            None => {
                let live = self.live.clone();
                tokio::spawn(async move { live.reload("admin API").await });
            }
        }
    }
}
