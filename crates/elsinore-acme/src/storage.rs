//! Where ACME keeps what must survive a restart: the account's
//! credentials and each name's issued certificate. One interface,
//! [`Storage`], two homes: the `acme.storage` folder ([`FileStorage`],
//! with a SQLite state database) and the PostgreSQL state database
//! ([`crate::pg_storage::PgStorage`], shared by a fleet).
//!
//! The folder, keys readable by Elsinore's user only:
//!
//! ```text
//! <storage>/account.json            the ACME account (its private key inside), 0600
//! <storage>/certs/<name>/cert.pem   the chain as the CA sent it, leaf first
//! <storage>/certs/<name>/key.pem    its private key, 0600
//! ```

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use elsinore_tls::LoadedCert;

use crate::Error;

/// The persistence ACME needs. Every call may block (files, or a
/// database round trip): the issuing task calls it through
/// `spawn_blocking`, never the request path.
pub(crate) trait Storage: Send + Sync + std::fmt::Debug {
    /// The stored account credentials (JSON) for the CA at `directory`.
    fn account(&self, directory: &str) -> Result<Option<String>, Error>;
    /// Keeps the account credentials for `directory`.
    fn save_account(&self, directory: &str, json: &str) -> Result<(), Error>;
    /// Where the account is kept, in words, for errors.
    fn account_origin(&self) -> String;
    /// `name`'s stored chain and key, ready to serve; `None` when none.
    fn cert(&self, name: &str) -> Result<Option<LoadedCert>, Error>;
    /// Every name with a stored certificate.
    fn stored_names(&self) -> Result<Vec<String>, Error>;
    /// Stores `name`'s new chain and key (PEM), replacing the old pair
    /// at once: never a certificate next to a key that is not its own.
    fn save_cert(&self, name: &str, cert_pem: &str, key_pem: &str) -> Result<(), Error>;
}

const ACCOUNT_FILE: &str = "account.json";
const CERTS_DIR: &str = "certs";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// The storage folder.
#[derive(Debug, Clone)]
pub(crate) struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    /// Creates the folder (0700) if needed. An existing folder keeps its
    /// mode (it may be shared, e.g. `data/` with `database_group`); the
    /// files that matter are 0600 anyway.
    pub(crate) fn open(root: &Path) -> Result<Self, Error> {
        let created = !root.exists();
        let certs = root.join(CERTS_DIR);
        fs::create_dir_all(&certs).map_err(|source| Error::io(&certs, source))?;
        if created {
            // The account key lives here: nobody else needs to list it.
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(|source| Error::io(root, source))?;
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The folder `root` as it is, when it exists: nothing is created.
    pub(crate) fn existing(root: &Path) -> Option<Self> {
        root.is_dir().then(|| Self {
            root: root.to_owned(),
        })
    }

    /// Where `name`'s certificate and key are kept.
    pub(crate) fn cert_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join(CERTS_DIR).join(name);
        (dir.join(CERT_FILE), dir.join(KEY_FILE))
    }
}

impl Storage for FileStorage {
    /// One account whatever the directory (as before the PostgreSQL
    /// storage existed): `account.json`.
    fn account(&self, _directory: &str) -> Result<Option<String>, Error> {
        let path = self.root.join(ACCOUNT_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::io(&path, source)),
        }
    }

    /// Writes the account credentials, 0600.
    fn save_account(&self, _directory: &str, json: &str) -> Result<(), Error> {
        write_private(&self.root.join(ACCOUNT_FILE), json.as_bytes())
    }

    fn account_origin(&self) -> String {
        self.root.join(ACCOUNT_FILE).display().to_string()
    }

    fn cert(&self, name: &str) -> Result<Option<LoadedCert>, Error> {
        let (cert_path, key_path) = self.cert_paths(name);
        if !cert_path.is_file() {
            return Ok(None);
        }
        LoadedCert::load(&cert_path, &key_path)
            .map(Some)
            .map_err(|err| Error::Certificate(err.to_string()))
    }

    fn stored_names(&self) -> Result<Vec<String>, Error> {
        let Ok(entries) = fs::read_dir(self.root.join(CERTS_DIR)) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| self.cert_paths(name).0.is_file())
            .collect())
    }

    /// Key first, each written to a temporary file and renamed into
    /// place, so a crash never leaves a certificate next to a key that is
    /// not its own.
    fn save_cert(&self, name: &str, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        let (cert, key) = self.cert_paths(name);
        if let Some(dir) = cert.parent() {
            fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
        }
        write_private(&key, key_pem.as_bytes())?;
        write_private(&cert, cert_pem.as_bytes())
    }
}

/// Writes `bytes` to `path` through a temporary file created 0600 (never
/// readable by others, not even for a moment), then renames it into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| Error::io(&tmp, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::io(&tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| Error::io(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_account_are_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FileStorage::open(&dir.path().join("acme")).expect("open");
        storage.save_account("any", "{}").expect("account");
        storage.save_cert("blog.test", "CERT", "KEY").expect("cert");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("acme")), 0o700);
        assert_eq!(mode(&dir.path().join("acme/account.json")), 0o600);
        let (cert, key) = storage.cert_paths("blog.test");
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read_to_string(cert).expect("cert"), "CERT");
        assert_eq!(storage.stored_names().expect("names"), ["blog.test"]);
        assert_eq!(storage.account("any").expect("read").as_deref(), Some("{}"));
    }
}
