//! Pebble, the ACME test CA (Debian package `pebble`), and TLS client
//! helpers for tests that check the certificates Elsinore gets from it.
//! Used by tests/acme.rs and tests/acme_fleet.rs.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::eventually;

/// Orders take a few seconds against Pebble without its validation sleep.
pub const ISSUE_WAIT: Duration = Duration::from_secs(60);

pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Skips (returns `false` with a message) when Pebble is missing.
pub fn pebble_installed() -> bool {
    let ok = installed("pebble") && installed("pebble-challtestsrv");
    if !ok {
        eprintln!(
            "skipping: pebble / pebble-challtestsrv not installed (apt-get install pebble; .ci/run does it)"
        );
    }
    ok
}

pub use super::ports::{free_port, free_udp_port};

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pebble and its DNS server, with Pebble validating on `http_port` and
/// `tls_port` of 127.0.0.1 (Elsinore's listeners).
pub struct Pebble {
    _dns: Killed,
    _ca: Killed,
    pub directory: String,
    pub management: SocketAddr,
    /// The roots of Pebble's own HTTPS (its API), for `acme.ca_roots`.
    pub api_roots: PathBuf,
    pub api_root: CertificateDer<'static>,
}

impl Pebble {
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Self {
        // Pebble's own TLS certificate: Debian ships none.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Pebble API test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let api_roots = dir.join("api-ca.pem");
        std::fs::write(&api_roots, ca.pem()).unwrap();
        std::fs::write(dir.join("api-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("api-key.pem"), key.serialize_pem()).unwrap();

        let (dns_port, dns_management) = (free_udp_port(), free_port());
        let (api_port, management_port) = (free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("api-cert.pem"),
            "privateKey": dir.join("api-key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        let dns = Killed(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let ca = Killed(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                // Validate at once, and never reject a nonce on purpose
                // (Pebble's default rejects 5 % to exercise clients).
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let management = SocketAddr::from(([127, 0, 0, 1], management_port));
        for port in [dns_management, api_port, management_port] {
            eventually(&format!("pebble listening on 127.0.0.1:{port}"), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        Self {
            _dns: dns,
            _ca: ca,
            directory: format!("https://127.0.0.1:{api_port}/dir"),
            management,
            api_roots,
            api_root: ca_der(&ca_pem_of(&dir.join("api-ca.pem"))),
        }
    }

    /// Pebble's issuing root, from its management API.
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let connector = TlsConnector::from(trusting(std::slice::from_ref(&self.api_root)));
        let tcp = TcpStream::connect(self.management).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap();
        ca_der(body)
    }
}

pub fn ca_pem_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

pub fn ca_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A client that trusts only `roots`.
pub fn trusting(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth(),
    )
}

/// Whether a handshake with SNI `name` verifies against `root` alone
/// (the certificate chains to Pebble's root and names `name`).
pub async fn verified(addr: SocketAddr, name: &str, root: &CertificateDer<'static>) -> bool {
    let connector = TlsConnector::from(trusting(std::slice::from_ref(root)));
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(server_name, tcp).await.is_ok()
}

pub async fn until_issued(addr: SocketAddr, name: &str, root: &CertificateDer<'static>) {
    let deadline = Instant::now() + ISSUE_WAIT;
    while !verified(addr, name, root).await {
        assert!(
            Instant::now() < deadline,
            "{name}: no Pebble-issued certificate on {addr} within {ISSUE_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
