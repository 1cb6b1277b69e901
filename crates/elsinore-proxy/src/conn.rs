//! What the request path knows about the connection a request came on.

use std::net::SocketAddr;
use std::sync::Arc;

use elsinore_tls::LoadedCert;
use http::HeaderValue;

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
    /// The connection's place under `limits.max_connections`, set by the
    /// accept loop; an upgraded request takes a share of it.
    pub(crate) slot: Option<ConnectionSlot>,
}

impl ConnInfo {
    /// A connection from `peer`, with `tls` on the HTTPS listener.
    pub fn new(peer: SocketAddr, tls: Option<TlsInfo>) -> Self {
        // An IP address is digits, dots, colons and hex letters: always a
        // valid header value; the fallback is never used.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            tls,
            peer_ip,
            slot: None,
        }
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
