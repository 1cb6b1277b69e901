//! Moving to a PostgreSQL state database keeps what ACME already has: the
//! account and certificates in the `acme.storage` folder are copied into
//! the state database's tables where those hold nothing for them yet.
//!
//! Why: without it, a front door switched from SQLite to PostgreSQL
//! ordered every name again and registered a new account. With many
//! tenants that is thousands of orders at once, past a CA's limits (Let's
//! Encrypt allows 300 new orders per account every 3 hours).
//!
//! It happens at the move only: while the database holds no ACME account
//! for the configured directory (a start after that costs one query and
//! reads nothing from the folder). It only fills gaps: a name the
//! database already holds keeps its certificate, and a certificate that
//! does not load, has expired or does not cover its folder's name stays
//! behind. The folder is read, never changed, so going back to SQLite
//! still finds it.

use std::path::Path;
use std::time::SystemTime;

use elsinore_tls::LoadedCert;

use crate::pg_storage::PgStorage;
use crate::storage::{FileStorage, Storage};
use crate::Error;

/// What [`into_state_database`] copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CarriedOver {
    /// The account was copied (the database had none for the directory).
    pub(crate) account: bool,
    /// Names whose certificate was copied.
    pub(crate) certificates: Vec<String>,
    /// Names left behind, with the reason (unloadable, expired).
    pub(crate) skipped: Vec<(String, String)>,
}

/// Copies the account (for `directory`) and the certificates of the
/// `acme.storage` folder `root` into `pg` where `pg` has none. A folder
/// that does not exist copies nothing (and is not created).
pub(crate) fn into_state_database(
    root: &Path,
    pg: &PgStorage,
    directory: &str,
    now: SystemTime,
) -> Result<CarriedOver, Error> {
    let mut done = CarriedOver::default();
    let Some(files) = FileStorage::existing(root) else {
        return Ok(done);
    };
    // Only at the move: once the database holds an account for this CA
    // the fleet orders and keeps its own, and the folder is not read
    // again (a file put there later, by a handler sharing Elsinore's user
    // say, never reaches the fleet).
    if pg.account(directory)?.is_some() {
        return Ok(done);
    }
    // Only an account made with this CA: one from another directory (the
    // operator switched CA at the same time) would be refused by it.
    let account = files
        .account(directory)?
        .filter(|json| made_with(json, directory));
    if let Some(account) = account {
        pg.save_account(directory, &account)?;
        done.account = true;
    }
    // One query, not one per name.
    let in_database: std::collections::HashSet<String> = pg.stored_names()?.into_iter().collect();
    let mut names = files.stored_names()?;
    names.retain(|name| !in_database.contains(name));
    names.sort();
    for name in names {
        let (cert_path, key_path) = files.cert_paths(&name);
        let cert = match LoadedCert::load(&cert_path, &key_path) {
            Ok(cert) => cert,
            Err(err) => {
                done.skipped.push((name, err.to_string()));
                continue;
            }
        };
        if cert.not_after <= now {
            done.skipped.push((name, "expired".to_owned()));
            continue;
        }
        if !cert.covers(&name) {
            done.skipped
                .push((name, "does not cover its folder's name".to_owned()));
            continue;
        }
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(|source| Error::io(path, source));
        let (cert_pem, key_pem) = (read(&cert_path)?, read(&key_path)?);
        if pg.save_cert_if_absent(&name, &cert_pem, &key_pem)? {
            done.certificates.push(name);
        }
    }
    Ok(done)
}

/// Whether account credentials (instant-acme's JSON) name `directory`, or
/// name none (an older format, kept for whatever directory was set).
fn made_with(json: &str, directory: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value) => match value.get("directory") {
            Some(serde_json::Value::String(made)) => made == directory,
            _ => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::made_with;

    #[test]
    fn an_account_goes_along_only_for_the_directory_it_was_made_with() {
        let dir = "https://acme.example/directory";
        assert!(made_with(
            r#"{"id": "x", "directory": "https://acme.example/directory"}"#,
            dir
        ));
        assert!(!made_with(
            r#"{"id": "x", "directory": "https://other.example/dir"}"#,
            dir
        ));
        assert!(made_with(r#"{"id": "x"}"#, dir));
        assert!(!made_with("not json", dir));
    }
}
