//! The ACME conversation: the account (created once, then read from
//! storage) and one order for one name.

use std::time::Duration;

use elsinore_config::{AcmeChallenge, AcmeConfig};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::challenges::Pending;
use crate::storage::Storage;
use crate::Error;

/// How long one order may wait for the CA's validation and issuance.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// The account in `storage`, or a new one registered with the CA and
/// stored (0600) before it is used.
pub(crate) async fn account(config: &AcmeConfig, storage: &Storage) -> Result<Account, Error> {
    let builder = match &config.ca_roots {
        Some(roots) => Account::builder_with_root(roots)?,
        None => Account::builder()?,
    };
    if let Some(json) = storage.account()? {
        let credentials: AccountCredentials =
            serde_json::from_str(&json).map_err(|err| Error::Account {
                path: config.storage.join("account.json"),
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
        path: config.storage.join("account.json"),
        reason: err.to_string(),
    })?;
    storage.save_account(&json)?;
    tracing::info!(target: "elsinore::acme", directory = %config.directory, "ACME account registered");
    Ok(account)
}

/// One order for `name`: answers its challenge (the first of
/// `config.challenges` the CA offers), waits for validation, and returns
/// the chain and the new key, both PEM.
pub(crate) async fn issue(
    account: &Account,
    config: &AcmeConfig,
    pending: &Pending,
    name: &str,
) -> Result<(String, String), Error> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answered = Answered::new(pending, name);
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
        match kind {
            AcmeChallenge::Http01 => {
                pending.add_http01(&challenge.token, key_authorization.as_str());
                answered.tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                pending.add_tls_alpn01(name, key_authorization.digest().as_ref())?;
                answered.alpn = true;
            }
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

/// Removes an order's challenge answers however it ends.
struct Answered<'a> {
    pending: &'a Pending,
    name: &'a str,
    tokens: Vec<String>,
    alpn: bool,
}

impl<'a> Answered<'a> {
    fn new(pending: &'a Pending, name: &'a str) -> Self {
        Self {
            pending,
            name,
            tokens: Vec::new(),
            alpn: false,
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
    }
}
