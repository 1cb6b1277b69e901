//! Per-host admin keys: what they are, where they live, and how the request
//! path checks them.
//!
//! - [`secret`]: 256-bit keys (`ehk_` + URL-safe base64), their SHA-256,
//!   display prefixes and constant-time comparison.
//! - [`KeyStore`]: the `host_secrets` table and the `elsinore_audit` log in
//!   the shared database (create, list, rotate with optional grace, revoke),
//!   each change and its audit row in one transaction. Blocking: call it
//!   from a dedicated thread or `spawn_blocking`.
//! - [`KeyRing`]: the accepted keys in memory (one `ArcSwap` snapshot), for
//!   the request path, reloaded after every change and by a watcher that
//!   notices other processes' writes.
//!
//! Only hashes are ever stored; a key's plaintext exists once, in the
//! [`CreatedKey`] returned to whoever asked for it. No HTTP here.

mod ring;
pub mod secret;
mod store;

use std::time::{SystemTime, UNIX_EPOCH};

pub use ring::{KeyRing, WATCH_INTERVAL};
pub use secret::{KeyHash, SecretKey};
pub use store::{
    check_label, Actor, AuditEntry, Caller, CreatedKey, KeyInfo, KeyStatus, KeyStore, LiveKey,
    Revocation, Rotated, Scope, MAX_GRACE_SECONDS, MAX_LABEL_CHARS,
};

/// What went wrong with a key operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] elsinore_store::StoreError),
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
    /// The operating system's random source failed.
    #[error("cannot generate a key: the system random source failed: {0}")]
    Random(String),
    /// The watcher thread could not be started.
    #[error("cannot start the key watcher thread: {0}")]
    Thread(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Now, in epoch milliseconds (Hamlet's convention for timestamps).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
