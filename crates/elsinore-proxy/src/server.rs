//! The accept loop, connection serving, connection limits and graceful
//! shutdown, shared by every listener: the public plain-HTTP and HTTPS
//! listeners (serving the [`Proxy`]) and the operator listener; what each
//! serves is a [`ListenerService`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use elsinore_config::{Config, Limits, Timeouts};
use elsinore_metrics::{RequestThreads, ThreadShard};
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::address_limit::AddressLimit;
use crate::conn_info::ConnInfo;
use crate::connection::{Activity, ConnectionTimer, Connections, Fired, Tracked, Watcher};
use crate::error::ProxyError;
use crate::listen::ThreadListeners;
use crate::listener_service::ListenerService;
use crate::service::ConnectionSlot;
use crate::tls::{self, TlsListener};
#[cfg(doc)]
use crate::Proxy;

/// Connections over `limits.max_connections` being answered 503 at the
/// same time at most; past that they are closed without an answer, so a
/// flood costs nothing but the accept.
const MAX_REFUSING: usize = 64;
/// `SETTINGS_MAX_CONCURRENT_STREAMS` on HTTP/2 connections: one client
/// connection cannot have more requests in flight than this (hyper's
/// default is 200; nginx's `http2_max_concurrent_streams` is 128).
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// An over-the-limit client gets this long to send its request before the
/// connection is closed without an answer.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a drain waits for the first request of a connection accepted
/// just before it began (or during it, from a queue handed to an upgraded
/// server): its client may be sending that request now, and closing the
/// socket with it unread resets the connection. Connections that have
/// asked something before close as soon as they are idle.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// How a listener treats clients, and how many request threads serve
/// the public listeners.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// How long shutdown waits for open requests and upgraded connections.
    pub grace: Duration,
    /// `limits` in config.json.
    pub limits: Limits,
    /// `timeouts` in config.json.
    pub timeouts: Timeouts,
    /// How many request threads [`serve_threads`] starts; what the
    /// per-thread state is split by (see [`crate::Proxy::with_request_threads`]
    /// and `Metrics::with_request_threads`), so both are made from this one
    /// value.
    pub threads: RequestThreads,
}

impl ServeSettings {
    /// `shutdown_grace`, `limits` and `timeouts` from `config`; no request
    /// threads.
    pub fn from_config(config: &Config) -> Self {
        Self {
            grace: config.startup.shutdown_grace,
            limits: config.startup.limits,
            timeouts: config.startup.timeouts,
            threads: RequestThreads::default(),
        }
    }

    /// Default limits and timeouts with this grace period.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            threads: RequestThreads::default(),
        }
    }

    /// The same settings, served by `count` request threads.
    #[must_use]
    pub fn with_request_threads(mut self, count: usize) -> Self {
        self.threads = RequestThreads::new(count);
        self
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// gives open connections up to `grace` to finish their requests. Default
/// limits and timeouts; see [`serve_with`].
pub async fn serve<S: ListenerService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    serve_with(
        listener,
        service,
        shutdown,
        ServeSettings::with_grace(grace),
    )
    .await;
}

/// Serves plain HTTP on `listener` with `settings` until `shutdown`
/// resolves, then stops accepting and gives open connections (and
/// WebSockets) up to `settings.grace` to finish before closing them. The
/// operator listener is served this way too, with its own service.
pub async fn serve_with<S: ListenerService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
) {
    let shared = Shared::new(&settings);
    serve_plain(listener, service, shutdown, settings, &shared, None).await;
}

/// The HTTPS listener's part in [`serve_threads`]: its sockets, one per
/// request thread, and its TLS configuration.
#[derive(Debug)]
pub struct TlsThreads {
    /// Bound to `tls_listen`.
    pub listeners: ThreadListeners,
    /// Certificates chosen by SNI from the live table.
    pub tls: TlsListener,
}

/// One request thread's HTTPS socket, with what every thread shares.
struct TlsShare {
    socket: std::net::TcpListener,
    tls: TlsListener,
    /// The HTTPS listener's `limits.max_connections` and
    /// `max_connections_per_ip` (its own, as on the main runtime).
    counts: ListenerCounts,
}

/// Serves plain HTTP on `listeners` like [`serve_with`], and HTTPS on
/// `tls` if given like [`crate::serve_tls`], from `settings.threads`
/// request threads: each runs its own single-threaded runtime and accepts
/// on its own sockets (see [`ThreadListeners`]), so a client connection,
/// its requests and the handler connections they use (pooled per thread:
/// each connection's [`ConnInfo`] says which thread serves it) stay on
/// one thread: no task moves between threads and no request wakes another
/// thread. `shutdown` is
/// called once per thread and listener; `limits.max_connections` holds
/// for all threads of a listener together. Returns when every thread is
/// done (each gives its connections `settings.grace`, as [`serve_with`]
/// does). If no thread can be started, serves from the calling runtime
/// instead.
pub async fn serve_threads<S, F, Fut>(
    listeners: ThreadListeners,
    tls: Option<TlsThreads>,
    proxy: Arc<S>,
    shutdown: F,
    settings: ServeSettings,
) where
    S: ListenerService,
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let threads = settings.threads.count();
    let addr = listeners.local_addr();
    let shared = Shared::new(&settings);
    let tls_counts = ListenerCounts::new(&settings);
    // For the fallback below, once the sockets are gone.
    let tls_again = tls
        .as_ref()
        .map(|tls| (tls.listeners.local_addr(), tls.tls.clone()));
    let sockets = listeners.into_per_thread(threads).and_then(|plain| {
        let https = tls
            .map(|TlsThreads { listeners, tls }| {
                listeners
                    .into_per_thread(threads)
                    .map(|sockets| (sockets, tls))
            })
            .transpose()?;
        Ok((plain, https))
    });
    let mut done = Vec::new();
    match sockets {
        Ok((plain, https)) => {
            let mut https = https.map(|(sockets, tls)| {
                let counts = tls_counts.clone();
                sockets.into_iter().map(move |socket| TlsShare {
                    socket,
                    tls: tls.clone(),
                    counts: counts.clone(),
                })
            });
            for (index, socket) in plain.into_iter().enumerate() {
                let https = https
                    .as_mut()
                    .and_then(Iterator::next)
                    .map(|share| (share, shutdown()));
                // Sockets whose thread did not start are closed with it:
                // their share of the connections goes to the others.
                match spawn_request_thread(
                    socket,
                    https,
                    &proxy,
                    shutdown(),
                    settings,
                    &shared,
                    index,
                ) {
                    Ok(finished) => done.push(finished),
                    Err(err) => {
                        tracing::error!(error = %err, thread = index, "cannot start a request thread");
                    }
                }
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot set up the request threads' sockets"),
    }
    if done.is_empty() {
        tracing::warn!("serving from the main runtime");
        // Every socket of the groups is closed by now: the addresses are
        // free.
        let https = async {
            let Some((tls_addr, tls)) = tls_again else {
                return;
            };
            match TcpListener::bind(tls_addr).await {
                Ok(listener) => {
                    let proxy = proxy.clone();
                    tls::serve_tls_on(listener, tls, proxy, shutdown(), settings, tls_counts, None)
                        .await;
                }
                Err(err) => tracing::error!(error = %err, addr = %tls_addr, "cannot listen again"),
            }
        };
        let plain = async {
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    serve_plain(listener, proxy.clone(), shutdown(), settings, &shared, None).await;
                }
                Err(err) => tracing::error!(error = %err, %addr, "cannot listen again"),
            }
        };
        tokio::join!(plain, https);
        return;
    }
    for (index, finished) in done.into_iter().enumerate() {
        if finished.await.is_err() {
            tracing::error!(thread = index, "a request thread ended abnormally");
        }
    }
}

/// Starts request thread `index` accepting on `socket`, and on the HTTPS
/// socket of `tls` if given (stopping at its own shutdown future); the
/// receiver resolves when it is done.
fn spawn_request_thread<S, Fut>(
    socket: std::net::TcpListener,
    tls: Option<(TlsShare, Fut)>,
    proxy: &Arc<S>,
    shutdown: Fut,
    settings: ServeSettings,
    shared: &Shared,
    index: usize,
) -> io::Result<oneshot::Receiver<()>>
where
    S: ListenerService,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (proxy, shared) = (proxy.clone(), shared.clone());
    let (finished, finished_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("elsinore-http-{index}"))
        .spawn(move || {
            // This thread's index reaches its requests through the accept
            // loops below (`thread`), which put it in each connection's
            // info: nothing is set on the thread itself.
            runtime.block_on(async move {
                let https = async {
                    let Some((share, tls_shutdown)) = tls else {
                        return;
                    };
                    // Registered with this thread's own reactor.
                    match TcpListener::from_std(share.socket) {
                        Ok(listener) => {
                            let thread = Some(index);
                            tls::serve_tls_on(listener, share.tls, proxy.clone(), tls_shutdown, settings, share.counts, thread)
                                .await;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, thread = index, "request thread cannot accept HTTPS");
                        }
                    }
                };
                let plain = async {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            serve_plain(listener, proxy.clone(), shutdown, settings, &shared, Some(index))
                                .await;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, thread = index, "request thread cannot accept");
                        }
                    }
                };
                tokio::join!(plain, https);
            });
            // Dropping the runtime ends whatever the grace period left.
            drop(runtime);
            let _ = finished.send(());
        })?;
    Ok(finished_rx)
}

/// What every accept loop of one listener shares.
#[derive(Debug, Clone)]
struct Shared {
    /// `limits.max_connections` and `max_connections_per_ip`.
    counts: ListenerCounts,
    /// Connections being answered 503, at most [`MAX_REFUSING`].
    refusals: Arc<Semaphore>,
}

impl Shared {
    fn new(settings: &ServeSettings) -> Self {
        Self {
            counts: ListenerCounts::new(settings),
            refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
        }
    }
}

/// The open connections of one listener, counted against its limits; every
/// accept loop of the listener shares them.
#[derive(Debug, Clone)]
pub(crate) struct ListenerCounts {
    /// `limits.max_connections`.
    pub(crate) slots: Arc<Semaphore>,
    /// `limits.max_connections_per_ip`.
    pub(crate) per_address: Arc<AddressLimit>,
}

impl ListenerCounts {
    pub(crate) fn new(settings: &ServeSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.limits.max_connections)),
            per_address: AddressLimit::new(settings.limits.max_connections_per_ip),
        }
    }
}

/// One accept loop of a plain-HTTP listener.
async fn serve_plain<S: ListenerService>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
    shared: &Shared,
    thread: Option<usize>,
) {
    let builder = Arc::new(http_builder(&settings));
    let refusing = Arc::new(refusing_builder());
    let refusals = shared.refusals.clone();
    let limit = settings.limits.max_connections;
    let idle = settings.timeouts.idle;
    let on_refused = {
        let service = service.clone();
        move |stream: TcpStream, why: Refused| match refusals.clone().try_acquire_owned() {
            Ok(refusal) => {
                let error = match why {
                    Refused::Full => ProxyError::TooManyConnections { limit },
                    Refused::Address { limit } => {
                        ProxyError::TooManyConnectionsFromAddress { limit }
                    }
                };
                refuse(&refusing, stream, service.clone(), error, refusal);
            }
            Err(_) => drop(stream),
        }
    };
    let port = listen_port(&listener);
    let shard = ThreadShard::of(thread);
    let each = Listener {
        name: S::NAME,
        counts: shared.counts.clone(),
        thread,
    };
    accept_loop(
        each,
        listener,
        shutdown,
        settings,
        service.clone(),
        on_refused,
        move |stream, peer, watcher, _, slot| {
            let local = if S::LOCAL_ADDR {
                stream.local_addr().ok()
            } else {
                None
            };
            let conn = ConnInfo::plain(peer)
                .on_port(port.as_ref())
                .on_thread(shard)
                .arrived_on(local);
            serve_connection(
                builder.clone(),
                stream,
                service.clone(),
                conn,
                watcher,
                slot,
                idle,
            )
        },
    )
    .await;
}

/// How a listener serves HTTP/1.1 and HTTP/2 (by preface, or ALPN on TLS),
/// with the header size limit and header read timeout of `settings`.
#[derive(Debug)]
pub(crate) struct Builders {
    /// Finds the protocol itself (reading the first bytes behind a rewind
    /// buffer): only for a cleartext connection whose first bytes so far
    /// are the start of the HTTP/2 preface. TLS connections know theirs
    /// from ALPN.
    auto: auto::Builder<TokioExecutor>,
    /// The same settings, for a protocol known in advance; `http1` without
    /// hyper's header read timer (see `header_read`).
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// `timeouts.header_read`. For HTTP/1.1 served by `http1` it is the
    /// connection's idle limit when smaller than `timeouts.idle`: the
    /// same rule (a head must be complete within it of the connection
    /// opening or the last response ending, else the connection closes
    /// without an answer, as hyper does) without hyper's timer, which was
    /// allocated, registered in tokio's timer wheel and cancelled on every
    /// request, and, being the earliest timer, woke the runtime through
    /// its eventfd after every response (docs/performance.md).
    header_read: Duration,
}

pub(crate) fn http_builder(settings: &ServeSettings) -> Builders {
    let max_buf = usize::try_from(settings.limits.max_header_bytes).unwrap_or(usize::MAX);
    let max_list = u32::try_from(settings.limits.max_header_bytes).unwrap_or(u32::MAX);
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // No header read timeout: serve_connection enforces it.
        .header_read_timeout(None)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(max_buf);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(max_list)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head:
        // on a new connection and between keep-alive requests.
        .header_read_timeout(settings.timeouts.header_read)
        .max_buf_size(max_buf);
    auto.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_list)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    Builders {
        auto,
        http1,
        http2,
        header_read: settings.timeouts.header_read,
    }
}

fn refusing_builder() -> auto::Builder<TokioExecutor> {
    let mut refusing = auto::Builder::new(TokioExecutor::new());
    refusing
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSE_READ_TIMEOUT);
    refusing
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    refusing
}

/// Which accept loop: for logs, and the connection counts it shares.
#[derive(Debug)]
pub(crate) struct Listener {
    /// `http`, `https` or `operator` ([`ListenerService::NAME`]).
    pub(crate) name: &'static str,
    /// Shared by every loop of one listener.
    pub(crate) counts: ListenerCounts,
    /// The request thread running this loop, if it is one.
    pub(crate) thread: Option<usize>,
}

/// Why the accept loop turned a connection away.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    /// `limits.max_connections` are open.
    Full,
    /// `limits.max_connections_per_ip` are open from the peer's address.
    Address { limit: usize },
}

/// The port `listener` is bound to, as `X-Forwarded-Port` says it.
pub(crate) fn listen_port(listener: &TcpListener) -> Option<HeaderValue> {
    listener
        .local_addr()
        .ok()
        .map(|addr| HeaderValue::from(addr.port()))
}

/// Accepts until `shutdown`. A connection over `limits.max_connections`
/// (counted in the listener's `slots`) goes to `on_refused`; every other runs `on_connection` in its own task
/// (so a slow client, or a slow TLS handshake, never holds up the next
/// accept) holding its connection slot. Then waits up to `grace` for every
/// connection holding a [`Watcher`], and every upgraded connection, to
/// finish. Connections not yet serving HTTP (mid-handshake) are told
/// through [`Stopping`] to give up.
pub(crate) async fn accept_loop<S, F, Fut>(
    Listener {
        name: listener_name,
        counts: ListenerCounts { slots, per_address },
        thread,
    }: Listener,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
    service: Arc<S>,
    on_refused: impl Fn(TcpStream, Refused),
    on_connection: F,
) where
    S: ListenerService,
    F: Fn(TcpStream, SocketAddr, Watcher, Stopping, ConnectionSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let ServeSettings { grace, limits, .. } = settings;
    let connections = Connections::default();
    let (stop_tx, stopping) = watch::channel(false);
    let (mut refused, mut last_warning) = (0u64, None);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(%err, listener = listener_name, thread, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Per address first: a refused address must not take a slot of
        // everyone's limit, even for a moment. Clients behind a trusted
        // proxy all share its address, so it is not counted.
        let address = if service.trusts_peer(peer.ip()) {
            None
        } else {
            match per_address.enter(peer.ip()) {
                Some(address) => Some(address),
                None => {
                    let limit = per_address.limit();
                    refused += 1;
                    if last_warning.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1))
                    {
                        tracing::warn!(%peer, listener = listener_name, thread, limit, refused, "too many connections from one address (limits.max_connections_per_ip); refusing");
                        last_warning = Some(Instant::now());
                        refused = 0;
                    }
                    on_refused(stream, Refused::Address { limit });
                    continue;
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            // One line a second at most: a flood must not flood the log.
            if last_warning.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%peer, listener = listener_name, thread, limit = limits.max_connections, refused, "too many connections; refusing");
                last_warning = Some(Instant::now());
                refused = 0;
            }
            on_refused(stream, Refused::Full);
            continue;
        };
        tokio::spawn(on_connection(
            stream,
            peer,
            connections.watcher(),
            Stopping(stopping.clone()),
            ConnectionSlot::new(slot, address),
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        ?grace,
        listener = listener_name,
        thread,
        "stopped accepting; waiting for in-flight requests"
    );
    // Each connection finishes the request in progress (HTTP/1.1) or its
    // open streams (HTTP/2, after a GOAWAY) and closes.
    connections.shutdown();
    let tunnels = service.tunnels().cloned();
    let finished = async {
        connections.closed().await;
        if let Some(tunnels) = &tunnels {
            tunnels.closed().await;
        }
    };
    tokio::select! {
        () = finished => tracing::info!(listener = listener_name, thread, "all connections closed"),
        () = tokio::time::sleep(grace) => {
            let upgraded = tunnels.as_ref().map_or(0, |tunnels| tunnels.open());
            tracing::warn!(?grace, listener = listener_name, thread, upgraded, "grace period over; closing remaining connections");
            if let Some(tunnels) = &tunnels {
                tunnels.close_all();
            }
        }
    }
}

/// Resolves once the listener stops accepting.
#[derive(Debug, Clone)]
pub(crate) struct Stopping(watch::Receiver<bool>);

impl Stopping {
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A transport a connection is served on.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Which protocol the client speaks, when the transport can tell
    /// without consuming any bytes; `Auto` leaves it to hyper-util.
    fn poll_protocol(&self, _cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        Poll::Ready(Ok(Protocol::Auto))
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): cleartext HTTP/2 with
/// prior knowledge starts with it.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Transport for TcpStream {
    /// Peeks at the first bytes: anything but the preface is HTTP/1. hyper
    /// then reads them itself, into its own buffer, with nothing in
    /// between (hyper-util's detection reads them into a buffer of its own
    /// and replays them through a wrapper on every read, and the short
    /// first read made hyper grow, and copy, its read buffer on every
    /// connection).
    fn poll_protocol(&self, cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        let mut bytes = [0u8; PREFACE.len()];
        let mut buf = tokio::io::ReadBuf::new(&mut bytes);
        let peeked = match self.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(peeked)) => peeked,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        };
        let seen = &buf.filled()[..peeked];
        Poll::Ready(Ok(if seen.is_empty() {
            // Closed before sending anything: hyper sees the end.
            Protocol::Http1
        } else if !PREFACE.starts_with(seen) {
            Protocol::Http1
        } else if seen.len() == PREFACE.len() {
            Protocol::Http2
        } else {
            // A preface cut short so far: peeking again would return the
            // same bytes at once; hyper-util reads until it knows.
            Protocol::Auto
        }))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport
    for tokio_rustls::server::TlsStream<IO>
{
    /// What ALPN agreed on in the handshake: `h2` is HTTP/2; `http/1.1`,
    /// or no ALPN at all, is HTTP/1.1. Over TLS, HTTP/2 is only ever
    /// chosen by ALPN (RFC 9113 §3.2-3.3: prior knowledge is for
    /// cleartext), as nginx and Go's net/http decide it. Each protocol
    /// then gets its own builder, as on plain TCP; hyper-util's detection
    /// read the first bytes into a buffer of its own and replayed them
    /// through a wrapper on every read of the connection's life.
    fn poll_protocol(&self, _cx: &mut Context<'_>) -> Poll<io::Result<Protocol>> {
        Poll::Ready(Ok(match self.get_ref().1.alpn_protocol() {
            Some(protocol) if protocol == elsinore_tls::ALPN_H2 => Protocol::Http2,
            _ => Protocol::Http1,
        }))
    }
}

/// The protocol of a connection, as far as known before serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
    /// Let hyper-util's auto builder find out.
    Auto,
}

/// A connection being served, whichever builder serves it. Boxed: the
/// task's future stays small and `Unpin`. HTTP/1.1 is served by
/// [`inline_service`], HTTP/2 by [`boxed_service`], and so is hyper-util's
/// detection: only a cleartext connection whose first bytes so far are a
/// prefix of the HTTP/2 preface goes there, mostly HTTP/2 with prior
/// knowledge, sometimes HTTP/1.1 cut short after `P` (one allocation per
/// request more).
enum Served<I, S1, S2>
where
    S1: hyper::service::HttpService<hyper::body::Incoming>,
    S2: hyper::service::HttpService<hyper::body::Incoming>,
{
    Http1(Pin<Box<http1::UpgradeableConnection<TokioIo<I>, S1>>>),
    Http2(Pin<Box<http2::Connection<TokioIo<I>, S2, TokioExecutor>>>),
    Auto(Pin<Box<auto::UpgradeableConnection<'static, TokioIo<I>, S2, TokioExecutor>>>),
}

/// What one connection's requests share: the service and the connection's
/// info (one reference count per request, see [`serve_connection`]).
type PerConnection<S> = Arc<(Arc<S>, ConnInfo)>;

/// The response every service below answers with.
type Answer = Result<http::Response<Tracked<crate::ProxyBody>>, Infallible>;

/// The service of an HTTP/1.1 connection: each request's future is held
/// in place by the connection's own task, which polls one at a time.
fn inline_service<S: ListenerService>(
    per_connection: PerConnection<S>,
    activity: Activity,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked<crate::ProxyBody>>,
    Error = Infallible,
    Future = impl Future<Output = Answer> + Send,
> + Send {
    service_fn(move |request| answer(&per_connection, &activity, request))
}

/// The service of an HTTP/2 connection: each request's future is boxed
/// where it is made. hyper spawns a task per stream holding it; inline,
/// its ~9 KB were copied into hyper's stream future, into tokio's spawn
/// and into the task's cell, where a box is one allocation and the
/// spawned future stays a few hundred bytes (callgrind: `memcpy` 8,050 →
/// 5,307 instructions per request, docs/performance.md).
fn boxed_service<S: ListenerService>(
    per_connection: PerConnection<S>,
    activity: Activity,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<Tracked<crate::ProxyBody>>,
    Error = Infallible,
    Future = Pin<Box<dyn Future<Output = Answer> + Send>>,
> + Send {
    service_fn(move |request| {
        Box::pin(answer(&per_connection, &activity, request))
            as Pin<Box<dyn Future<Output = Answer> + Send>>
    })
}

/// One request of the connection, answered by its service; the
/// connection counts as active until the response body is done.
fn answer<S: ListenerService>(
    per_connection: &PerConnection<S>,
    activity: &Activity,
    request: http::Request<hyper::body::Incoming>,
) -> impl Future<Output = Answer> + Send {
    let per_connection = per_connection.clone();
    let active = activity.begin();
    async move {
        let (service, conn) = &*per_connection;
        let response = service.call(request, conn).await;
        Ok(response.map(|body| Tracked::new(body, active)))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP on `io` until the client leaves, shutdown asks it to, or
/// no request has been in progress for `idle` (on HTTP/1.1 served by
/// `builders.http1`, or while the protocol is not known yet: for the
/// smaller of `idle` and `timeouts.header_read`).
pub(crate) async fn serve_connection<I, S>(
    builders: Arc<Builders>,
    io: I,
    service: Arc<S>,
    conn: ConnInfo,
    watcher: Watcher,
    slot: ConnectionSlot,
    idle: Duration,
) where
    I: Transport,
    S: ListenerService,
{
    let peer = conn.peer;
    // Counted as open until this connection's task ends.
    let _open = service.connection_opened();
    // Requests see the slot so an upgraded connection keeps it after
    // hyper lets go of the socket. (In the connection info rather than in
    // each request's extensions: inserting there allocates per request.)
    let mut conn = conn;
    conn.slot = Some(slot.clone());
    let activity = Activity::new();
    // Requests reach their connection's timer through it (response
    // deadlines, see `Activity::within`).
    conn.activity = Some(activity.clone());
    // One reference count per connection for each request to take: the
    // proxy's own is shared by every request thread, and taking it per
    // request would have them pass its cache line back and forth.
    let per_connection = Arc::new((service, conn));
    let _slot = slot;
    let mut watcher = watcher;
    let mut timer = activity.timer(idle.min(builders.header_read));
    // Until the protocol is known, the transport and what the service is
    // made of wait here.
    let mut pending = Some((io, per_connection));
    let mut served = None;
    // The drain began (the watcher says so once).
    let mut draining = false;
    // The connection was told to finish (once).
    let mut told = false;
    // Set when a drain finds this connection before its first request.
    let mut first_request_grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    // One future for the three ways a connection ends: a `select!` would
    // poll a shutdown channel and the idle timer on every wake-up.
    let ended: Option<Result<(), BoxError>> = std::future::poll_fn(|cx| {
        draining |= watcher.poll_shutdown(cx);
        let stopping = draining
            && !told
            && (!activity.never_asked()
                || first_request_grace
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)))
                    .as_mut()
                    .poll(cx)
                    .is_ready());
        if served.is_none() {
            let Some((io, _)) = &pending else {
                return Poll::Ready(Some(Ok(())));
            };
            if stopping {
                // Nothing was asked within the grace: nothing to finish.
                return Poll::Ready(Some(Ok(())));
            }
            let protocol = match io.poll_protocol(cx) {
                Poll::Ready(Ok(protocol)) => protocol,
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                Poll::Pending => return poll_timer(&mut timer, cx),
            };
            let Some((io, per_connection)) = pending.take() else {
                return Poll::Ready(Some(Ok(())));
            };
            let io = TokioIo::new(io);
            if protocol == Protocol::Http1 {
                // One request at a time, its service polled by this task.
                activity.keep_response_deadlines();
            } else {
                // HTTP/2 has no header read timeout; hyper-util's HTTP/1.1
                // runs hyper's.
                timer.set_limit(idle);
            }
            served = Some(match protocol {
                Protocol::Http1 => Served::Http1(Box::pin(
                    builders
                        .http1
                        .serve_connection(io, inline_service(per_connection, activity.clone()))
                        .with_upgrades(),
                )),
                Protocol::Http2 => Served::Http2(Box::pin(
                    builders
                        .http2
                        .serve_connection(io, boxed_service(per_connection, activity.clone())),
                )),
                Protocol::Auto => Served::Auto(Box::pin(
                    builders
                        .auto
                        .serve_connection_with_upgrades(
                            io,
                            boxed_service(per_connection, activity.clone()),
                        )
                        .into_owned(),
                )),
            });
        } else if stopping {
            told = true;
            match &mut served {
                Some(Served::Http1(connection)) => connection.as_mut().graceful_shutdown(),
                Some(Served::Http2(connection)) => connection.as_mut().graceful_shutdown(),
                Some(Served::Auto(connection)) => connection.as_mut().graceful_shutdown(),
                None => {}
            }
        }
        let polled: Poll<Result<(), BoxError>> = match &mut served {
            Some(Served::Http1(connection)) => connection.as_mut().poll(cx).map_err(Into::into),
            Some(Served::Http2(connection)) => connection.as_mut().poll(cx).map_err(Into::into),
            Some(Served::Auto(connection)) => connection.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        };
        if let Poll::Ready(ended) = polled {
            return Poll::Ready(Some(ended));
        }
        poll_timer(&mut timer, cx)
    })
    .await;
    match ended {
        Some(Ok(())) => {}
        Some(Err(err)) => tracing::debug!(%peer, error = %err, "connection ended with an error"),
        None => tracing::debug!(%peer, ?idle, "closing idle connection"),
    }
}

/// The connection's timer, for [`serve_connection`]: `Ready(None)` once
/// the connection is idle for its limit. When it has flagged a request's
/// response deadline instead, the task is woken to poll that request
/// again (it then answers 504).
fn poll_timer<T>(timer: &mut ConnectionTimer, cx: &mut Context<'_>) -> Poll<Option<T>> {
    match timer.poll_fired(cx) {
        Poll::Ready(Fired::Idle) => Poll::Ready(None),
        Poll::Ready(Fired::ResponseDeadline) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Pending,
    }
}

/// Answers every request on `stream` with 503 and closes it.
fn refuse<S: ListenerService>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: Arc<S>,
    error: ProxyError,
    refusal: tokio::sync::OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| {
        let response = service.refuse(&request, error.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    tokio::spawn(async move {
        let _refusal = refusal;
        // Bounded: one request at most on HTTP/1.1, and never longer than
        // the read timeout plus a little for HTTP/2.
        let _ = tokio::time::timeout(REFUSE_READ_TIMEOUT * 2, connection).await;
    });
}
