//! One certificate chain and its private key, read from PEM files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use crate::{Error, Result};

/// A certificate chain with its key, ready for handshakes, and what the
/// leaf says about itself.
pub struct LoadedCert {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's DNS names (subjectAltName), lower-case; `*.example.com`
    /// for wildcards.
    pub names: Vec<String>,
    /// The leaf's `notBefore`.
    pub not_before: SystemTime,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
    /// Where the chain was read from.
    pub cert_path: PathBuf,
    /// Where the key was read from.
    pub key_path: PathBuf,
    /// The files' identity when they were read, to skip re-reading
    /// unchanged files on every reload.
    pub(crate) stamp: Stamp,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("LoadedCert")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    /// Reads `cert_path` (PEM chain, leaf first) and `key_path` (PKCS#8,
    /// PKCS#1 or SEC1 PEM; RSA, ECDSA or Ed25519) and checks that the key
    /// is the leaf's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let stamp = Stamp::of(cert_path, key_path);
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        Self::parse(&cert_pem, &key_pem, cert_path, key_path, stamp)
    }

    /// Like [`LoadedCert::load`], from PEM held in memory (a certificate
    /// kept in a database); `origin` names it in errors (e.g.
    /// `postgres://…/acme_certificates/blog.test`).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], origin: &Path) -> Result<Self> {
        let stamp = Stamp {
            cert: None,
            key: None,
        };
        Self::parse(cert_pem, key_pem, origin, origin, stamp)
    }

    fn parse(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_path: &Path,
        key_path: &Path,
        stamp: Stamp,
    ) -> Result<Self> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| pem_error(cert_path, err))?;
        let Some(leaf) = chain.first() else {
            return Err(Error::NoCertificate {
                path: cert_path.to_owned(),
            });
        };
        let (names, not_before, not_after) =
            describe_leaf(leaf).map_err(|reason| Error::BadCertificate {
                path: cert_path.to_owned(),
                reason,
            })?;

        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| match err {
            pem::Error::NoItemsFound => Error::NoKey {
                path: key_path.to_owned(),
            },
            err => pem_error(key_path, err),
        })?;
        let signing_key = any_supported_type(&key).map_err(|err| Error::UnsupportedKey {
            path: key_path.to_owned(),
            reason: err.to_string(),
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        // The ring signing keys can always state their public key, so an
        // "unknown" answer means something is wrong too.
        certified.keys_match().map_err(|_| Error::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        })?;

        Ok(Self {
            certified: Arc::new(certified),
            names,
            not_before,
            not_after,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            stamp,
        })
    }

    /// Whether `host` (normalised: lower-case, no port, no trailing dot)
    /// is one of this certificate's names, as a TLS client checks it.
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|name| covers(name, host))
    }

    /// Whole days from `now` until `notAfter`; negative once expired.
    pub fn days_left(&self, now: SystemTime) -> i64 {
        let seconds = match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        };
        seconds.div_euclid(86_400)
    }
}

/// Whether certificate name `name` covers `host` (RFC 6125): equal, or a
/// `*.` wildcard standing for exactly one leftmost label. Both lower-case.
pub fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// A warning when `key_path` can be read by group or others (Unix mode
/// `& 0o077`); `None` when it is private or cannot be inspected.
pub fn key_mode_warning(key_path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(key_path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{}: private key is accessible to group or others (mode {mode:04o}); run chmod 600 on it",
            key_path.display()
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, err: pem::Error) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason: err.to_string(),
    }
}

/// DNS names, notBefore and notAfter of a DER certificate.
fn describe_leaf(
    der: &CertificateDer<'_>,
) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|err| err.to_string())?;
    let mut names = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|err| err.to_string())?
    {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(name) = name {
                names.push(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    Ok((
        names,
        system_time(validity.not_before.timestamp()),
        system_time(validity.not_after.timestamp()),
    ))
}

fn system_time(unix_seconds: i64) -> SystemTime {
    if unix_seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs())
    }
}

/// Size, modification and change times and inode of both files: when all
/// are unchanged the files are not read again. A replaced file (written
/// in place or renamed over) always changes at least one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    cert: Option<FileStamp>,
    key: Option<FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: u64,
}

impl Stamp {
    pub(crate) fn of(cert: &Path, key: &Path) -> Self {
        Self {
            cert: FileStamp::of(cert),
            key: FileStamp::of(key),
        }
    }
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        // Follows symlinks, so a re-pointed link counts as a change.
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_coverage_follows_rfc_6125() {
        let cases = [
            ("blog.test", "blog.test", true),
            ("blog.test", "news.test", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "a.example.org", false),
            ("*.example.com", "aexample.com", false),
        ];
        for (name, host, want) in cases {
            assert_eq!(covers(name, host), want, "{name} covers {host}");
        }
    }
}
