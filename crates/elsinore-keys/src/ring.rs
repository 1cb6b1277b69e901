//! The key ring: every currently accepted host key, in memory, so that the
//! request path resolves `X-Hamlet-Host-Key` without touching SQLite.
//!
//! It is one immutable snapshot behind an `ArcSwap`, replaced whenever keys
//! change: right after a change made through Elsinore ([`KeyRing::reload`]),
//! and by a watcher thread ([`KeyRing::watch`]) that notices changes made by
//! other processes (the `elsinore keys` CLI) through SQLite's
//! `PRAGMA data_version`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rusqlite::Connection;

use crate::secret::KeyHash;
use crate::store::{self, KeyStore, LiveKey};
use crate::{now_ms, Error, Result};

/// How often the watcher asks SQLite whether another process wrote.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Snapshot {
    /// Sorted by id; kept to tell whether a reload changed anything.
    keys: Vec<LiveKey>,
    /// Host → indexes into `keys`.
    by_host: HashMap<Box<str>, Vec<usize>>,
}

impl Snapshot {
    fn new(keys: Vec<LiveKey>) -> Self {
        let mut by_host: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            by_host
                .entry(key.host.as_str().into())
                .or_default()
                .push(index);
        }
        Self { keys, by_host }
    }
}

/// The accepted host keys, shared by the request path and whoever changes
/// keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    snapshot: ArcSwap<Snapshot>,
}

impl KeyRing {
    /// A ring accepting no key.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A ring holding the database's accepted keys.
    pub fn load(store: &KeyStore) -> Result<Self> {
        let ring = Self::empty();
        ring.reload(store)?;
        Ok(ring)
    }

    /// Re-reads the accepted keys; returns whether anything changed.
    pub fn reload(&self, store: &KeyStore) -> Result<bool> {
        Ok(self.replace(store.live_keys(now_ms())?))
    }

    /// Installs `keys` (sorted by id) unless they equal the current set;
    /// returns whether the snapshot changed.
    fn replace(&self, keys: Vec<LiveKey>) -> bool {
        if self.snapshot.load().keys == keys {
            return false;
        }
        self.snapshot.store(Arc::new(Snapshot::new(keys)));
        true
    }

    /// Number of keys held (live and in grace).
    pub fn len(&self) -> usize {
        self.snapshot.load().keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `presented` is a key of exactly `host`, made for `project`
    /// (the host's current owner), and accepted at `now` (epoch ms).
    ///
    /// One SHA-256 of the presented key, then constant-time comparisons
    /// against every key of the host; no lock, no I/O.
    pub fn opens(&self, host: &str, project: &str, presented: &str, now: i64) -> bool {
        let snapshot = self.snapshot.load();
        let Some(indexes) = snapshot.by_host.get(host) else {
            return false;
        };
        let hash = KeyHash::of(presented);
        // Compare against every key of the host (no early exit), so timing
        // does not tell which key matched.
        let mut found = false;
        for key in indexes.iter().filter_map(|&i| snapshot.keys.get(i)) {
            let matches = key.hash.ct_eq(&hash)
                && key.project == project
                && key.valid_until.is_none_or(|until| now < until);
            found |= matches;
        }
        found
    }

    /// Starts a thread that reloads the ring whenever another connection
    /// writes to the database at `path` (checked every `interval`). The
    /// thread ends once the ring is dropped.
    pub fn watch(self: &Arc<Self>, path: &Path, interval: Duration) -> Result<()> {
        let conn = Connection::open(path).map_err(|source| Error::Sqlite {
            context: "cannot open the database for the key watcher",
            source,
        })?;
        conn.busy_timeout(elsinore_store::BUSY_TIMEOUT)
            .map_err(|source| Error::Sqlite {
                context: "cannot set the busy timeout",
                source,
            })?;
        let ring = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("elsinore-key-watch".into())
            .spawn(move || watch_loop(&conn, &ring, interval))
            .map_err(|err| Error::Thread(err.to_string()))?;
        Ok(())
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

fn watch_loop(conn: &Connection, ring: &Weak<KeyRing>, interval: Duration) {
    // Any write by another connection bumps data_version (a handler's
    // writes too); the reload then finds the keys unchanged and keeps the
    // snapshot, which costs one indexed query.
    let mut seen = None;
    loop {
        let Some(ring) = ring.upgrade() else { return };
        match data_version(conn) {
            Ok(version) if seen == Some(version) => {}
            Ok(version) => match store::live_keys(conn, now_ms()) {
                Ok(keys) => {
                    seen = Some(version);
                    let count = keys.len();
                    if ring.replace(keys) {
                        tracing::info!(
                            keys = count,
                            "host keys changed in the database; key ring reloaded"
                        );
                    }
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot reload host keys; keeping the previous ones")
                }
            },
            Err(err) => tracing::warn!(%err, "cannot check the database for key changes"),
        }
        drop(ring);
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actor, Caller, Scope};

    fn api() -> Caller {
        Caller {
            actor: Actor::Project,
            client: "127.0.0.1".into(),
        }
    }

    #[test]
    fn a_key_opens_exactly_its_host_for_its_project() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::open(&dir.path().join("e.db")).expect("open");
        let blog = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let news = store
            .create("news.localhost", "horatio", "", &api())
            .expect("create");
        let ring = KeyRing::load(&store).expect("ring");
        let now = now_ms();
        let key = blog.key.expose();
        assert!(ring.opens("blog.localhost", "horatio", key, now));
        assert!(
            !ring.opens("news.localhost", "horatio", key, now),
            "other host"
        );
        assert!(
            !ring.opens("blog.localhost", "othello", key, now),
            "other owner"
        );
        assert!(!ring.opens("blog.localhost", "horatio", "ehk_guess", now));
        assert!(ring.opens("news.localhost", "horatio", news.key.expose(), now));

        store
            .revoke(Scope::Any, blog.info.id, &api())
            .expect("revoke");
        assert!(
            ring.opens("blog.localhost", "horatio", key, now),
            "until reloaded"
        );
        assert!(ring.reload(&store).expect("reload"));
        assert!(!ring.opens("blog.localhost", "horatio", key, now));
        assert!(!ring.reload(&store).expect("reload"), "nothing changed");
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn grace_ends_on_time_without_a_reload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::open(&dir.path().join("e.db")).expect("open");
        let old = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let rotated = store
            .rotate(Scope::Any, old.info.id, 30, &api())
            .expect("rotate");
        let ring = KeyRing::load(&store).expect("ring");
        let until = rotated.old.grace_until.expect("grace");
        let key = old.key.expose();
        assert!(ring.opens("blog.localhost", "horatio", key, until - 1));
        assert!(!ring.opens("blog.localhost", "horatio", key, until));
        let new = rotated.new.key.expose();
        assert!(ring.opens("blog.localhost", "horatio", new, until + 1));
    }

    #[test]
    fn watcher_sees_changes_by_another_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("e.db");
        let store = KeyStore::open(&path).expect("open");
        let ring = Arc::new(KeyRing::load(&store).expect("ring"));
        ring.watch(&path, Duration::from_millis(10)).expect("watch");

        // Another process, as far as SQLite can tell: its own connection.
        let other = KeyStore::open(&path).expect("open again");
        let created = other
            .create("blog.localhost", "horatio", "", &Caller::operator())
            .expect("create");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ring.opens("blog.localhost", "horatio", created.key.expose(), now_ms()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher did not load the new key"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        other
            .revoke(Scope::Any, created.info.id, &Caller::operator())
            .expect("revoke");
        while ring.opens("blog.localhost", "horatio", created.key.expose(), now_ms()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher did not drop the revoked key"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
