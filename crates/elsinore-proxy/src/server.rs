//! The accept loop, connection serving, connection limits and graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use elsinore_config::{Config, Limits, Timeouts};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

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

/// How the public listener treats clients.
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
    let settings = ServeSettings {
        grace,
        limits: Limits::default(),
        timeouts: Timeouts::default(),
    };
    serve_with(listener, proxy, shutdown, settings).await;
}

/// Serves `listener` with `settings` until `shutdown` resolves, then stops
/// accepting and gives open connections (and WebSockets) up to
/// `settings.grace` to finish before closing them.
pub async fn serve_with(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
) {
    let ServeSettings {
        grace,
        limits,
        timeouts,
    } = settings;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head:
        // on a new connection and between keep-alive requests.
        .header_read_timeout(timeouts.header_read)
        // A head that does not fit the read buffer is answered 431.
        .max_buf_size(usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));

    let mut refusing = auto::Builder::new(TokioExecutor::new());
    refusing
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(REFUSE_READ_TIMEOUT);
    refusing.http2().timer(TokioTimer::new());

    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let (mut refused, mut last_warning) = (0u64, None);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(%err, "accept failed");
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
                tracing::warn!(%peer, limit = limits.max_connections, refused, "too many connections; answering 503");
                last_warning = Some(Instant::now());
                refused = 0;
            }
            match refusals.clone().try_acquire_owned() {
                Ok(refusal) => {
                    refuse(
                        &refusing,
                        stream,
                        proxy.clone(),
                        limits.max_connections,
                        refusal,
                    );
                }
                Err(_) => drop(stream),
            }
            continue;
        };
        // Requests carry the slot so an upgraded connection keeps it after
        // hyper lets go of the socket.
        let slot = ConnectionSlot::new(slot);
        let activity = Activity::new();
        let proxy = proxy.clone();
        let service = {
            let activity = activity.clone();
            let slot = slot.clone();
            service_fn(move |mut request| {
                let proxy = proxy.clone();
                let active = activity.begin();
                request.extensions_mut().insert(slot.clone());
                async move {
                    let response = proxy.handle(request, peer).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, active)))
                }
            })
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let idle = timeouts.idle;
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                ended = connection => if let Err(err) = ended {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                },
                () = activity.idle_for(idle) => {
                    tracing::debug!(%peer, ?idle, "closing idle connection");
                }
            }
        });
    }

    drop(listener);
    tracing::info!(?grace, "stopped accepting; waiting for in-flight requests");
    let tunnels = proxy.tunnels().clone();
    let finished = async {
        graceful.shutdown().await;
        tunnels.closed().await;
    };
    tokio::select! {
        () = finished => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, upgraded = tunnels.open(), "grace period over; closing remaining connections");
            tunnels.close_all();
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
