//! Why an ACME step failed.

use std::path::{Path, PathBuf};

/// One failure of the ACME client; logged once and shown per name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in `acme.storage` (or `acme.ca_roots`) could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The ACME server refused or failed a request.
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The stored account could not be read back.
    #[error("{origin}: not an ACME account: {reason}")]
    Account {
        /// `account.json`, or the state database's `acme_accounts`.
        origin: String,
        /// The parser's reason.
        reason: String,
    },
    /// The CA offered none of `acme.challenges` for a name.
    #[error("the CA offers none of the configured challenges ({0}) for this name")]
    NoChallenge(String),
    /// The order ended in a state other than ready.
    #[error("the order for this name became {0} (the CA could not validate it)")]
    Order(String),
    /// The certificate the CA sent cannot be served.
    #[error("the issued certificate cannot be served: {0}")]
    Certificate(String),
    /// `acme.ask` did not allow an on-demand name.
    #[error("ask refused: {0}")]
    Refused(String),
    /// The PostgreSQL state database refused or could not be reached
    /// (the URL in the message has no password).
    #[error("state database: {0}")]
    State(String),
    /// A TLS-ALPN-01 challenge certificate could not be made.
    #[error("cannot make the tls-alpn-01 certificate: {0}")]
    Challenge(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}
