//! Header rules between client and handler: hop-by-hop removal, forwarding
//! headers, and the handler context Elsinore alone may set.

use http::header::{HeaderName, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};

pub(crate) const X_ELSINORE_HOST: HeaderName = HeaderName::from_static("x-elsinore-host");
pub(crate) const X_ELSINORE_PROJECT: HeaderName = HeaderName::from_static("x-elsinore-project");
pub(crate) const X_ELSINORE_PROJECT_KEY: HeaderName =
    HeaderName::from_static("x-elsinore-project-key");
pub(crate) const X_ELSINORE_AUTH: HeaderName = HeaderName::from_static("x-elsinore-auth");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The path prefix Elsinore stripped (preview paths); only Elsinore sets it.
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Prefix of the handler-context headers; clients may never set them.
const CONTEXT_PREFIX: &str = "x-elsinore-";

/// What the handler is told about a request.
pub(crate) struct Context<'a> {
    /// Moved into the request: made for it, so no copy is needed.
    pub host: HeaderValue,
    pub project: &'a HeaderValue,
    pub project_key: Option<&'a HeaderValue>,
    /// `X-Elsinore-Auth`: `none`, `hostAdmin` or `projectAdmin`.
    pub auth: HeaderValue,
    pub request_id: &'a HeaderValue,
    /// The peer's IP, formatted (see [`crate::ConnInfo`]).
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    /// `X-Forwarded-Prefix`: what was stripped from the path, if anything.
    pub forwarded_prefix: Option<&'a HeaderValue>,
}

/// Removes hop-by-hop headers: the fixed list (RFC 9110 §7.6.1 plus
/// `Keep-Alive` and every `Proxy-*`) and each header named in `Connection`.
/// Applied to both requests and responses.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names says which hop-by-hop ones are present; most
    // messages have none, and then nothing else is done (a removal, even
    // of an absent name, costs a hash of it).
    let present = headers
        .keys()
        .fold(0u8, |bits, name| bits | hop_by_hop_bit(name));
    if present == 0 {
        return;
    }
    // What goes, in the order it is removed, which keeps the order of the
    // headers left as it always was: the names `Connection` lists, then
    // the fixed list, then `Proxy-*`. `Connection: close`, from clients
    // opening a connection per request, is the common case: only
    // `Connection` itself goes.
    let mut doomed: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        for token in headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
        {
            // Never let `Connection: host` strip the Host header.
            let named = headers
                .keys()
                .find(|name| *name != HOST && token.eq_ignore_ascii_case(name.as_str()));
            if let Some(name) = named {
                doomed.push(name.clone());
            }
        }
    }
    for (bit, fixed) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << bit) != 0 {
            doomed.push(fixed.clone());
        }
    }
    if present & PROXY_BIT != 0 {
        doomed.extend(
            headers
                .keys()
                .filter(|name| name.as_str().starts_with("proxy-"))
                .cloned(),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The names [`remove_hop_by_hop`] removes whatever their value;
/// `Connection` first (bit 0).
const HOP_BY_HOP: [HeaderName; 6] = [
    CONNECTION,
    KEEP_ALIVE,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];
/// Any `Proxy-*` header.
const PROXY_BIT: u8 = 1 << 6;

/// The bit of `name` among [`HOP_BY_HOP`] (same order) and
/// [`PROXY_BIT`], or 0. A match on the text: the compiler turns it into a
/// switch on the length and one comparison.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    match name.as_str() {
        "connection" => 1,
        "keep-alive" => 1 << 1,
        "te" => 1 << 2,
        "trailer" => 1 << 3,
        "transfer-encoding" => 1 << 4,
        "upgrade" => 1 << 5,
        other if other.starts_with("proxy-") => PROXY_BIT,
        _ => 0,
    }
}

/// Strips any client-sent context, then sets forwarding headers and the
/// handler context.
pub(crate) fn set_context(
    headers: &mut HeaderMap,
    context: Context<'_>,
    original_host: Option<HeaderValue>,
) {
    // One pass over the names says which of the headers handled below the
    // client sent: usually none, and every lookup or removal of an absent
    // name would cost a hash of it.
    let sent = Sent::scan(headers);
    if sent.context {
        remove_prefixed(headers, CONTEXT_PREFIX);
    }
    // Room for everything inserted below in one step, not a growth (and
    // rehash) every few inserts; at worst the map grows as it would anyway.
    let _ = headers.try_reserve(ADDED);

    let forwarded_for = if sent.forwarded_for {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    match forwarded_for {
        Some(mut forwarded_for) => {
            forwarded_for.push_str(", ");
            // Made from an IP address: always text.
            forwarded_for.push_str(context.client_ip.to_str().unwrap_or_default());
            if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        // The common case: no proxy in front, the connection's value as is.
        None => {
            headers.insert(X_FORWARDED_FOR, context.client_ip.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(context.proto));
    match original_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None if sent.forwarded_host => {
            headers.remove(X_FORWARDED_HOST);
        }
        None => {}
    }

    match context.forwarded_prefix {
        Some(prefix) => {
            headers.insert(X_FORWARDED_PREFIX, prefix.clone());
        }
        None if sent.forwarded_prefix => {
            headers.remove(X_FORWARDED_PREFIX);
        }
        None => {}
    }

    headers.insert(X_ELSINORE_HOST, context.host);
    headers.insert(X_ELSINORE_PROJECT, context.project.clone());
    if let Some(key) = context.project_key {
        headers.insert(X_ELSINORE_PROJECT_KEY, key.clone());
    }
    headers.insert(X_ELSINORE_AUTH, context.auth);
    headers.insert(X_REQUEST_ID, context.request_id.clone());
}

/// At most this many headers are added by [`set_context`].
const ADDED: usize = 9;

/// Which of the headers [`set_context`] replaces or extends the client sent.
#[derive(Debug, Default)]
struct Sent {
    context: bool,
    forwarded_for: bool,
    forwarded_host: bool,
    forwarded_prefix: bool,
}

impl Sent {
    fn scan(headers: &HeaderMap) -> Self {
        let mut sent = Self::default();
        for name in headers.keys() {
            let name = name.as_str();
            if name.starts_with(CONTEXT_PREFIX) {
                sent.context = true;
            } else if name == "x-forwarded-for" {
                sent.forwarded_for = true;
            } else if name == "x-forwarded-host" {
                sent.forwarded_host = true;
            } else if name == "x-forwarded-prefix" {
                sent.forwarded_prefix = true;
            }
        }
        sent
    }
}

/// Every value of `name` joined with `, ` (a header may arrive split over
/// several lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |mut all, value| {
        all.push_str(", ");
        all.push_str(value);
        all
    }))
}

/// Removes every header whose (lower-case) name starts with `prefix`. Only
/// allocates when there is something to remove.
fn remove_prefixed(headers: &mut HeaderMap, prefix: &str) {
    if !headers.keys().any(|name| name.as_str().starts_with(prefix)) {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Secret-Hop, host"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "blog.localhost"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "accept"]);
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ] {
            let mut headers = map(&[("accept", "*/*"), (name, "x")]);
            remove_hop_by_hop(&mut headers);
            let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(left, ["accept"], "{name}");
        }
        let mut none = map(&[("host", "a"), ("accept", "*/*"), ("x-upgrade", "1")]);
        remove_hop_by_hop(&mut none);
        assert_eq!(none.len(), 3);
    }

    #[test]
    fn context_replaces_spoofed_headers() {
        let mut headers = map(&[
            ("x-elsinore-host", "evil.example"),
            ("x-elsinore-auth", "projectAdmin"),
            ("x-elsinore-anything", "1"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-host", "spoofed"),
            ("x-forwarded-prefix", "/spoofed"),
            ("x-hamlet-project-key", "client-key"),
        ]);
        let project = HeaderValue::from_static("horatio");
        let id = HeaderValue::from_static("req-1");
        let host = HeaderValue::from_static("blog.localhost");
        let ip = HeaderValue::from_static("127.0.0.1");
        let context = Context {
            host,
            project: &project,
            project_key: None,
            auth: HeaderValue::from_static("none"),
            request_id: &id,
            client_ip: &ip,
            proto: "http",
            forwarded_prefix: None,
        };
        set_context(
            &mut headers,
            context,
            Some(HeaderValue::from_static("blog.localhost:8080")),
        );
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get("x-elsinore-host"), Some("blog.localhost"));
        assert_eq!(get("x-elsinore-project"), Some("horatio"));
        assert_eq!(get("x-elsinore-auth"), Some("none"));
        assert_eq!(get("x-elsinore-anything"), None);
        assert_eq!(get("x-elsinore-project-key"), None);
        assert_eq!(
            get("x-forwarded-for"),
            Some("10.0.0.1, 10.0.0.2, 127.0.0.1")
        );
        assert_eq!(get("x-forwarded-host"), Some("blog.localhost:8080"));
        assert_eq!(get("x-forwarded-proto"), Some("http"));
        assert_eq!(get("x-forwarded-prefix"), None, "only Elsinore sets it");
        assert_eq!(get("x-request-id"), Some("req-1"));
        assert_eq!(
            get("x-hamlet-project-key"),
            Some("client-key"),
            "client keys pass through"
        );
    }

    #[test]
    fn spoofed_forwarded_host_goes_when_there_is_no_host() {
        let mut headers = map(&[("x-forwarded-host", "spoofed"), ("accept", "*/*")]);
        let (project, id, ip) = (
            HeaderValue::from_static("horatio"),
            HeaderValue::from_static("req-1"),
            HeaderValue::from_static("::1"),
        );
        let context = Context {
            host: HeaderValue::from_static("blog.localhost"),
            project: &project,
            project_key: None,
            auth: HeaderValue::from_static("none"),
            request_id: &id,
            client_ip: &ip,
            proto: "https",
            forwarded_prefix: None,
        };
        set_context(&mut headers, context, None);
        assert!(headers.get("x-forwarded-host").is_none());
        assert_eq!(
            headers.get("x-forwarded-for").map(HeaderValue::as_bytes),
            Some(&b"::1"[..])
        );
        assert_eq!(headers.len(), 7, "{headers:?}");
    }
}
