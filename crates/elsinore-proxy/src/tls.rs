//! The HTTPS listener: TLS handshakes with the certificate chosen by SNI,
//! then the same HTTP serving as the plain listener.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use elsinore_tls::{
    choose, CertStore, CurrentCerts, ExtraCerts, ServerConfigs, SniResolver, ALPN_ACME_TLS,
};
use rustls::server::{Accepted, Acceptor};
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::StartHandshake;

use crate::conn_info::{ConnInfo, TlsInfo};
use crate::listener_service::ListenerService;
use crate::server::{
    accept_loop, http_builder, listen_port, serve_connection, Listener, ListenerCounts,
    ServeSettings,
};
use elsinore_metrics::ThreadShard;
use elsinore_routes::RouteTable;

/// A client must complete its handshake within this time; a connection
/// that sends nothing is closed after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A fatal `unrecognized_name` alert record (RFC 8446 §6.2), sent in
/// clear before any key exists. rustls itself would answer a missing
/// certificate with `access_denied`.
const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// The TLS side of the HTTPS listener: a rustls configuration whose
/// certificates come from the live route table.
#[derive(Debug, Clone)]
pub struct TlsListener {
    configs: ServerConfigs,
    table: Arc<ArcSwap<RouteTable>>,
    /// ACME's certificates and TLS-ALPN-01 answers, when `acme` is on.
    extra: Option<Arc<dyn ExtraCerts>>,
}

impl TlsListener {
    /// Handshakes choose certificates from whatever `table` holds at the
    /// time (its `certs`).
    pub fn new(table: Arc<ArcSwap<RouteTable>>) -> Result<Self, elsinore_tls::Error> {
        let resolver = SniResolver::new(Arc::new(TableCerts(table.clone())));
        Ok(Self {
            configs: ServerConfigs::new(Arc::new(resolver))?,
            table,
            extra: None,
        })
    }

    /// Like [`TlsListener::new`], also serving `extra`'s certificates
    /// after a host's own `tls/` (see [`elsinore_tls::choose`]) and
    /// answering TLS-ALPN-01 challenges with its challenge certificates.
    pub fn with_extra(
        table: Arc<ArcSwap<RouteTable>>,
        extra: Arc<dyn ExtraCerts>,
    ) -> Result<Self, elsinore_tls::Error> {
        let resolver =
            SniResolver::new(Arc::new(TableCerts(table.clone()))).with_extra(extra.clone());
        Ok(Self {
            configs: ServerConfigs::new(Arc::new(resolver))?,
            table,
            extra: Some(extra),
        })
    }
}

/// The certificates of the current route table.
#[derive(Debug)]
struct TableCerts(Arc<ArcSwap<RouteTable>>);

impl CurrentCerts for TableCerts {
    fn current(&self) -> Arc<CertStore> {
        self.0.load().certs.clone()
    }
}

/// Serves HTTPS on `listener` until `shutdown` resolves, then stops
/// accepting and gives open connections up to `grace`, like
/// [`crate::serve`]. ALPN offers `h2` and `http/1.1`; HTTP/2 clients reach
/// HTTP/1.1 handlers as on the plain listener.
pub async fn serve_tls<S: ListenerService>(
    listener: TcpListener,
    tls: TlsListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
) {
    let counts = ListenerCounts::new(&settings);
    serve_tls_on(listener, tls, service, shutdown, settings, counts, None).await;
}

/// One accept loop of the HTTPS listener: the main runtime's
/// ([`serve_tls`]) or request thread `thread`'s ([`crate::serve_threads`]),
/// counting its connections in `slots` (`limits.max_connections`, shared
/// by every loop of the listener).
pub(crate) async fn serve_tls_on<S: ListenerService>(
    listener: TcpListener,
    tls: TlsListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
    counts: ListenerCounts,
    thread: Option<usize>,
) {
    let builder = Arc::new(http_builder(&settings));
    let tls = Arc::new(tls);
    let idle = settings.timeouts.idle;
    // Over `limits.max_connections` a TLS client is closed before the
    // handshake: answering 503 would cost a handshake per refusal.
    let on_refused = |stream, _| drop(stream);
    let handler_service = service.clone();
    let port = listen_port(&listener);
    let shard = ThreadShard::of(thread);
    let each = Listener {
        name: "https",
        counts,
        thread,
    };
    accept_loop(each, listener, shutdown, settings, service, on_refused, move |stream, peer, watcher, stopping, slot| {
        let (builder, tls, service, port) = (builder.clone(), tls.clone(), handler_service.clone(), port.clone());
        async move {
            // The handshake runs here, in the connection's own task; a
            // shutdown does not wait for it (no request is in flight yet).
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &tls));
            let (stream, info) = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(done)) => done,
                    Ok(Err(err)) => {
                        tracing::debug!(%peer, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                        return;
                    }
                },
                () = stopping.wait() => return,
            };
            let local = if S::LOCAL_ADDR { stream.get_ref().0.local_addr().ok() } else { None };
            let conn = ConnInfo::new(peer, Some(info))
                .on_port(port.as_ref())
                .on_thread(shard)
                .arrived_on(local);
            serve_connection(builder, stream, service, conn, watcher, slot, idle).await;
        }
    })
    .await;
}

/// Why a handshake did not complete (logged at debug level: scanners and
/// impatient clients make these all day).
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("the client closed the connection before its ClientHello")]
    Closed,
    #[error("no certificate for server name {0:?}; sent unrecognized_name")]
    UnknownName(Option<String>),
    #[error("answered an ACME TLS-ALPN-01 validation for {0}")]
    AcmeChallenge(String),
}

/// Reads the ClientHello, picks the certificate for its SNI from the
/// current table, and completes the handshake with it.
async fn handshake(
    stream: TcpStream,
    tls: &TlsListener,
) -> Result<(TlsStream<TcpStream>, TlsInfo), HandshakeError> {
    let (mut stream, accepted) = read_client_hello(stream).await?;
    let sni = accepted
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase);
    if let (Some(extra), Some(name)) = (&tls.extra, &sni) {
        if let Some(challenge) = acme_challenge(&accepted, extra.as_ref(), name).await {
            // The CA's validation connection: the handshake is its whole
            // purpose, no request follows (RFC 8737 section 3).
            let mut stream = StartHandshake::from_parts(accepted, stream)
                .into_stream(challenge)
                .await?;
            let _ = stream.shutdown().await;
            return Err(HandshakeError::AcmeChallenge(name.clone()));
        }
    }
    let chosen = choose(
        &tls.table.load().certs,
        tls.extra.as_deref(),
        sni.as_deref(),
    );
    if let (Some(extra), Some(name)) = (&tls.extra, &sni) {
        // No certificate, or only one that does not cover the name (the
        // default): on-demand issuance may start.
        if chosen.as_ref().is_none_or(|cert| !cert.covers(name)) {
            extra.missing(name);
        }
    }
    let Some(cert) = chosen else {
        let _ = stream.write_all(&UNRECOGNIZED_NAME_ALERT).await;
        let _ = stream.shutdown().await;
        return Err(HandshakeError::UnknownName(sni));
    };
    // rustls resolves again through the same store (SniResolver); a swap in
    // between can only pick a newer certificate for the same name.
    let config = tls.configs.for_hello(&accepted.client_hello());
    let stream = StartHandshake::from_parts(accepted, stream)
        .into_stream(config)
        .await?;
    Ok((stream, TlsInfo { sni, cert }))
}

/// The server configuration answering a TLS-ALPN-01 validation of `name`,
/// when the client offers exactly `acme-tls/1` and a challenge for `name`
/// is pending (in memory, or else where `extra` keeps it).
async fn acme_challenge(
    accepted: &Accepted,
    extra: &dyn ExtraCerts,
    name: &str,
) -> Option<Arc<ServerConfig>> {
    let only_acme = {
        let mut offered = accepted.client_hello().alpn()?;
        offered.next() == Some(ALPN_ACME_TLS) && offered.next().is_none()
    };
    if !only_acme {
        return None;
    }
    let certified = match extra.alpn_challenge(name) {
        Some(certified) => certified,
        None => extra.stored_alpn_challenge(name)?.await?,
    };
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_ACME_TLS.to_vec()];
    Some(Arc::new(config))
}

/// Feeds the socket to a rustls [`Acceptor`] until a whole ClientHello is
/// in. Everything read is handed on with the returned [`Accepted`].
async fn read_client_hello(stream: TcpStream) -> Result<(TcpStream, Accepted), HandshakeError> {
    let mut acceptor = Acceptor::default();
    loop {
        match acceptor.read_tls(&mut TryRead(&stream)) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                stream.readable().await?;
                continue;
            }
            Err(err) => return Err(err.into()),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((stream, accepted)),
            Ok(None) => {}
            Err((err, mut alert)) => {
                let mut bytes = Vec::new();
                let _ = alert.write_all(&mut bytes);
                let mut stream = stream;
                let _ = stream.write_all(&bytes).await;
                return Err(err.into());
            }
        }
    }
}

/// `io::Read` over a non-blocking socket: `WouldBlock` when nothing is
/// buffered.
struct TryRead<'a>(&'a TcpStream);

impl io::Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}
