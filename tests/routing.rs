//! Request routing through the real binary: hosts, wildcards, normalisation,
//! handler choice, methods, bodies, and the JSON errors for bad hosts.

mod common;

use common::{echo_manifest, echo_manifest_entry, Req, Server, Workspace};
use http::{Method, StatusCode};
use serde_json::json;

/// alpha: a.test, *.wild.test; beta: b.test, x.wild.test (exact beats the
/// wildcard), *.deep.wild.test (longest suffix beats *.wild.test).
fn two_projects() -> (Workspace, Server) {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test", "*.wild.test"], &echo_manifest());
    ws.project(
        "beta",
        &["b.test", "x.wild.test", "*.deep.wild.test"],
        &echo_manifest(),
    );
    let config = ws.config(json!(["alpha", {"path": "beta", "key": "beta-secret-project-key"}]));
    let server = Server::start(&config);
    (ws, server)
}

#[tokio::test]
async fn routes_hosts_and_wildcards_to_their_projects() {
    let (_ws, server) = two_projects();
    let cases = [
        ("a.test", "alpha", "a.test"),
        ("b.test", "beta", "b.test"),
        ("anything.wild.test", "alpha", "anything.wild.test"),
        ("two.levels.wild.test", "alpha", "two.levels.wild.test"),
        ("x.wild.test", "beta", "x.wild.test"),
        ("y.deep.wild.test", "beta", "y.deep.wild.test"),
        // Normalisation: case, port and one trailing dot.
        ("A.TEST:8080", "alpha", "a.test"),
        ("b.test.", "beta", "b.test"),
        ("B.Test.:443", "beta", "b.test"),
    ];
    for (host, project, normalised) in cases {
        let reply = server.get(host, "/who").send().await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "host {host}: {:?}",
            reply.body
        );
        let body = reply.json();
        assert_eq!(body["project"], project, "host {host}");
        assert_eq!(reply.seen("x-elsinore-host"), [normalised], "host {host}");
        assert_eq!(reply.seen("x-elsinore-project"), [project], "host {host}");
    }
}

#[tokio::test]
async fn unknown_invalid_and_missing_hosts_get_json_errors() {
    let (_ws, server) = two_projects();

    let reply = server.get("nope.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"], "unknown host");
    assert_eq!(body["host"], "nope.test");
    assert_eq!(body["request_id"].as_str(), reply.header("x-request-id"));

    // The bare wildcard suffix is not covered by the wildcard.
    let reply = server.get("wild.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    for bad in ["bad host", "a..test", "-a.test", "a.test:port", "[::1]:80"] {
        let reply = server.get(bad, "/").send().await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "host {bad:?}");
        assert_eq!(reply.json()["error"], "invalid host", "host {bad:?}");
    }

    let reply = Req::new(server.addr, Method::GET, "/").send().await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "missing host");
}

#[tokio::test]
async fn spoofed_context_headers_are_replaced() {
    let (_ws, server) = two_projects();
    let reply = server
        .get("b.test", "/ctx")
        .header("X-Elsinore-Host", "a.test")
        .header("X-Elsinore-Project", "alpha")
        .header("X-Elsinore-Project-Key", "stolen")
        .header("X-Elsinore-Auth", "projectAdmin")
        .header("X-Elsinore-Whatever", "1")
        .header("X-Hamlet-Project-Key", "client-sent")
        .header("X-Hamlet-Host-Key", "client-host-key")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.seen("x-elsinore-host"), ["b.test"]);
    assert_eq!(reply.seen("x-elsinore-project"), ["beta"]);
    assert_eq!(
        reply.seen("x-elsinore-project-key"),
        ["beta-secret-project-key"]
    );
    assert_eq!(reply.seen("x-elsinore-auth"), ["none"]);
    assert!(reply.seen("x-elsinore-whatever").is_empty());
    // The client's own key headers reach the handler untouched.
    assert_eq!(reply.seen("x-hamlet-project-key"), ["client-sent"]);
    assert_eq!(reply.seen("x-hamlet-host-key"), ["client-host-key"]);

    // A project without a key gets no key header, even a spoofed one.
    let reply = server
        .get("a.test", "/ctx")
        .header("X-Elsinore-Project-Key", "stolen")
        .send()
        .await;
    assert!(reply.seen("x-elsinore-project-key").is_empty());
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let (_ws, server) = two_projects();
    let reply = server
        .get("a.test:8080", "/hop")
        .header("Connection", "keep-alive, X-Drop-Me")
        .header("X-Drop-Me", "1")
        .header("Keep-Alive", "timeout=5")
        .header("TE", "trailers")
        .header("Trailer", "X-Checksum")
        .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
        .header("Upgrade", "websocket")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Forwarded-Host", "spoofed.example")
        .header("X-Keep-Me", "yes")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    for gone in [
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(reply.seen(gone).is_empty(), "{gone} reached the handler");
    }
    // hyper's client adds its own `connection: keep-alive` at most; never ours.
    assert!(reply.seen("connection").iter().all(|v| v == "keep-alive"));
    assert_eq!(reply.seen("x-keep-me"), ["yes"]);
    // The client is no trusted proxy: its own chain is replaced, never
    // extended (trusted_proxies, docs/security.md).
    assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(reply.seen("x-forwarded-proto"), ["http"]);
    assert_eq!(reply.seen("x-forwarded-host"), ["a.test:8080"]);
    assert_eq!(
        reply.seen("host"),
        ["a.test:8080"],
        "Host is forwarded as sent"
    );
}

#[tokio::test]
async fn every_method_and_the_query_string_reach_the_handler() {
    let (_ws, server) = two_projects();
    for method in [
        "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE", "PROPFIND",
    ] {
        let reply = server
            .get("a.test", "/items/42?sort=desc&q=a%20b&empty=")
            .method(method)
            .body("payload")
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{method}");
        let body = reply.json();
        assert_eq!(body["method"], method);
        assert_eq!(
            body["path"], "/items/42?sort=desc&q=a%20b&empty=",
            "{method}"
        );
        assert_eq!(body["body_len"], 7, "{method}");
    }
    let reply = server
        .get("a.test", "/items/42")
        .method("HEAD")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.is_empty());
    assert!(reply.header("content-length").is_some_and(|n| n != "0"));
}

#[tokio::test]
async fn a_one_mebibyte_body_round_trips_intact() {
    let (_ws, server) = two_projects();
    let body: Vec<u8> = (0..1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let reply = server
        .get("a.test", "/echo-body")
        .method("POST")
        .body(body.clone())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "body changed on the way");
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_generated_otherwise() {
    let (_ws, server) = two_projects();
    let reply = server
        .get("a.test", "/")
        .header("X-Request-Id", "trace-abc.123")
        .send()
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc.123"));
    assert_eq!(reply.seen("x-request-id"), ["trace-abc.123"]);

    let reply = server
        .get("a.test", "/")
        .header("X-Request-Id", "no spaces allowed")
        .send()
        .await;
    let generated = reply
        .header("x-request-id")
        .expect("generated id")
        .to_owned();
    assert_ne!(generated, "no spaces allowed");
    assert_eq!(reply.seen("x-request-id"), std::slice::from_ref(&generated));

    let other = server.get("a.test", "/").send().await;
    assert_ne!(other.header("x-request-id"), Some(generated.as_str()));
}

#[tokio::test]
async fn longest_route_prefix_picks_the_handler() {
    let ws = Workspace::new();
    let manifest = [
        echo_manifest_entry("web", &["/"], ""),
        echo_manifest_entry("api", &["/api/"], ""),
        echo_manifest_entry("admin", &["/api/admin/", "/internal/"], ""),
    ]
    .join("\n");
    let server = ws.serve_single("site", &manifest);
    let cases = [
        ("/", "web"),
        ("/api", "web"),
        ("/api/", "api"),
        ("/api/GetFeed", "api"),
        ("/api/admin/keys", "admin"),
        ("/internal/x", "admin"),
    ];
    for (path, handler) in cases {
        let reply = server.get("site.test", path).send().await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.json()["handler"], handler, "{path}");
    }
}

#[tokio::test]
async fn a_path_no_handler_serves_is_a_json_404() {
    let ws = Workspace::new();
    ws.project(
        "api-only",
        &["api.test"],
        &echo_manifest_entry("api", &["/api/"], ""),
    );
    let server = Server::start(&ws.config(json!(["api-only"])));
    let reply = server.get("api.test", "/index.html").send().await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let body = reply.json();
    assert_eq!(body["error"], "no handler for this path");
    assert_eq!(body["project"], "api-only");
    assert_eq!(body["path"], "/index.html");
}

/// HTTP/2 clients send `:authority` instead of `Host`; the handler (an
/// HTTP/1.1 server) still gets a Host header and the normalised context.
#[tokio::test]
async fn http2_prior_knowledge_uses_the_authority() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (_ws, server) = two_projects();
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get("http://B.test:8443/h2?x=1")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(common::WAIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body: serde_json::Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(body["project"], "beta");
    assert_eq!(body["path"], "/h2?x=1");
    let seen = |name: &str| common::seen_in(&body, name);
    assert_eq!(seen("host"), ["B.test:8443"]);
    assert_eq!(seen("x-elsinore-host"), ["b.test"]);
    assert_eq!(seen("x-forwarded-host"), ["B.test:8443"]);
    // Close our side so the server's graceful shutdown has nothing to wait for.
    drop(sender);
    let _ = connection.await;
}

/// The request id is new on every response: over HTTP/2 it is sent as a
/// literal never indexed (RFC 7541 §6.2.3), so it does not fill the
/// connection's HPACK table and push out the headers that do repeat; on a
/// handler's answer and on Elsinore's own JSON errors alike. Read off the
/// wire: hyper's client does not say how a field was encoded.
#[tokio::test]
async fn http2_answers_send_the_request_id_never_indexed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (_ws, server) = two_projects();
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    // The preface, an empty SETTINGS, then two GETs of a.test and one of a
    // host nobody serves (a JSON 404 of Elsinore's own) on streams 1, 3, 5
    // (:method GET, :scheme http, :path / from the static table;
    // :authority a literal without indexing).
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&frame_head(0, 0x4, 0, 0));
    for (stream_id, authority) in [(1, "a.test"), (3, "a.test"), (5, "nobody.test")] {
        let length = u8::try_from(authority.len()).expect("a short name");
        let block = [&[0x82, 0x86, 0x84, 0x01, length][..], authority.as_bytes()].concat();
        out.extend_from_slice(&frame_head(block.len(), 0x1, 0x5, stream_id));
        out.extend_from_slice(&block);
    }
    stream.write_all(&out).await.expect("write");

    let mut header_blocks = Vec::new();
    let read_all = async {
        while header_blocks.len() < 3 {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.expect("frame head");
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; length];
            stream
                .read_exact(&mut payload)
                .await
                .expect("frame payload");
            match (head[3], head[4]) {
                // The server's SETTINGS: acknowledged.
                (0x4, flags) if flags & 0x1 == 0 => {
                    stream
                        .write_all(&frame_head(0, 0x4, 0x1, 0))
                        .await
                        .expect("ack");
                }
                (0x1, flags) => {
                    assert_eq!(
                        flags & 0x4,
                        0x4,
                        "one HEADERS frame per answer (END_HEADERS)"
                    );
                    assert_eq!(flags & 0x28, 0, "no padding or priority in an answer");
                    header_blocks.push(payload);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(common::WAIT, read_all)
        .await
        .expect("three HTTP/2 answers in time");
    for (n, block) in header_blocks.iter().enumerate() {
        assert_eq!(
            never_indexed_fields(block),
            1,
            "answer {n}: the request id, and only it, is never indexed: {block:02x?}"
        );
    }
}

/// An HTTP/2 frame header (RFC 9113 §4.1).
fn frame_head(length: usize, kind: u8, flags: u8, stream_id: u32) -> [u8; 9] {
    let length = u32::try_from(length).expect("a small frame").to_be_bytes();
    let id = stream_id.to_be_bytes();
    [
        length[1], length[2], length[3], kind, flags, id[0], id[1], id[2], id[3],
    ]
}

/// How many fields of an HPACK header block are literals never indexed
/// (RFC 7541 §6): walks the representations without decoding strings.
fn never_indexed_fields(block: &[u8]) -> usize {
    // An integer with an N-bit prefix (§5.1), from `at`; returns the value
    // and where the next byte is.
    fn integer(block: &[u8], at: usize, prefix: u32) -> (usize, usize) {
        let max = (1usize << prefix) - 1;
        let mut value = usize::from(block[at]) & max;
        let mut at = at + 1;
        if value == max {
            let mut shift = 0;
            loop {
                let byte = block[at];
                at += 1;
                value += usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        (value, at)
    }
    // A string literal (§5.2): its length has a 7-bit prefix.
    fn skip_string(block: &[u8], at: usize) -> usize {
        let (length, at) = integer(block, at, 7);
        at + length
    }
    let mut never_indexed = 0;
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        if first & 0x80 != 0 {
            at = integer(block, at, 7).1; // indexed field
        } else if first & 0xe0 == 0x20 {
            at = integer(block, at, 5).1; // table size update
        } else {
            // A literal: incremental indexing (6-bit name index), without
            // indexing or never indexed (4-bit); a name index of 0 means
            // the name follows as a string.
            let prefix = if first & 0x40 != 0 { 6 } else { 4 };
            if first & 0xf0 == 0x10 {
                never_indexed += 1;
            }
            let (name_index, next) = integer(block, at, prefix);
            at = if name_index == 0 {
                skip_string(block, next)
            } else {
                next
            };
            at = skip_string(block, at);
        }
    }
    never_indexed
}

/// Elsinore is a reverse proxy, not a tunnel.
#[tokio::test]
async fn connect_is_refused_with_405() {
    let (_ws, server) = two_projects();
    let reply = Req::new(server.addr, Method::CONNECT, "a.test:443")
        .host("a.test:443")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["error"], "method not allowed");
}

/// An absolute-form request target names the host (RFC 9112 §3.2.2): it is
/// routed by it, and the handler sees it as Host, whatever Host said.
#[tokio::test]
async fn absolute_form_targets_route_and_forward_by_their_authority() {
    let (_ws, server) = two_projects();
    let reply = Req::new(server.addr, Method::GET, "http://b.test:8080/abs?q=1")
        .host("a.test")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["project"], "beta");
    assert_eq!(body["path"], "/abs?q=1");
    assert_eq!(reply.seen("host"), ["b.test:8080"]);
    assert_eq!(reply.seen("x-forwarded-host"), ["b.test:8080"]);
    assert_eq!(reply.seen("x-elsinore-host"), ["b.test"]);
}

/// A hostname declared by two projects stays with the first in config.json,
/// and the conflict is logged.
#[tokio::test]
async fn a_conflicting_host_stays_with_the_first_project() {
    let ws = Workspace::new();
    ws.project("first", &["dup.test", "one.test"], &echo_manifest());
    ws.project("second", &["dup.test", "two.test"], &echo_manifest());
    let server = Server::start(&ws.config(json!(["first", "second"])));
    server
        .logs
        .wait_for("host dup.test is declared by both first and second; first keeps it");
    let reply = server.get("dup.test", "/").send().await;
    assert_eq!(reply.json()["project"], "first");
    // The loser keeps its other hosts.
    let reply = server.get("two.test", "/").send().await;
    assert_eq!(reply.json()["project"], "second");
}
