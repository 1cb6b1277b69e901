//! Paths Elsinore answers itself on a project's own hosts, and the hook
//! that answers them.
//!
//! The proxy decides *that* a (normalised) path is reserved and for which
//! routed host and project; the preview host and hosts answered by
//! `default_project` are refused before any hook sees the request. What a
//! reserved path does (today the tenant admin API, crate
//! `elsinore-tenant-admin`) is the hook's business: no admin code lives in
//! the proxy, and the proxy links none of its dependencies (SQLite).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::throttle::Throttle;
use crate::{ProjectRoute, ProxyBody, RouteTable};

/// The tenant admin API's path prefixes (Hamlet's admin API).
const RESERVED: [&str; 2] = ["/admin/api/_keys", "/admin/api/_hosts"];

/// Whether Elsinore answers `path` (normalised) itself instead of a
/// handler: a reserved prefix, alone or followed by `/`.
pub fn is_reserved(path: &str) -> bool {
    RESERVED.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The answer of a [`ReservedPaths`] hook. Boxed on purpose: held in
/// place, the admin API's future (~2 KB) would be part of every request's
/// future, and copied with it, proxied or not.
pub type ReservedFuture<'a> = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'a>>;

/// Answers requests to reserved paths ([`is_reserved`]) on a host a
/// project declares. Set with [`Proxy::with_reserved`](crate::Proxy::with_reserved);
/// without one, reserved paths answer 503.
pub trait ReservedPaths: Send + Sync + fmt::Debug {
    /// Answers one request; never fails (errors become JSON responses
    /// through [`ProxyError`](crate::ProxyError), the one error writer).
    fn answer<'a>(
        &'a self,
        request: Request<Incoming>,
        cx: ReservedContext<'a>,
    ) -> ReservedFuture<'a>;
}

/// What the proxy knows about a reserved-path request besides the request.
#[derive(Debug, Clone, Copy)]
pub struct ReservedContext<'a> {
    /// The normalised host (one the project declares).
    pub host: &'a str,
    /// The project declaring it.
    pub project: &'a Arc<ProjectRoute>,
    /// The live table (other projects' keys, the hosts each declares).
    pub table: &'a ArcSwap<RouteTable>,
    /// The client's address (see `trusted_proxies`), not a trusted proxy's
    /// in front of it: what the throttle counts and the log names.
    pub client: IpAddr,
    /// This request's `X-Request-Id`, for error bodies and the log.
    pub request_id: &'a HeaderValue,
    /// The proxy's failure throttle, shared with proxied requests that
    /// present a key: guesses count in one window whichever path they take.
    pub throttle: &'a Throttle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths() {
        for path in [
            "/admin/api/_keys",
            "/admin/api/_keys/",
            "/admin/api/_keys/3/rotate",
            "/admin/api/_hosts",
            "/admin/api/_hosts/a.localhost",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in ["/admin/api/_keysX", "/admin/api/other", "/admin/", "/"] {
            assert!(!is_reserved(path), "{path}");
        }
    }
}
