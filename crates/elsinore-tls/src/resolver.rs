//! The rustls side: certificate choice per handshake and the server
//! configuration of a listener.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::{CertOwner, CertStore, LoadedCert, Result};
use elsinore_config::{HostPattern, Hostname};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Wherever the live snapshot is kept; read once per handshake.
pub trait CurrentCerts: Send + Sync + fmt::Debug + 'static {
    /// The snapshot in force now.
    fn current(&self) -> Arc<CertStore>;
}

impl CurrentCerts for ArcSwap<CertStore> {
    fn current(&self) -> Arc<CertStore> {
        self.load_full()
    }
}

/// Certificates from outside the host folders: ACME (`elsinore-acme`).
/// Asked after a host's own `tls/` and before wildcard folders and the
/// default, so an operator's files always win.
pub trait ExtraCerts: Send + Sync + fmt::Debug + 'static {
    /// The certificate for exactly `name` (lower-case, no trailing dot).
    fn certificate(&self, name: &str) -> Option<Arc<LoadedCert>>;
    /// The TLS-ALPN-01 challenge certificate for `name`, while one is
    /// being validated (the client offered only ALPN `acme-tls/1`).
    fn alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>>;
    /// A handshake for `name` found no certificate at all: on-demand
    /// issuance may start (it must not block the handshake).
    fn missing(&self, name: &str) {
        let _ = name;
    }
}

/// ALPN protocol id of the TLS-ALPN-01 challenge (RFC 8737).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The certificate for a handshake: the exact host folder's own `tls/`,
/// else `extra`'s, else the wildcard folders' and the default
/// ([`CertStore::resolve`]).
pub fn choose(
    store: &CertStore,
    extra: Option<&dyn ExtraCerts>,
    sni: Option<&str>,
) -> Option<Arc<LoadedCert>> {
    if let (Some(extra), Some(sni)) = (extra, sni) {
        let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
        if let Some(cert) = extra.certificate(&name) {
            // Only now a parse: handshakes for names ACME does not serve
            // pay nothing.
            let own = Hostname::parse(&name).ok().is_some_and(|host| {
                store
                    .slot(&CertOwner::Host(HostPattern::Exact(host)))
                    .is_some_and(|slot| slot.cert.is_some())
            });
            if !own {
                return Some(cert);
            }
        }
    }
    store.resolve(sni).cloned()
}

/// Chooses each handshake's certificate from the current snapshot by SNI
/// ([`CertStore::resolve`]). Returning `None` makes rustls abort the
/// handshake; listeners that want a precise alert check first with
/// [`CertStore::resolve`] (see `elsinore-proxy`).
#[derive(Debug, Clone)]
pub struct SniResolver {
    certs: Arc<dyn CurrentCerts>,
    extra: Option<Arc<dyn ExtraCerts>>,
}

impl SniResolver {
    /// A resolver reading `certs` at every handshake.
    pub fn new(certs: Arc<dyn CurrentCerts>) -> Self {
        Self { certs, extra: None }
    }

    /// Also serves `extra`'s certificates ([`choose`]).
    pub fn with_extra(mut self, extra: Arc<dyn ExtraCerts>) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        choose(
            &self.certs.current(),
            self.extra.as_deref(),
            client_hello.server_name(),
        )
        .map(|cert| cert.certified.clone())
    }
}

/// A server configuration on the ring provider with the default protocol
/// versions (TLS 1.2 and 1.3), no client certificates, certificates from
/// `resolver`, and ALPN offering `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}
