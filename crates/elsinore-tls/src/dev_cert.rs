//! Self-signed certificates for development hosts (`elsinore dev-cert`):
//! a fresh key and a certificate signed by it, and writing the pair into a
//! host folder's `tls/` so that a running server never reads half of it.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use elsinore_config::HostPattern;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long a development certificate is valid.
pub const DEV_CERT_VALID_DAYS: i64 = 365;

/// Why a development certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// No key could be generated.
    #[error("cannot generate a key: {0}")]
    Key(#[source] rcgen::Error),
    /// The host cannot be a certificate name.
    #[error("{host} is not a valid certificate name: {source}")]
    Name {
        /// The host.
        host: String,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// Signing failed.
    #[error("cannot sign the certificate: {0}")]
    Sign(#[source] rcgen::Error),
    /// A file could not be written (or renamed into place).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file's mode could not be set.
    #[error("cannot set the mode of {}: {source}", path.display())]
    Mode {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

/// A fresh ECDSA P-256 key and a self-signed certificate for one host, in
/// PEM. `Debug` leaves the key out.
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    key_pem: String,
    /// When the certificate stops being valid.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl SelfSigned {
    /// A certificate for `host` (a wildcard stays one), valid from a day
    /// ago for [`DEV_CERT_VALID_DAYS`], for server authentication only.
    pub fn generate(host: &HostPattern) -> Result<Self, DevCertError> {
        let key = KeyPair::generate().map_err(DevCertError::Key)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(|source| {
            DevCertError::Name {
                host: host.to_string(),
                source,
            }
        })?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host.to_string());
        name.push(DnType::OrganizationName, "Elsinore development certificate");
        params.distinguished_name = name;
        let now = OffsetDateTime::now_utc();
        // A day of slack for clocks that are a little behind.
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(DEV_CERT_VALID_DAYS);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key).map_err(DevCertError::Sign)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        })
    }

    /// Writes the key to `key_path` (mode 0600), then the certificate to
    /// `cert_path` (0644), each atomically. The key first: until the
    /// certificate follows, a running server refuses the pair and keeps
    /// whatever it served before.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), DevCertError> {
        write_atomically(key_path, self.key_pem.as_bytes(), 0o600)?;
        write_atomically(cert_path, self.cert_pem.as_bytes(), 0o644)
    }
}

/// Writes `path` through a temporary file renamed over it, so a running
/// server never reads half a file; the file gets `mode` from the start.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCertError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let write_error = |source| DevCertError::Write {
        path: temp.clone(),
        source,
    };
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(write_error)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(write_error)?;
    // The umask may have removed bits, never added any; make it exact.
    fs::set_permissions(&temp, fs::Permissions::from_mode(mode)).map_err(|source| {
        DevCertError::Mode {
            path: temp.clone(),
            source,
        }
    })?;
    fs::rename(&temp, path).map_err(|source| DevCertError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::SystemTime;

    use super::*;
    use crate::LoadedCert;

    #[test]
    fn a_written_pair_loads_for_its_host_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostPattern::parse("*.dev.test").unwrap();
        let pair = SelfSigned::generate(&host).unwrap();
        assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        pair.write(&cert, &key).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&key), mode(&cert)), (0o600, 0o644));
        let loaded = LoadedCert::load(&cert, &key).unwrap();
        assert_eq!(loaded.names, ["*.dev.test"]);
        let days = loaded.days_left(SystemTime::now());
        assert!((DEV_CERT_VALID_DAYS - 1..=DEV_CERT_VALID_DAYS).contains(&days));
    }
}
