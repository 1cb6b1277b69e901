//! Why a certificate or key was refused, naming the file.

use std::path::PathBuf;

/// Why a certificate/key pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE` blocks, leaf first)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{}: the first certificate cannot be parsed: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the X.509 parser said.
        reason: String,
    },
    /// The key file holds no private key.
    #[error("{}: no private key found (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a type the TLS library cannot sign with.
    #[error("{}: unsupported private key: {reason}", path.display())]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The key is not the one the certificate was issued for.
    #[error("{}: this private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The TLS server configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}
