//! Header rules between client and handler: hop-by-hop removal, forwarding
//! headers, and the handler context Elsinore alone may set.

use http::header::{HeaderName, CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};

use elsinore_tracing::{Traceparent, TRACEPARENT, TRACESTATE};

use crate::trust::drop_underscored;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The client's address as Elsinore determined it (`trusted_proxies`).
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The path prefix Elsinore stripped (preview paths); only Elsinore sets it.
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Prefix of the handler-context headers; clients may never set them.
const CONTEXT_PREFIX: &str = "x-elsinore-";

/// The request id as answered to the client, marked sensitive. It is a new
/// value on every response: HTTP/2's HPACK would add each one to the
/// connection's header table, evicting the entries that do repeat
/// (content-type, a cookie) and never finding it again; sensitive, it goes
/// as a literal never indexed (RFC 7541 §6.2.3). HTTP/1.1 ignores the mark.
pub(crate) fn answered_request_id(mut request_id: HeaderValue) -> HeaderValue {
    request_id.set_sensitive(true);
    request_id
}

/// What the handler is told about a request.
pub(crate) struct Context<'a> {
    /// Moved into the request: made for it, so no copy is needed.
    pub host: HeaderValue,
    pub project: &'a HeaderValue,
    pub project_key: Option<&'a HeaderValue>,
    /// `X-Elsinore-Auth`: `none`, `hostAdmin` or `projectAdmin`.
    pub auth: HeaderValue,
    pub request_id: &'a HeaderValue,
    /// Who sent the request: `X-Real-IP` (see [`crate::trust`]).
    pub client_ip: &'a HeaderValue,
    /// The connection's peer, appended to `X-Forwarded-For` (see
    /// [`crate::ConnInfo`]).
    pub peer_ip: &'a HeaderValue,
    /// The peer is one of `trusted_proxies`: its `X-Forwarded-*` headers
    /// are kept.
    pub trusted_peer: bool,
    /// `underscores_in_headers`.
    pub underscores_in_headers: bool,
    pub proto: &'static str,
    /// The port of the listener the connection came in on, when known.
    pub port: Option<&'a HeaderValue>,
    /// `X-Forwarded-Prefix`: what was stripped from the path, if anything.
    pub forwarded_prefix: Option<&'a HeaderValue>,
    /// `forward_host = "tenant"`: `X-Forwarded-Host` is the tenant host
    /// even behind a trusted proxy, so it never disagrees with `Host`.
    pub tenant_host: bool,
    /// The W3C trace context for the handler: this request's trace with
    /// Elsinore's span as the parent (see `elsinore_tracing`).
    pub traceparent: Traceparent,
    /// The client's `tracestate`, when its trace is continued.
    pub tracestate: Option<&'a HeaderValue>,
}

/// Whether `token` is one of the items the `Connection` header lists
/// (`close`, `keep-alive`, `upgrade`), in any case, over every copy.
pub(crate) fn connection_lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
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

/// Strips any client-sent context (and any header spelled to be read as
/// one) from `headers`, and returns the forwarding headers and handler
/// context to add (every client copy of each is gone from `headers`).
///
/// Returned rather than inserted, already written as HTTP/1.1 header
/// lines: the direct exchange with a handler copies them straight after
/// the request's own headers, as nginx does. Inserting them into the map
/// (a hash and a probe each, and a growth of the map) cost about 4,500
/// instructions per request, a seventh of the request path, and holding
/// them as header values another ~1,000 in clones and drops
/// (docs/performance.md). hyper's client path inserts them
/// ([`ContextHeaders::insert_into`]).
pub(crate) fn set_context(
    headers: &mut HeaderMap,
    context: Context<'_>,
    original_host: Option<&HeaderValue>,
) -> ContextHeaders {
    // One pass over the names says which of the headers handled below the
    // client sent: usually none, and every lookup or removal of an absent
    // name would cost a hash of it.
    let sent = Sent::scan(headers);
    if sent.context {
        remove_prefixed(headers, CONTEXT_PREFIX);
    }
    if sent.underscored {
        remove_where(headers, |name| {
            name.contains('_') && drop_underscored(name, context.underscores_in_headers)
        });
    }
    if sent.forwarded {
        // RFC 7239's header says the same as X-Forwarded-*, unchecked.
        headers.remove(FORWARDED);
    }
    if sent.real_ip {
        headers.remove(X_REAL_IP);
    }
    if sent.request_id {
        headers.remove(X_REQUEST_ID);
    }
    // The client's trace context, every copy: Elsinore's replaces it (a
    // valid one is continued through `context.traceparent`).
    if sent.traceparent {
        headers.remove(TRACEPARENT);
    }
    if sent.tracestate {
        headers.remove(TRACESTATE);
    }
    let mut added = ContextHeaders::with_room();

    // A trusted proxy's chain is kept and extended; anyone else's is
    // replaced: the client's own entries would be believed downstream.
    let forwarded_for = if sent.forwarded_for && context.trusted_peer {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    if sent.forwarded_for {
        headers.remove(X_FORWARDED_FOR);
    }
    match forwarded_for {
        Some(mut forwarded_for) => {
            forwarded_for.push_str(", ");
            // Made from an IP address: always text.
            forwarded_for.push_str(context.peer_ip.to_str().unwrap_or_default());
            if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
                added.push(field::X_FORWARDED_FOR, &value);
            }
        }
        // The common case: no proxy in front, the connection's value as is.
        None => added.push(field::X_FORWARDED_FOR, context.peer_ip),
    }
    added.push(field::X_REAL_IP, context.client_ip);
    // What a trusted proxy says about the client's side (it terminated
    // TLS, on its own port) is kept; anyone else's is Elsinore's own.
    let keep = |sent: bool| sent && context.trusted_peer;
    if !keep(sent.forwarded_proto) {
        if sent.forwarded_proto {
            headers.remove(X_FORWARDED_PROTO);
        }
        added.push(
            field::X_FORWARDED_PROTO,
            &HeaderValue::from_static(context.proto),
        );
    }
    if !keep(sent.forwarded_port) {
        if sent.forwarded_port {
            headers.remove(X_FORWARDED_PORT);
        }
        if let Some(port) = context.port {
            added.push(field::X_FORWARDED_PORT, port);
        }
    }
    if context.tenant_host || !keep(sent.forwarded_host) {
        if sent.forwarded_host {
            headers.remove(X_FORWARDED_HOST);
        }
        if let Some(host) = original_host {
            added.push(field::X_FORWARDED_HOST, host);
        }
    }
    if sent.forwarded_prefix {
        headers.remove(X_FORWARDED_PREFIX);
    }
    if let Some(prefix) = context.forwarded_prefix {
        added.push(field::X_FORWARDED_PREFIX, prefix);
    }

    added.push(field::X_ELSINORE_HOST, &context.host);
    added.push(field::X_ELSINORE_PROJECT, context.project);
    if let Some(key) = context.project_key {
        added.push(field::X_ELSINORE_PROJECT_KEY, key);
    }
    added.push(field::X_ELSINORE_AUTH, &context.auth);
    added.push(field::X_REQUEST_ID, context.request_id);
    // Hex and dashes only (`Traceparent`): a valid header value.
    added.push_bytes(field::TRACEPARENT, context.traceparent.as_bytes());
    if let Some(state) = context.tracestate {
        added.push(field::TRACESTATE, state);
    }
    added
}

/// Each added header's name and `": "`, as [`ContextHeaders`] writes it
/// (lower case, as the map holds names). Spelled out rather than taken
/// from the `HeaderName`s so that each is a constant copy; a unit test
/// checks each against its `HeaderName`.
mod field {
    pub(super) const X_FORWARDED_FOR: &[u8] = b"x-forwarded-for: ";
    pub(super) const X_REAL_IP: &[u8] = b"x-real-ip: ";
    pub(super) const X_FORWARDED_PROTO: &[u8] = b"x-forwarded-proto: ";
    pub(super) const X_FORWARDED_PORT: &[u8] = b"x-forwarded-port: ";
    pub(super) const X_FORWARDED_HOST: &[u8] = b"x-forwarded-host: ";
    pub(super) const X_FORWARDED_PREFIX: &[u8] = b"x-forwarded-prefix: ";
    pub(super) const X_ELSINORE_HOST: &[u8] = b"x-elsinore-host: ";
    pub(super) const X_ELSINORE_PROJECT: &[u8] = b"x-elsinore-project: ";
    pub(super) const X_ELSINORE_PROJECT_KEY: &[u8] = b"x-elsinore-project-key: ";
    pub(super) const X_ELSINORE_AUTH: &[u8] = b"x-elsinore-auth: ";
    pub(super) const X_REQUEST_ID: &[u8] = b"x-request-id: ";
    pub(super) const TRACEPARENT: &[u8] = b"traceparent: ";
    pub(super) const TRACESTATE: &[u8] = b"tracestate: ";
}

/// The headers [`set_context`] adds for the handler, in the order they are
/// sent, as HTTP/1.1 header lines (`name: value\r\n` each). No name
/// appears twice, and none of them is left in the request's own headers.
///
/// Every value comes from a `HeaderValue` or a [`Traceparent`], neither of
/// which can hold CR, LF or NUL: no line can end early or start another.
#[derive(Debug, Default)]
pub(crate) struct ContextHeaders {
    lines: Vec<u8>,
}

impl ContextHeaders {
    /// Empty, with room for what a request usually gets (~400 bytes).
    fn with_room() -> Self {
        Self {
            lines: Vec::with_capacity(ROOM),
        }
    }

    #[inline]
    fn push(&mut self, field: &'static [u8], value: &HeaderValue) {
        self.push_bytes(field, value.as_bytes());
    }

    /// `value` must be a valid header value.
    #[inline]
    fn push_bytes(&mut self, field: &'static [u8], value: &[u8]) {
        self.lines.extend_from_slice(field);
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
    }

    /// The header lines, each ending in CRLF.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.lines
    }

    /// Each field as name and value, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&byte| byte == b':')?;
                // Every line is `name: value`; `get` keeps a malformed one
                // from panicking all the same.
                Some((&line[..colon], line.get(colon + 2..)?))
            })
    }

    /// Adds them to `headers` (for hyper's client, which writes only the
    /// map).
    pub(crate) fn insert_into(self, headers: &mut HeaderMap) {
        let fields: Vec<(HeaderName, HeaderValue)> = self
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name).ok()?,
                    HeaderValue::from_bytes(value).ok()?,
                ))
            })
            .collect();
        // Room for all in one step, not a growth (and rehash) every few.
        let _ = headers.try_reserve(fields.len());
        for (name, value) in fields {
            headers.insert(name, value);
        }
    }
}

/// Bytes reserved for [`ContextHeaders`]: the ten usual lines take ~370.
const ROOM: usize = 512;

/// Which of the headers [`set_context`] replaces or extends the client sent.
#[derive(Debug, Default)]
struct Sent {
    context: bool,
    /// A name with `_` (see [`drop_underscored`]).
    underscored: bool,
    forwarded: bool,
    real_ip: bool,
    forwarded_for: bool,
    forwarded_host: bool,
    forwarded_proto: bool,
    forwarded_port: bool,
    forwarded_prefix: bool,
    request_id: bool,
    traceparent: bool,
    tracestate: bool,
}

impl Sent {
    fn scan(headers: &HeaderMap) -> Self {
        let mut sent = Self::default();
        for name in headers.keys() {
            let name = name.as_str();
            if name.starts_with(CONTEXT_PREFIX) {
                sent.context = true;
            } else if name.starts_with("x-forwarded-") {
                match name {
                    "x-forwarded-for" => sent.forwarded_for = true,
                    "x-forwarded-host" => sent.forwarded_host = true,
                    "x-forwarded-proto" => sent.forwarded_proto = true,
                    "x-forwarded-port" => sent.forwarded_port = true,
                    "x-forwarded-prefix" => sent.forwarded_prefix = true,
                    _ => {}
                }
            } else if name == "forwarded" {
                sent.forwarded = true;
            } else if name == "x-real-ip" {
                sent.real_ip = true;
            } else if name == "x-request-id" {
                sent.request_id = true;
            } else if name == "traceparent" {
                sent.traceparent = true;
            } else if name == "tracestate" {
                sent.tracestate = true;
            }
            if name.contains('_') {
                sent.underscored = true;
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

/// Removes every header whose (lower-case) name starts with `prefix`.
fn remove_prefixed(headers: &mut HeaderMap, prefix: &str) {
    remove_where(headers, |name| name.starts_with(prefix));
}

/// Removes every header whose (lower-case) name passes `doomed`. Only
/// allocates when there is something to remove.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&str) -> bool) {
    if !headers.keys().any(|name| doomed(name.as_str())) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name.as_str()))
        .cloned()
        .collect();
    for name in names {
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

    /// Elsinore's `traceparent` in the tests' contexts.
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-00";

    fn traceparent() -> Traceparent {
        let trace = elsinore_tracing::TraceContext {
            trace_id: [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ],
            span_id: [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8],
            remote_parent: None,
            sampled: false,
            tracestate: None,
        };
        let made = trace.traceparent();
        assert_eq!(made.as_str(), TRACE);
        made
    }

    const X_ELSINORE_HOST: HeaderName = HeaderName::from_static("x-elsinore-host");
    const X_ELSINORE_PROJECT: HeaderName = HeaderName::from_static("x-elsinore-project");
    const X_ELSINORE_PROJECT_KEY: HeaderName = HeaderName::from_static("x-elsinore-project-key");
    const X_ELSINORE_AUTH: HeaderName = HeaderName::from_static("x-elsinore-auth");

    #[test]
    fn each_written_name_is_its_header_name() {
        let pairs = [
            (field::X_FORWARDED_FOR, X_FORWARDED_FOR),
            (field::X_REAL_IP, X_REAL_IP),
            (field::X_FORWARDED_PROTO, X_FORWARDED_PROTO),
            (field::X_FORWARDED_PORT, X_FORWARDED_PORT),
            (field::X_FORWARDED_HOST, X_FORWARDED_HOST),
            (field::X_FORWARDED_PREFIX, X_FORWARDED_PREFIX),
            (field::X_ELSINORE_HOST, X_ELSINORE_HOST),
            (field::X_ELSINORE_PROJECT, X_ELSINORE_PROJECT),
            (field::X_ELSINORE_PROJECT_KEY, X_ELSINORE_PROJECT_KEY),
            (field::X_ELSINORE_AUTH, X_ELSINORE_AUTH),
            (field::X_REQUEST_ID, X_REQUEST_ID),
            (field::TRACEPARENT, TRACEPARENT),
            (field::TRACESTATE, TRACESTATE),
        ];
        for (field, name) in pairs {
            assert_eq!(field, format!("{name}: ").as_bytes(), "{name}");
        }
    }

    /// A context for `headers`, from `peer` (trusted or not).
    fn apply(
        headers: &mut HeaderMap,
        peer: &'static str,
        trusted_peer: bool,
        underscores_in_headers: bool,
        original_host: Option<&'static str>,
    ) {
        context_for(
            headers,
            peer,
            trusted_peer,
            underscores_in_headers,
            original_host,
        )
        .insert_into(headers);
    }

    /// What [`set_context`] leaves in `headers` and adds, for these facts.
    fn context_for(
        headers: &mut HeaderMap,
        peer: &'static str,
        trusted_peer: bool,
        underscores_in_headers: bool,
        original_host: Option<&'static str>,
    ) -> ContextHeaders {
        let project = HeaderValue::from_static("horatio");
        let id = HeaderValue::from_static("req-1");
        let ip = HeaderValue::from_static(peer);
        let client = HeaderValue::from_static("203.0.113.9");
        let port = HeaderValue::from_static("8080");
        let state = HeaderValue::from_static("elsinore=1");
        let context = Context {
            host: HeaderValue::from_static("blog.localhost"),
            project: &project,
            project_key: None,
            auth: HeaderValue::from_static("none"),
            request_id: &id,
            client_ip: if trusted_peer { &client } else { &ip },
            peer_ip: &ip,
            trusted_peer,
            underscores_in_headers,
            proto: "http",
            port: Some(&port),
            forwarded_prefix: None,
            tenant_host: false,
            traceparent: traceparent(),
            tracestate: Some(&state),
        };
        set_context(
            headers,
            context,
            original_host.map(HeaderValue::from_static).as_ref(),
        )
    }

    #[test]
    fn nothing_added_is_left_in_the_request_and_nothing_is_added_twice() {
        // The direct exchange writes the added headers after the request's
        // own: a client copy left in the map would reach the handler too.
        for trusted_peer in [false, true] {
            let mut headers = map(&[
                ("x-elsinore-host", "evil.example"),
                ("x-elsinore-auth", "projectAdmin"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-host", "spoofed"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "1"),
                ("x-forwarded-prefix", "/evil"),
                ("x-real-ip", "6.6.6.6"),
                ("x-request-id", "client-id"),
                ("x-request-id", "second"),
                ("traceparent", "garbage"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("tracestate", "client=1"),
            ]);
            let added = context_for(
                &mut headers,
                "127.0.0.1",
                trusted_peer,
                false,
                Some("a.test"),
            );
            let mut names: Vec<&str> = added
                .iter()
                .map(|(name, _)| std::str::from_utf8(name).expect("ascii"))
                .collect();
            for name in &names {
                assert!(
                    !headers.contains_key(*name),
                    "{name} both added and left (trusted_peer {trusted_peer})"
                );
            }
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), count, "a name added twice: {names:?}");
        }
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
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/spoofed"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x_elsinore_auth", "projectAdmin"),
            ("x_custom", "1"),
            ("x-hamlet-project-key", "client-key"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("traceparent", "garbage"),
            ("tracestate", "client=1"),
        ]);
        apply(
            &mut headers,
            "127.0.0.1",
            false,
            false,
            Some("blog.localhost:8080"),
        );
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(get("x-elsinore-host"), Some("blog.localhost"));
        assert_eq!(get("x-elsinore-project"), Some("horatio"));
        assert_eq!(get("x-elsinore-auth"), Some("none"));
        assert_eq!(get("x-elsinore-anything"), None);
        assert_eq!(get("x-elsinore-project-key"), None);
        assert_eq!(
            get("x-forwarded-for"),
            Some("127.0.0.1"),
            "an untrusted chain is replaced"
        );
        assert_eq!(get("x-real-ip"), Some("127.0.0.1"));
        assert_eq!(get("forwarded"), None);
        assert_eq!(get("x_elsinore_auth"), None);
        assert_eq!(get("x_custom"), None, "underscores are off by default");
        assert_eq!(get("x-forwarded-host"), Some("blog.localhost:8080"));
        assert_eq!(get("x-forwarded-proto"), Some("http"));
        assert_eq!(get("x-forwarded-port"), Some("8080"));
        assert_eq!(get("x-forwarded-prefix"), None, "only Elsinore sets it");
        assert_eq!(get("x-request-id"), Some("req-1"));
        assert_eq!(get("traceparent"), Some(TRACE));
        assert_eq!(get("tracestate"), Some("elsinore=1"));
        assert_eq!(
            get("x-hamlet-project-key"),
            Some("client-key"),
            "client keys pass through"
        );
    }

    #[test]
    fn trusted_proxy_chain_is_kept_and_extended() {
        let mut headers = map(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
            ("x_custom", "1"),
            ("x_forwarded_for", "1.1.1.1"),
        ]);
        apply(&mut headers, "10.0.0.2", true, true, Some("blog.localhost"));
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            get("x-forwarded-for"),
            Some("6.6.6.6, 203.0.113.9, 10.0.0.2")
        );
        assert_eq!(get("x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get("x-forwarded-proto"), Some("https"));
        assert_eq!(get("x-forwarded-port"), Some("443"));
        assert_eq!(
            get("x_custom"),
            Some("1"),
            "underscores_in_headers passes others"
        );
        assert_eq!(
            get("x_forwarded_for"),
            None,
            "never a reserved name's spelling"
        );
    }

    #[test]
    fn tenant_host_replaces_a_trusted_proxys_forwarded_host() {
        let mut headers = map(&[("x-forwarded-host", "Proxy.Example:443")]);
        let project = HeaderValue::from_static("horatio");
        let id = HeaderValue::from_static("req-1");
        let ip = HeaderValue::from_static("10.0.0.1");
        let context = Context {
            host: HeaderValue::from_static("blog.localhost"),
            project: &project,
            project_key: None,
            auth: HeaderValue::from_static("none"),
            request_id: &id,
            client_ip: &ip,
            peer_ip: &ip,
            trusted_peer: true,
            underscores_in_headers: false,
            proto: "http",
            port: None,
            forwarded_prefix: None,
            tenant_host: true,
            traceparent: traceparent(),
            tracestate: None,
        };
        set_context(
            &mut headers,
            context,
            Some(&HeaderValue::from_static("blog.localhost")),
        )
        .insert_into(&mut headers);
        assert_eq!(
            headers.get("x-forwarded-host").map(HeaderValue::as_bytes),
            Some(&b"blog.localhost"[..])
        );
    }

    #[test]
    fn spoofed_forwarded_host_goes_when_there_is_no_host() {
        let mut headers = map(&[("x-forwarded-host", "spoofed"), ("accept", "*/*")]);
        apply(&mut headers, "::1", false, false, None);
        assert!(headers.get("x-forwarded-host").is_none());
        assert_eq!(
            headers.get("x-forwarded-for").map(HeaderValue::as_bytes),
            Some(&b"::1"[..])
        );
        assert_eq!(headers.len(), 11, "{headers:?}");
    }
}
