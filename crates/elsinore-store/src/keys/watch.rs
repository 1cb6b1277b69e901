//! The thread that refills a [`KeyRing`] when another process (the
//! `elsinore keys` CLI) changed keys in the state database, noticed
//! through SQLite's `PRAGMA data_version`.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use elsinore_keys::{now_ms, KeyRing};
use rusqlite::Connection;

use super::tables::SqliteTables;
use super::{live_keys, KeyError, Result};

/// How often the watcher asks SQLite whether another process wrote.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Starts a thread that reloads `ring` whenever another connection writes
/// to the state database at `path` (checked every `interval`). The thread ends
/// once the ring is dropped.
pub fn watch_ring(ring: &Arc<KeyRing>, path: &Path, interval: Duration) -> Result<()> {
    let conn = Connection::open(path).map_err(|source| KeyError::Sqlite {
        context: "cannot open the database for the key watcher",
        source,
    })?;
    conn.busy_timeout(crate::BUSY_TIMEOUT)
        .map_err(|source| KeyError::Sqlite {
            context: "cannot set the busy timeout",
            source,
        })?;
    let ring = Arc::downgrade(ring);
    std::thread::Builder::new()
        .name("elsinore-key-watch".into())
        .spawn(move || watch_loop(&conn, &ring, interval))
        .map_err(|err| KeyError::Thread(err.to_string()))?;
    Ok(())
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |row| row.get(0))
}

fn watch_loop(conn: &Connection, ring: &Weak<KeyRing>, interval: Duration) {
    // Any write by another connection bumps data_version (an events run's
    // log too); the reload then finds the keys unchanged and keeps the
    // snapshot, which costs one indexed query.
    let mut seen = None;
    loop {
        let Some(ring) = ring.upgrade() else { return };
        match data_version(conn) {
            Ok(version) if seen == Some(version) => {}
            Ok(version) => match live_keys(&mut SqliteTables(conn), now_ms()) {
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
    use crate::keys::{Actor, Caller, KeyStore, Scope};

    fn databases(dir: &tempfile::TempDir) -> crate::Databases {
        crate::Databases::new(&dir.path().join("e.db"), &dir.path().join("e-state.db"))
    }

    fn api() -> Caller {
        Caller {
            actor: Actor::Project,
            client: "127.0.0.1".into(),
        }
    }

    #[test]
    fn refresh_follows_the_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::open(&databases(&dir)).expect("open");
        let blog = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let ring = KeyRing::empty();
        assert!(store.refresh(&ring).expect("refresh"));
        let key = blog.key.expose();
        assert!(ring.opens("blog.localhost", "horatio", key, now_ms()));
        store
            .revoke(Scope::Any, blog.info.id, &api())
            .expect("revoke");
        assert!(
            ring.opens("blog.localhost", "horatio", key, now_ms()),
            "until refreshed"
        );
        assert!(store.refresh(&ring).expect("refresh"));
        assert!(!ring.opens("blog.localhost", "horatio", key, now_ms()));
        assert!(!store.refresh(&ring).expect("refresh"), "nothing changed");
    }

    #[test]
    fn rotation_grace_reaches_the_ring() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::open(&databases(&dir)).expect("open");
        let old = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let rotated = store
            .rotate(Scope::Any, old.info.id, 30, &api())
            .expect("rotate");
        let ring = KeyRing::empty();
        store.refresh(&ring).expect("refresh");
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
        let store = KeyStore::open(&databases(&dir)).expect("open");
        let path = databases(&dir).state;
        let ring = Arc::new(KeyRing::empty());
        store.refresh(&ring).expect("refresh");
        watch_ring(&ring, &path, Duration::from_millis(10)).expect("watch");

        // Another process, as far as SQLite can tell: its own connection.
        let other = KeyStore::open(&databases(&dir)).expect("open again");
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
