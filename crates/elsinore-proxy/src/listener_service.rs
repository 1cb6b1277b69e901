//! What a listener serves, as the server machinery (`server`, `tls`) sees
//! it: every listener goes through the same accept loop, connection
//! limits, timeouts and drain; what differs is the [`ListenerService`]
//! plugged in: the [`Proxy`] on the public listeners, the operator's
//! endpoints on `admin_listen`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use elsinore_metrics::ConnectionGuard;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::conn_info::ConnInfo;
use crate::error::ProxyError;
use crate::upgrade::Tunnels;
use crate::{Proxy, ProxyBody};

/// A service a listener serves through the shared server machinery.
///
/// Generic, not a trait object: the public listeners' request path is
/// compiled for the [`Proxy`] itself, as before (no boxed future, no
/// dynamic call per request).
pub trait ListenerService: Send + Sync + 'static {
    /// How the plain-HTTP accept loops serving it are named in the logs
    /// (`listener=`): `http` for the public listener.
    const NAME: &'static str = "http";

    /// Whether each connection's local address is looked up for
    /// [`ConnInfo::local`]: one system call per connection, so only for a
    /// service that needs it (the operator's `Host` check).
    const LOCAL_ADDR: bool = false;

    /// Answers one request that came on `conn`; never fails (errors are
    /// responses).
    fn call<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &'a ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'a;

    /// The answer to each request of a connection refused over a
    /// connection limit (`error` says which).
    fn refuse(&self, request: &Request<Incoming>, error: ProxyError) -> Response<ProxyBody>;

    /// Whether connections from `ip` are exempt from
    /// `limits.max_connections_per_ip` (a trusted proxy's clients all share
    /// its address).
    fn trusts_peer(&self, _ip: IpAddr) -> bool {
        false
    }

    /// The upgraded connections shutdown waits for, then closes.
    fn tunnels(&self) -> Option<&Arc<Tunnels>> {
        None
    }

    /// Counts a connection in a metric while the returned guard lives.
    fn connection_opened(&self) -> Option<ConnectionGuard> {
        None
    }
}

impl ListenerService for Proxy {
    fn call<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &'a ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + 'a {
        self.handle_on(request, conn)
    }

    fn refuse(&self, request: &Request<Incoming>, error: ProxyError) -> Response<ProxyBody> {
        Proxy::refuse(self, request, error)
    }

    fn trusts_peer(&self, ip: IpAddr) -> bool {
        Proxy::trusts_peer(self, ip)
    }

    fn tunnels(&self) -> Option<&Arc<Tunnels>> {
        Some(Proxy::tunnels(self))
    }

    /// `elsinore_open_connections`: client connections of the public
    /// listeners.
    fn connection_opened(&self) -> Option<ConnectionGuard> {
        Some(self.metrics().connection_opened())
    }
}
