//! The operator listener's trust boundary: which requests it answers at
//! all. A browser on the operator's machine can reach a loopback listener
//! too, so a page elsewhere must not be able to drive it: DNS rebinding
//! (a foreign name resolving to 127.0.0.1) is stopped by the `Host` check,
//! cross-site requests by the `Origin`/`Sec-Fetch-Site` check, and
//! anyone else on the network by the optional bearer token.
//!
//! Pure decisions only; the listener turns a [`Refusal`] into a response.

use std::net::{IpAddr, SocketAddr};

use elsinore_config::OperatorAccess;
use http::{header, HeaderMap, Method, Request};
use subtle::ConstantTimeEq;

/// Paths a health checker may call without the token.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Why the operator listener will not answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// More than one `Host` header (RFC 9112 §3.2: 400).
    TwoHosts,
    /// No `Host` at all (421).
    NoHost,
    /// A `Host` that is not this listener's (421).
    ForeignHost(String),
    /// The bearer token is missing (401).
    NoToken,
    /// A token was presented and is wrong (401).
    WrongToken,
    /// A state-changing request from another origin (403).
    ForeignOrigin(String),
    /// A state-changing request the browser marks `Sec-Fetch-Site:
    /// cross-site` (403).
    CrossSite,
}

/// Checks, in this order, the `Host` (421), the token (401) and, for
/// methods that change something, the origin (403). `local` is the address
/// the connection arrived on.
pub fn check<B>(
    access: &OperatorAccess,
    request: &Request<B>,
    local: SocketAddr,
) -> Result<(), Refusal> {
    let headers = request.headers();
    let host = request_host(request)?;
    if !host_is_ours(&host, access, local.ip()) {
        return Err(Refusal::ForeignHost(host));
    }
    if let Some(token) = &access.token {
        if !OPEN_PATHS.contains(&request.uri().path()) {
            match bearer(headers) {
                None => return Err(Refusal::NoToken),
                Some(presented) => {
                    // `ct_eq` on slices of different lengths returns at once:
                    // only the length can leak, never a matching prefix.
                    let equal: bool = presented.as_bytes().ct_eq(token.expose().as_bytes()).into();
                    if !equal {
                        return Err(Refusal::WrongToken);
                    }
                }
            }
        }
    }
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        check_origin(headers, &host)?;
    }
    Ok(())
}

/// The `Host` header, or the authority of an absolute or HTTP/2 target;
/// when both are present both must agree, so neither can smuggle a name
/// past the other.
fn request_host<B>(request: &Request<B>) -> Result<String, Refusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::TwoHosts);
    }
    let header = header.map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .trim()
            .to_ascii_lowercase()
    });
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase());
    match (header, authority) {
        (Some(header), Some(authority)) if header != authority => Err(Refusal::ForeignHost(
            format!("{header} (target {authority})"),
        )),
        (Some(host), _) | (None, Some(host)) if !host.is_empty() => Ok(host),
        _ => Err(Refusal::NoHost),
    }
}

/// `host` (lower-case, as sent) names this listener: its own address,
/// `localhost`, or an `admin_hosts` name, with any port or none.
fn host_is_ours(host: &str, access: &OperatorAccess, local: IpAddr) -> bool {
    let Some(name) = strip_port(host) else {
        return false;
    };
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return literal.parse::<IpAddr>().is_ok_and(|ip| same_ip(ip, local));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return same_ip(ip, local);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    name == "localhost" || access.hosts.iter().any(|h| h.as_str() == name)
}

/// A listener on `[::]` sees IPv4 clients as `::ffff:a.b.c.d`.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// `name` of `name[:port]` / `[v6][:port]`; `None` when the port is not
/// a port or an IPv6 literal is unbracketed.
fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let rest = &host[end..];
        (&host[..end], rest.strip_prefix(':'))
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    match port {
        Some(port) if port.parse::<u16>().is_err() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            None
        }
        _ if host.starts_with('[') && host.len() > name.len() && port.is_none() => None,
        _ => Some(name),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A request without `Origin` comes from curl or a script: fine. A browser
/// always sends `Origin` on a POST; it must be this listener as the
/// request addressed it (`http://` or, behind a TLS proxy, `https://`).
fn check_origin(headers: &HeaderMap, host: &str) -> Result<(), Refusal> {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(Refusal::CrossSite);
    }
    for origin in headers.get_all(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes())
            .trim()
            .to_ascii_lowercase();
        let same = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !same {
            return Err(Refusal::ForeignOrigin(origin));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use elsinore_config::Hostname;

    const LOCAL: &str = "127.0.0.1:9090";

    fn access(token: Option<&str>) -> OperatorAccess {
        let config = elsinore_config::Config::parse(
            &serde_json::json!({
                "admin_listen": LOCAL,
                "admin_hosts": ["ops.example.com"],
                "admin_token_env": token.map(|_| "T"),
                "projects": [],
            })
            .to_string(),
            std::path::Path::new("/tmp/config.json"),
            |_| token.map(str::to_owned),
        )
        .expect("valid config");
        assert_eq!(
            config.operator_access.hosts,
            [Hostname::parse("ops.example.com").expect("name")]
        );
        config.operator_access
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn verdict(access: &OperatorAccess, local: &str, request: &Request<()>) -> Result<(), Refusal> {
        check(access, request, local.parse().expect("addr"))
    }

    #[test]
    fn host_must_name_this_listener() {
        let open = access(None);
        for host in [
            "localhost",
            "LOCALHOST:9090",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:9090",
            "ops.example.com:443",
        ] {
            let r = request("GET", "/routes", &[("host", host)]);
            assert_eq!(verdict(&open, LOCAL, &r), Ok(()), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9090",
            "127.0.0.2:9090",
            "localhost:x",
            "localhost:99999",
            "ops.example.com.evil",
            "[::1]:9090",
        ] {
            let r = request("GET", "/routes", &[("host", host)]);
            assert_eq!(
                verdict(&open, LOCAL, &r),
                Err(Refusal::ForeignHost(host.to_ascii_lowercase())),
                "{host}"
            );
        }
        let r = request("GET", "/healthz", &[]);
        assert_eq!(verdict(&open, LOCAL, &r), Err(Refusal::NoHost));
        let r = request(
            "GET",
            "/",
            &[("host", "localhost"), ("host", "evil.example")],
        );
        assert_eq!(verdict(&open, LOCAL, &r), Err(Refusal::TwoHosts));
        // IPv6 and a listener on [::] reached over IPv4.
        let r = request("GET", "/", &[("host", "[::1]:9090")]);
        assert_eq!(verdict(&open, "[::1]:9090", &r), Ok(()));
        let r = request("GET", "/", &[("host", "10.0.0.5:9090")]);
        assert_eq!(verdict(&open, "[::ffff:10.0.0.5]:9090", &r), Ok(()));
        // An absolute target must agree with Host.
        let r = request(
            "GET",
            "http://evil.example/routes",
            &[("host", "localhost")],
        );
        assert!(matches!(
            verdict(&open, LOCAL, &r),
            Err(Refusal::ForeignHost(_))
        ));
    }

    #[test]
    fn token_is_needed_except_for_health_checks() {
        let guarded = access(Some("0123456789abcdef"));
        let host = ("host", "localhost:9090");
        for path in ["/healthz", "/readyz"] {
            assert_eq!(
                verdict(&guarded, LOCAL, &request("GET", path, &[host])),
                Ok(())
            );
        }
        let cases: [(Headers, Result<(), Refusal>); 5] = [
            (&[host], Err(Refusal::NoToken)),
            (&[host, ("authorization", "Bearer ")], Err(Refusal::NoToken)),
            (
                &[host, ("authorization", "Basic 0123456789abcdef")],
                Err(Refusal::NoToken),
            ),
            (
                &[host, ("authorization", "Bearer 0123456789abcdeF")],
                Err(Refusal::WrongToken),
            ),
            (
                &[host, ("authorization", "bearer 0123456789abcdef")],
                Ok(()),
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(
                verdict(&guarded, LOCAL, &request("GET", "/routes", headers)),
                expected,
                "{headers:?}"
            );
        }
        // Host comes first: a foreign host learns nothing about the token.
        let r = request("GET", "/routes", &[("host", "evil.example")]);
        assert!(matches!(
            verdict(&guarded, LOCAL, &r),
            Err(Refusal::ForeignHost(_))
        ));
    }

    #[test]
    fn state_changes_must_come_from_this_origin() {
        let open = access(None);
        let host = ("host", "localhost:9090");
        let cases: [(&str, Headers, Result<(), Refusal>); 7] = [
            ("POST", &[host], Ok(())),
            ("POST", &[host, ("origin", "http://localhost:9090")], Ok(())),
            (
                "POST",
                &[host, ("origin", "https://attacker.example")],
                Err(Refusal::ForeignOrigin("https://attacker.example".into())),
            ),
            (
                "POST",
                &[host, ("origin", "null")],
                Err(Refusal::ForeignOrigin("null".into())),
            ),
            (
                "POST",
                &[host, ("origin", "http://localhost:9091")],
                Err(Refusal::ForeignOrigin("http://localhost:9091".into())),
            ),
            (
                "DELETE",
                &[host, ("sec-fetch-site", "cross-site")],
                Err(Refusal::CrossSite),
            ),
            (
                "GET",
                &[
                    host,
                    ("origin", "https://attacker.example"),
                    ("sec-fetch-site", "cross-site"),
                ],
                Ok(()),
            ),
        ];
        for (method, headers, expected) in cases {
            assert_eq!(
                verdict(&open, LOCAL, &request(method, "/reload", headers)),
                expected,
                "{method} {headers:?}"
            );
        }
    }
}
