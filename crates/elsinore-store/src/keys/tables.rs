//! The only SQL of the key store, written twice: [`SqliteTables`] for the
//! state database file, [`PgTables`] for a PostgreSQL state database. Both
//! work inside a transaction the caller commits; what to check, hash and
//! audit is decided once, in [`super::KeyStore`].

use elsinore_postgres::postgres::{self, Transaction as PgTransaction};
use rusqlite::{params, Connection, OptionalExtension};

use super::{sqlite, AuditEntry, KeyInfo, Result, KEY_COLUMNS};
use crate::pg::classify;

/// A key row to insert.
pub(crate) struct NewKey<'a> {
    pub host: &'a str,
    pub project: &'a str,
    pub label: &'a str,
    pub hash: &'a [u8],
    pub prefix: &'a str,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A row the key ring is filled from.
pub(crate) struct LiveRow {
    pub id: i64,
    pub host: String,
    pub project: String,
    pub hash: Vec<u8>,
    pub grace_until: Option<i64>,
}

/// The statements the key store runs.
pub(crate) trait KeyTables {
    /// One key by id.
    fn key(&mut self, id: i64) -> Result<Option<KeyInfo>>;
    /// The id of the key with this hash, if stored.
    fn key_id_by_hash(&mut self, hash: &[u8]) -> Result<Option<i64>>;
    /// Inserts a key; returns its id.
    fn insert_key(&mut self, key: &NewKey<'_>) -> Result<i64>;
    /// Sets `revoked_at` (keeping an earlier one) and `grace_until`.
    fn revoke(&mut self, id: i64, at: i64, grace_until: Option<i64>) -> Result<()>;
    /// Appends an audit row.
    fn audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// Keys of `host` for `project`, oldest first.
    fn list(&mut self, host: &str, project: &str) -> Result<Vec<KeyInfo>>;
    /// Keys accepted at `now`, by id.
    fn live_rows(&mut self, now: i64) -> Result<Vec<LiveRow>>;
    /// The audit log of `host`, oldest first.
    fn audit_log(&mut self, host: &str) -> Result<Vec<AuditEntry>>;
}

const LIVE_SQLITE: &str = "SELECT id, host, project, key_hash, grace_until FROM host_secrets
     WHERE revoked_at IS NULL OR grace_until > ?1 ORDER BY id";
const AUDIT_COLUMNS: &str = "at, host, project, actor, action, key_id, key_prefix, client, detail";

/// The state database file (inside a transaction, or the watcher's own
/// connection for reads).
pub(crate) struct SqliteTables<'a>(pub &'a Connection);

impl KeyTables for SqliteTables<'_> {
    fn key(&mut self, id: i64) -> Result<Option<KeyInfo>> {
        self.0
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM host_secrets WHERE id = ?1"),
                [id],
                KeyInfo::from_row,
            )
            .optional()
            .map_err(sqlite("cannot read a key"))
    }

    fn key_id_by_hash(&mut self, hash: &[u8]) -> Result<Option<i64>> {
        self.0
            .query_row(
                "SELECT id FROM host_secrets WHERE key_hash = ?1",
                [hash],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite("cannot look a key up"))
    }

    fn insert_key(&mut self, key: &NewKey<'_>) -> Result<i64> {
        self.0
            .execute(
                "INSERT INTO host_secrets
                     (host, project, label, key_hash, key_prefix, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.host,
                    key.project,
                    key.label,
                    key.hash,
                    key.prefix,
                    key.created_at,
                    key.revoked_at
                ],
            )
            .map_err(sqlite("cannot store a key"))?;
        Ok(self.0.last_insert_rowid())
    }

    fn revoke(&mut self, id: i64, at: i64, grace_until: Option<i64>) -> Result<()> {
        self.0
            .execute(
                "UPDATE host_secrets SET revoked_at = COALESCE(revoked_at, ?1), grace_until = ?2
                 WHERE id = ?3",
                params![at, grace_until, id],
            )
            .map_err(sqlite("cannot revoke a key"))?;
        Ok(())
    }

    fn audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.0
            .execute(
                &format!("INSERT INTO elsinore_audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    e.at,
                    e.host,
                    e.project,
                    e.actor,
                    e.action,
                    e.key_id,
                    e.key_prefix,
                    e.client,
                    e.detail
                ],
            )
            .map_err(sqlite("cannot write the audit log"))?;
        Ok(())
    }

    fn list(&mut self, host: &str, project: &str) -> Result<Vec<KeyInfo>> {
        let mut statement = self
            .0
            .prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM host_secrets
                 WHERE host = ?1 AND project = ?2 ORDER BY id"
            ))
            .map_err(sqlite("cannot list keys"))?;
        let rows = statement
            .query_map(params![host, project], KeyInfo::from_row)
            .map_err(sqlite("cannot list keys"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sqlite("cannot list keys"))
    }

    fn live_rows(&mut self, now: i64) -> Result<Vec<LiveRow>> {
        let mut statement = self
            .0
            .prepare_cached(LIVE_SQLITE)
            .map_err(sqlite("cannot read live keys"))?;
        let rows = statement
            .query_map([now], |row| {
                Ok(LiveRow {
                    id: row.get(0)?,
                    host: row.get(1)?,
                    project: row.get(2)?,
                    hash: row.get(3)?,
                    grace_until: row.get(4)?,
                })
            })
            .map_err(sqlite("cannot read live keys"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sqlite("cannot read live keys"))
    }

    fn audit_log(&mut self, host: &str) -> Result<Vec<AuditEntry>> {
        let mut statement = self
            .0
            .prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM elsinore_audit WHERE host = ?1 ORDER BY id"
            ))
            .map_err(sqlite("cannot read the audit log"))?;
        let rows = statement
            .query_map([host], |row| {
                Ok(AuditEntry {
                    at: row.get(0)?,
                    host: row.get(1)?,
                    project: row.get(2)?,
                    actor: row.get(3)?,
                    action: row.get(4)?,
                    key_id: row.get(5)?,
                    key_prefix: row.get(6)?,
                    client: row.get(7)?,
                    detail: row.get(8)?,
                })
            })
            .map_err(sqlite("cannot read the audit log"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(sqlite("cannot read the audit log"))
    }
}

/// A PostgreSQL state database, inside a transaction.
pub(crate) struct PgTables<'a, 'tx> {
    pub tx: &'a mut PgTransaction<'tx>,
    /// The URL, password hidden, for errors.
    pub url: &'a str,
}

impl PgTables<'_, '_> {
    fn fail(&self, context: &'static str) -> impl Fn(postgres::Error) -> super::KeyError + '_ {
        let classify = classify(self.url, context);
        move |err| super::KeyError::Store(classify(err))
    }
}

fn key_from_pg(row: &postgres::Row) -> KeyInfo {
    KeyInfo {
        id: row.get("id"),
        host: row.get("host"),
        project: row.get("project"),
        label: row.get("label"),
        prefix: row.get("key_prefix"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
        grace_until: row.get("grace_until"),
    }
}

impl KeyTables for PgTables<'_, '_> {
    fn key(&mut self, id: i64) -> Result<Option<KeyInfo>> {
        let row = self
            .tx
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM host_secrets WHERE id = $1"),
                &[&id],
            )
            .map_err(self.fail("cannot read a key"))?;
        Ok(row.as_ref().map(key_from_pg))
    }

    fn key_id_by_hash(&mut self, hash: &[u8]) -> Result<Option<i64>> {
        let row = self
            .tx
            .query_opt("SELECT id FROM host_secrets WHERE key_hash = $1", &[&hash])
            .map_err(self.fail("cannot look a key up"))?;
        Ok(row.map(|row| row.get(0)))
    }

    fn insert_key(&mut self, key: &NewKey<'_>) -> Result<i64> {
        let row = self
            .tx
            .query_one(
                "INSERT INTO host_secrets
                     (host, project, label, key_hash, key_prefix, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &key.host,
                    &key.project,
                    &key.label,
                    &key.hash,
                    &key.prefix,
                    &key.created_at,
                    &key.revoked_at,
                ],
            )
            .map_err(self.fail("cannot store a key"))?;
        Ok(row.get(0))
    }

    fn revoke(&mut self, id: i64, at: i64, grace_until: Option<i64>) -> Result<()> {
        self.tx
            .execute(
                "UPDATE host_secrets SET revoked_at = COALESCE(revoked_at, $1), grace_until = $2
                 WHERE id = $3",
                &[&at, &grace_until, &id],
            )
            .map_err(self.fail("cannot revoke a key"))?;
        Ok(())
    }

    fn audit(&mut self, e: &AuditEntry) -> Result<()> {
        self.tx
            .execute(
                &format!("INSERT INTO elsinore_audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &e.at,
                    &e.host,
                    &e.project,
                    &e.actor,
                    &e.action,
                    &e.key_id,
                    &e.key_prefix,
                    &e.client,
                    &e.detail,
                ],
            )
            .map_err(self.fail("cannot write the audit log"))?;
        Ok(())
    }

    fn list(&mut self, host: &str, project: &str) -> Result<Vec<KeyInfo>> {
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM host_secrets
                     WHERE host = $1 AND project = $2 ORDER BY id"
                ),
                &[&host, &project],
            )
            .map_err(self.fail("cannot list keys"))?;
        Ok(rows.iter().map(key_from_pg).collect())
    }

    fn live_rows(&mut self, now: i64) -> Result<Vec<LiveRow>> {
        let rows = self
            .tx
            .query(
                "SELECT id, host, project, key_hash, grace_until FROM host_secrets
                 WHERE revoked_at IS NULL OR grace_until > $1 ORDER BY id",
                &[&now],
            )
            .map_err(self.fail("cannot read live keys"))?;
        Ok(rows
            .iter()
            .map(|row| LiveRow {
                id: row.get(0),
                host: row.get(1),
                project: row.get(2),
                hash: row.get(3),
                grace_until: row.get(4),
            })
            .collect())
    }

    fn audit_log(&mut self, host: &str) -> Result<Vec<AuditEntry>> {
        let rows = self
            .tx
            .query(
                &format!("SELECT {AUDIT_COLUMNS} FROM elsinore_audit WHERE host = $1 ORDER BY id"),
                &[&host],
            )
            .map_err(self.fail("cannot read the audit log"))?;
        Ok(rows
            .iter()
            .map(|row| AuditEntry {
                at: row.get(0),
                host: row.get(1),
                project: row.get(2),
                actor: row.get(3),
                action: row.get(4),
                key_id: row.get(5),
                key_prefix: row.get(6),
                client: row.get(7),
                detail: row.get(8),
            })
            .collect())
    }
}
