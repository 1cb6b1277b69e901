//! `elsinore state export` / `import`: Elsinore's state moved between
//! state databases (from the SQLite file to PostgreSQL when a server
//! becomes a fleet, or back), as JSON lines.
//!
//! What moves: host keys (their hashes: a plaintext key never exists
//! after it was shown once), the audit log, the events' run log and the
//! recorded host owners,
//! with their ids, so `elsinore keys revoke --id N` and the audit rows'
//! `key_id` keep meaning the same key. Importing twice changes nothing the
//! second time: a row whose id (or key hash, or host) is already there is
//! skipped and counted.

use std::io::{BufRead, Write};

use elsinore_postgres::postgres::Client;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::pg::{announce_change, classify, PgState};
use crate::{Databases, StateStore, StoreError};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "table", rename_all = "snake_case")]
pub enum Record {
    /// A row of `host_secrets`; `key_hash` in hex.
    HostSecrets {
        id: i64,
        host: String,
        project: String,
        label: String,
        key_hash: String,
        key_prefix: String,
        created_at: i64,
        revoked_at: Option<i64>,
        grace_until: Option<i64>,
    },
    /// A row of `elsinore_audit`.
    ElsinoreAudit {
        id: i64,
        at: i64,
        host: String,
        project: String,
        actor: String,
        action: String,
        key_id: Option<i64>,
        key_prefix: Option<String>,
        client: String,
        detail: String,
    },
    /// A row of `elsinore_event_runs`.
    ElsinoreEventRuns {
        id: i64,
        run_id: i64,
        trigger: String,
        event: String,
        table_name: String,
        started_at: i64,
        finished_at: i64,
        rows_deleted: i64,
        unreadable: i64,
        blocked: i64,
        error: Option<String>,
    },
    /// A row of `host_owners`.
    HostOwners {
        host: String,
        project: String,
        first_served: i64,
    },
}

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The state database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// SQLite refused a statement.
    #[error("{context}: {source}")]
    Sqlite {
        /// What Elsinore was doing.
        context: &'static str,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// The file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A line of the file is not a record.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Rows per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `host_secrets` rows.
    pub keys: usize,
    /// `elsinore_audit` rows.
    pub audit: usize,
    /// `host_owners` rows.
    pub owners: usize,
    /// `elsinore_event_runs` rows.
    pub event_runs: usize,
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Rows written.
    pub added: Counts,
    /// Rows already there (same id, key hash or host): skipped.
    pub skipped: Counts,
}

/// Writes every record of the state database `databases` names to `out`,
/// one JSON object a line; returns how many of each.
pub fn export(databases: &Databases, out: &mut dyn Write) -> Result<Counts, TransferError> {
    let records = match &databases.state_url {
        Some(url) => {
            let state = PgState::open(url, "elsinore state export")?;
            let redacted = url.redacted();
            state.with_client(|client| read_pg(client, &redacted))?
        }
        None => read_sqlite(&StateStore::open(databases)?.into_connection())?,
    };
    let mut counts = Counts::default();
    for record in &records {
        count(&mut counts, record);
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(counts)
}

/// Reads every line of `input` first (a malformed file changes nothing),
/// then writes the records into the state database `databases` names, in
/// one transaction.
pub fn import(databases: &Databases, input: &mut dyn BufRead) -> Result<Imported, TransferError> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str::<Record>(&line).map_err(|err| TransferError::Line {
            line: index + 1,
            reason: err.to_string(),
        })?;
        if let Record::HostSecrets { key_hash, .. } = &record {
            if from_hex(key_hash).is_none_or(|hash| hash.len() != 32) {
                return Err(TransferError::Line {
                    line: index + 1,
                    reason: "key_hash is not 64 hex digits".to_owned(),
                });
            }
        }
        records.push(record);
    }
    match &databases.state_url {
        Some(url) => {
            let state = PgState::open(url, "elsinore state import")?;
            let redacted = url.redacted();
            Ok(state.with_client(|client| write_pg(client, &redacted, &records))?)
        }
        None => {
            let mut conn = StateStore::open(databases)?.into_connection();
            write_sqlite(&mut conn, &records)
        }
    }
}

fn count(counts: &mut Counts, record: &Record) {
    match record {
        Record::HostSecrets { .. } => counts.keys += 1,
        Record::ElsinoreAudit { .. } => counts.audit += 1,
        Record::HostOwners { .. } => counts.owners += 1,
        Record::ElsinoreEventRuns { .. } => counts.event_runs += 1,
    }
}

const KEYS_SQL: &str =
    "SELECT id, host, project, label, key_hash, key_prefix, created_at, revoked_at, grace_until
     FROM host_secrets ORDER BY id";
const AUDIT_SQL: &str =
    "SELECT id, at, host, project, actor, action, key_id, key_prefix, client, detail
     FROM elsinore_audit ORDER BY id";
const OWNERS_SQL: &str = "SELECT host, project, first_served FROM host_owners ORDER BY host";
const RUNS_SQL: &str = "SELECT id, run_id, trigger, event, table_name, started_at, finished_at,
            rows_deleted, unreadable, blocked, error
       FROM elsinore_event_runs ORDER BY id";

fn read_sqlite(conn: &Connection) -> Result<Vec<Record>, TransferError> {
    let fail = |source| TransferError::Sqlite {
        context: "cannot read the state database",
        source,
    };
    let mut records = Vec::new();
    let mut keys = conn.prepare(KEYS_SQL).map_err(fail)?;
    let rows = keys
        .query_map([], |row| {
            Ok(Record::HostSecrets {
                id: row.get(0)?,
                host: row.get(1)?,
                project: row.get(2)?,
                label: row.get(3)?,
                key_hash: to_hex(&row.get::<_, Vec<u8>>(4)?),
                key_prefix: row.get(5)?,
                created_at: row.get(6)?,
                revoked_at: row.get(7)?,
                grace_until: row.get(8)?,
            })
        })
        .map_err(fail)?;
    records.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)?);
    let mut audit = conn.prepare(AUDIT_SQL).map_err(fail)?;
    let rows = audit
        .query_map([], |row| {
            Ok(Record::ElsinoreAudit {
                id: row.get(0)?,
                at: row.get(1)?,
                host: row.get(2)?,
                project: row.get(3)?,
                actor: row.get(4)?,
                action: row.get(5)?,
                key_id: row.get(6)?,
                key_prefix: row.get(7)?,
                client: row.get(8)?,
                detail: row.get(9)?,
            })
        })
        .map_err(fail)?;
    records.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)?);
    let mut owners = conn.prepare(OWNERS_SQL).map_err(fail)?;
    let rows = owners
        .query_map([], |row| {
            Ok(Record::HostOwners {
                host: row.get(0)?,
                project: row.get(1)?,
                first_served: row.get(2)?,
            })
        })
        .map_err(fail)?;
    records.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)?);
    let mut runs = conn.prepare(RUNS_SQL).map_err(fail)?;
    let rows = runs
        .query_map([], |row| {
            Ok(Record::ElsinoreEventRuns {
                id: row.get(0)?,
                run_id: row.get(1)?,
                trigger: row.get(2)?,
                event: row.get(3)?,
                table_name: row.get(4)?,
                started_at: row.get(5)?,
                finished_at: row.get(6)?,
                rows_deleted: row.get(7)?,
                unreadable: row.get(8)?,
                blocked: row.get(9)?,
                error: row.get(10)?,
            })
        })
        .map_err(fail)?;
    records.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)?);
    Ok(records)
}

fn read_pg(client: &mut Client, url: &str) -> Result<Vec<Record>, StoreError> {
    let fail = |context| classify(url, context);
    let mut tx = client
        .build_transaction()
        .isolation_level(elsinore_postgres::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(fail("cannot read the state database"))?;
    let mut records = Vec::new();
    for row in tx
        .query(KEYS_SQL, &[])
        .map_err(fail("cannot read host_secrets"))?
    {
        records.push(Record::HostSecrets {
            id: row.get(0),
            host: row.get(1),
            project: row.get(2),
            label: row.get(3),
            key_hash: to_hex(row.get::<_, &[u8]>(4)),
            key_prefix: row.get(5),
            created_at: row.get(6),
            revoked_at: row.get(7),
            grace_until: row.get(8),
        });
    }
    for row in tx
        .query(AUDIT_SQL, &[])
        .map_err(fail("cannot read elsinore_audit"))?
    {
        records.push(Record::ElsinoreAudit {
            id: row.get(0),
            at: row.get(1),
            host: row.get(2),
            project: row.get(3),
            actor: row.get(4),
            action: row.get(5),
            key_id: row.get(6),
            key_prefix: row.get(7),
            client: row.get(8),
            detail: row.get(9),
        });
    }
    for row in tx
        .query(OWNERS_SQL, &[])
        .map_err(fail("cannot read host_owners"))?
    {
        records.push(Record::HostOwners {
            host: row.get(0),
            project: row.get(1),
            first_served: row.get(2),
        });
    }
    tx.commit()
        .map_err(fail("cannot read the state database"))?;
    Ok(records)
}

fn write_pg(client: &mut Client, url: &str, records: &[Record]) -> Result<Imported, StoreError> {
    let fail = |context| classify(url, context);
    let mut tx = client
        .transaction()
        .map_err(fail("cannot start the import"))?;
    let mut done = Imported::default();
    for record in records {
        let added = match record {
            Record::HostSecrets {
                id,
                host,
                project,
                label,
                key_hash,
                key_prefix,
                created_at,
                revoked_at,
                grace_until,
            } => {
                let hash = from_hex(key_hash).unwrap_or_default();
                tx.execute(
                    "INSERT INTO host_secrets (id, host, project, label, key_hash, key_prefix,
                         created_at, revoked_at, grace_until)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    &[
                        id,
                        host,
                        project,
                        label,
                        &hash,
                        key_prefix,
                        created_at,
                        revoked_at,
                        grace_until,
                    ],
                )
                .map_err(fail("cannot import host_secrets"))?
            }
            Record::ElsinoreAudit {
                id,
                at,
                host,
                project,
                actor,
                action,
                key_id,
                key_prefix,
                client,
                detail,
            } => tx
                .execute(
                    "INSERT INTO elsinore_audit (id, at, host, project, actor, action, key_id,
                         key_prefix, client, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                    &[
                        id, at, host, project, actor, action, key_id, key_prefix, client, detail,
                    ],
                )
                .map_err(fail("cannot import elsinore_audit"))?,
            Record::HostOwners {
                host,
                project,
                first_served,
            } => tx
                .execute(
                    "INSERT INTO host_owners (host, project, first_served) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[host, project, first_served],
                )
                .map_err(fail("cannot import host_owners"))?,
            Record::ElsinoreEventRuns {
                id,
                run_id,
                trigger,
                event,
                table_name,
                started_at,
                finished_at,
                rows_deleted,
                unreadable,
                blocked,
                error,
            } => tx
                .execute(
                    "INSERT INTO elsinore_event_runs (id, run_id, trigger, event, table_name,
                         started_at, finished_at, rows_deleted, unreadable, blocked, error)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                    &[
                        id,
                        run_id,
                        trigger,
                        event,
                        table_name,
                        started_at,
                        finished_at,
                        rows_deleted,
                        unreadable,
                        blocked,
                        error,
                    ],
                )
                .map_err(fail("cannot import elsinore_event_runs"))?,
        };
        tally(&mut done, record, added > 0);
    }
    // Ids given explicitly do not move the identity sequences: the next
    // key made must not take an imported key's id.
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('host_secrets', 'id'),
                       GREATEST((SELECT MAX(id) FROM host_secrets), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('elsinore_audit', 'id'),
                       GREATEST((SELECT MAX(id) FROM elsinore_audit), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('elsinore_event_runs', 'id'),
                       GREATEST((SELECT MAX(id) FROM elsinore_event_runs), 0) + 1, false);",
    )
    .map_err(fail("cannot move the id sequences"))?;
    announce_change(&mut tx, url)?;
    tx.commit().map_err(fail("cannot commit the import"))?;
    Ok(done)
}

fn write_sqlite(conn: &mut Connection, records: &[Record]) -> Result<Imported, TransferError> {
    let fail = |source| TransferError::Sqlite {
        context: "cannot import into the state database",
        source,
    };
    let tx = conn.transaction().map_err(fail)?;
    let mut done = Imported::default();
    for record in records {
        let added = match record {
            Record::HostSecrets {
                id,
                host,
                project,
                label,
                key_hash,
                key_prefix,
                created_at,
                revoked_at,
                grace_until,
            } => tx.execute(
                "INSERT OR IGNORE INTO host_secrets (id, host, project, label, key_hash,
                     key_prefix, created_at, revoked_at, grace_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id,
                    host,
                    project,
                    label,
                    from_hex(key_hash).unwrap_or_default(),
                    key_prefix,
                    created_at,
                    revoked_at,
                    grace_until
                ],
            ),
            Record::ElsinoreAudit {
                id,
                at,
                host,
                project,
                actor,
                action,
                key_id,
                key_prefix,
                client,
                detail,
            } => tx.execute(
                "INSERT OR IGNORE INTO elsinore_audit (id, at, host, project, actor, action,
                     key_id, key_prefix, client, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![id, at, host, project, actor, action, key_id, key_prefix, client, detail],
            ),
            Record::HostOwners {
                host,
                project,
                first_served,
            } => tx.execute(
                "INSERT OR IGNORE INTO host_owners (host, project, first_served)
                 VALUES (?1, ?2, ?3)",
                params![host, project, first_served],
            ),
            Record::ElsinoreEventRuns {
                id,
                run_id,
                trigger,
                event,
                table_name,
                started_at,
                finished_at,
                rows_deleted,
                unreadable,
                blocked,
                error,
            } => tx.execute(
                "INSERT OR IGNORE INTO elsinore_event_runs (id, run_id, trigger, event,
                     table_name, started_at, finished_at, rows_deleted, unreadable, blocked, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    run_id,
                    trigger,
                    event,
                    table_name,
                    started_at,
                    finished_at,
                    rows_deleted,
                    unreadable,
                    blocked,
                    error
                ],
            ),
        }
        .map_err(fail)?;
        tally(&mut done, record, added > 0);
    }
    tx.commit().map_err(fail)?;
    Ok(done)
}

fn tally(done: &mut Imported, record: &Record, added: bool) {
    let counts = if added {
        &mut done.added
    } else {
        &mut done.skipped
    };
    count(counts, record);
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Caller, KeyStore};

    #[test]
    fn sqlite_round_trip_is_idempotent_and_keeps_keys_working() {
        let from = tempfile::tempdir().expect("temp dir");
        let from_db = Databases::new(&from.path().join("e.db"), &from.path().join("s.db"));
        let store = KeyStore::open(&from_db).expect("open");
        let created = store
            .create("blog.localhost", "horatio", "laptop", &Caller::operator())
            .expect("create");
        StateStore::open(&from_db)
            .expect("state")
            .into_connection()
            .execute_batch(
                "INSERT INTO elsinore_event_runs (run_id, trigger, event, table_name, started_at,
                     finished_at, rows_deleted, unreadable, blocked)
                 VALUES (7, 'cli', 'SessionExpiry', 'sessions', 1, 2, 3, 0, 0);
                 INSERT INTO host_owners VALUES ('blog.localhost', 'horatio', 5);",
            )
            .expect("rows");
        let mut file = Vec::new();
        let counts = export(&from_db, &mut file).expect("export");
        assert_eq!(
            (counts.keys, counts.audit, counts.owners, counts.event_runs),
            (1, 1, 1, 1)
        );
        let text = String::from_utf8(file.clone()).expect("utf-8");
        let secret = &created.key.expose()[elsinore_keys::secret::KEY_PREFIX.len()..];
        assert!(!text.contains(secret), "no plaintext key in an export");

        let to = tempfile::tempdir().expect("temp dir");
        let to_db = Databases::new(&to.path().join("e.db"), &to.path().join("s.db"));
        let first = import(&to_db, &mut file.as_slice()).expect("import");
        assert_eq!(first.added, counts);
        let again = import(&to_db, &mut file.as_slice()).expect("import again");
        assert_eq!(again.added, Counts::default());
        assert_eq!(again.skipped, counts);
        let moved = KeyStore::open(&to_db).expect("open");
        let live = moved.live_keys(elsinore_keys::now_ms()).expect("live");
        assert_eq!(live.len(), 1);
        assert!(live[0].hash.ct_eq(&created.key.hash()));
        assert_eq!(live[0].id, created.info.id);
    }

    #[test]
    fn a_bad_line_changes_nothing() {
        let to = tempfile::tempdir().expect("temp dir");
        let to_db = Databases::new(&to.path().join("e.db"), &to.path().join("s.db"));
        let text = "{\"table\":\"host_owners\",\"host\":\"a\",\"project\":\"p\",\"first_served\":1}\nnot json\n";
        let err = import(&to_db, &mut text.as_bytes()).expect_err("refused");
        assert!(err.to_string().starts_with("line 2: "), "{err}");
    }
}
