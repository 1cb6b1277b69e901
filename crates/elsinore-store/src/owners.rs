//! Recorded host owners (table `host_owners` in the state database): which
//! project each declared name was first served for, so that neither a
//! restart nor a reorder of `projects` moves a host.
//!
//! Read once at start, before the first reload plan; written by the
//! control plane after each swap that changed an owner (blocking: call it
//! from the blocking pool, never the request path).

use std::sync::Mutex;

use elsinore_postgres::postgres::types::ToSql;

use crate::pg::{classify, PgState};
use crate::state::Databases;
#[cfg(doc)]
use crate::state::StateStore;
use crate::{Result, StoreError};

/// What one reload changed in the owners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerChanges {
    /// Names (as declared: `*.suffix` for wildcards) now owned by a
    /// project, new or moved.
    pub set: Vec<(String, String)>,
    /// Names no project serves any more: the record is released.
    pub released: Vec<String>,
}

impl OwnerChanges {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.released.is_empty()
    }
}

/// The `host_owners` table of the state database. On SQLite each read or
/// write opens its own short-lived connection: they are rare (start, and a
/// reload that changed an owner). On PostgreSQL one kept connection serves
/// them, and a change is announced to the fleet like a key change.
#[derive(Debug)]
pub struct OwnerRecords {
    path: std::path::PathBuf,
    /// One write at a time from this process.
    lock: Mutex<()>,
    postgres: Option<PgState>,
}

impl OwnerRecords {
    /// The records of the state database in `databases`, which
    /// [`StateStore::open`] has already created and migrated in this
    /// process (Elsinore's key store does, first thing at start).
    ///
    /// Only SQLite opens the file here, never `std::fs`: closing any other
    /// descriptor of it would drop this process's POSIX locks on it, and
    /// the key watcher's connection would stop seeing other processes'
    /// writes.
    pub fn open(databases: &Databases) -> Result<Self> {
        let postgres = match &databases.state_url {
            Some(url) => Some(PgState::open(url, "elsinore state owners")?),
            None => None,
        };
        let records = Self {
            path: crate::absolute(&databases.state),
            lock: Mutex::new(()),
            postgres,
        };
        records.load()?;
        Ok(records)
    }

    /// Every recorded (name, project).
    pub fn load(&self) -> Result<Vec<(String, String)>> {
        if let Some(pg) = &self.postgres {
            return pg_query(pg, "SELECT host, project FROM host_owners", &[], |row| {
                (row.get(0), row.get(1))
            });
        }
        let _one = self.lock();
        let conn = crate::open_connection(&self.path)?;
        let mut stmt = conn
            .prepare("SELECT host, project FROM host_owners")
            .map_err(self.fail("cannot read the recorded host owners"))?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.fail("cannot read the recorded host owners"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.fail("cannot read the recorded host owners"))
    }

    /// The names recorded for `project`, each with when it was first
    /// served for it (epoch ms): what the tenant admin API's Hamlet-shaped
    /// `_hosts` listing gives as `created_at`.
    pub fn first_served(&self, project: &str) -> Result<Vec<(String, i64)>> {
        if let Some(pg) = &self.postgres {
            return pg_query(
                pg,
                "SELECT host, first_served FROM host_owners WHERE project = $1",
                &[&project],
                |row| (row.get(0), row.get(1)),
            );
        }
        let _one = self.lock();
        let conn = crate::open_connection(&self.path)?;
        let mut stmt = conn
            .prepare("SELECT host, first_served FROM host_owners WHERE project = ?1")
            .map_err(self.fail("cannot read the recorded host owners"))?;
        let rows = stmt
            .query_map([project], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.fail("cannot read the recorded host owners"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.fail("cannot read the recorded host owners"))
    }

    /// Applies `changes` in one transaction. A name that moves keeps no
    /// trace of its earlier owner; `first_served` is when this project
    /// got it.
    pub fn record(&self, changes: &OwnerChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(pg) = &self.postgres {
            return pg_record(pg, changes);
        }
        let _one = self.lock();
        let mut conn = crate::open_connection(&self.path)?;
        let fail = |context| {
            let path = self.path.clone();
            move |source| StoreError::Sqlite {
                path,
                context,
                source,
            }
        };
        let tx = conn
            .transaction()
            .map_err(fail("cannot record host owners"))?;
        {
            let mut set = tx
                .prepare(
                    "INSERT INTO host_owners (host, project, first_served)
                     VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))
                     ON CONFLICT (host) DO UPDATE SET project = excluded.project,
                         first_served = excluded.first_served
                     WHERE host_owners.project <> excluded.project",
                )
                .map_err(fail("cannot record host owners"))?;
            for (host, project) in &changes.set {
                set.execute([host, project])
                    .map_err(fail("cannot record host owners"))?;
            }
            let mut release = tx
                .prepare("DELETE FROM host_owners WHERE host = ?1")
                .map_err(fail("cannot release host owners"))?;
            for host in &changes.released {
                release
                    .execute([host])
                    .map_err(fail("cannot release host owners"))?;
            }
        }
        tx.commit().map_err(fail("cannot record host owners"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // It guards no data: a panic while holding it changes nothing.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&self, context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            context,
            source,
        }
    }
}

/// Runs a read on the PostgreSQL state database.
fn pg_query<T>(
    pg: &PgState,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    row: impl Fn(&elsinore_postgres::postgres::Row) -> T,
) -> Result<Vec<T>> {
    let url = pg.url().redacted();
    pg.with_client(|client| {
        let rows = client
            .query(sql, params)
            .map_err(classify(&url, "cannot read the recorded host owners"))?;
        Ok(rows.iter().map(&row).collect())
    })
}

/// [`OwnerRecords::record`] on PostgreSQL: one transaction, announced.
fn pg_record(pg: &PgState, changes: &OwnerChanges) -> Result<()> {
    let url = pg.url().redacted();
    let fail = |context| classify(&url, context);
    pg.with_client(|client| {
        let mut tx = client
            .transaction()
            .map_err(fail("cannot record host owners"))?;
        let now = elsinore_keys::now_ms();
        for (host, project) in &changes.set {
            tx.execute(
                "INSERT INTO host_owners (host, project, first_served) VALUES ($1, $2, $3)
                 ON CONFLICT (host) DO UPDATE SET project = excluded.project,
                     first_served = excluded.first_served
                 WHERE host_owners.project <> excluded.project",
                &[host, project, &now],
            )
            .map_err(fail("cannot record host owners"))?;
        }
        for host in &changes.released {
            tx.execute("DELETE FROM host_owners WHERE host = $1", &[host])
                .map_err(fail("cannot release host owners"))?;
        }
        crate::pg::announce_change(&mut tx, &url)?;
        tx.commit().map_err(fail("cannot record host owners"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;

    #[test]
    fn owners_survive_a_reopen_and_released_names_are_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = Databases::new(&dir.path().join("shared.db"), &dir.path().join("state.db"));
        drop(StateStore::open(&databases).expect("state database"));
        let records = OwnerRecords::open(&databases).expect("open");
        records
            .record(&OwnerChanges {
                set: vec![
                    ("*.wild.test".into(), "beta".into()),
                    ("b.test".into(), "beta".into()),
                ],
                released: Vec::new(),
            })
            .expect("record");
        records
            .record(&OwnerChanges {
                set: vec![("b.test".into(), "alpha".into())],
                released: vec!["*.wild.test".into()],
            })
            .expect("record");
        drop(records);
        let records = OwnerRecords::open(&databases).expect("reopen");
        assert_eq!(
            records.load().expect("load"),
            [("b.test".to_owned(), "alpha".to_owned())]
        );
        let served = records.first_served("alpha").expect("first served");
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].0, "b.test");
        assert!(served[0].1 > 1_600_000_000_000, "epoch ms: {served:?}");
        assert!(records.first_served("beta").expect("none").is_empty());
    }
}
