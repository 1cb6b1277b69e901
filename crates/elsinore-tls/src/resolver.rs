//! The rustls side: certificate choice per handshake and the server
//! configuration of a listener.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};

use crate::{CertOwner, CertStore, LoadedCert, Result};
use elsinore_config::{HostPattern, Hostname};

/// A challenge certificate being looked up ([`ExtraCerts::stored_alpn_challenge`]).
pub type StoredChallenge = Pin<Box<dyn Future<Output = Option<Arc<CertifiedKey>>> + Send>>;

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
    /// [`Self::alpn_challenge`] found none: where else one may be kept
    /// (ACME across a fleet: the state database, which a validation can
    /// reach this front door before its own copy does). `None` when there
    /// is nowhere else to look.
    fn stored_alpn_challenge(&self, name: &str) -> Option<StoredChallenge> {
        let _ = name;
        None
    }
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

/// A listener's rustls server configurations: the ring provider, TLS 1.2
/// and 1.3, no client certificates, certificates from one resolver, ALPN
/// offering `h2` then `http/1.1`, stateless session tickets. The two
/// differ only in how the cipher suite is chosen ([`for_hello`]).
///
/// [`for_hello`]: ServerConfigs::for_hello
#[derive(Debug, Clone)]
pub struct ServerConfigs {
    /// AES-128-GCM first, whatever the client's order.
    aes128_first: Arc<ServerConfig>,
    /// The client's order (it put ChaCha20 first).
    client_order: Arc<ServerConfig>,
}

impl ServerConfigs {
    /// Both configurations for `resolver`, sharing one ticket key (so a
    /// session made under one resumes under the other: they differ in
    /// nothing that matters to a resumed session).
    pub fn new(resolver: Arc<dyn ResolvesServerCert>) -> Result<Self> {
        // Stateless tickets (ChaCha20-Poly1305, key rotated every 6 h):
        // the default in-memory cache holds 256 sessions, so with more
        // clients than that a returning one mostly found its session gone
        // and paid a full handshake (a signature more). rustls resumes a
        // session only for the name it was made for.
        let ticketer = rustls::crypto::ring::Ticketer::new()?;
        let build = |suites: Vec<SupportedCipherSuite>, ignore_client_order: bool| {
            let provider = CryptoProvider {
                cipher_suites: suites,
                secure_random: &crate::random::BUFFERED_RANDOM,
                ..rustls::crypto::ring::default_provider()
            };
            let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
            config.ticketer = ticketer.clone();
            config.ignore_client_order = ignore_client_order;
            Ok::<_, crate::Error>(Arc::new(config))
        };
        let defaults = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
        // AES-128-GCM (with SHA-256) before AES-256-GCM (with SHA-384):
        // equally safe, and SHA-256's key schedule costs a handshake less
        // than SHA-384's. Browsers already ask for it first; OpenSSL's
        // clients (curl, wrk, Python) ask for AES-256 first.
        let mut aes128_first: Vec<SupportedCipherSuite> = defaults.to_vec();
        aes128_first.sort_by_key(|suite| !is_aes128(suite.suite()));
        Ok(Self {
            aes128_first: build(aes128_first, true)?,
            client_order: build(defaults.to_vec(), false)?,
        })
    }

    /// The configuration for a client: its own order when the first
    /// suite it offers that we support is ChaCha20 (a device without AES
    /// instructions says so that way), else AES-128-GCM first.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> Arc<ServerConfig> {
        let supported = rustls::crypto::ring::DEFAULT_CIPHER_SUITES;
        let first = hello
            .cipher_suites()
            .iter()
            .find(|offered| supported.iter().any(|s| s.suite() == **offered));
        match first {
            Some(suite) if is_chacha20(*suite) => self.client_order.clone(),
            _ => self.aes128_first.clone(),
        }
    }
}

fn is_aes128(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn is_chacha20(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
    )
}
