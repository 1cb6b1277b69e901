//! Per-host admin keys in memory: what they are and how the request path
//! checks them.
//!
//! - [`secret`]: 256-bit keys (`ehk_` + URL-safe base64), their SHA-256,
//!   display prefixes and constant-time comparison.
//! - [`KeyRing`]: the accepted keys in memory (one `ArcSwap` snapshot), for
//!   the request path, replaced whole whenever keys change.
//!
//! Must not touch SQLite, files or the network: the request path links
//! this crate, and `.ci/run` checks that it links no `rusqlite`. Where keys
//! are stored (the `host_secrets` table, the audit log, the watcher that
//! refills the ring) is `elsinore_store::keys`. No HTTP here.

mod ring;
pub mod secret;

use std::time::{SystemTime, UNIX_EPOCH};

pub use ring::{KeyRing, LiveKey};
pub use secret::{KeyHash, SecretKey};

/// What went wrong with key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system's random source failed.
    #[error("cannot generate a key: the system random source failed: {0}")]
    Random(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Now, in epoch milliseconds (Hamlet's convention for timestamps).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
