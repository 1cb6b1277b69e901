//! The HTTPS listener with real rustls handshakes: certificates chosen by
//! SNI, live replacement and refusal, ALPN h2, 421 against domain
//! fronting, redirect_http, expiry reporting and `elsinore dev-cert`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::{AlertDescription, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

// ---- certificates -------------------------------------------------------

/// A test CA; clients that verify trust only it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key as PEM, and the certificate's DER.
#[derive(Clone)]
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Elsinore test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| {})
    }

    fn issue_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Writes `<dir>/cert.pem` (leaf, then the CA) and `<dir>/key.pem`
/// (0600), each through a rename so the server never reads half a file.
fn write_pair(dir: &Path, issued: &Issued, ca: &Ca) {
    std::fs::create_dir_all(dir).unwrap();
    let chain = format!("{}{}", issued.cert_pem, ca.issuer.pem());
    write_file(&dir.join("key.pem"), &issued.key_pem, 0o600);
    write_file(&dir.join("cert.pem"), &chain, 0o644);
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, contents).unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn tls_dir(project: &Path, host: &str) -> PathBuf {
    project.join("hosts").join(host).join("tls")
}

// ---- clients ------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts only `roots`.
fn trusting(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client that accepts any certificate, to look at which one is served
/// (signatures are still checked, so the server must hold the key).
fn inspecting() -> Arc<ClientConfig> {
    common::inspect_tls::accepting_any(&[b"http/1.1"])
}

/// A TLS connection to `addr` with `sni` (an IP address sends no SNI).
async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake did not finish in time")
}

/// The leaf certificate served for `sni`, or the handshake error.
async fn served(addr: SocketAddr, sni: &str) -> Result<CertificateDer<'static>, std::io::Error> {
    let stream = connect(addr, inspecting(), sni).await?;
    Ok(stream.get_ref().1.peer_certificates().unwrap()[0].clone())
}

/// The TLS alert the server refused the handshake with.
fn alert(err: &std::io::Error) -> Option<AlertDescription> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// A keep-alive HTTP/1.1 or HTTP/2 connection over TLS.
enum Https {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Https {
    /// Speaks whatever ALPN chose.
    async fn over(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::H1(sender)
        }
    }

    async fn get(&mut self, host: &str, path: &str) -> Reply {
        let (response, version) = match self {
            Self::H1(sender) => {
                let request = Request::get(path)
                    .header("host", host)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.ready().await.unwrap();
                let response = tokio::time::timeout(WAIT, sender.send_request(request)).await;
                (response, Version::HTTP_11)
            }
            Self::H2(sender) => {
                let request = Request::get(format!("https://{host}{path}"))
                    .version(Version::HTTP_2)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                sender.ready().await.unwrap();
                let response = tokio::time::timeout(WAIT, sender.send_request(request)).await;
                (response, Version::HTTP_2)
            }
        };
        let response = response.expect("no response in time").expect("response");
        assert_eq!(response.version(), version);
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// `GET path` with `Host: host` over a fresh HTTP/1.1 TLS connection
/// opened with `sni`, trusting `roots`.
async fn https_get(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    sni: &str,
    host: &str,
    path: &str,
) -> Reply {
    let stream = connect(addr, trusting(roots, &[b"http/1.1"]), sni)
        .await
        .unwrap_or_else(|err| panic!("handshake for {sni}: {err}"));
    Https::over(stream).await.get(host, path).await
}

// ---- setup --------------------------------------------------------------

/// One project, `alpha`, serving `a.test` over HTTPS with a certificate
/// from its own CA. Fields drop in order: the server before its folder.
struct OneTenant {
    server: Server,
    ca: Ca,
    _ws: Workspace,
}

impl OneTenant {
    fn start() -> Self {
        let ca = Ca::new();
        let ws = Workspace::new();
        let alpha = ws.project("alpha", &["a.test"], &echo_manifest());
        write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
        let server = Server::start(&tls_config(&ws, json!(["alpha"]), json!({})));
        Self {
            server,
            ca,
            _ws: ws,
        }
    }
}

/// A config on port 0 with HTTPS on port 0 and the operator API, plus
/// `extra` keys.
fn tls_config(ws: &Workspace, projects: serde_json::Value, extra: serde_json::Value) -> PathBuf {
    let mut extra = extra;
    extra["tls_listen"] = json!("127.0.0.1:0");
    ws.config_with(projects, extra)
}

// ---- tests --------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_host_certificate_then_the_wildcard_then_the_default() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project(
        "alpha",
        &["a.test", "b.test", "*.w.test", "bare.test"],
        &echo_manifest(),
    );
    let (a, b, w, fallback) = (
        ca.issue(&["a.test"]),
        ca.issue(&["b.test"]),
        ca.issue(&["*.w.test"]),
        ca.issue(&["fallback.test"]),
    );
    write_pair(&tls_dir(&alpha, "a.test"), &a, &ca);
    write_pair(&tls_dir(&alpha, "b.test"), &b, &ca);
    write_pair(&tls_dir(&alpha, "*.w.test"), &w, &ca);
    write_pair(&ws.path().join("default"), &fallback, &ca);
    let server = Server::start(&tls_config(
        &ws,
        json!(["alpha"]),
        json!({"tls": {"default_cert": "default/cert.pem", "default_key": "default/key.pem"}}),
    ));
    let addr = server.https();

    for (sni, want) in [
        ("a.test", &a),
        ("b.test", &b),
        ("x.w.test", &w),
        ("deep.x.w.test", &w),
        // A host folder without tls/, an unknown name, and no SNI at all.
        ("bare.test", &fallback),
        ("unknown.example", &fallback),
        ("127.0.0.1", &fallback),
    ] {
        let got = served(addr, sni)
            .await
            .unwrap_or_else(|err| panic!("handshake for {sni}: {err}"));
        assert!(got == want.der, "SNI {sni} got another certificate");
    }

    // The chain is sent whole: a client trusting only the CA accepts it.
    let reply = https_get(addr, &[ca.der()], "a.test", "a.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-forwarded-proto"), ["https"]);
    assert_eq!(reply.seen("x-elsinore-host"), ["a.test"]);
    let reply = https_get(addr, &[ca.der()], "x.w.test", "x.w.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-elsinore-host"), ["x.w.test"]);

    // Plain HTTP still says http.
    let reply = server.get("a.test", "/").send().await;
    assert_eq!(reply.seen("x-forwarded-proto"), ["http"]);

    // The default certificate is reloaded live like the others.
    let renewed = ca.issue(&["fallback.test", "other.test"]);
    write_pair(&ws.path().join("default"), &renewed, &ca);
    until("the renewed default is served", || async {
        served(addr, "unknown.example").await.unwrap() == renewed.der
    })
    .await;
    server.logs.wait_for("~ certificate (default) replaced");
    assert!(served(addr, "a.test").await.unwrap() == a.der);
}

#[tokio::test]
async fn unknown_sni_without_a_default_is_refused_with_unrecognized_name() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test", "bare.test"], &echo_manifest());
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    let server = Server::start(&tls_config(&ws, json!(["alpha"]), json!({})));
    let addr = server.https();

    for sni in ["unknown.example", "bare.test", "127.0.0.1"] {
        let err = served(addr, sni)
            .await
            .expect_err("a handshake without a certificate must fail");
        assert_eq!(
            alert(&err),
            Some(AlertDescription::UnrecognisedName),
            "SNI {sni}: {err}"
        );
    }
    // The listener is unharmed.
    assert!(served(addr, "a.test").await.is_ok());
}

// Multi-threaded: HTTP/2 connections still open when the server is
// stopped must answer its GOAWAY while the test thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_and_reaches_the_http1_handler() {
    let OneTenant { ca, server, .. } = &OneTenant::start();
    let addr = server.https();

    let stream = connect(addr, trusting(&[ca.der()], &[b"h2", b"http/1.1"]), "a.test")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = Https::over(stream).await;
    for path in ["/first?x=1", "/second"] {
        let reply = h2.get("a.test", path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["path"], path);
        assert_eq!(reply.seen("x-forwarded-proto"), ["https"]);
        assert_eq!(reply.seen("x-elsinore-project"), ["alpha"]);
    }

    // A client offering only HTTP/1.1 gets it.
    let stream = connect(addr, trusting(&[ca.der()], &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        Https::over(stream).await.get("a.test", "/").await.status,
        StatusCode::OK
    );
}

/// Over TLS, HTTP/2 is chosen by ALPN only (RFC 9113 §3.3; nginx and Go
/// do the same): a client that offers no ALPN is served HTTP/1.1, even
/// when its first bytes are the HTTP/2 preface.
#[tokio::test]
async fn without_alpn_tls_is_http1_even_after_the_http2_preface() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let OneTenant { ca, server, .. } = &OneTenant::start();
    let addr = server.https();

    let stream = connect(addr, trusting(&[ca.der()], &[]), "a.test")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let reply = Https::over(stream).await.get("a.test", "/plain").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/plain");

    let mut stream = connect(addr, trusting(&[ca.der()], &[]), "a.test")
        .await
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed in time")
        .ok();
    // hyper's HTTP/1.1 server closes on a preface without a word; an
    // HTTP/2 server would have sent its SETTINGS frame.
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 "),
        "HTTP/2 frames where HTTP/1.1 was due: {text:?}"
    );
}

// Multi-threaded: HTTP/2 connections still open when the server is
// stopped must answer its GOAWAY while the test thread waits for the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_covered_by_the_sni_certificate_gets_421() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test", "*.w.test"], &echo_manifest());
    let beta = ws.project("beta", &["b.test"], &echo_manifest());
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    write_pair(&tls_dir(&alpha, "*.w.test"), &ca.issue(&["*.w.test"]), &ca);
    write_pair(&tls_dir(&beta, "b.test"), &ca.issue(&["b.test"]), &ca);
    let server = Server::start(&tls_config(&ws, json!(["alpha", "beta"]), json!({})));
    let addr = server.https();

    // A connection opened for alpha's name cannot reach beta's tenant.
    let stream = connect(addr, trusting(&[ca.der()], &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    let mut conn = Https::over(stream).await;
    let reply = conn.get("b.test", "/").await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
    let body = reply.json();
    assert_eq!(body["error"], "misdirected request");
    assert_eq!(body["host"], "b.test");
    assert_eq!(body["sni"], "a.test");
    assert!(reply.header("x-request-id").is_some());
    // The same connection still serves its own host.
    let reply = conn.get("a.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);

    // Over HTTP/2 the :authority is checked the same way.
    let stream = connect(addr, trusting(&[ca.der()], &[b"h2"]), "a.test")
        .await
        .unwrap();
    let mut h2 = Https::over(stream).await;
    assert_eq!(
        h2.get("b.test", "/").await.status,
        StatusCode::MISDIRECTED_REQUEST
    );

    // A wildcard certificate covers its sibling names (one label).
    let reply = https_get(addr, &[ca.der()], "x.w.test", "y.w.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-elsinore-host"), ["y.w.test"]);
    let reply = https_get(addr, &[ca.der()], "x.w.test", "a.test", "/").await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn https_is_answered_from_every_request_thread_and_from_the_main_runtime() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test"], &echo_manifest());
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    let config = tls_config(&ws, json!(["alpha"]), json!({}));
    // Four request threads, each accepting on its own socket of the
    // HTTPS address (the kernel picks one per connection by a hash of its
    // ports, so 32 connections reach every one of them with near
    // certainty); then none, the main runtime accepting on one socket.
    for threads in ["4", "0"] {
        let server = Server::start_with_env(&config, &[("ELSINORE_HTTP_THREADS", threads)]);
        let addr = server.https();
        for n in 0..32 {
            let reply = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                https_get(addr, &[ca.der()], "a.test", "a.test", &format!("/{n}")),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("HTTPS connection {n} with {threads} request threads got no answer")
            });
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "connection {n}, {threads} threads"
            );
            assert_eq!(reply.seen("x-forwarded-proto"), ["https"]);
        }
        // Each HTTPS accept loop says when it stops: one per request
        // thread (`thread=N`), or the main runtime's (no thread).
        let mut server = server;
        server.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(server.wait_exit().success());
        let stopped: Vec<String> = server
            .logs
            .all()
            .into_iter()
            .filter(|line| line.contains("stopped accepting") && line.contains("https"))
            .collect();
        let expected: Vec<String> = match threads {
            "4" => (0..4).map(|n| format!("thread={n}")).collect(),
            _ => Vec::new(),
        };
        assert_eq!(stopped.len(), expected.len().max(1), "{stopped:#?}");
        for thread in &expected {
            assert!(
                stopped.iter().any(|line| line.contains(thread.as_str())),
                "no HTTPS accept loop on {thread}: {stopped:#?}"
            );
        }
        if expected.is_empty() {
            assert!(!stopped[0].contains("thread="), "{stopped:#?}");
        }
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_live_and_open_connections_keep_working() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test", "new.test"], &echo_manifest());
    let (old, new) = (ca.issue(&["a.test"]), ca.issue(&["a.test", "www.a.test"]));
    write_pair(&tls_dir(&alpha, "a.test"), &old, &ca);
    let server = Server::start(&tls_config(&ws, json!(["alpha"]), json!({})));
    let addr = server.https();
    assert!(served(addr, "a.test").await.unwrap() == old.der);

    let stream = connect(addr, trusting(&[ca.der()], &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    let mut open = Https::over(stream).await;
    assert_eq!(open.get("a.test", "/").await.status, StatusCode::OK);

    write_pair(&tls_dir(&alpha, "a.test"), &new, &ca);
    until("the new certificate is served", || async {
        served(addr, "a.test").await.unwrap() == new.der
    })
    .await;
    server.logs.wait_for("~ certificate a.test replaced");
    // The connection opened before the swap was not dropped.
    assert_eq!(open.get("a.test", "/").await.status, StatusCode::OK);

    // Added: a host folder gains tls/ and is served; removed: refused again.
    let added = ca.issue(&["new.test"]);
    assert!(served(addr, "new.test").await.is_err());
    write_pair(&tls_dir(&alpha, "new.test"), &added, &ca);
    until("new.test gets its certificate", || async {
        served(addr, "new.test")
            .await
            .is_ok_and(|der| der == added.der)
    })
    .await;
    server.logs.wait_for("+ certificate new.test");
    std::fs::remove_dir_all(tls_dir(&alpha, "new.test")).unwrap();
    until("new.test has no certificate", || async {
        served(addr, "new.test").await.is_err()
    })
    .await;
    server.logs.wait_for("- certificate new.test");
    assert_eq!(open.get("a.test", "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn garbage_and_a_mismatched_key_keep_the_last_good_certificate() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test"], &echo_manifest());
    let dir = tls_dir(&alpha, "a.test");
    let good = ca.issue(&["a.test"]);
    write_pair(&dir, &good, &ca);
    let server = Server::start(&tls_config(&ws, json!(["alpha"]), json!({})));
    let addr = server.https();

    // Garbage certificate: refused, logged with the file, last good kept.
    write_file(&dir.join("cert.pem"), "this is not PEM\n", 0o644);
    server
        .logs
        .wait_for("cert.pem: no certificate found (expected PEM");
    let line = server
        .logs
        .wait_for("keeping the previous certificate for a.test");
    assert!(line.contains("ERROR"), "{line}");
    assert!(served(addr, "a.test").await.unwrap() == good.der);
    let routes = server.routes().await;
    let entry = &routes["certificates"]["a.test"];
    assert_eq!(entry["serving"], true);
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("no certificate found")),
        "{entry}"
    );
    assert_eq!(routes["last_reload"]["ok"], false);

    // A valid certificate with another certificate's key: refused too.
    let other = ca.issue(&["a.test"]);
    let mismatched = Issued {
        key_pem: ca.issue(&["a.test"]).key_pem,
        ..other.clone()
    };
    write_pair(&dir, &mismatched, &ca);
    server
        .logs
        .wait_for("key.pem: this private key does not match the certificate in");
    assert!(served(addr, "a.test").await.unwrap() == good.der);
    let https = https_get(addr, &[ca.der()], "a.test", "a.test", "/").await;
    assert_eq!(https.status, StatusCode::OK);

    // Fixed: the new pair serves and the error is gone.
    write_pair(&dir, &other, &ca);
    until("the fixed certificate is served", || async {
        served(addr, "a.test").await.unwrap() == other.der
    })
    .await;
    let routes = server.routes().await;
    assert_eq!(routes["certificates"]["a.test"]["error"], json!(null));
    assert_eq!(routes["last_reload"]["ok"], true);
}

#[tokio::test]
async fn redirect_http_sends_hosts_with_a_certificate_to_https() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test", "plain.test"], &echo_manifest());
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    let config = tls_config(&ws, json!(["alpha"]), json!({"redirect_http": true}));
    let server = Server::start(&config);
    let port = server.https().port();

    let reply = server
        .get("A.test:8080", "/path/x?q=1&r=%20")
        .method("POST")
        .body("kept by 308")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        reply.header("location"),
        Some(format!("https://a.test:{port}/path/x?q=1&r=%20").as_str())
    );
    assert!(reply.body.is_empty());

    // ACME HTTP-01 challenges stay on plain HTTP.
    let reply = server
        .get("a.test", "/.well-known/acme-challenge/token123")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/.well-known/acme-challenge/token123");

    // A host without a certificate is served on plain HTTP as before.
    let reply = server.get("plain.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);

    // redirect_http follows config.json live.
    tls_config(&ws, json!(["alpha"]), json!({"redirect_http": false}));
    until("redirects stop", || async {
        server.get("a.test", "/").send().await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn expiry_and_key_permissions_are_reported() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["soon.test", "later.test"], &echo_manifest());
    // Five days and an hour left: "expires in 5 days".
    let soon = ca.issue_with(&["soon.test"], |params| {
        params.not_after =
            time::OffsetDateTime::now_utc() + time::Duration::days(5) + time::Duration::hours(1);
    });
    write_pair(&tls_dir(&alpha, "soon.test"), &soon, &ca);
    write_pair(
        &tls_dir(&alpha, "later.test"),
        &ca.issue(&["later.test"]),
        &ca,
    );
    std::fs::set_permissions(
        tls_dir(&alpha, "later.test").join("key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let server = Server::start(&tls_config(&ws, json!(["alpha"]), json!({})));

    let line = server
        .logs
        .wait_for("certificate for soon.test expires in 5 days");
    assert!(line.contains("WARN"), "{line}");
    let line = server
        .logs
        .wait_for("private key is accessible to group or others");
    assert!(
        line.contains("later.test/tls/key.pem") && line.contains("mode 0644"),
        "{line}"
    );
    assert!(
        !server
            .logs
            .all()
            .iter()
            .any(|l| l.contains("certificate for later.test expires")),
        "a certificate valid for years is not warned about"
    );

    let routes = server.routes().await;
    let soon_entry = &routes["certificates"]["soon.test"];
    assert_eq!(soon_entry["names"], json!(["soon.test"]));
    assert_eq!(soon_entry["days_left"], 5);
    assert_eq!(soon_entry["serving"], true);
    assert!(soon_entry["not_after"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(
        soon_entry["cert"]
            .as_str()
            .is_some_and(|p| p.ends_with("hosts/soon.test/tls/cert.pem")),
        "{soon_entry}"
    );

    // tls_listen needs a restart, and says so.
    ws.config_with(json!(["alpha"]), json!({"tls_listen": "127.0.0.1:1"}));
    server.logs.wait_for(
        "config.json `tls_listen` changed to 127.0.0.1:1; it takes effect after a restart",
    );
}

#[tokio::test]
async fn dev_cert_writes_a_certificate_that_a_client_trusting_it_can_use() {
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["dev.test"], &echo_manifest());
    let config = tls_config(&ws, json!(["alpha"]), json!({}));
    let server = Server::start(&config);
    let addr = server.https();

    let dev_cert = |host: &str, force: bool| {
        let mut command = Command::new(binary());
        command
            .args(["dev-cert", host, "--project", "alpha", "--config"])
            .arg(&config);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    let output = dev_cert("dev.test", false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tls_dir(&alpha, "dev.test");
    let cert_path = dir.join("cert.pem");
    assert!(
        stdout.contains(&format!("wrote {}", cert_path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("curl --cacert {}", cert_path.display())),
        "{stdout}"
    );
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The running server picks it up; a client trusting that file accepts it.
    let trusted = CertificateDer::from_pem_file(&cert_path).unwrap();
    until("dev.test is served with the new certificate", || async {
        served(addr, "dev.test").await.is_ok()
    })
    .await;
    let reply = https_get(
        addr,
        std::slice::from_ref(&trusted),
        "dev.test",
        "dev.test",
        "/",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-forwarded-proto"), ["https"]);

    // No silent overwrite; --force replaces it.
    let output = dev_cert("dev.test", false);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already exists; pass --force"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dev_cert("dev.test", true).status.success());
    let replaced = CertificateDer::from_pem_file(&cert_path).unwrap();
    assert!(replaced != trusted);
    until("the replaced certificate is served", || async {
        served(addr, "dev.test")
            .await
            .is_ok_and(|der| der == replaced)
    })
    .await;

    // A wildcard host folder is created with its certificate.
    let output = dev_cert("*.wild.test", false);
    assert!(output.status.success());
    assert!(tls_dir(&alpha, "*.wild.test").join("cert.pem").exists());
    until("the wildcard is served", || async {
        served(addr, "x.wild.test").await.is_ok()
    })
    .await;

    // Unknown project: a clear error.
    let output = Command::new(binary())
        .args(["dev-cert", "x.test", "--project", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no project named \"nope\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// Multi-threaded: the slow request runs while the test thread blocks on
// the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_nobody_and_tls_requests_finish_across_sigterm() {
    let OneTenant {
        ca,
        mut server,
        _ws,
    } = OneTenant::start();
    let addr = server.https();

    // Connected, but never says hello.
    let _stalled = TcpStream::connect(addr).await.unwrap();
    let reply = https_get(addr, &[ca.der()], "a.test", "a.test", "/").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    let stream = connect(addr, trusting(&[ca.der()], &[b"http/1.1"]), "a.test")
        .await
        .unwrap();
    let Https::H1(mut sender) = Https::over(stream).await else {
        panic!("asked for HTTP/1.1 only");
    };
    let request = Request::get("/slow?ms=800")
        .header("host", "a.test")
        .header("x-request-id", "tls-in-flight")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let slow = tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        status
    });
    server.logs.wait_for("slow request started: tls-in-flight");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::OK,
        "in-flight request was cut"
    );
    assert!(server.wait_exit().success());
}

#[test]
fn check_lists_certificates_and_what_would_be_refused() {
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test", "broken.test"], &echo_manifest());
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    write_pair(
        &tls_dir(&alpha, "broken.test"),
        &ca.issue(&["broken.test"]),
        &ca,
    );
    write_file(
        &tls_dir(&alpha, "broken.test").join("key.pem"),
        &ca.issue(&["broken.test"]).key_pem,
        0o600,
    );
    let config = tls_config(&ws, json!(["alpha"]), json!({}));
    let output = Command::new(binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("https:    https://127.0.0.1:0"), "{stdout}");
    assert!(
        stdout.contains("certificates (1):\n  a.test: a.test (expires "),
        "{stdout}"
    );
    assert!(
        stdout.contains("certificate broken.test: ")
            && stdout.contains("does not match the certificate"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_host_folder_spelled_in_capitals_serves_its_certificate() {
    // Host names are case-insensitive and the folder keeps the operator's
    // spelling: hosts/Blog.Test/ is the host blog.test, and its tls/ is
    // read from that folder.
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["Blog.Test"], &echo_manifest());
    let issued = ca.issue(&["blog.test"]);
    write_pair(&tls_dir(&alpha, "Blog.Test"), &issued, &ca);
    let config = tls_config(&ws, json!(["alpha"]), json!({}));

    let output = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("certificates (1):\n  blog.test: blog.test (expires "),
        "{stdout}"
    );

    let server = Server::start(&config);
    let addr = server.https();
    let got = served(addr, "blog.test")
        .await
        .expect("handshake for blog.test");
    assert!(got == issued.der, "blog.test got another certificate");
    let reply = https_get(addr, &[ca.der()], "blog.test", "Blog.Test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-elsinore-host"), ["blog.test"]);

    // Replaced in place, through the same folder: served live.
    let renewed = ca.issue(&["blog.test", "www.blog.test"]);
    write_pair(&tls_dir(&alpha, "Blog.Test"), &renewed, &ca);
    until("the renewed certificate is served", || async {
        served(addr, "blog.test").await.unwrap() == renewed.der
    })
    .await;

    // dev-cert writes into the folder that exists, not a second one.
    let before = std::fs::read(tls_dir(&alpha, "Blog.Test").join("cert.pem")).unwrap();
    let output = run_cli(
        &["dev-cert", "blog.test", "--project", "alpha", "--force"],
        &config,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = std::fs::read(tls_dir(&alpha, "Blog.Test").join("cert.pem")).unwrap();
    assert!(
        before != after,
        "dev-cert did not replace hosts/Blog.Test/tls/cert.pem"
    );
    assert!(
        !alpha.join("hosts").join("blog.test").exists(),
        "dev-cert made a second folder for the host"
    );
    until("the dev certificate is served", || async {
        served(addr, "blog.test").await.unwrap() != renewed.der
    })
    .await;
}

/// A client sending an IP address as SNI (wrk, some HTTP libraries) made
/// rustls log a WARN line per handshake: log volume at the client's choice.
#[test]
fn an_ip_address_sent_as_sni_logs_nothing() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl command to send an IP address as SNI");
        return;
    }
    let OneTenant {
        mut server, _ws, ..
    } = OneTenant::start();
    let addr = server.https();
    for _ in 0..5 {
        // rustls' own client never sends an IP as SNI; openssl does when told.
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client runs");
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("CONNECTED"),
            "openssl did not reach the server: {said}"
        );
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let noisy: Vec<String> = server
        .logs
        .all()
        .into_iter()
        .filter(|line| line.contains("SNI"))
        .collect();
    assert!(noisy.is_empty(), "a log line per handshake: {noisy:?}");
}

/// A client trusting `ca` whose ring provider offers `suites` in that
/// order (TLS 1.3 only, as the choice is about TLS 1.3 suites).
fn offering(ca: &Ca, suites: &[rustls::SupportedCipherSuite]) -> Arc<ClientConfig> {
    let provider = CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let mut store = RootCertStore::empty();
    store.add(ca.der()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn aes_128_is_chosen_unless_the_client_puts_chacha20_first() {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    use rustls::CipherSuite;
    let OneTenant { ca, server, .. } = &OneTenant::start();
    let addr = server.https();

    for (offered, want) in [
        // OpenSSL's order (curl, wrk, Python): AES-256 first.
        (
            [
                TLS13_AES_256_GCM_SHA384,
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS13_AES_128_GCM_SHA256,
            ],
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        // A device without AES instructions asks for ChaCha20 first.
        (
            [
                TLS13_CHACHA20_POLY1305_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS13_AES_128_GCM_SHA256,
            ],
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let stream = connect(addr, offering(ca, &offered), "a.test")
            .await
            .unwrap();
        let chosen = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite();
        assert_eq!(chosen, want, "offered {:?}", offered.map(|s| s.suite()));
        assert_eq!(
            Https::over(stream).await.get("a.test", "/").await.status,
            StatusCode::OK
        );
    }
    // A client offering AES-256 only still gets it.
    let stream = connect(addr, offering(ca, &[TLS13_AES_256_GCM_SHA384]), "a.test")
        .await
        .unwrap();
    assert_eq!(
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite(),
        CipherSuite::TLS13_AES_256_GCM_SHA384
    );
}

#[tokio::test]
async fn a_returning_client_resumes_its_session_after_hundreds_of_others() {
    use rustls::HandshakeKind;
    let OneTenant { ca, server, .. } = &OneTenant::start();
    let addr = server.https();

    // One request, so that the session tickets sent after the handshake
    // are read and kept by the client's config.
    async fn once(addr: SocketAddr, config: Arc<ClientConfig>) -> Option<HandshakeKind> {
        let stream = connect(addr, config, "a.test").await.unwrap();
        let kind = stream.get_ref().1.handshake_kind();
        assert_eq!(
            Https::over(stream).await.get("a.test", "/").await.status,
            StatusCode::OK
        );
        kind
    }
    let returning = trusting(&[ca.der()], &[b"http/1.1"]);
    assert_eq!(
        once(addr, returning.clone()).await,
        Some(HandshakeKind::Full)
    );
    assert_eq!(
        once(addr, returning.clone()).await,
        Some(HandshakeKind::Resumed),
        "a second connection right away is not resumed"
    );
    // Each other client is a config of its own (its own session store).
    // A server keeping sessions in a 256-entry cache has forgotten the
    // returning client's by the end.
    for _ in 0..300 {
        once(addr, trusting(&[ca.der()], &[b"http/1.1"])).await;
    }
    assert_eq!(
        once(addr, returning).await,
        Some(HandshakeKind::Resumed),
        "the returning client's session was forgotten after 300 other clients"
    );
}

/// A client session store that offers whatever TLS 1.3 ticket it holds
/// for any server name: what an attacker replaying one tenant's ticket
/// in a handshake for another tenant's name does.
#[derive(Debug, Default)]
struct TicketForAnyName(std::sync::Mutex<Vec<rustls::client::Tls13ClientSessionValue>>);

impl rustls::client::ClientSessionStore for TicketForAnyName {
    fn set_kx_hint(&self, _: ServerName<'static>, _: rustls::NamedGroup) {}
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }
    fn set_tls12_session(
        &self,
        _: ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {}
    fn insert_tls13_ticket(
        &self,
        _: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.0.lock().unwrap().push(value);
    }
    fn take_tls13_ticket(
        &self,
        _: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.0.lock().unwrap().pop()
    }
}

#[tokio::test]
async fn one_tenants_session_ticket_does_not_resume_a_handshake_for_another() {
    use rustls::HandshakeKind;
    let ca = Ca::new();
    let ws = Workspace::new();
    let alpha = ws.project("alpha", &["a.test"], &echo_manifest());
    let beta = ws.project("beta", &["b.test"], &echo_manifest());
    let b_cert = ca.issue(&["b.test"]);
    write_pair(&tls_dir(&alpha, "a.test"), &ca.issue(&["a.test"]), &ca);
    write_pair(&tls_dir(&beta, "b.test"), &b_cert, &ca);
    let server = Server::start(&tls_config(&ws, json!(["alpha", "beta"]), json!({})));
    let addr = server.https();

    let mut config = (*trusting(&[ca.der()], &[b"http/1.1"])).clone();
    config.resumption = rustls::client::Resumption::store(Arc::new(TicketForAnyName::default()));
    let config = Arc::new(config);
    async fn once(
        addr: SocketAddr,
        config: &Arc<ClientConfig>,
        name: &str,
    ) -> (Option<HandshakeKind>, CertificateDer<'static>) {
        let stream = connect(addr, config.clone(), name).await.unwrap();
        let kind = stream.get_ref().1.handshake_kind();
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let reply = Https::over(stream).await.get(name, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.seen("x-elsinore-host"), [name]);
        (kind, leaf)
    }
    assert_eq!(
        once(addr, &config, "a.test").await.0,
        Some(HandshakeKind::Full)
    );
    // The store does offer its tickets: a.test resumes with one.
    assert_eq!(
        once(addr, &config, "a.test").await.0,
        Some(HandshakeKind::Resumed)
    );
    // a.test's ticket offered for b.test: a full handshake with b's own
    // certificate, not a resumed a.test session.
    let (kind, leaf) = once(addr, &config, "b.test").await;
    assert_eq!(
        kind,
        Some(HandshakeKind::Full),
        "a.test's ticket resumed a b.test handshake"
    );
    assert_eq!(leaf, b_cert.der);
}
