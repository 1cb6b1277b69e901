//! Per-host TLS certificates: reading a host's `tls/cert.pem` and
//! `tls/key.pem`, checking that they belong together, and choosing one for
//! each handshake by SNI.
//!
//! - [`LoadedCert`]: one certificate chain and its key, with the DNS names
//!   and expiry read from the leaf.
//! - [`CertStore`]: an immutable snapshot, exact host → certificate,
//!   wildcard folder → certificate, optional default. A reload builds a new
//!   one with [`CertStore::rebuild`], which keeps the last good certificate
//!   of a host whose new files are refused.
//! - [`SniResolver`]: the rustls [`ResolvesServerCert`] over the current
//!   snapshot, and [`ServerConfigs`] for a listener.
//!
//! - [`SelfSigned`]: a development certificate for one host (`elsinore
//!   dev-cert`), written into its `tls/` key first, each file atomically.
//!
//! - [`cert_sources`]: the policy of which files a table serves (each kept
//!   host's `tls/` folder as spelled on disk, then the default).
//!
//! This crate knows nothing of HTTP, projects or listeners: callers say
//! which host folders exist and hold the snapshot (one `ArcSwap`). It
//! writes files only when asked to make a development certificate.
//!
//! [`ResolvesServerCert`]: rustls::server::ResolvesServerCert

mod cert;
mod dev_cert;
mod error;
mod random;
mod rebuild;
mod resolver;
mod sources;
mod store;

pub use cert::{covers, key_mode_warning, LoadedCert};
pub use dev_cert::{DevCertError, SelfSigned, DEV_CERT_VALID_DAYS};
pub use error::Error;
pub use rebuild::{expiry_warning, CertSource, Rebuilt};
pub use resolver::{
    choose, CurrentCerts, ExtraCerts, ServerConfigs, SniResolver, StoredChallenge, ALPN_ACME_TLS,
    ALPN_H2, ALPN_HTTP11,
};
pub use sources::cert_sources;
pub use store::{CertOwner, CertSlot, CertStore};

/// The folder inside a host folder that holds its certificate.
pub const TLS_DIR: &str = "tls";
/// The certificate chain file in [`TLS_DIR`]: leaf first, then the chain.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file in [`TLS_DIR`].
pub const KEY_FILE: &str = "key.pem";

/// Certificates expiring within this many days are warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
