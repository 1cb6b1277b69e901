//! What a client may say about itself, as the route table carries it:
//! who the client is (`trusted_proxies`), which `Upgrade` protocols are
//! tunnelled (`upgrade_protocols`) and whether header names with `_`
//! reach handlers (`underscores_in_headers`). The proxy asks these
//! questions of each request (its `trust` module); the answers depend on
//! the policy only, so they live with it.

use std::net::IpAddr;

use elsinore_config::{Config, TrustedProxies, DEFAULT_UPGRADE_PROTOCOLS};
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// `X-Forwarded-For`: each proxy in front appends the address it saw.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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
    pub fn allows_upgrade(&self, offered: &HeaderValue) -> bool {
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
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
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
}
