//! What a client may and may not say about itself: who the client is
//! (`trusted_proxies`), which header spellings reach handlers
//! (`underscores_in_headers`), which `Upgrade` protocols are tunnelled
//! (`upgrade_protocols`), and when a handler connection must not carry
//! another request after this one (request smuggling through unread
//! bodies).

use std::net::IpAddr;

use elsinore_config::{Config, TrustedProxies, DEFAULT_UPGRADE_PROTOCOLS};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method, Request};

use crate::conn_info::ConnInfo;
use crate::upgrade;

/// The client-facing trust settings, swapped with the route table (live on
/// reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// `Upgrade` tokens tunnelled to handlers, lower case.
    pub upgrade_protocols: Vec<String>,
    /// Client headers whose name contains `_` reach handlers.
    pub underscores_in_headers: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            trusted_proxies: TrustedProxies::default(),
            upgrade_protocols: DEFAULT_UPGRADE_PROTOCOLS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            underscores_in_headers: false,
        }
    }
}

impl ClientPolicy {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            trusted_proxies: config.trusted_proxies.clone(),
            upgrade_protocols: config.upgrade_protocols.clone(),
            underscores_in_headers: config.underscores_in_headers,
        }
    }

    /// Whether `Upgrade: <protocol>` is tunnelled. `protocol` may carry a
    /// version (`websocket/13`) and a list (`websocket, foo`): every
    /// protocol offered must be allowed, or the handler could pick one
    /// that is not.
    pub(crate) fn allows_upgrade(&self, offered: &HeaderValue) -> bool {
        let Ok(offered) = offered.to_str() else {
            return false;
        };
        let mut any = false;
        for token in offered.split(',').map(str::trim) {
            let name = token.split('/').next().unwrap_or_default();
            if name.is_empty()
                || !self
                    .upgrade_protocols
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(name))
            {
                return false;
            }
            any = true;
        }
        any
    }

    /// The address of the client: the peer itself, unless the peer is a
    /// trusted proxy; then the right-most address of `X-Forwarded-For` that
    /// is not a trusted proxy (each trusted hop appends the address it saw,
    /// so everything left of the first untrusted one from the right may
    /// have been written by the client). If every hop is trusted, the
    /// left-most one; an entry that is not an address ends the walk at the
    /// hop right of it.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted_proxies.is_empty() || !self.trusted_proxies.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // Values in order of arrival; each is a comma-separated list.
        let values: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(|value| value.to_str().unwrap_or(""))
            .collect();
        for entry in values.iter().rev().flat_map(|value| value.rsplit(',')) {
            let Some(ip) = parse_forwarded_ip(entry.trim()) else {
                return client;
            };
            client = ip;
            if !self.trusted_proxies.contains(ip) {
                return ip;
            }
        }
        client
    }
}

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

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// An `X-Forwarded-For` entry: an address, possibly with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
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

    fn policy(trusted: &[&str]) -> ClientPolicy {
        let config = serde_json::json!({
            "projects": [],
            "trusted_proxies": trusted,
        });
        let config = Config::parse(
            &config.to_string(),
            std::path::Path::new("/tmp/config.json"),
            |_| None,
        )
        .expect("config");
        ClientPolicy::from_config(&config)
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                X_FORWARDED_FOR,
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_says() {
        let policy = policy(&["10.0.0.0/8"]);
        let headers = xff(&["1.2.3.4"]);
        assert_eq!(policy.client_ip(ip("192.0.2.9"), &headers), ip("192.0.2.9"));
        assert_eq!(
            ClientPolicy::default().client_ip(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_peer_gives_the_right_most_untrusted_entry() {
        let policy = policy(&["10.0.0.0/8"]);
        let headers = xff(&["6.6.6.6, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(
            policy.client_ip(ip("10.0.0.2"), &headers),
            ip("203.0.113.5"),
            "the client's own 6.6.6.6 is not believed"
        );
        assert_eq!(
            policy.client_ip(ip("10.0.0.2"), &xff(&["10.9.9.9", "10.1.1.1"])),
            ip("10.9.9.9"),
            "all trusted: the left-most"
        );
        assert_eq!(
            policy.client_ip(ip("10.0.0.2"), &xff(&["garbage, 10.1.1.1"])),
            ip("10.1.1.1"),
            "garbage ends the walk"
        );
        assert_eq!(
            policy.client_ip(ip("10.0.0.2"), &xff(&["[2001:db8::1]:80, 198.51.100.1:99"])),
            ip("198.51.100.1")
        );
        assert_eq!(
            policy.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn upgrades_only_for_listed_protocols() {
        let policy = ClientPolicy::default();
        let allows = |v: &'static str| policy.allows_upgrade(&HeaderValue::from_static(v));
        assert!(allows("websocket"));
        assert!(allows("WebSocket"));
        assert!(!allows("h2c"));
        assert!(!allows("websocket, h2c"));
        assert!(!allows(""));
    }

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
