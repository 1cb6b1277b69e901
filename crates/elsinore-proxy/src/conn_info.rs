//! What the request path knows about the connection a request came on
//! (`ConnInfo`, made by the accept loop), beside `connection.rs`, which
//! keeps a connection's timers and drain bookkeeping.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use elsinore_metrics::ThreadShard;
use elsinore_tls::LoadedCert;
use http::HeaderValue;

use crate::connection::Activity;
use crate::service::ConnectionSlot;

/// One client connection, shared by every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Set on the HTTPS listener.
    pub tls: Option<TlsInfo>,
    /// The client's IP as the `X-Forwarded-For` value it adds, formatted
    /// once per connection rather than once per request.
    pub(crate) peer_ip: HeaderValue,
    /// The port of the listener the connection came in on
    /// (`X-Forwarded-Port`), formatted once per listener.
    pub(crate) port: Option<HeaderValue>,
    /// The connection's place under `limits.max_connections`, set by the
    /// accept loop; an upgraded request takes a share of it.
    pub(crate) slot: Option<ConnectionSlot>,
    /// Its requests in progress and its timer, set when it is served.
    pub(crate) activity: Option<Activity>,
    /// The request thread serving it, as the accept loop running on that
    /// thread says: its requests use that thread's part of per-thread
    /// state (handler pool lists, metric shards). Passed along rather than
    /// read from a thread-local, so only the code that owns the thread
    /// decides it.
    pub(crate) shard: ThreadShard,
    /// The address the connection arrived on, when the listener's service
    /// asks for it ([`crate::ListenerService::LOCAL_ADDR`]): it costs a
    /// system call per connection.
    pub(crate) local: Option<SocketAddr>,
}

impl ConnInfo {
    /// A connection from `peer`, with `tls` on the HTTPS listener.
    pub fn new(peer: SocketAddr, tls: Option<TlsInfo>) -> Self {
        let peer_ip = ip_header(peer.ip());
        Self {
            peer,
            tls,
            peer_ip,
            port: None,
            slot: None,
            activity: None,
            shard: ThreadShard::OTHER,
            local: None,
        }
    }

    /// The address the connection arrived on, if the listener's service
    /// asked for it.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The connection came in on a listener on `port` (a formatted
    /// port number), if known.
    #[must_use]
    pub(crate) fn on_port(mut self, port: Option<&HeaderValue>) -> Self {
        self.port = port.cloned();
        self
    }

    /// The connection is served by the request thread of `shard`.
    #[must_use]
    pub(crate) fn on_thread(mut self, shard: ThreadShard) -> Self {
        self.shard = shard;
        self
    }

    /// The connection arrived on `local`.
    #[must_use]
    pub(crate) fn arrived_on(mut self, local: Option<SocketAddr>) -> Self {
        self.local = local;
        self
    }

    /// A plain-HTTP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        Self::new(peer, None)
    }
}

/// The TLS side of a connection, fixed at its handshake.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), lower-case.
    pub sni: Option<String>,
    /// The certificate chosen for that name; a request's host must be
    /// one of its names.
    pub cert: Arc<LoadedCert>,
}

thread_local! {
    /// The last peer IP formatted on this thread: connections mostly come
    /// from a few addresses (a load balancer, loopback), and formatting one
    /// cost more than the rest of setting up the connection info.
    static LAST_IP: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `ip` as a header value, shared with the previous connection from the
/// same address on this thread.
fn ip_header(ip: IpAddr) -> HeaderValue {
    let cached = LAST_IP.with(|last| match &*last.borrow() {
        Some((last_ip, value)) if *last_ip == ip => Some(value.clone()),
        _ => None,
    });
    if let Some(value) = cached {
        return value;
    }
    // An IP address is digits, dots, colons and hex letters: always a
    // valid header value; the fallback is never used.
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    LAST_IP.with(|last| *last.borrow_mut() = Some((ip, value.clone())));
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ips_are_formatted_and_shared() {
        let a = ConnInfo::plain("127.0.0.1:1000".parse().expect("addr"));
        let b = ConnInfo::plain("127.0.0.1:2000".parse().expect("addr"));
        let c = ConnInfo::plain("[::1]:3000".parse().expect("addr"));
        assert_eq!(a.peer_ip, "127.0.0.1");
        assert_eq!(b.peer_ip, "127.0.0.1");
        assert_eq!(c.peer_ip, "::1");
        assert_eq!(
            ConnInfo::plain("10.0.0.7:1".parse().expect("addr")).peer_ip,
            "10.0.0.7"
        );
    }
}
