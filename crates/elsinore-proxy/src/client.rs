//! The client to handlers: HTTP/1.1 keep-alive connections, pooled per
//! handler.
//!
//! In place of hyper-util's legacy `Client`, whose bookkeeping cost more
//! instructions per request than all of Elsinore's own (callgrind, see
//! docs/performance.md): a pool keyed by a SipHash-ed (scheme, authority)
//! behind one mutex, a race between the checkout and a lazy connect, and a
//! task spawned per request to put the connection back once it is ready.
//! Here the pool hangs off the handler's [`HandlerHandle`] (no lookup, and
//! a replaced handler's idle connections close with it), a connection goes
//! back when its response body ends, and a request whose pooled connection
//! turns out closed before the request was written is retried on another
//! one, then on a new one (what the legacy client's
//! `retry_canceled_requests` did).
//!
//! A request without a body or with one of declared length, asking for no
//! upgrade (most of them), does not go through hyper's client at all: its
//! own task writes it and reads the answer on a pooled connection
//! ([`crate::exchange`]). Those connections are pooled apart from
//! hyper's, in the same per-thread lists.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use elsinore_metrics::{RequestThreads, ThreadShard};
use elsinore_supervisor::{HandlerAddress, HandlerHandle};
use http::header::UPGRADE;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

use crate::exchange::{self, ExchangeError, FramedBody, HandlerStream, Outgoing};
use crate::headers::ContextHeaders;
use crate::limits::RequestBody;

/// Idle handler connections are kept this long for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per handler and request thread at most; past that
/// a connection is closed when its response ends. Also never more than the
/// handler's `max_concurrent` over all threads, so Elsinore keeps at most
/// twice that many connections open to a handler (in use and idle).
const MAX_IDLE: usize = 1024;

/// Sends requests to handlers. One per [`crate::Proxy`]; the pools live
/// with the handlers.
#[derive(Debug)]
pub(crate) struct HandlerClient {
    connect_timeout: Duration,
    builder: http1::Builder,
    /// How many ways each handler's pool is split.
    threads: RequestThreads,
}

/// Why a handler request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No connection could be made (refused, unreachable, timed out).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(hyper::Error),
    /// The exchange Elsinore drives itself ([`crate::exchange`]) failed.
    #[error(transparent)]
    Exchange(ExchangeError),
}

impl HandlerClient {
    /// Connects with `connect_timeout`: a loopback connect takes
    /// microseconds, but a handler whose accept queue is full must not
    /// hold the request forever.
    /// Each handler's pool has one list of idle connections per request
    /// thread of `threads`.
    pub(crate) fn new(connect_timeout: Duration, threads: RequestThreads) -> Self {
        Self {
            connect_timeout,
            builder: http1::Builder::new(),
            threads,
        }
    }

    /// How long a connect may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// How many ways pools are split.
    pub(crate) fn threads(&self) -> RequestThreads {
        self.threads
    }

    /// Sends `request` (origin-form URI, the client's Host), with
    /// `context` added to its headers, to `handler` over a pooled
    /// connection from the list of `shard` (the request thread running
    /// this), or a new one that goes back to that list;
    /// when a new one is made, `connected` gets when the connect began and
    /// ended (a trace's `connect` span).
    ///
    /// Not an `async fn`: one of those keeps its arguments twice (as
    /// passed and as moved into its body), and a request is ~300 bytes
    /// copied on every move; the block uses the captured one in place.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    pub(crate) fn request<'a>(
        &'a self,
        handler: &'a HandlerHandle,
        mut request: Request<RequestBody>,
        context: ContextHeaders,
        shard: ThreadShard,
        connected: &'a mut Option<(Instant, Instant)>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ClientError>> + 'a {
        async move {
            let pool = handler
                .request_state(|| Arc::new(Pool::new(handler.max_concurrent(), self.threads)))
                .ok_or_else(|| {
                    ClientError::Connect(io::Error::other("handler state of another type"))
                })?;
            let shard = pool.shard_index(shard);
            if let Some(length) = direct_length(&request) {
                let (parts, body) = request.into_parts();
                let body = (length > 0).then_some((body, length));
                return self
                    .request_direct(
                        handler,
                        Outgoing {
                            parts: &parts,
                            context: &context,
                        },
                        body,
                        pool.clone(),
                        shard,
                        connected,
                    )
                    .await;
            }
            context.insert_into(request.headers_mut());
            while let Some(mut sender) = pool.checkout(shard) {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(leased(response, sender, pool, shard)),
                    Err(mut err) => match err.take_message() {
                        // Closed before the request went out (the handler
                        // dropped an idle connection): safe to send elsewhere.
                        Some(unsent) => request = unsent,
                        None => return Err(ClientError::Http(err.into_error())),
                    },
                }
            }
            let began = Instant::now();
            let stream = self.connect(handler.address()).await?;
            let mut sender = self.handshake(stream).await?;
            *connected = Some((began, Instant::now()));
            match sender.send_request(request).await {
                Ok(response) => Ok(leased(response, sender, pool, shard)),
                Err(err) => Err(ClientError::Http(err)),
            }
        }
    }

    /// [`Self::request`] through [`exchange`]: over an idle connection of
    /// the thread's list while one takes it, else over a new one.
    async fn request_direct(
        &self,
        handler: &HandlerHandle,
        request: Outgoing<'_>,
        mut body: Option<(RequestBody, u64)>,
        pool: Arc<Pool>,
        shard: usize,
        connected: &mut Option<(Instant, Instant)>,
    ) -> Result<Response<PooledBody>, ClientError> {
        // The first failure of a pooled connection, if any: what the
        // client is told if no new connection can be made either (the
        // handler crashed on this request, and is down).
        let mut retried: Option<ExchangeError> = None;
        while let Some(stream) = pool.checkout_stream(shard) {
            let body = body.as_mut().map(|(body, length)| (body, *length));
            match exchange::exchange(stream, request, body, true).await {
                Ok((response, body)) => return Ok(direct(response, body, pool, shard)),
                // Closed while idle: the next one, or a new one.
                Err(failure) if failure.retry => {
                    retried.get_or_insert(failure.error);
                }
                Err(failure) => return Err(ClientError::Exchange(failure.error)),
            }
        }
        let began = Instant::now();
        let stream = match self.connect(handler.address()).await {
            Ok(stream) => stream,
            Err(err) => return Err(retried.map_or(err, ClientError::Exchange)),
        };
        *connected = Some((began, Instant::now()));
        let body = body.as_mut().map(|(body, length)| (body, *length));
        match exchange::exchange(stream, request, body, false).await {
            Ok((response, body)) => Ok(direct(response, body, pool, shard)),
            Err(failure) => Err(ClientError::Exchange(failure.error)),
        }
    }

    async fn connect(&self, address: &HandlerAddress) -> Result<HandlerStream, ClientError> {
        match address {
            HandlerAddress::Tcp(authority) => {
                let stream = self.within_timeout(connect_tcp(authority)).await?;
                // Small requests and answers must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok(HandlerStream::Tcp(stream))
            }
            HandlerAddress::Unix { path, uid } => {
                let stream = self.within_timeout(UnixStream::connect(path)).await?;
                // One getsockopt per new connection: the path is in a folder
                // the handler's user controls, and may lead elsewhere.
                let peer = stream.peer_cred().map_err(ClientError::Connect)?.uid();
                if peer != *uid {
                    return Err(ClientError::Connect(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is served by uid {peer}, not the handler's uid {uid}",
                            path.display()
                        ),
                    )));
                }
                Ok(HandlerStream::Unix(stream))
            }
        }
    }

    /// `connect` bounded by `connect_timeout`.
    async fn within_timeout<S>(
        &self,
        connect: impl Future<Output = io::Result<S>>,
    ) -> Result<S, ClientError> {
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                ClientError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.connect_timeout),
                ))
            })?
            .map_err(ClientError::Connect)
    }

    /// HTTP/1.1 over a connected `stream`, its connection driven by a
    /// task of its own.
    async fn handshake(
        &self,
        stream: HandlerStream,
    ) -> Result<SendRequest<RequestBody>, ClientError> {
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ClientError::Http)?;
        tokio::spawn(async move {
            // Upgrades: a 101 hands the connection to the WebSocket relay.
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(error = %err, "handler connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// The body length of a request [`exchange`] takes (0: no body): one
/// asking for no upgrade, without a body or with one whose length the
/// client declared and the body's framing agrees with. `None`: hyper's
/// client takes it.
fn direct_length(request: &Request<RequestBody>) -> Option<u64> {
    if request.headers().contains_key(UPGRADE) {
        return None;
    }
    let body = request.body();
    if body.is_end_stream() {
        return Some(0);
    }
    let declared = crate::limits::declared_length(request.headers())?;
    (body.size_hint().exact() == Some(declared)).then_some(declared)
}

/// A TCP connection to `authority` (`host:port`).
async fn connect_tcp(authority: &Authority) -> io::Result<TcpStream> {
    let host = authority.host();
    // `[::1]` in a URI, `::1` to connect.
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    TcpStream::connect((host, port)).await
}

/// `response`'s body, holding `sender` until it ends, then returning it
/// to list `shard` of `pool`. A 101 never goes back: the connection
/// becomes the tunnel.
fn leased(
    response: Response<Incoming>,
    sender: SendRequest<RequestBody>,
    pool: &Arc<Pool>,
    shard: usize,
) -> Response<PooledBody> {
    let lease = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
        sender,
        pool: pool.clone(),
        shard,
    });
    response.map(|body| PooledBody {
        inner: Inner::Hyper { body, lease },
    })
}

/// `response` of a direct exchange, whose connection goes back to list
/// `shard` of `pool` when `body` ends.
fn direct(
    response: Response<()>,
    body: FramedBody,
    pool: Arc<Pool>,
    shard: usize,
) -> Response<PooledBody> {
    response.map(|()| PooledBody {
        inner: Inner::Direct { body, pool, shard },
    })
}

/// The idle connections to one handler, most recently used last, one
/// list per request thread (the request's [`ThreadShard`], which the
/// accept loop of its thread put in its connection info): a connection is
/// only reused by the thread whose runtime drives it, so a request and its
/// handler connection never wake each other across threads.
#[derive(Debug)]
struct Pool {
    shards: Box<[Shard]>,
    /// Idle connections kept per shard at most.
    max_idle: usize,
}

/// One thread's list, on cache lines of its own: every request locks its
/// thread's list twice (checkout and return), and two lists sharing a
/// line would have the request threads take it from each other each
/// time. 128 bytes: x86 fetches lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Idle>);

impl Pool {
    /// A pool for a handler taking `max_concurrent` requests at once, with
    /// one list per request thread of `threads` and list 0 for every other
    /// thread.
    fn new(max_concurrent: usize, threads: RequestThreads) -> Self {
        let shards = threads.shards();
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            max_idle: (max_concurrent / shards).clamp(1, MAX_IDLE),
        }
    }
}

#[derive(Debug, Default)]
struct Idle {
    senders: Vec<(SendRequest<RequestBody>, Instant)>,
    /// Connections for direct exchanges ([`crate::exchange`]).
    streams: Vec<(HandlerStream, Instant)>,
    /// Whether a task is closing connections idle for too long.
    reaping: bool,
}

impl Pool {
    /// The list of `shard`'s thread.
    fn shard_index(&self, shard: ThreadShard) -> usize {
        shard.index_in(self.shards.len())
    }

    fn lock_shard(&self, index: usize) -> MutexGuard<'_, Idle> {
        let shard = &self.shards[index.min(self.shards.len() - 1)];
        // A panic elsewhere leaves a list of senders, still consistent.
        shard.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used connection that can take a request.
    ///
    /// Its idle time is not checked (a clock read per request): [`reap`]
    /// closes a connection when it has been idle for [`IDLE_TIMEOUT`], and
    /// the newest is taken first.
    fn checkout(&self, shard: usize) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.lock_shard(shard);
        while let Some((sender, _)) = idle.senders.pop() {
            // Only ready connections are put back, so one that is not
            // ready now has been closed. Dropping it is all there is to do.
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// The most recently used direct connection that is still quiet (see
    /// [`HandlerStream::is_quiet`]).
    fn checkout_stream(&self, shard: usize) -> Option<HandlerStream> {
        let mut idle = self.lock_shard(shard);
        while let Some((stream, _)) = idle.streams.pop() {
            if stream.is_quiet() {
                return Some(stream);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, sender: SendRequest<RequestBody>, shard: usize) {
        let mut idle = self.lock_shard(shard);
        if idle.senders.len() >= self.max_idle {
            return;
        }
        idle.senders.push((sender, Instant::now()));
        self.reap_later(&mut idle, shard);
    }

    fn put_stream(self: &Arc<Self>, stream: HandlerStream, shard: usize) {
        let mut idle = self.lock_shard(shard);
        if idle.streams.len() >= self.max_idle {
            return;
        }
        idle.streams.push((stream, Instant::now()));
        self.reap_later(&mut idle, shard);
    }

    /// Starts the reaper of list `shard` unless it runs.
    fn reap_later(self: &Arc<Self>, idle: &mut Idle, shard: usize) {
        if !idle.reaping {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                idle.reaping = true;
                runtime.spawn(reap(Arc::downgrade(self), shard));
            }
        }
    }
}

/// Closes connections idle for [`IDLE_TIMEOUT`] while the pool has any;
/// ends when it has none, or is gone.
async fn reap(pool: Weak<Pool>, shard: usize) {
    loop {
        let next = {
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.lock_shard(shard);
            let now = Instant::now();
            idle.senders.retain(|(sender, since)| {
                !sender.is_closed() && now.duration_since(*since) < IDLE_TIMEOUT
            });
            idle.streams.retain(|(stream, since)| {
                now.duration_since(*since) < IDLE_TIMEOUT && stream.is_quiet()
            });
            // Pushed in time order: the first of each list is its oldest.
            let oldest = [
                idle.senders.first().map(|(_, since)| *since),
                idle.streams.first().map(|(_, since)| *since),
            ]
            .into_iter()
            .flatten()
            .min();
            match oldest {
                Some(oldest) => oldest + IDLE_TIMEOUT,
                None => {
                    idle.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next.into()).await;
    }
}

/// A connection in use by one request.
#[derive(Debug)]
struct Lease {
    sender: SendRequest<RequestBody>,
    pool: Arc<Pool>,
    /// The list it was taken from (or is new for): its thread's.
    shard: usize,
}

impl Lease {
    /// Back to the pool once the connection can take the next request.
    fn release(self) {
        let Lease {
            mut sender,
            pool,
            shard,
        } = self;
        if sender.is_ready() {
            pool.put(sender, shard);
        } else if !sender.is_closed() {
            // The connection task has not caught up with the end of the
            // response yet (or the request body is still going out).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.put(sender, shard);
                    }
                });
            }
        }
    }
}

/// A handler's response body; its connection goes back to the pool when
/// the body has been read to the end (not when it is dropped half-read:
/// that connection is closed).
#[derive(Debug)]
pub struct PooledBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// From hyper's client (a chunked upload, or an upgrade).
    Hyper {
        body: Incoming,
        lease: Option<Lease>,
    },
    /// Read off the connection by this body itself ([`crate::exchange`]).
    Direct {
        body: FramedBody,
        pool: Arc<Pool>,
        shard: usize,
    },
}

impl Inner {
    /// Gives the connection back if the body has ended on a connection
    /// that can be reused.
    fn release_if_ended(&mut self) {
        match self {
            Inner::Hyper { body, lease } => {
                if body.is_end_stream() {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                }
            }
            Inner::Direct { body, pool, shard } => {
                if body.is_end_stream() {
                    if let Some(stream) = body.take_reusable() {
                        pool.put_stream(stream, *shard);
                    }
                }
            }
        }
    }
}

impl Inner {
    /// The body has ended: the connection goes back if it can.
    fn finish(&mut self) {
        match self {
            Inner::Hyper { lease, .. } => {
                if let Some(lease) = lease.take() {
                    lease.release();
                }
            }
            Inner::Direct { .. } => self.release_if_ended(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies nobody polls (empty ones, HEAD) end here.
        self.inner.release_if_ended();
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let inner = &mut self.inner;
        let polled: Poll<Option<Result<Frame<Bytes>, Self::Error>>> = match inner {
            Inner::Hyper { body, lease } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    // A broken exchange: the connection is not reused.
                    *lease = None;
                }
                polled.map_err(Into::into)
            }
            Inner::Direct { body, .. } => body.poll_frame(cx).map_err(Into::into),
        };
        match &polled {
            Poll::Ready(None) => inner.finish(),
            Poll::Ready(Some(Ok(_))) => inner.release_if_ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Direct { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Direct { body, .. } => match body.exact_remaining() {
                Some(left) => SizeHint::with_exact(left),
                None => SizeHint::default(),
            },
        }
    }
}
