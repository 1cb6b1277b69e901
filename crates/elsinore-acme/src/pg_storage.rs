//! [`Storage`] in the PostgreSQL state database (`state_database` given
//! as a URL), shared by every front door of a fleet: the account per CA
//! directory in `acme_accounts`, each name's chain and key in
//! `acme_certificates`. The tables are made by the state database's
//! migrations (`elsinore-store`, migration 6), so one schema version
//! covers every table of that database and `elsinore state export` sees
//! them; this module only reads and writes rows.
//!
//! Storing a certificate bumps `acme_version` and sends `NOTIFY
//! elsinore_acme` in the same transaction: the other front doors'
//! refresh threads ([`crate::fleet`]) load it when it commits.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use elsinore_postgres::postgres::{Client, Transaction};
use elsinore_postgres::PostgresUrl;
use elsinore_tls::LoadedCert;

use crate::storage::Storage;
use crate::Error;

/// The channel ACME changes are announced on (not the key rings' one:
/// certificate traffic never reloads host keys).
pub(crate) const CHANNEL: &str = "elsinore_acme";

/// The longest one statement may run on the kept connection.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '10s'";

/// The state database, through one kept connection (reconnected when it
/// died), used from blocking threads only.
pub(crate) struct PgStorage {
    url: PostgresUrl,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage")
            .field("url", &self.url.redacted())
            .finish_non_exhaustive()
    }
}

impl PgStorage {
    pub(crate) fn new(url: &PostgresUrl) -> Self {
        Self {
            url: url.clone(),
            client: Mutex::new(None),
        }
    }

    pub(crate) fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// Runs `work` on the kept connection, connecting first if needed. A
    /// failure drops the connection when it is the connection's fault, so
    /// the next call reconnects.
    pub(crate) fn with_client<T>(
        &self,
        context: &str,
        work: impl FnOnce(&mut Client) -> Result<T, elsinore_postgres::postgres::Error>,
    ) -> Result<T, Error> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_none_or(Client::is_closed) {
            let mut client = elsinore_postgres::connect(&self.url, "elsinore acme")
                .map_err(|err| Error::State(err.to_string()))?;
            client
                .batch_execute(STATEMENT_TIMEOUT)
                .map_err(|err| state_error(&self.url, context, &err))?;
            *slot = Some(client);
        }
        let Some(client) = slot.as_mut() else {
            return Err(Error::State(format!("{}: no connection", self.url)));
        };
        let result = work(client);
        result.map_err(|err| {
            if err.is_closed() || err.code().is_none() {
                *slot = None;
            }
            state_error(&self.url, context, &err)
        })
    }
}

/// The error for a failed statement, naming the URL without its password.
pub(crate) fn state_error(
    url: &PostgresUrl,
    context: &str,
    err: &elsinore_postgres::postgres::Error,
) -> Error {
    Error::State(format!("{}: {context}: {err}", url.redacted()))
}

/// Inside `tx`: counts one more ACME change and tells every front door,
/// both effective when `tx` commits. Returns the new count.
pub(crate) fn announce(
    tx: &mut Transaction<'_>,
) -> Result<i64, elsinore_postgres::postgres::Error> {
    let version: i64 = tx
        .query_one(
            "UPDATE acme_version SET version = version + 1 WHERE id = 1 RETURNING version",
            &[],
        )?
        .get(0);
    tx.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
    Ok(version)
}

/// How a certificate kept in the database is named in errors.
pub(crate) fn origin(url: &PostgresUrl, name: &str) -> PathBuf {
    PathBuf::from(format!("{}#acme_certificates/{name}", url.redacted()))
}

/// Milliseconds since the epoch, as the state tables keep times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

impl PgStorage {
    /// Stores `name`'s certificate unless the database already holds one
    /// (then nothing changes and nobody is told); `true` when stored.
    pub(crate) fn save_cert_if_absent(
        &self,
        name: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<bool, Error> {
        self.with_client("cannot store a certificate", |client| {
            let mut tx = client.transaction()?;
            let stored = tx.execute(
                "INSERT INTO acme_certificates (name, cert_pem, key_pem, stored_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&name, &cert_pem, &key_pem, &now_ms()],
            )? == 1;
            if stored {
                announce(&mut tx)?;
            }
            tx.commit()?;
            Ok(stored)
        })
    }
}

impl Storage for PgStorage {
    fn account(&self, directory: &str) -> Result<Option<String>, Error> {
        self.with_client("cannot read the ACME account", |client| {
            Ok(client
                .query_opt(
                    "SELECT credentials FROM acme_accounts WHERE directory = $1",
                    &[&directory],
                )?
                .map(|row| row.get(0)))
        })
    }

    /// The first front door to register keeps its account: one that
    /// registered at the same moment uses its own this once, and the
    /// stored one from then on.
    fn save_account(&self, directory: &str, json: &str) -> Result<(), Error> {
        self.with_client("cannot store the ACME account", |client| {
            client.execute(
                "INSERT INTO acme_accounts (directory, credentials, created_at)
                 VALUES ($1, $2, $3) ON CONFLICT (directory) DO NOTHING",
                &[&directory, &json, &now_ms()],
            )?;
            Ok(())
        })
    }

    fn account_origin(&self) -> String {
        format!("{}#acme_accounts", self.url.redacted())
    }

    fn cert(&self, name: &str) -> Result<Option<LoadedCert>, Error> {
        let row = self.with_client("cannot read a certificate", |client| {
            client.query_opt(
                "SELECT cert_pem, key_pem FROM acme_certificates WHERE name = $1",
                &[&name],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (cert_pem, key_pem): (String, String) = (row.get(0), row.get(1));
        LoadedCert::from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            &origin(&self.url, name),
        )
        .map(Some)
        .map_err(|err| Error::Certificate(err.to_string()))
    }

    fn stored_names(&self) -> Result<Vec<String>, Error> {
        self.with_client("cannot list certificates", |client| {
            Ok(client
                .query("SELECT name FROM acme_certificates ORDER BY name", &[])?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }

    /// One row holds the pair: replaced in one statement, announced to
    /// the fleet in the same transaction.
    fn save_cert(&self, name: &str, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        self.with_client("cannot store a certificate", |client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "INSERT INTO acme_certificates (name, cert_pem, key_pem, stored_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE
                   SET cert_pem = EXCLUDED.cert_pem, key_pem = EXCLUDED.key_pem,
                       stored_at = EXCLUDED.stored_at",
                &[&name, &cert_pem, &key_pem, &now_ms()],
            )?;
            announce(&mut tx)?;
            tx.commit()
        })
    }
}
