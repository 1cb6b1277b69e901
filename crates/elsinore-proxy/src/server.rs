//! The accept loop, connection serving, connection limits and graceful
//! shutdown, shared by the plain-HTTP and the HTTPS listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use elsinore_config::{Config, Limits, Timeouts};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::conn::ConnInfo;
use crate::connection::{Activity, Tracked};
use crate::error::ProxyError;
use crate::service::ConnectionSlot;
use crate::Proxy;

/// Connections over `limits.max_connections` being answered 503 at the
/// same time at most; past that they are closed without an answer, so a
/// flood costs nothing but the accept.
const MAX_REFUSING: usize = 64;
/// An over-the-limit client gets this long to send its request before the
/// connection is closed without an answer.
const REFUSE_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How a listener treats clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// How long shutdown waits for open requests and upgraded connections.
    pub grace: Duration,
    /// `limits` in config.json.
    pub limits: Limits,
    /// `timeouts` in config.json.
    pub timeouts: Timeouts,
}

impl ServeSettings {
    /// `shutdown_grace`, `limits` and `timeouts` from `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            grace: config.shutdown_grace,
            limits: config.limits,
            timeouts: config.timeouts,
        }
    }

    /// Default limits and timeouts with this grace period.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// gives open connections up to `grace` to finish their requests. Default
/// limits and timeouts; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    serve_with(listener, proxy, shutdown, ServeSettings::with_grace(grace)).await;
}

/// Serves plain HTTP on `listener` with `settings` until `shutdown`
/// resolves, then stops accepting and gives open connections (and
/// WebSockets) up to `settings.grace` to finish before closing them.
pub async fn serve_with(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
) {
    let builder = Arc::new(http_builder(&settings));
    let refusing = Arc::new(refusing_builder());
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let limit = settings.limits.max_connections;
    let idle = settings.timeouts.idle;
    let on_refused = {
        let proxy = proxy.clone();
        move |stream: TcpStream| match refusals.clone().try_acquire_owned() {
            Ok(refusal) => refuse(&refusing, stream, proxy.clone(), limit, refusal),
            Err(_) => drop(stream),
        }
    };
    accept_loop(
        "http",
        listener,
        shutdown,
        settings,
        proxy.clone(),
        on_refused,
        move |stream, peer, watcher, _, slot| {
            serve_connection(
                builder.clone(),
                stream,
                proxy.clone(),
                ConnInfo::plain(peer),
                watcher,
                slot,
                idle,
            )
        },
    )
    .await;
}

/// HTTP/1.1 and HTTP/2 (by preface, or ALPN on TLS) on one connection,
/// with the header size limit and header read timeout of `settings`.
pub(crate) fn http_builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head:
        // on a new connection and between keep-alive requests.
        .header_read_timeout(settings.timeouts.header_read)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(usize::try_from(settings.limits.max_header_bytes).unwrap_or(usize::MAX));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

fn refusing_builder() -> auto::Builder<TokioExecutor> {
    let mut refusing = auto::Builder::new(TokioExecutor::new());
    refusing
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSE_READ_TIMEOUT);
    refusing.http2().timer(TokioTimer::new());
    refusing
}

/// Accepts until `shutdown`. A connection over `limits.max_connections`
/// goes to `on_refused`; every other runs `on_connection` in its own task
/// (so a slow client, or a slow TLS handshake, never holds up the next
/// accept) holding its connection slot. Then waits up to `grace` for every
/// connection holding a [`Watcher`], and every upgraded connection, to
/// finish. Connections not yet serving HTTP (mid-handshake) are told
/// through [`Stopping`] to give up.
pub(crate) async fn accept_loop<F, Fut>(
    scheme: &'static str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
    proxy: Arc<Proxy>,
    on_refused: impl Fn(TcpStream),
    on_connection: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher, Stopping, ConnectionSlot) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let ServeSettings { grace, limits, .. } = settings;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let (stop_tx, stopping) = watch::channel(false);
    let (mut refused, mut last_warning) = (0u64, None);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(%err, scheme, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            // One line a second at most: a flood must not flood the log.
            if last_warning.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                tracing::warn!(%peer, scheme, limit = limits.max_connections, refused, "too many connections; refusing");
                last_warning = Some(Instant::now());
                refused = 0;
            }
            on_refused(stream);
            continue;
        };
        tokio::spawn(on_connection(
            stream,
            peer,
            graceful.watcher(),
            Stopping(stopping.clone()),
            ConnectionSlot::new(slot),
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        ?grace,
        scheme,
        "stopped accepting; waiting for in-flight requests"
    );
    let tunnels = proxy.tunnels().clone();
    let finished = async {
        graceful.shutdown().await;
        tunnels.closed().await;
    };
    tokio::select! {
        () = finished => tracing::info!(scheme, "all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, scheme, upgraded = tunnels.open(), "grace period over; closing remaining connections");
            tunnels.close_all();
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

/// Serves HTTP on `io` until the client leaves, shutdown asks it to, or
/// no request has been in progress for `idle`.
pub(crate) async fn serve_connection<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    watcher: Watcher,
    slot: ConnectionSlot,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    // Counted as open until this connection's task ends.
    let _open = proxy.metrics().connection_opened();
    // Requests see the slot so an upgraded connection keeps it after
    // hyper lets go of the socket. (In the connection info rather than in
    // each request's extensions: inserting there allocates per request.)
    let mut conn = conn;
    conn.slot = Some(slot.clone());
    let conn = Arc::new(conn);
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            let (proxy, conn) = (proxy.clone(), conn.clone());
            let active = activity.begin();
            async move {
                let response = proxy.handle_on(request, &conn).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, active)))
            }
        })
    };
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let _slot = slot;
    tokio::select! {
        ended = watcher.watch(connection) => if let Err(err) = ended {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        },
        () = activity.idle_for(idle) => {
            tracing::debug!(%peer, ?idle, "closing idle connection");
        }
    }
}

/// Answers every request on `stream` with 503 and closes it.
fn refuse(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    proxy: Arc<Proxy>,
    limit: usize,
    refusal: tokio::sync::OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| {
        let response = proxy.refuse(&request, ProxyError::TooManyConnections { limit });
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
