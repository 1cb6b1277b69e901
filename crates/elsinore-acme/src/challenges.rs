//! What the CA's validation requests are answered with while an order is
//! pending: HTTP-01 key authorizations by token, TLS-ALPN-01 certificates
//! by name. Entries live only from `set_ready` until the order is decided.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::Error;

/// The pending challenges, shared with the listeners.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    http01: Mutex<HashMap<String, String>>,
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Pending {
    pub(crate) fn http01(&self, token: &str) -> Option<String> {
        lock(&self.http01).get(token).cloned()
    }

    pub(crate) fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.tls_alpn01).get(name).cloned()
    }

    pub(crate) fn add_http01(&self, token: &str, key_authorization: &str) {
        lock(&self.http01).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(crate) fn remove_http01(&self, token: &str) {
        lock(&self.http01).remove(token);
    }

    /// Makes and keeps the RFC 8737 certificate for `name`.
    pub(crate) fn add_tls_alpn01(&self, name: &str, digest: &[u8]) -> Result<(), Error> {
        let certified = alpn_certificate(name, digest)?;
        lock(&self.tls_alpn01).insert(name.to_owned(), certified);
        Ok(())
    }

    pub(crate) fn remove_tls_alpn01(&self, name: &str) {
        lock(&self.tls_alpn01).remove(name);
    }
}

/// The RFC 8737 certificate for `name`: self-signed, with the critical
/// acmeIdentifier extension holding `digest` (the SHA-256 of the key
/// authorization). Any front door can make it from the digest alone.
pub(crate) fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, Error> {
    let challenge = |err: rcgen::Error| Error::Challenge(err.to_string());
    let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(challenge)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate().map_err(challenge)?;
    let cert = params.self_signed(&key).map_err(challenge)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|err| Error::Challenge(err.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The maps stay consistent whatever panicked while holding them (each
/// operation is a single insert, get or remove).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
