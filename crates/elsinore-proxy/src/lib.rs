//! The public listener and the life of a request.
//!
//! Accept → serve HTTP/1.1 or HTTP/2 (hyper-util) → normalise the host →
//! look it up in the current [`RouteTable`] (one `ArcSwap` load, no lock) →
//! pick the handler by longest path prefix → wait for it if it is still
//! starting → rewrite headers (hop-by-hop out, handler context in) →
//! forward with a pooled client, streaming both bodies. Every failure
//! becomes a JSON error from one place, [`error::ProxyError`].
//!
//! On the HTTPS listener the certificate is chosen by SNI from the
//! table's [`elsinore_tls::CertStore`] before the handshake, and each
//! request's host must be covered by that certificate (else 421).
//!
//! Nothing here touches SQLite, reads files or spawns processes.

mod body;
mod conn;
mod error;
mod headers;
mod redirect;
mod request_id;
mod server;
mod service;
mod table;
mod tls;

pub use body::HandlerBody;
pub use conn::{ConnInfo, TlsInfo};
pub use error::ProxyError;
pub use server::serve;
pub use service::Proxy;
pub use table::{ProjectRoute, RouteTable};
pub use tls::{serve_tls, TlsListener};

/// The body of every response Elsinore sends: a handler's streamed body, or
/// a small one Elsinore wrote itself.
pub type ProxyBody = http_body_util::Either<HandlerBody, http_body_util::Full<bytes::Bytes>>;
