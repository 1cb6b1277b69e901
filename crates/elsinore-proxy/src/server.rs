//! The accept loop, connection serving and graceful shutdown, shared by
//! the plain-HTTP and the HTTPS listener.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::conn::ConnInfo;
use crate::Proxy;

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// gives open connections up to `grace` to finish their requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = Arc::new(http_builder());
    accept_loop(
        "http",
        listener,
        shutdown,
        grace,
        move |stream, peer, watcher, _| {
            serve_connection(
                builder.clone(),
                stream,
                proxy.clone(),
                ConnInfo::plain(peer),
                watcher,
            )
        },
    )
    .await;
}

/// HTTP/1.1 and HTTP/2 (by preface, or ALPN on TLS) on one connection.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts until `shutdown`, running `on_connection` for each connection
/// in its own task (so a slow client, or a slow TLS handshake, never
/// holds up the next accept); then waits up to `grace` for every
/// connection holding a [`Watcher`] to finish. Connections not yet
/// serving HTTP (mid-handshake) are told through [`Stopping`] to give up.
pub(crate) async fn accept_loop<F, Fut>(
    scheme: &'static str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    on_connection: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher, Stopping) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let (stop_tx, stopping) = watch::channel(false);
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
        tokio::spawn(on_connection(
            stream,
            peer,
            graceful.watcher(),
            Stopping(stopping.clone()),
        ));
    }

    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        ?grace,
        scheme,
        "stopped accepting; waiting for in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(scheme, "all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, scheme, "grace period over; closing remaining connections"),
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

/// Serves HTTP on `io` until the client leaves or shutdown asks it to.
pub(crate) async fn serve_connection<I>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    // Counted as open until this connection's task ends.
    let _open = proxy.metrics().connection_opened();
    let conn = Arc::new(conn);
    let service = service_fn(move |request| {
        let (proxy, conn) = (proxy.clone(), conn.clone());
        async move { Ok::<_, Infallible>(proxy.handle_on(request, &conn).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}
