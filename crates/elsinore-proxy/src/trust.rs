//! What a client may and may not say about itself, applied to one
//! request: who the client is and which `Upgrade` is tunnelled (asked of
//! the table's [`ClientPolicy`]), which header spellings reach handlers
//! (`underscores_in_headers`), and when a handler connection must not
//! carry another request after this one (request smuggling through
//! unread bodies).

use std::net::IpAddr;

use elsinore_routes::ClientPolicy;
use http::{HeaderValue, Method, Request};

use crate::conn_info::ConnInfo;
use crate::upgrade;

/// What one request's client is taken to be, decided from the table's
/// [`ClientPolicy`] while the request holds its snapshot.
#[derive(Debug)]
pub(crate) struct Client {
    /// The client's address (see [`ClientPolicy::client_ip`]).
    pub ip: IpAddr,
    /// `ip` formatted, when it is not the peer (whose formatted address
    /// the connection keeps).
    pub ip_header: Option<HeaderValue>,
    /// The peer is a trusted proxy.
    pub trusted_peer: bool,
    /// `underscores_in_headers`.
    pub underscores_in_headers: bool,
    /// The protocol to tunnel: the client asked for an upgrade the policy
    /// allows, on a request without a body (bytes after the head of an
    /// upgrade that the handler refuses would be read as its next
    /// request).
    pub upgrade: Option<HeaderValue>,
}

impl Client {
    pub(crate) fn of<B: hyper::body::Body>(
        policy: &ClientPolicy,
        conn: &ConnInfo,
        request: &Request<B>,
    ) -> Self {
        let peer = conn.peer.ip();
        let trusted_peer =
            !policy.trusted_proxies.is_empty() && policy.trusted_proxies.contains(peer);
        let ip = if trusted_peer {
            policy.client_ip(peer, request.headers())
        } else {
            peer.to_canonical()
        };
        // The connection formatted the peer once; only a different client
        // (behind a trusted proxy) is formatted per request.
        let ip_header = (ip != peer.to_canonical())
            .then(|| HeaderValue::from_str(&ip.to_string()).ok())
            .flatten();
        let upgrade = upgrade::requested(request)
            .filter(|offered| policy.allows_upgrade(offered) && request.body().is_end_stream());
        Self {
            ip,
            ip_header,
            trusted_peer,
            underscores_in_headers: policy.underscores_in_headers,
            upgrade,
        }
    }
}

/// Whether a handler connection may carry the next request after this
/// one. A request with a body is sent with `Connection: close` unless the
/// handler promised to read every body (`reuse_after_body`) and the method
/// is one whose body handlers expect: a handler that leaves a body unread
/// (many never read a GET's) parses it as its next request, before
/// Elsinore sees the response, so a client could smuggle a request with
/// headers Elsinore never checked.
pub(crate) fn reuse_after(method: &Method, has_body: bool, reuse_after_body: bool) -> bool {
    if !has_body {
        return true;
    }
    reuse_after_body && !body_unexpected(method)
}

/// Methods whose body handlers routinely ignore (RFC 9110 gives them no
/// defined meaning).
fn body_unexpected(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::TRACE
    )
}

/// Names of the headers only Elsinore sets for handlers, in their dashed,
/// lower-case spelling; a client header that folds onto one of these
/// (`X_Elsinore_Auth`, read as `HTTP_X_ELSINORE_AUTH` by CGI-style
/// frameworks) is always dropped.
fn is_reserved(folded: &str) -> bool {
    folded.starts_with("x-elsinore-")
        || folded.starts_with("x-forwarded-")
        || matches!(folded, "x-real-ip" | "x-request-id" | "forwarded" | "host")
}

/// Whether a client header named `name` (lower case, containing `_`) is
/// dropped: always when it folds onto a reserved name, else unless
/// `underscores_in_headers`.
pub(crate) fn drop_underscored(name: &str, underscores_in_headers: bool) -> bool {
    if !underscores_in_headers {
        return true;
    }
    let folded = name.replace('_', "-");
    is_reserved(&folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_close_the_handler_connection_unless_promised() {
        assert!(reuse_after(&Method::GET, false, false));
        assert!(!reuse_after(&Method::POST, true, false));
        assert!(reuse_after(&Method::POST, true, true));
        assert!(!reuse_after(&Method::GET, true, true));
        assert!(!reuse_after(&Method::DELETE, true, true));
    }

    #[test]
    fn underscored_names_fold_onto_reserved_ones() {
        assert!(drop_underscored("x_elsinore_auth", true));
        assert!(drop_underscored("x_forwarded_for", true));
        assert!(drop_underscored("x_real_ip", true));
        assert!(!drop_underscored("x_custom_thing", true));
        assert!(drop_underscored("x_custom_thing", false));
    }
}
