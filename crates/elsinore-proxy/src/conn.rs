//! What the request path knows about the connection a request came on.

use std::net::SocketAddr;
use std::sync::Arc;

use elsinore_tls::LoadedCert;

/// One client connection, shared by every request on it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Set on the HTTPS listener.
    pub tls: Option<TlsInfo>,
}

impl ConnInfo {
    /// A plain-HTTP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Self {
        Self { peer, tls: None }
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
