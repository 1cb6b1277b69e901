//! The public listener and the life of a request.
//!
//! Accept (within `limits.max_connections`, [`serve_with`]) → serve
//! HTTP/1.1 or HTTP/2 (hyper-util, with header size and read timeouts, and
//! an idle timeout) → normalise the host → look it up in the current
//! [`RouteTable`](elsinore_routes::RouteTable) (crate `elsinore-routes`; one `ArcSwap` load, no lock) → pick the handler by
//! longest path prefix → check the declared body size → wait for it if it
//! is still starting, and for a turn under its `max_concurrent` → rewrite
//! headers (hop-by-hop out, handler context in) → forward with a pooled
//! client, streaming both bodies (the request body counted against
//! `max_body`) → relay the answer, or on a 101 pipe the upgraded
//! connections (`upgrade`). Every failure becomes a JSON error from one
//! place, [`error::ProxyError`].
//!
//! `X-Elsinore-Auth` is resolved from the client's Hamlet key headers
//! against the project's key and the in-memory [`elsinore_keys::KeyRing`]
//! ([`auth`]). Reserved paths (`/admin/api/_keys…`, `/admin/api/_hosts…`)
//! on a project's own hosts are handed to a [`ReservedPaths`] hook (the
//! tenant admin API, crate `elsinore-tenant-admin`); no admin code lives
//! here. CORS, a project's or the admin API's, is one
//! [`CorsPolicy`](elsinore_routes::CorsPolicy); this crate answers a
//! project's preflights with it. The table and its policies are data
//! from `elsinore-routes`; what a request does with them is here.
//!
//! On the HTTPS listener the certificate is chosen by SNI from the
//! table's [`elsinore_tls::CertStore`] before the handshake, and each
//! request's host must be covered by that certificate (else 421).
//!
//! This crate links no SQLite (`.ci/run` checks `cargo tree`) and spawns
//! no processes; files are read only from a host's `public/` folder.

mod access;
mod access_line;
mod access_log;
mod acme_http01;
mod address_limit;
mod auth;
mod body;
mod client;
mod conn_info;
mod connection;
mod cors;
mod error;
mod exchange;
mod headers;
mod json_error;
mod limits;
mod listen;
mod listener_service;
mod preview;
mod rate_limit;
mod redirect;
mod request_id;
mod reserved;
mod server;
mod service;
mod throttle;
mod tls;
mod trust;
mod upgrade;

pub use access::ACCESS_TARGET;
pub use access_log::{AccessLog, AccessLogError, FLUSH_EVERY, FLUSH_SIZE};
pub use acme_http01::{Http01Answers, StoredAnswer};
pub use auth::AuthLevel;
pub use body::HandlerBody;
pub use conn_info::{ConnInfo, TlsInfo};
pub use elsinore_metrics::{Metrics, RequestThreads, ThreadShard};
pub use error::ProxyError;
pub use headers::X_REQUEST_ID;
pub use json_error::json_error;
pub use limits::{RequestBody, RequestBodyError};
pub use listen::ThreadListeners;
pub use listener_service::ListenerService;
pub use request_id::RequestIds;
pub use reserved::{is_reserved, ReservedContext, ReservedFuture, ReservedPaths};
pub use server::{serve, serve_threads, serve_with, ServeSettings, TlsThreads};
pub use service::Proxy;
pub use throttle::{Throttle, MAX_FAILURES, WINDOW as THROTTLE_WINDOW};
pub use tls::{serve_tls, TlsListener};
pub use upgrade::Tunnels;

/// The credentials a request presents, as Hamlet clients send them: for
/// hooks that check keys themselves (the tenant admin API).
pub mod credentials {
    pub use crate::auth::{bearer, header_str, query_key, X_HAMLET_HOST_KEY, X_HAMLET_PROJECT_KEY};
}

/// The body of every response Elsinore sends: a handler's streamed body, or
/// a small one Elsinore wrote itself.
pub type ProxyBody = http_body_util::Either<HandlerBody, http_body_util::Full<bytes::Bytes>>;

/// Entry points for the criterion micro-benchmarks in
/// `crates/elsinore-bench` (header rewriting, request ids): thin wrappers
/// over crate-private functions of the request path, so the benchmarks
/// measure exactly what a request runs. Not part of the API.
#[doc(hidden)]
pub mod bench_api {
    use http::{HeaderMap, HeaderValue};

    use crate::headers::{self, Context};
    use crate::request_id::RequestIds;

    /// What [`rewrite_request`] tells the handler.
    #[derive(Debug, Clone)]
    pub struct RequestContext {
        /// `X-Elsinore-Host`.
        pub host: HeaderValue,
        /// `X-Elsinore-Project`.
        pub project: HeaderValue,
        /// `X-Elsinore-Project-Key`.
        pub project_key: Option<HeaderValue>,
        /// `X-Request-Id`.
        pub request_id: HeaderValue,
        /// The peer's IP, as the connection formats it once.
        pub client_ip: HeaderValue,
    }

    /// The request path's header rewrite towards the handler: hop-by-hop
    /// headers out, forwarding headers and the handler context in, the
    /// client's `Host` (`original_host`) kept.
    pub fn rewrite_request(
        headers: &mut HeaderMap,
        context: &RequestContext,
        original_host: Option<HeaderValue>,
    ) {
        headers::remove_hop_by_hop(headers);
        let port = HeaderValue::from_static("8080");
        let context = Context {
            host: context.host.clone(),
            project: &context.project,
            project_key: context.project_key.as_ref(),
            auth: HeaderValue::from_static("none"),
            request_id: &context.request_id,
            client_ip: &context.client_ip,
            peer_ip: &context.client_ip,
            trusted_peer: false,
            underscores_in_headers: false,
            proto: "http",
            port: Some(&port),
            forwarded_prefix: None,
            tenant_host: false,
            // Made per request from the request's trace; a fixed one here,
            // so this measures the rewrite alone.
            traceparent: elsinore_tracing::TraceContext {
                trace_id: [7; 16],
                span_id: [9; 8],
                remote_parent: None,
                sampled: false,
                tracestate: None,
            }
            .traceparent(),
            tracestate: None,
        };
        headers::set_context(headers, context, original_host.as_ref()).insert_into(headers);
        if let Some(host) = original_host {
            headers.insert(http::header::HOST, host);
        }
    }

    /// The rewrite of a handler's response: hop-by-hop headers out, the
    /// request id set.
    pub fn rewrite_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
        headers::remove_hop_by_hop(headers);
        headers.insert(
            headers::X_REQUEST_ID,
            headers::answered_request_id(request_id.clone()),
        );
    }

    /// Request ids as the proxy makes them.
    #[derive(Debug)]
    pub struct RequestIdSource(RequestIds);

    impl RequestIdSource {
        /// A new source (random prefix, counter at 0).
        pub fn new() -> Self {
            Self(RequestIds::new())
        }

        /// The client's id if it is sane, else a new one.
        pub fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
            self.0.for_request(incoming)
        }
    }

    impl Default for RequestIdSource {
        fn default() -> Self {
            Self::new()
        }
    }
}
