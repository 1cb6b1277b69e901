//! The client-facing trust settings of `config.json`: which peers may
//! speak for a client (`trusted_proxies`), which `Upgrade` protocols are
//! tunnelled (`upgrade_protocols`), and whether header names with `_`
//! reach handlers (`underscores_in_headers`).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Problem;

/// `upgrade_protocols` when absent: WebSockets only.
pub const DEFAULT_UPGRADE_PROTOCOLS: [&str; 1] = ["websocket"];

/// `trusted_proxies`: peers whose `X-Forwarded-*` headers are believed.
/// Empty by default: no client can say where it comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies. An IPv4 peer seen as
    /// an IPv4-mapped IPv6 address (a dual-stack socket) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// No proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The prefixes, as written (normalised).
    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }
}

/// Validates `trusted_proxies`: CIDRs (`10.0.0.0/8`, `::1/128`) or single
/// addresses (`192.0.2.7`, taken as a /32 or /128).
pub(crate) fn parse_trusted_proxies(
    raw: Option<Vec<String>>,
    problems: &mut Vec<Problem>,
) -> TrustedProxies {
    let mut nets = Vec::new();
    for (index, text) in raw.unwrap_or_default().iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            // `10.1.2.3/8` names 10.0.0.0/8: stored without host bits.
            Ok(net) => nets.push(net.trunc()),
            Err(_) => problems.push(Problem::field(
                format!("trusted_proxies[{index}]"),
                format!(
                    "{text:?} is not an address or CIDR: expected e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"::1/128\""
                ),
            )),
        }
    }
    TrustedProxies(nets)
}

/// Validates `upgrade_protocols`: HTTP tokens (RFC 9110 §16.7), kept in
/// lower case (protocol names compare case-insensitively).
pub(crate) fn parse_upgrade_protocols(
    raw: Option<Vec<String>>,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let Some(raw) = raw else {
        return DEFAULT_UPGRADE_PROTOCOLS
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
    };
    let mut protocols = Vec::with_capacity(raw.len());
    for (index, name) in raw.into_iter().enumerate() {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            problems.push(Problem::field(
                format!("upgrade_protocols[{index}]"),
                format!("{name:?} is not a protocol name: expected a token such as \"websocket\""),
            ));
            continue;
        }
        let name = name.to_ascii_lowercase();
        if !protocols.contains(&name) {
            protocols.push(name);
        }
    }
    protocols
}

/// `tchar` of RFC 9110 §5.6.2, plus `/` for versioned protocols
/// (`Upgrade: HTTP/2.0`).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        let mut problems = Vec::new();
        let trusted = parse_trusted_proxies(
            Some(vec!["10.1.2.3/8".into(), "192.0.2.7".into(), "::1".into()]),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(trusted.contains("10.200.0.1".parse().expect("ip")));
        assert!(trusted.contains("192.0.2.7".parse().expect("ip")));
        assert!(!trusted.contains("192.0.2.8".parse().expect("ip")));
        assert!(trusted.contains("::1".parse().expect("ip")));
        assert!(
            trusted.contains("::ffff:10.0.0.1".parse().expect("ip")),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert_eq!(trusted.nets()[0].to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_trusted_proxy_is_named() {
        let mut problems = Vec::new();
        parse_trusted_proxies(Some(vec!["10.0.0.0/33".into()]), &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "trusted_proxies[0]");
    }

    #[test]
    fn upgrade_protocols_default_and_validation() {
        let mut problems = Vec::new();
        assert_eq!(parse_upgrade_protocols(None, &mut problems), ["websocket"]);
        let protocols = parse_upgrade_protocols(
            Some(vec![
                "WebSocket".into(),
                "websocket".into(),
                "bad name".into(),
            ]),
            &mut problems,
        );
        assert_eq!(protocols, ["websocket"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "upgrade_protocols[2]");
    }
}
