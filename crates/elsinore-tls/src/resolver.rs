//! The rustls side: certificate choice per handshake and the server
//! configuration of a listener.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::{CertStore, Result};

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

/// Chooses each handshake's certificate from the current snapshot by SNI
/// ([`CertStore::resolve`]). Returning `None` makes rustls abort the
/// handshake; listeners that want a precise alert check first with
/// [`CertStore::resolve`] (see `elsinore-proxy`).
#[derive(Debug, Clone)]
pub struct SniResolver {
    certs: Arc<dyn CurrentCerts>,
}

impl SniResolver {
    /// A resolver reading `certs` at every handshake.
    pub fn new(certs: Arc<dyn CurrentCerts>) -> Self {
        Self { certs }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certs
            .current()
            .resolve(client_hello.server_name())
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
