//! One path normalisation for every match (issue 21, points 4 and 7): any
//! spelling of a path that lands in `/admin/api/` is the admin API, never
//! the handler; route prefixes, static files and the preview host match
//! the same normal path, which is also what the handler receives; and no
//! `Location` Elsinore writes starts with `//`. Over HTTP/1.1 and h2c.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;

const KEY: &str = "path-normalisation-project-key-0123456789";
const PROJECT_HEADER: &str = "x-hamlet-project-key";

/// Spellings of `/admin/api/_keys` a handler (Python's http.server,
/// Express, most frameworks) would route to its own `/admin/api/_keys`.
const ADMIN_SPELLINGS: &[&str] = &[
    "//admin/api/_keys",
    "/admin/api/%5Fkeys",
    "/x/../admin/api/_keys",
    "/%2e%2e/admin//api/%5fkeys/",
];

/// Project `site` (with a key): host `site.test`, whose `public/` holds a
/// `docs/` folder; handler `web` on `/` and `api` on `/api/`. The preview
/// host is `preview.localhost`.
fn start(ws: &Workspace) -> Server {
    let manifest = format!(
        "{}\n{}",
        echo_manifest_entry("web", &["/"], ""),
        echo_manifest_entry("api", &["/api/"], "")
    );
    let project = ws.project("site", &["site.test"], &manifest);
    let docs = project.join("hosts/site.test/public/docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("index.html"), "<h1>docs</h1>").unwrap();
    Server::start(&ws.write_config(&json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "preview_host": "preview.localhost",
        "projects": [{"path": "site", "key": KEY}],
    })))
}

/// A response, whichever protocol carried it.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "{}: body is not JSON ({err}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn location(&self) -> Option<&str> {
        self.headers
            .get("location")
            .and_then(|value| value.to_str().ok())
    }
}

/// The two ways a client talks to Elsinore in these tests.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    H2c,
}

/// `GET path` on `host` over `protocol`, with `headers`.
async fn get(
    addr: SocketAddr,
    protocol: Protocol,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    match protocol {
        Protocol::Http1 => {
            let mut request = Req::new(addr, http::Method::GET, path).host(host);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let reply = request.send().await;
            Answer {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            }
        }
        Protocol::H2c => tokio::time::timeout(WAIT, h2_get(addr, host, path, headers))
            .await
            .expect("h2c request did not complete in time"),
    }
}

/// One request on a fresh HTTP/2 prior-knowledge connection; the path
/// goes into `:path` exactly as given.
async fn h2_get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let mut request = Request::get(format!("http://{host}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("h2 response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Asserts no handler was ever asked for an admin path: the echo handler
/// logs every request it gets (Elsinore relays that to its own log), and a
/// marker request sent afterwards is logged after all of them.
async fn assert_no_handler_saw_admin_paths(server: &Server, marker: &str) {
    let reply = server.get("site.test", marker).send().await;
    assert_eq!(reply.status, StatusCode::OK);
    server.logs.wait_for(&format!("echo GET {marker} 200"));
    let seen: Vec<String> = server
        .logs
        .all()
        .into_iter()
        .filter(|line| line.contains("elsinore::handler") && line.contains("admin"))
        .collect();
    assert!(
        seen.is_empty(),
        "a handler was asked for an admin path: {seen:#?}"
    );
}

async fn admin_spellings_are_the_admin_api(protocol: Protocol) {
    let ws = Workspace::new();
    let server = start(&ws);
    for path in ADMIN_SPELLINGS {
        let answer = get(server.addr, protocol, "site.test", path, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{protocol:?} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let body = answer.json();
        assert_eq!(body["error"], "unauthorized", "{path}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("missing project key")),
            "{path}: {body}"
        );
        assert!(
            answer.headers.contains_key("www-authenticate"),
            "{path}: {:?}",
            answer.headers
        );
    }
    // Encoded separators stay data in the normal form, but a handler that
    // decodes them (WSGI's PATH_INFO) would read the admin API's path:
    // refused, never forwarded.
    for path in [
        "/admin%2Fapi/_keys",
        "/admin/api%5C_hosts",
        "/admin%2fapi%2f_keys/1",
    ] {
        let answer = get(server.addr, protocol, "site.test", path, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{protocol:?} {path}"
        );
        let body = answer.json();
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("encoded")),
            "{path}: {body}"
        );
    }
    // With the project key, the same spelling is the admin API at work.
    let answer = get(
        server.addr,
        protocol,
        "site.test",
        "/admin/api/%5Fkeys",
        &[(PROJECT_HEADER, KEY)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["keys"], json!([]), "{body}");
    assert_eq!(body["host"], "site.test", "{body}");

    assert_no_handler_saw_admin_paths(&server, "/marker-after-the-spellings").await;
    // The access log keeps what the client sent.
    server.logs.wait_for("path=//admin/api/_keys");
}

#[tokio::test]
async fn admin_api_spellings_reach_the_admin_api_never_the_handler_over_http1() {
    admin_spellings_are_the_admin_api(Protocol::Http1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_spellings_reach_the_admin_api_never_the_handler_over_h2c() {
    admin_spellings_are_the_admin_api(Protocol::H2c).await;
}

/// A route prefix matches the normal path, and the handler receives that
/// path (with the query as the client sent it).
#[tokio::test(flavor = "multi_thread")]
async fn route_prefixes_match_the_normal_path_which_the_handler_receives() {
    let ws = Workspace::new();
    let server = start(&ws);
    let cases = [
        ("//api/feed", "api", "/api/feed"),
        ("/%61pi/feed", "api", "/api/feed"),
        ("/web/../api/feed", "api", "/api/feed"),
        ("/./api//feed/", "api", "/api/feed/"),
        (
            "/api/../feed?next=/api/../x&q=%2f",
            "web",
            "/feed?next=/api/../x&q=%2f",
        ),
        ("/api/a%2bb/%7euser", "api", "/api/a%2Bb/~user"),
    ];
    for protocol in [Protocol::Http1, Protocol::H2c] {
        for (path, handler, received) in cases {
            let answer = get(server.addr, protocol, "site.test", path, &[]).await;
            assert_eq!(answer.status, StatusCode::OK, "{protocol:?} {path}");
            let body = answer.json();
            assert_eq!(body["handler"], handler, "{protocol:?} {path}: {body}");
            assert_eq!(body["path"], received, "{protocol:?} {path}: {body}");
        }
    }
}

/// `GET //docs?x=1` for a folder of `public/` is sent to `/docs/?x=1`,
/// never to `//docs/?x=1` (which a browser reads as the host `docs`).
#[tokio::test(flavor = "multi_thread")]
async fn static_folder_redirects_never_start_with_two_slashes() {
    let ws = Workspace::new();
    let server = start(&ws);
    for protocol in [Protocol::Http1, Protocol::H2c] {
        for (path, location) in [
            ("//docs?x=1", "/docs/?x=1"),
            ("///docs", "/docs/"),
            ("/x/..//docs?x=1", "/docs/?x=1"),
            ("/%64ocs", "/docs/"),
        ] {
            let answer = get(server.addr, protocol, "site.test", path, &[]).await;
            assert_eq!(
                answer.status,
                StatusCode::MOVED_PERMANENTLY,
                "{protocol:?} {path}"
            );
            assert_eq!(answer.location(), Some(location), "{protocol:?} {path}");
        }
        let answer = get(server.addr, protocol, "site.test", "//docs/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{protocol:?}");
        assert_eq!(answer.body, "<h1>docs</h1>");
    }
}

/// The preview host matches `/projects/<name>` on the normal path too.
#[tokio::test(flavor = "multi_thread")]
async fn preview_paths_are_matched_after_normalisation() {
    let ws = Workspace::new();
    let server = start(&ws);
    for protocol in [Protocol::Http1, Protocol::H2c] {
        let answer = get(
            server.addr,
            protocol,
            "preview.localhost",
            "//projects/site?x=1",
            &[],
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::PERMANENT_REDIRECT,
            "{protocol:?}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(
            answer.location(),
            Some("/projects/site/?x=1"),
            "{protocol:?}"
        );

        for path in ["//projects/site//api/feed", "/projects/%73ite/./api/feed"] {
            let answer = get(server.addr, protocol, "preview.localhost", path, &[]).await;
            assert_eq!(answer.status, StatusCode::OK, "{protocol:?} {path}");
            let body = answer.json();
            assert_eq!(body["handler"], "api", "{protocol:?} {path}: {body}");
            assert_eq!(body["path"], "/api/feed", "{protocol:?} {path}: {body}");
        }
    }
}
