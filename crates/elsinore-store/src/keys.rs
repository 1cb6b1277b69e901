//! Host keys (`host_secrets`) and the audit log (`elsinore_audit`) in the
//! state database, which no handler is given. Every change and its audit
//! row commit together.
//!
//! The state database is a SQLite file or, for a fleet of front doors, a
//! PostgreSQL database ([`crate::pg`]): what to check, hash and audit is
//! written once here, the SQL of each engine in `keys/tables.rs`.
//!
//! All of it is blocking database work: call it from a dedicated thread or
//! `spawn_blocking`, never from async code directly (the blocking
//! PostgreSQL client panics there). The keys themselves (generation,
//! hashing) and the in-memory [`KeyRing`] the request path checks are
//! `elsinore_keys`, which links no database; this module fills the ring
//! ([`KeyStore::refresh`], [`watch_ring`] for the SQLite file,
//! [`watch_fleet`] for PostgreSQL).

mod fleet;
mod import;
mod tables;
mod watch;

use std::sync::{Arc, Mutex, PoisonError};

use elsinore_keys::{now_ms, KeyHash, KeyRing, LiveKey, SecretKey};
use rusqlite::{Connection, Row};

use crate::pg::{AsUnavailable, PgState};
use tables::{KeyTables, NewKey, PgTables, SqliteTables};

pub use fleet::{watch_fleet, CHECK_INTERVAL};

pub use import::{
    check_imported_key, imported_prefix, Imported, ImportedKey, IMPORTED_PREFIX_LEN,
    MIN_IMPORTED_KEY_LEN,
};
pub use watch::{watch_ring, WATCH_INTERVAL};

/// What went wrong with a key operation.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// SQLite refused a query.
    #[error("{context}: {source}")]
    Sqlite {
        /// What Elsinore was doing.
        context: &'static str,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// No such key (or not one of this host's).
    #[error("no key with id {id} for this host")]
    NotFound {
        /// The id asked for.
        id: i64,
    },
    /// A revoked key cannot be rotated.
    #[error("key {id} is already revoked; create a new key instead")]
    AlreadyRevoked {
        /// The key.
        id: i64,
    },
    /// The label is too long or holds control characters.
    #[error("invalid label: {0}")]
    InvalidLabel(String),
    /// The grace period is too long.
    #[error("grace_seconds {seconds} is too long: at most {max} (7 days)", max = MAX_GRACE_SECONDS)]
    InvalidGrace {
        /// What was asked for.
        seconds: u64,
    },
    /// No key could be generated.
    #[error(transparent)]
    Key(#[from] elsinore_keys::Error),
    /// A key brought in from elsewhere cannot be a host key.
    #[error("invalid key: {0}")]
    InvalidImportedKey(String),
    /// The watcher thread could not be started.
    #[error("cannot start the key watcher thread: {0}")]
    Thread(String),
}

impl KeyError {
    /// Whether the state database is out of reach (a 503: retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(err) if err.is_unavailable())
    }
}

impl AsUnavailable for KeyError {
    fn is_unavailable(&self) -> bool {
        KeyError::is_unavailable(self)
    }
}

/// Result type of key operations.
pub type Result<T, E = KeyError> = std::result::Result<T, E>;

/// Longest label accepted, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest rotation grace period accepted: 7 days.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// Who made a change, as written in the audit log's `actor` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A caller holding the project key (the admin API).
    Project,
    /// The operator on the server (`elsinore keys …`).
    Operator,
}

impl Actor {
    /// The text stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Operator => "operator",
        }
    }
}

/// Who made a change and from where: the audit log's `actor` and `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub actor: Actor,
    /// The client's address (`127.0.0.1`), or `cli` for the operator.
    pub client: String,
}

impl Caller {
    /// The operator at the command line.
    pub fn operator() -> Self {
        Self {
            actor: Actor::Operator,
            client: "cli".to_owned(),
        }
    }
}

/// Whether a key still opens its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Not revoked.
    Live,
    /// Revoked by a rotation, still accepted until `grace_until`.
    Grace,
    /// Revoked.
    Revoked,
}

impl KeyStatus {
    /// `live`, `grace` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Grace => "grace",
            Self::Revoked => "revoked",
        }
    }
}

/// A row of `host_secrets`, without the hash. Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Row id, used by the API and the CLI to name the key.
    pub id: i64,
    /// The hostname the key opens.
    pub host: String,
    /// The project that owned the host when the key was made.
    pub project: String,
    /// Free text from whoever created it.
    pub label: String,
    /// The key's first characters, for recognising it.
    pub prefix: String,
    /// When it was created.
    pub created_at: i64,
    /// When it was revoked (by a revocation or a rotation).
    pub revoked_at: Option<i64>,
    /// After a rotation with grace: accepted until then although revoked.
    pub grace_until: Option<i64>,
}

impl KeyInfo {
    /// Its status at `now` (epoch ms).
    pub fn status(&self, now: i64) -> KeyStatus {
        match (self.revoked_at, self.grace_until) {
            (None, _) => KeyStatus::Live,
            (Some(_), Some(until)) if until > now => KeyStatus::Grace,
            (Some(_), _) => KeyStatus::Revoked,
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            host: row.get("host")?,
            project: row.get("project")?,
            label: row.get("label")?,
            prefix: row.get("key_prefix")?,
            created_at: row.get("created_at")?,
            revoked_at: row.get("revoked_at")?,
            grace_until: row.get("grace_until")?,
        })
    }
}

const KEY_COLUMNS: &str =
    "id, host, project, label, key_prefix, created_at, revoked_at, grace_until";

/// A key just created: the only moment its plaintext exists.
#[derive(Debug)]
pub struct CreatedKey {
    /// Its row.
    pub info: KeyInfo,
    /// The key, to show once.
    pub key: SecretKey,
}

/// The result of a rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The replacement.
    pub new: CreatedKey,
    /// The old key, now revoked (possibly with a grace period).
    pub old: KeyInfo,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The key (or its grace period) ended now.
    Revoked(KeyInfo),
    /// It was revoked already; nothing changed.
    AlreadyRevoked(KeyInfo),
}

/// Which keys an operation may touch: the admin API is confined to the
/// request's host and its project; the operator's CLI is not.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Only keys of this host made for this project.
    Host {
        /// The hostname.
        host: &'a str,
        /// Its owning project.
        project: &'a str,
    },
    /// Any key.
    Any,
}

/// One row of `elsinore_audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Epoch ms.
    pub at: i64,
    /// The hostname concerned.
    pub host: String,
    /// Its project.
    pub project: String,
    /// `project` or `operator`.
    pub actor: String,
    /// `create`, `rotate`, `revoke`, `host_create` or `host_delete`.
    pub action: String,
    /// The key concerned, if any.
    pub key_id: Option<i64>,
    /// Its display prefix, if any.
    pub key_prefix: Option<String>,
    /// Client address, or `cli`.
    pub client: String,
    /// Extra facts in words (e.g. the replacement key of a rotation).
    pub detail: String,
}

/// The key tables of the state database: one SQLite connection, or a
/// PostgreSQL state database shared by a fleet of front doors. The logic
/// (checks, hashing, audit rows) is written once here; only the SQL
/// differs (`keys/tables.rs`).
#[derive(Debug)]
pub struct KeyStore {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Mutex<Connection>),
    Postgres(Arc<PgState>),
}

impl KeyStore {
    /// Opens (creating and migrating if needed) the state database; the
    /// first time, that moves the key tables out of the shared one. With
    /// a `state_database` URL, connects to PostgreSQL and migrates it.
    pub fn open(databases: &crate::Databases) -> Result<Self> {
        if let Some(url) = &databases.state_url {
            let state = PgState::open(url, "elsinore state")?;
            return Ok(Self::postgres(Arc::new(state)));
        }
        let store = crate::StateStore::open(databases)?;
        Ok(Self::from_connection(store.into_connection()))
    }

    /// Uses a connection to an already migrated database.
    pub fn from_connection(conn: Connection) -> Self {
        Self {
            backend: Backend::Sqlite(Mutex::new(conn)),
        }
    }

    /// Uses an open (migrated) PostgreSQL state database.
    pub fn postgres(state: Arc<PgState>) -> Self {
        Self {
            backend: Backend::Postgres(state),
        }
    }

    /// The PostgreSQL state database, when that is where the keys are.
    pub fn pg_state(&self) -> Option<&Arc<PgState>> {
        match &self.backend {
            Backend::Postgres(state) => Some(state),
            Backend::Sqlite(_) => None,
        }
    }

    /// Runs `work` in one transaction, committed when it returns `Ok`.
    /// A `change` on PostgreSQL is announced to the fleet in the same
    /// transaction.
    fn transaction<T>(
        &self,
        context: &'static str,
        change: bool,
        work: impl FnOnce(&mut dyn KeyTables) -> Result<T>,
    ) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                // A panic while holding the lock cannot leave SQLite
                // half-written (transactions roll back), so a poisoned
                // lock is safe to reuse.
                let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
                let tx = conn.transaction().map_err(sqlite(context))?;
                let out = work(&mut SqliteTables(&tx))?;
                tx.commit().map_err(sqlite(context))?;
                Ok(out)
            }
            Backend::Postgres(state) => {
                let url = state.url().redacted();
                state.with_client(|client| {
                    let mut tx = client
                        .transaction()
                        .map_err(crate::pg::classify(&url, context))?;
                    let out = work(&mut PgTables {
                        tx: &mut tx,
                        url: &url,
                    })?;
                    if change {
                        crate::pg::announce_change(&mut tx, &url)?;
                    }
                    tx.commit().map_err(crate::pg::classify(&url, context))?;
                    Ok(out)
                })
            }
        }
    }

    /// Keys of `host` made for `project`, oldest first (revoked ones too).
    pub fn list(&self, host: &str, project: &str) -> Result<Vec<KeyInfo>> {
        self.transaction("cannot list keys", false, |t| t.list(host, project))
    }

    /// One key by id, whatever its host.
    pub fn get(&self, id: i64) -> Result<Option<KeyInfo>> {
        self.transaction("cannot read a key", false, |t| t.key(id))
    }

    /// Creates a key for `host` (owned by `project`) and records it.
    pub fn create(
        &self,
        host: &str,
        project: &str,
        label: &str,
        caller: &Caller,
    ) -> Result<CreatedKey> {
        check_label(label)?;
        let now = now_ms();
        self.transaction("cannot create a key", true, |t| {
            let created = insert_key(t, host, project, label, now)?;
            audit(
                t,
                now,
                &created.info,
                caller,
                "create",
                &format!("label {label:?}"),
            )?;
            Ok(created)
        })
    }

    /// Replaces key `id` with a new one (same host, project and label) and
    /// revokes the old one, at once or after `grace_seconds`.
    pub fn rotate(
        &self,
        scope: Scope<'_>,
        id: i64,
        grace_seconds: u64,
        caller: &Caller,
    ) -> Result<Rotated> {
        if grace_seconds > MAX_GRACE_SECONDS {
            return Err(KeyError::InvalidGrace {
                seconds: grace_seconds,
            });
        }
        let now = now_ms();
        self.transaction("cannot rotate a key", true, |t| {
            let old = get_in_scope(t, scope, id)?;
            if old.revoked_at.is_some() {
                return Err(KeyError::AlreadyRevoked { id });
            }
            let new = insert_key(t, &old.host, &old.project, &old.label, now)?;
            // `grace_seconds` is at most 7 days, so this cannot overflow.
            let grace_until = (grace_seconds > 0).then(|| now + grace_seconds as i64 * 1000);
            t.revoke(id, now, grace_until)?;
            let detail = match grace_until {
                Some(_) => format!(
                    "replaced by key {} ({}); old key accepted for {grace_seconds} s more",
                    new.info.id, new.info.prefix
                ),
                None => format!(
                    "replaced by key {} ({}); old key revoked at once",
                    new.info.id, new.info.prefix
                ),
            };
            audit(t, now, &old, caller, "rotate", &detail)?;
            let old = get_in_scope(t, Scope::Any, id)?;
            Ok(Rotated { new, old })
        })
    }

    /// Revokes key `id` at once (ending a rotation grace period too).
    pub fn revoke(&self, scope: Scope<'_>, id: i64, caller: &Caller) -> Result<Revocation> {
        let now = now_ms();
        self.transaction("cannot revoke a key", true, |t| {
            let key = get_in_scope(t, scope, id)?;
            let detail = match key.status(now) {
                KeyStatus::Revoked => return Ok(Revocation::AlreadyRevoked(key)),
                KeyStatus::Live => "revoked",
                KeyStatus::Grace => "grace period ended early",
            };
            t.revoke(id, now, None)?;
            audit(t, now, &key, caller, "revoke", detail)?;
            let key = get_in_scope(t, Scope::Any, id)?;
            Ok(Revocation::Revoked(key))
        })
    }

    /// Every key accepted at `now`.
    pub fn live_keys(&self, now: i64) -> Result<Vec<LiveKey>> {
        self.transaction("cannot read live keys", false, |t| live_keys(t, now))
    }

    /// Re-reads the accepted keys into `ring`; returns whether anything
    /// changed. Called right after every change made through Elsinore, so
    /// a revoked key stops working before the caller hears about it.
    pub fn refresh(&self, ring: &KeyRing) -> Result<bool> {
        Ok(ring.replace(self.live_keys(now_ms())?))
    }

    /// Records a change to a host folder (`host_create`, `host_delete`).
    pub fn record_host_change(
        &self,
        host: &str,
        project: &str,
        action: &str,
        caller: &Caller,
    ) -> Result<()> {
        let entry = AuditEntry {
            at: now_ms(),
            host: host.to_owned(),
            project: project.to_owned(),
            actor: caller.actor.as_str().to_owned(),
            action: action.to_owned(),
            key_id: None,
            key_prefix: None,
            client: caller.client.clone(),
            detail: String::new(),
        };
        self.transaction("cannot write the audit log", false, |t| t.audit(&entry))
    }

    /// The audit log of `host`, oldest first.
    pub fn audit_log(&self, host: &str) -> Result<Vec<AuditEntry>> {
        self.transaction("cannot read the audit log", false, |t| t.audit_log(host))
    }
}

/// Every key accepted at `now`, read through `tables` (the refresh
/// threads' own connections use this too).
fn live_keys(tables: &mut dyn KeyTables, now: i64) -> Result<Vec<LiveKey>> {
    let mut keys = Vec::new();
    for row in tables.live_rows(now)? {
        // A malformed hash matches nothing; skip it rather than fail all.
        let Some(hash) = KeyHash::from_slice(&row.hash) else {
            tracing::warn!(id = row.id, host = %row.host, "host_secrets row has a hash that is not 32 bytes; ignored");
            continue;
        };
        keys.push(LiveKey {
            id: row.id,
            host: row.host,
            project: row.project,
            hash,
            valid_until: row.grace_until,
        });
    }
    Ok(keys)
}

/// The key, or `NotFound` when it does not exist or is outside `scope`
/// (the API does not reveal that another host's key exists).
fn get_in_scope(tables: &mut dyn KeyTables, scope: Scope<'_>, id: i64) -> Result<KeyInfo> {
    let key = tables.key(id)?.ok_or(KeyError::NotFound { id })?;
    match scope {
        Scope::Host { host, project } if key.host != host || key.project != project => {
            Err(KeyError::NotFound { id })
        }
        _ => Ok(key),
    }
}

fn insert_key(
    tables: &mut dyn KeyTables,
    host: &str,
    project: &str,
    label: &str,
    now: i64,
) -> Result<CreatedKey> {
    let key = SecretKey::generate()?;
    let id = tables.insert_key(&NewKey {
        host,
        project,
        label,
        hash: &key.hash().0[..],
        prefix: key.display_prefix(),
        created_at: now,
        revoked_at: None,
    })?;
    let info = KeyInfo {
        id,
        host: host.to_owned(),
        project: project.to_owned(),
        label: label.to_owned(),
        prefix: key.display_prefix().to_owned(),
        created_at: now,
        revoked_at: None,
        grace_until: None,
    };
    Ok(CreatedKey { info, key })
}

fn audit(
    tables: &mut dyn KeyTables,
    now: i64,
    key: &KeyInfo,
    caller: &Caller,
    action: &str,
    detail: &str,
) -> Result<()> {
    tables.audit(&AuditEntry {
        at: now,
        host: key.host.clone(),
        project: key.project.clone(),
        actor: caller.actor.as_str().to_owned(),
        action: action.to_owned(),
        key_id: Some(key.id),
        key_prefix: Some(key.prefix.clone()),
        client: caller.client.clone(),
        detail: detail.to_owned(),
    })
}

/// Labels are shown in UIs and terminals: short, no control characters.
pub fn check_label(label: &str) -> Result<()> {
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(KeyError::InvalidLabel(format!(
            "a label holds at most {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(KeyError::InvalidLabel(
            "a label cannot hold control characters (newlines, tabs…)".to_owned(),
        ));
    }
    Ok(())
}

fn sqlite(context: &'static str) -> impl Fn(rusqlite::Error) -> KeyError {
    move |source| KeyError::Sqlite { context, source }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A key store over fresh files in a temporary folder.
    pub(crate) fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KeyStore::open(&crate::Databases::new(
            &dir.path().join("elsinore.db"),
            &dir.path().join("state.db"),
        ))
        .expect("open");
        (dir, store)
    }

    fn api() -> Caller {
        Caller {
            actor: Actor::Project,
            client: "127.0.0.1".into(),
        }
    }

    const BLOG: Scope<'static> = Scope::Host {
        host: "blog.localhost",
        project: "horatio",
    };

    #[test]
    fn create_list_and_audit() {
        let (_dir, store) = store();
        let created = store
            .create("blog.localhost", "horatio", "laptop", &api())
            .expect("create");
        assert_eq!(created.info.label, "laptop");
        assert_eq!(created.info.prefix, created.key.display_prefix());
        store
            .create("news.localhost", "horatio", "other host", &api())
            .expect("create");
        store
            .create("blog.localhost", "othello", "other project", &api())
            .expect("create");

        let keys = store.list("blog.localhost", "horatio").expect("list");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0], created.info);
        assert_eq!(keys[0].status(now_ms()), KeyStatus::Live);

        let log = store.audit_log("blog.localhost").expect("audit");
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].action, "create");
        assert_eq!(log[0].actor, "project");
        assert_eq!(log[0].client, "127.0.0.1");
        assert_eq!(log[0].key_id, Some(created.info.id));
        assert_eq!(
            log[0].key_prefix.as_deref(),
            Some(created.key.display_prefix())
        );
    }

    #[test]
    fn labels_are_checked() {
        let (_dir, store) = store();
        for bad in ["two\nlines", &"x".repeat(MAX_LABEL_CHARS + 1)] {
            assert!(matches!(
                store.create("a.localhost", "p", bad, &api()),
                Err(KeyError::InvalidLabel(_))
            ));
        }
        store
            .create("a.localhost", "p", &"é".repeat(MAX_LABEL_CHARS), &api())
            .expect("100 characters, more bytes, is fine");
    }

    #[test]
    fn rotation_with_and_without_grace() {
        let (_dir, store) = store();
        let first = store
            .create("blog.localhost", "horatio", "ci", &api())
            .expect("create");

        let rotated = store
            .rotate(BLOG, first.info.id, 60, &api())
            .expect("rotate");
        assert_eq!(rotated.new.info.label, "ci");
        assert_ne!(rotated.new.key, first.key);
        let now = now_ms();
        assert_eq!(rotated.old.status(now), KeyStatus::Grace);
        let until = rotated.old.grace_until.expect("grace");
        assert!(until > now && until <= now + 60_000);
        assert_eq!(rotated.old.status(until), KeyStatus::Revoked);

        // Both are live now; the old one until its grace ends.
        let live = store.live_keys(now).expect("live");
        let ids: Vec<i64> = live.iter().map(|k| k.id).collect();
        assert_eq!(ids, [first.info.id, rotated.new.info.id]);
        assert!(store.live_keys(until).expect("live").len() == 1);

        // A revoked key cannot be rotated again.
        assert!(matches!(
            store.rotate(BLOG, first.info.id, 0, &api()),
            Err(KeyError::AlreadyRevoked { .. })
        ));

        // Without grace the old key is gone at once.
        let again = store
            .rotate(BLOG, rotated.new.info.id, 0, &api())
            .expect("rotate");
        assert_eq!(again.old.status(now_ms()), KeyStatus::Revoked);
        assert!(matches!(
            store.rotate(BLOG, again.new.info.id, MAX_GRACE_SECONDS + 1, &api()),
            Err(KeyError::InvalidGrace { .. })
        ));

        let actions: Vec<String> = store
            .audit_log("blog.localhost")
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["create", "rotate", "rotate"]);
    }

    #[test]
    fn revoke_is_immediate_scoped_and_idempotent() {
        let (_dir, store) = store();
        let key = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let other_scope = Scope::Host {
            host: "news.localhost",
            project: "horatio",
        };
        assert!(matches!(
            store.revoke(other_scope, key.info.id, &api()),
            Err(KeyError::NotFound { .. })
        ));
        assert!(matches!(
            store.revoke(BLOG, 999, &api()),
            Err(KeyError::NotFound { id: 999 })
        ));

        let Revocation::Revoked(info) = store.revoke(BLOG, key.info.id, &api()).expect("revoke")
        else {
            panic!("should revoke");
        };
        assert_eq!(info.status(now_ms()), KeyStatus::Revoked);
        assert!(store.live_keys(now_ms()).expect("live").is_empty());
        assert!(matches!(
            store.revoke(Scope::Any, key.info.id, &Caller::operator()),
            Ok(Revocation::AlreadyRevoked(_))
        ));
    }

    #[test]
    fn revoking_a_key_in_grace_ends_the_grace() {
        let (_dir, store) = store();
        let key = store
            .create("blog.localhost", "horatio", "", &api())
            .expect("create");
        let rotated = store
            .rotate(BLOG, key.info.id, 3600, &api())
            .expect("rotate");
        let Revocation::Revoked(old) = store
            .revoke(Scope::Any, key.info.id, &Caller::operator())
            .expect("revoke")
        else {
            panic!("grace should end");
        };
        assert_eq!(old.grace_until, None);
        assert_eq!(
            old.revoked_at, rotated.old.revoked_at,
            "first revocation time kept"
        );
        let live: Vec<i64> = store
            .live_keys(now_ms())
            .expect("live")
            .iter()
            .map(|k| k.id)
            .collect();
        assert_eq!(live, [rotated.new.info.id]);
        let log = store.audit_log("blog.localhost").expect("audit");
        assert_eq!(log[2].actor, "operator");
        assert_eq!(log[2].client, "cli");
        assert_eq!(log[2].detail, "grace period ended early");
    }

    #[test]
    fn no_plaintext_key_is_stored() {
        let (dir, store) = store();
        let created = store
            .create("blog.localhost", "horatio", "x", &api())
            .expect("create");
        let rotated = store
            .rotate(BLOG, created.info.id, 10, &api())
            .expect("rotate");
        drop(store);
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
        }
        for key in [created.key.expose(), rotated.new.key.expose()] {
            let needle = &key.as_bytes()[elsinore_keys::secret::KEY_PREFIX.len()..];
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "a key's secret part is in the database files"
            );
        }
    }
}
