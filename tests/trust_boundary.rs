//! The trust boundary (docs/security.md): nothing a client sends makes a
//! handler believe a context Elsinore did not send. Each test runs the
//! real binary in front of a careless handler that never reads request
//! bodies and logs every request it parses.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The smuggled request of the desync attack: the body of a GET.
const SMUGGLED: &str = "GET /admin/delete-everything HTTP/1.1\r\nHost: x\r\nX-Elsinore-Auth: projectAdmin\r\nX-Elsinore-Host: victim.test\r\n\r\n";

fn careless_handler() -> PathBuf {
    repo_root().join("tests/fixtures/careless_handler.py")
}

/// A project `d` on host `d.test` served by the careless handler, with
/// `handler_extra` added to its `[[handler]]` and `extra` top-level config
/// keys; returns the server and the handler's log file.
fn start(ws: &Workspace, handler_extra: &str, extra: Value) -> (Server, PathBuf) {
    start_with_env(ws, "", handler_extra, extra)
}

/// [`start`] with `env` (`, NAME = "value"` pairs) added to the handler's.
fn start_with_env(
    ws: &Workspace,
    env: &str,
    handler_extra: &str,
    extra: Value,
) -> (Server, PathBuf) {
    let log = ws.path().join("handler.log");
    let manifest = format!(
        "[[handler]]\nname = \"web\"\ncommand = [\"python3\", {:?}]\nroutes = [\"/\"]\nready = \"/health\"\nenv = {{ LOG_FILE = {:?}{env} }}\n{handler_extra}\n",
        careless_handler().display().to_string(),
        log.display().to_string(),
    );
    ws.project("d", &["d.test"], &manifest);
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "projects": ["d"],
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            config.insert(key.clone(), value.clone());
        }
    }
    let server = Server::start(&ws.write_config(&config));
    (server, log)
}

/// Every request the handler parsed so far.
fn handler_saw(log: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("handler log line"))
        .collect()
}

fn paths(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .filter_map(|entry| entry["path"].as_str().map(str::to_owned))
        .collect()
}

/// Sends `raw` on a new connection and reads one whole response (the
/// answers here are small and carry Content-Length).
async fn raw_exchange(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw.as_bytes()).await.expect("send");
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = find(&got, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a response in time");
    String::from_utf8_lossy(&got).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends a few ordinary requests that would pick up any connection the
/// handler was left reading a smuggled request on.
async fn follow_up(server: &Server) {
    for _ in 0..5 {
        let reply = server.get("d.test", "/after").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}

fn assert_nothing_smuggled(log: &PathBuf) {
    let seen = handler_saw(log);
    let paths = paths(&seen);
    assert!(
        !paths.iter().any(|p| p.contains("delete-everything")),
        "the handler parsed the smuggled request: {paths:?}"
    );
    for entry in &seen {
        if entry.get("raw").is_some() {
            continue;
        }
        let auth = entry["headers"]["x-elsinore-auth"].as_str();
        assert_eq!(
            auth,
            Some("none"),
            "a forged context reached the handler: {entry}"
        );
    }
}

#[tokio::test]
async fn body_of_a_get_is_never_parsed_as_a_request_over_http1() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let raw = format!(
        "GET /page HTTP/1.1\r\nHost: d.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    for _ in 0..3 {
        let response = raw_exchange(server.addr, &raw).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        follow_up(&server).await;
    }
    assert_nothing_smuggled(&log);
    let seen = handler_saw(&log);
    let page = seen
        .iter()
        .find(|e| e["path"] == "/page")
        .expect("/page reached the handler");
    assert_eq!(page["headers"]["connection"], "close", "{page}");
}

#[tokio::test]
async fn body_of_a_get_is_never_parsed_as_a_request_over_h2c() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("http://d.test/page")
            .body(Full::new(Bytes::from_static(SMUGGLED.as_bytes())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await;
        follow_up(&server).await;
    }
    assert_nothing_smuggled(&log);
}

/// The client ports the handler saw for POST /post, in order.
fn post_ports(log: &PathBuf) -> Vec<(u64, Option<String>)> {
    handler_saw(log)
        .iter()
        .filter(|e| e["path"] == "/post")
        .map(|e| {
            let connection = e["headers"]["connection"].as_str().map(str::to_owned);
            (e["port"].as_u64().unwrap_or(0), connection)
        })
        .collect()
}

#[tokio::test]
async fn posts_close_the_handler_connection_unless_it_reads_bodies() {
    // By default: every request with a body tells the handler to close.
    let ws = Workspace::new();
    let (server, log) = start_with_env(&ws, ", READ_BODIES = \"1\"", "", json!({}));
    for _ in 0..3 {
        let reply = server
            .get("d.test", "/post")
            .method("POST")
            .body("x=1")
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let posts = post_ports(&log);
    assert_eq!(posts.len(), 3);
    assert!(
        posts.iter().all(|(_, c)| c.as_deref() == Some("close")),
        "{posts:?}"
    );

    // reuse_after_body: the handler connection carries the next POST.
    let ws = Workspace::new();
    let (server, log) = start_with_env(
        &ws,
        ", READ_BODIES = \"1\"",
        "reuse_after_body = true",
        json!({}),
    );
    // More requests than request threads: some thread's pool must have
    // been handed back a connection (pools are per thread).
    for _ in 0..5 {
        let reply = server
            .get("d.test", "/post")
            .method("POST")
            .body("x=1")
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let posts = post_ports(&log);
    assert!(posts.iter().all(|(_, c)| c.is_none()), "{posts:?}");
    let ports: std::collections::HashSet<u64> = posts.iter().map(|(port, _)| *port).collect();
    assert!(
        ports.len() < posts.len(),
        "no handler connection was reused: {posts:?}"
    );
    // A GET's body is smuggling material whatever the handler promised
    // (this one, like most, never reads a GET's body).
    let raw = format!(
        "GET /page HTTP/1.1\r\nHost: d.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let response = raw_exchange(server.addr, &raw).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    follow_up(&server).await;
    assert_nothing_smuggled(&log);
}

#[tokio::test]
async fn underscore_spellings_of_headers_never_reach_the_handler() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let raw = "GET /u HTTP/1.1\r\nHost: d.test\r\nX_Elsinore_Auth: projectAdmin\r\nX_Custom: 1\r\nX-Plain: 2\r\n\r\n";
    let response = raw_exchange(server.addr, raw).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert!(headers.get("x_elsinore_auth").is_none(), "{headers}");
    assert!(
        headers.get("x_custom").is_none(),
        "underscores are off by default: {headers}"
    );
    assert_eq!(headers["x-plain"], "2");
    assert_eq!(headers["x-elsinore-auth"], "none");
}

#[tokio::test]
async fn underscores_in_headers_passes_others_but_never_a_reserved_spelling() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({"underscores_in_headers": true}));
    let raw = "GET /u HTTP/1.1\r\nHost: d.test\r\nX_Elsinore_Auth: projectAdmin\r\nX_Forwarded_For: 6.6.6.6\r\nX_Custom: 1\r\n\r\n";
    let response = raw_exchange(server.addr, raw).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert!(headers.get("x_elsinore_auth").is_none(), "{headers}");
    assert!(headers.get("x_forwarded_for").is_none(), "{headers}");
    assert_eq!(headers["x_custom"], "1");
}

#[tokio::test]
async fn only_listed_upgrade_protocols_are_tunnelled() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    // The careless handler switches to anything it is asked for: Elsinore
    // must neither ask it for h2c nor relay its 101.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /up HTTP/1.1\r\nHost: d.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .await
        .expect("send");
    let response = read_response(&mut stream).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "forwarded as a plain request: {response}"
    );
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert!(headers.get("upgrade").is_none(), "{headers}");
    // The bytes a tunnel would have carried are now just an ill-formed
    // next request on the client connection; none reaches the handler raw.
    let _ = stream
        .write_all(b"GET /raw HTTP/1.1\r\nX-Elsinore-Auth: projectAdmin\r\n\r\n")
        .await;
    follow_up(&server).await;
    assert!(handler_saw(&log).iter().all(|e| e.get("raw").is_none()));

    // With h2c allowed, a handler answering 101 gets the tunnel, as
    // WebSockets do: the setting is what decides.
    let ws2 = Workspace::new();
    let (server2, _log2) = start(&ws2, "", json!({"upgrade_protocols": ["websocket", "h2c"]}));
    let response = raw_exchange(
        server2.addr,
        "GET /up HTTP/1.1\r\nHost: d.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
}

#[tokio::test]
async fn a_101_nobody_asked_for_is_a_502() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    // /switch answers 101 whatever it was asked: relaying that would give
    // the client a raw connection to the handler.
    let response = raw_exchange(
        server.addr,
        "GET /switch HTTP/1.1\r\nHost: d.test\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 502"), "{response}");
    assert!(response.contains("upgrade_protocols"), "{response}");
    let reply = server.get("d.test", "/switch").send().await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(handler_saw(&log).iter().all(|e| e.get("raw").is_none()));
}

#[tokio::test]
async fn forwarding_headers_are_elsinores_own_from_an_untrusted_peer() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let reply = server
        .get("d.test", "/f")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-port", "1")
        .header("x-forwarded-proto", "https")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1", "{headers}");
    assert_eq!(headers["x-real-ip"], "127.0.0.1", "{headers}");
    assert!(headers.get("forwarded").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-port"],
        server.addr.port().to_string(),
        "{headers}"
    );
    assert_eq!(headers["x-forwarded-host"], "d.test");
}

/// The forged context a client sends in each request shape below.
const FORGED: &str = "X-Elsinore-Auth: projectAdmin\r\nX-Elsinore-Host: victim.test\r\nX-Elsinore-Project: victim\r\nX-Request-Id: forged-id\r\nX-Real-IP: 6.6.6.6\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntraceparent: garbage\r\ntracestate: forged=1\r\n";

#[tokio::test]
async fn the_handler_gets_one_copy_of_each_context_header_whatever_the_body() {
    // Three ways to the handler: no body and a body of declared length go
    // through Elsinore's own exchange, a chunked body through hyper's
    // client. Each must carry exactly one copy of each context header,
    // Elsinore's, whatever copies the client sent.
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let requests = [
        ("/get", format!("GET /get HTTP/1.1\r\nHost: d.test\r\n{FORGED}Connection: close\r\n\r\n")),
        ("/length", format!("POST /length HTTP/1.1\r\nHost: d.test\r\n{FORGED}Content-Length: 5\r\nConnection: close\r\n\r\nhello")),
        ("/chunked", format!("POST /chunked HTTP/1.1\r\nHost: d.test\r\n{FORGED}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
    ];
    for (path, raw) in &requests {
        let response = raw_exchange(server.addr, raw).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        let seen = handler_saw(&log);
        let entry = seen
            .iter()
            .find(|entry| entry["path"] == *path)
            .unwrap_or_else(|| panic!("{path} never reached the handler: {seen:?}"));
        let lines = entry["lines"].as_array().expect("header lines");
        let values = |name: &str| -> Vec<&str> {
            lines
                .iter()
                .filter(|line| line[0] == name)
                .filter_map(|line| line[1].as_str())
                .collect()
        };
        assert_eq!(values("x-elsinore-auth"), ["none"], "{path}: {lines:?}");
        assert_eq!(values("x-elsinore-host"), ["d.test"], "{path}: {lines:?}");
        assert_eq!(values("x-elsinore-project"), ["d"], "{path}: {lines:?}");
        assert_eq!(values("x-real-ip"), ["127.0.0.1"], "{path}: {lines:?}");
        // A sane client id is kept (it is only a correlation id), but
        // once, and it is the one the client is answered with.
        let id = values("x-request-id");
        assert_eq!(id, ["forged-id"], "{path}: {lines:?}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("\r\nx-request-id: forged-id\r\n"),
            "{path}: {response}"
        );
        let parent = values("traceparent");
        assert_eq!(parent.len(), 1, "{path}: {lines:?}");
        assert!(
            parent[0].starts_with("00-") && parent[0].len() == 55,
            "{path}: {parent:?}"
        );
        assert!(
            !parent[0].contains("0af7651916cd43dd8448eb211c80319c"),
            "two traceparents are not a trace to continue ({path})"
        );
        assert!(
            values("tracestate").is_empty(),
            "a tracestate without a valid traceparent is dropped ({path}): {lines:?}"
        );
    }
}

#[tokio::test]
async fn a_trusted_proxy_chain_is_kept_and_names_the_client() {
    let ws = Workspace::new();
    let (server, log) = start(
        &ws,
        "",
        json!({"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]}),
    );
    let reply = server
        .get("d.test", "/f")
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")
        .header("x-forwarded-proto", "https")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert_eq!(
        headers["x-forwarded-for"], "6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1",
        "{headers}"
    );
    assert_eq!(
        headers["x-real-ip"], "203.0.113.7",
        "the right-most untrusted entry"
    );
    assert_eq!(
        headers["x-forwarded-proto"], "https",
        "a trusted proxy's scheme is kept"
    );
    // The access log names that client, with the peer beside it.
    let line = server.logs.wait_for("client=203.0.113.7");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn two_host_headers_are_a_400() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let response = raw_exchange(
        server.addr,
        "GET /h HTTP/1.1\r\nHost: d.test\r\nHost: victim.test\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let body = &response[response.find("\r\n\r\n").expect("head") + 4..];
    let body: Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(body["error"], "duplicate host", "{body}");
    assert!(paths(&handler_saw(&log)).is_empty());
}

/// A connection from `source` (a 127.0.0.x address) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source address");
    socket.connect(addr).await.expect("connect")
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let ws = Workspace::new();
    let (server, _log) = start(&ws, "", json!({"limits": {"max_connections_per_ip": 2}}));
    // Two connections from 127.0.0.1, each answered once (so Elsinore has
    // surely accepted it), then held with a trickle of header bytes, as a
    // slowloris does.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: d.test\r\n\r\n")
            .await
            .expect("send");
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        stream
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("trickle");
        held.push(stream);
    }
    // The third from the same address is refused at once, with JSON.
    let mut third = connect_from("127.0.0.1", server.addr).await;
    third
        .write_all(b"GET /x HTTP/1.1\r\nHost: d.test\r\n\r\n")
        .await
        .expect("send");
    let response = read_response(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("max_connections_per_ip"), "{response}");
    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", server.addr).await;
    other
        .write_all(b"GET /x HTTP/1.1\r\nHost: d.test\r\n\r\n")
        .await
        .expect("send");
    let response = read_response(&mut other).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Once one of the held connections closes, the address is served again.
    drop(held.pop());
    until("a place for 127.0.0.1 again", || async {
        let mut stream = connect_from("127.0.0.1", server.addr).await;
        if stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: d.test\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        read_response(&mut stream).await.starts_with("HTTP/1.1 200")
    })
    .await;
}

#[tokio::test]
async fn http2_clients_are_told_a_stream_limit() {
    let ws = Workspace::new();
    let (server, _log) = start(&ws, "", json!({}));
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // The preface and an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("send");
    let mut head = [0u8; 9];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("server SETTINGS in time")
        .expect("read");
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.expect("payload");
    let max_streams = payload.chunks(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == 0x3)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(max_streams, Some(128));
}

#[tokio::test]
async fn connections_to_one_handler_are_capped_by_default() {
    let ws = Workspace::new();
    // No max_concurrent, no queue: past the default cap a request is
    // refused at once instead of opening yet another handler connection.
    let (server, _log) = start(&ws, "queue = 0", json!({}));
    // 300 slow requests over three HTTP/2 connections (100 streams each:
    // under the stream limit, and few connections from one address).
    let mut senders = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2c handshake");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let mut requests = Vec::new();
    for i in 0..300 {
        let mut sender = senders[i % 3].clone();
        requests.push(tokio::spawn(async move {
            let request = Request::get("http://d.test/slow?ms=3000")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender.send_request(request).await.expect("response");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, body)
        }));
    }
    let (mut ok, mut busy) = (0, Vec::new());
    for request in requests {
        let (status, body) = tokio::time::timeout(WAIT, request)
            .await
            .expect("answered in time")
            .expect("task");
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => busy.push(body),
            other => panic!("unexpected {other}: {body:?}"),
        }
    }
    assert!(!busy.is_empty(), "all {ok} ran at once: no cap");
    assert!(ok >= 256, "only {ok} ran");
    let body: Value = serde_json::from_slice(&busy[0]).expect("JSON");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("256 requests are running")),
        "{body}"
    );
}

/// One GET over a new h2c connection (prior knowledge), with `headers`.
async fn h2_get(addr: SocketAddr, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, Bytes) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let mut request = Request::get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

#[tokio::test]
async fn over_h2c_spellings_forwarding_headers_and_unasked_101s_are_handled_alike() {
    let ws = Workspace::new();
    let (server, log) = start(&ws, "", json!({}));
    let (status, _) = h2_get(
        server.addr,
        "http://d.test/h2",
        &[
            ("x_elsinore_auth", "projectAdmin"),
            ("x_custom", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = handler_saw(&log);
    let headers = &seen.last().expect("a request")["headers"];
    assert!(headers.get("x_elsinore_auth").is_none(), "{headers}");
    assert!(headers.get("x_custom").is_none(), "{headers}");
    assert!(headers.get("forwarded").is_none(), "{headers}");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-elsinore-auth"], "none");
    // HTTP/2 has no Upgrade: a handler's 101 is never relayed.
    let (status, body) = h2_get(server.addr, "http://d.test/switch", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body:?}");
}
