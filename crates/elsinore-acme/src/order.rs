//! The ACME conversation: the account (created once, then read from
//! storage) and one order for one name.

use std::sync::Arc;
use std::time::Duration;

use elsinore_config::{AcmeChallenge, AcmeConfig};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::challenges::Pending;
use crate::fleet::{ChallengeKind, Fleet};
use crate::storage::Storage;
use crate::Error;

/// How long one order may wait for the CA's validation and issuance.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// The account in `storage`, or a new one registered with the CA and
/// stored (0600) before it is used.
pub(crate) async fn account(
    config: &AcmeConfig,
    storage: &Arc<dyn Storage>,
) -> Result<Account, Error> {
    let builder = match &config.ca_roots {
        Some(roots) => Account::builder_with_root(roots)?,
        None => Account::builder()?,
    };
    let directory = config.directory.clone();
    let stored = blocking(storage, move |storage| storage.account(&directory)).await?;
    if let Some(json) = stored {
        let credentials: AccountCredentials =
            serde_json::from_str(&json).map_err(|err| Error::Account {
                origin: storage.account_origin(),
                reason: err.to_string(),
            })?;
        return Ok(builder.from_credentials(credentials).await?);
    }
    let contact = config.email.as_ref().map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_string(&credentials).map_err(|err| Error::Account {
        origin: storage.account_origin(),
        reason: err.to_string(),
    })?;
    let directory = config.directory.clone();
    blocking(storage, move |storage| {
        storage.save_account(&directory, &json)
    })
    .await?;
    tracing::info!(target: "elsinore::acme", directory = %config.directory, "ACME account registered");
    Ok(account)
}

/// One order for `name`: answers its challenge (the first of
/// `config.challenges` the CA offers), waits for validation, and returns
/// the chain and the new key, both PEM.
///
/// With a `fleet`, each answer is also written to the state database and
/// the validation is only asked for once the fleet has it in memory, so
/// whichever front door the CA reaches answers.
pub(crate) async fn issue(
    account: &Account,
    config: &AcmeConfig,
    pending: &Pending,
    fleet: Option<&Arc<Fleet>>,
    name: &str,
) -> Result<(String, String), Error> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answered = Answered::new(pending, fleet.cloned(), name);
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(Error::Order(format!("{other:?}").to_lowercase())),
        }
        let offered: Vec<ChallengeType> =
            authz.challenges.iter().map(|c| c.r#type.clone()).collect();
        let Some(kind) = config
            .challenges
            .iter()
            .copied()
            .find(|kind| offered.contains(&challenge_type(*kind)))
        else {
            let wanted: Vec<&str> = config.challenges.iter().map(|c| c.as_str()).collect();
            return Err(Error::NoChallenge(wanted.join(", ")));
        };
        let Some(mut challenge) = authz.challenge(challenge_type(kind)) else {
            return Err(Error::NoChallenge(kind.to_string()));
        };
        let key_authorization = challenge.key_authorization();
        let shared = match kind {
            AcmeChallenge::Http01 => {
                pending.add_http01(&challenge.token, key_authorization.as_str());
                answered.tokens.push(challenge.token.clone());
                (
                    ChallengeKind::Http01,
                    challenge.token.clone(),
                    key_authorization.as_str().to_owned(),
                )
            }
            AcmeChallenge::TlsAlpn01 => {
                let digest = key_authorization.digest();
                pending.add_tls_alpn01(name, digest.as_ref())?;
                answered.alpn = true;
                (
                    ChallengeKind::TlsAlpn01,
                    name.to_owned(),
                    hex(digest.as_ref()),
                )
            }
        };
        if let Some(fleet) = fleet {
            let (kind, key, answer) = shared;
            answered.shared.push((kind, key.clone()));
            fleet.publish(kind, &key, name, &answer).await?;
        }
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(Error::Order(format!("{status:?}").to_lowercase()));
    }
    drop(answered);
    let key_pem = order.finalize().await?;
    let cert_pem = order.poll_certificate(&retries).await?;
    Ok((cert_pem, key_pem))
}

fn challenge_type(kind: AcmeChallenge) -> ChallengeType {
    match kind {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// Lower-case hex, how a TLS-ALPN-01 digest is kept in the database.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs blocking `work` on `storage` off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    storage: &Arc<dyn Storage>,
    work: impl FnOnce(&dyn Storage) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || work(storage.as_ref()))
        .await
        .map_err(|err| Error::State(format!("storage task failed: {err}")))?
}

/// Removes an order's challenge answers however it ends (the fleet's
/// copies too, on a blocking thread of their own).
struct Answered<'a> {
    pending: &'a Pending,
    fleet: Option<Arc<Fleet>>,
    name: &'a str,
    tokens: Vec<String>,
    alpn: bool,
    shared: Vec<(ChallengeKind, String)>,
}

impl<'a> Answered<'a> {
    fn new(pending: &'a Pending, fleet: Option<Arc<Fleet>>, name: &'a str) -> Self {
        Self {
            pending,
            fleet,
            name,
            tokens: Vec::new(),
            alpn: false,
            shared: Vec::new(),
        }
    }
}

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.pending.remove_http01(token);
        }
        if self.alpn {
            self.pending.remove_tls_alpn01(self.name);
        }
        if let Some(fleet) = self.fleet.take() {
            let shared = std::mem::take(&mut self.shared);
            if !shared.is_empty() {
                tokio::task::spawn_blocking(move || fleet.withdraw(&shared));
            }
        }
    }
}
