//! Requests without a body reach handlers through Elsinore's own HTTP/1.1
//! exchange (not hyper's client): what a handler may do on its side of a
//! keep-alive connection, and what the client then sees. The handler here
//! is a scripted raw socket server, so every byte it sends is chosen.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What the scripted handler does with one request: the bytes to write,
/// and whether to close the connection after them.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn answer(bytes: impl AsRef<[u8]>) -> Answer {
    Answer {
        bytes: bytes.as_ref().to_vec(),
        close: false,
    }
}

/// A handler answering from `script(request line, connection number,
/// request number on that connection)`, counting the connections it
/// accepted.
struct RawHandler {
    port: u16,
    connections: Arc<AtomicUsize>,
    /// Connections the handler has closed.
    closed: Arc<AtomicUsize>,
}

impl RawHandler {
    fn start(script: fn(&str, usize, usize) -> Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counter, closing) = (connections.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let closing = closing.clone();
                std::thread::spawn(move || serve(stream, number, script, &closing));
            }
        });
        Self {
            port,
            connections,
            closed,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Elsinore serving project `raw` (host `raw.test`) with this handler.
    fn behind_elsinore(&self, ws: &Workspace) -> Server {
        let manifest = format!(
            "[[handler]]\nname = \"raw\"\nurl = \"http://127.0.0.1:{}\"\n",
            self.port
        );
        ws.serve_single("raw", &manifest)
    }
}

/// Reads request heads (these requests have no body) and answers each.
/// Closing sends FIN and counts the close in `closed`; the socket itself
/// stays open until Elsinore closes its end, so a request Elsinore writes
/// to it later is taken by the kernel without complaint (no reset): only
/// the missing answer shows the connection was closed.
fn serve(
    mut stream: StdTcpStream,
    connection: usize,
    script: fn(&str, usize, usize) -> Answer,
    closed: &AtomicUsize,
) {
    let mut pending = Vec::new();
    let mut request = 0;
    loop {
        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 4);
        request += 1;
        let line = head.lines().next().unwrap_or_default().to_owned();
        let answer = script(&line, connection, request);
        if stream.write_all(&answer.bytes).is_err() {
            return;
        }
        if answer.close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            closed.fetch_add(1, Ordering::SeqCst);
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
    }
}

/// One keep-alive client connection to Elsinore.
async fn connect(server: &Server) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "raw.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    sender.ready().await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer within 10 s")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    (parts.status, parts.headers, body)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn one_handler_connection_carries_request_after_request() {
    let handler = RawHandler::start(|line, _, n| {
        if line.starts_with("HEAD") {
            // A HEAD answer says the length of a body it does not send.
            answer("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        } else if line.contains("/none") {
            answer("HTTP/1.1 204 No Content\r\n\r\n")
        } else {
            answer(ok(&format!("answer {n}")))
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    for n in 1..=5 {
        let (status, _, body) = send(&mut client, "GET", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("answer {n}"));
    }
    let (status, headers, body) = send(&mut client, "HEAD", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "1000");
    assert!(body.is_empty());
    let (status, _, _) = send(&mut client, "DELETE", "/none").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, body) = send(&mut client, "GET", "/").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("answer 8")));
    assert_eq!(
        handler.connections(),
        1,
        "every request, HEAD and 204 included, went over one pooled handler connection"
    );
}

#[tokio::test]
async fn bytes_after_a_response_never_answer_the_next_request() {
    // The first answer carries a second, unasked-for response behind it
    // (a desynchronised or malicious handler). The connection must not be
    // reused: the next request gets its own answer on a new connection.
    let handler = RawHandler::start(|_, connection, _| {
        if connection == 1 {
            let mut bytes = ok("first");
            bytes.extend_from_slice(&ok("smuggled"));
            answer(bytes)
        } else {
            answer(ok("second"))
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    let (_, _, body) = send(&mut client, "GET", "/a").await;
    assert_eq!(body, "first");
    let (status, _, body) = send(&mut client, "GET", "/b").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("second")));
    assert_eq!(handler.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_handler_drops_as_a_request_arrives_is_retried_only_if_idempotent() {
    // Connection 1 answers its first request, then closes without an
    // answer when the next one arrives: what a handler's keep-alive
    // timeout firing just as Elsinore reuses the connection looks like.
    let handler = RawHandler::start(|_, connection, n| {
        if connection == 1 && n == 2 {
            Answer {
                bytes: Vec::new(),
                close: true,
            }
        } else {
            answer(ok(&format!("connection {connection}")))
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    let (_, _, body) = send(&mut client, "GET", "/").await;
    assert_eq!(body, "connection 1");
    // GET is idempotent: sent again, on a new connection.
    let (status, _, body) = send(&mut client, "GET", "/").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("connection 2"))
    );

    // A POST (even without a body) may have been acted on: never resent.
    let handler = RawHandler::start(|_, connection, n| {
        if connection == 1 && n == 2 {
            Answer {
                bytes: Vec::new(),
                close: true,
            }
        } else {
            answer(ok("done"))
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    assert_eq!(send(&mut client, "POST", "/").await.0, StatusCode::OK);
    let (status, _, body) = send(&mut client, "POST", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["reason"],
        "the handler closed the connection before responding"
    );
    assert_eq!(handler.connections(), 1, "the POST was not sent twice");
}

#[tokio::test]
async fn a_connection_the_handler_closed_while_idle_is_not_used_again() {
    // The handler closes each connection after its first answer without
    // saying so (no `Connection: close`), as a handler whose keep-alive
    // timeout is shorter than Elsinore's does between requests.
    let handler = RawHandler::start(|_, connection, _| Answer {
        bytes: ok(&format!("connection {connection}")),
        close: true,
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    // Not idempotent, so none could be retried: each closed connection
    // must be noticed before a request is written to it. Several rounds:
    // the close must be caught every time, not once by luck.
    for round in 1..=3 {
        let (status, _, body) = send(&mut client, "POST", "/").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, Bytes::from(format!("connection {round}"))),
            "round {round}"
        );
        let closed = &handler.closed;
        until("the handler closed its connection", || async {
            closed.load(Ordering::SeqCst) >= round
        })
        .await;
    }
}

#[tokio::test]
async fn chunked_interim_and_close_delimited_answers_are_relayed() {
    let handler = RawHandler::start(|line, _, _| {
        if line.contains("/chunked") {
            answer(
                "HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kind: chunked\r\n\r\n\
                 5\r\nhello\r\n7;note=x\r\n, world\r\n0\r\nx-checksum: 1\r\n\r\n",
            )
        } else {
            // Neither length nor chunks: the body ends when the handler
            // closes.
            Answer {
                bytes: b"HTTP/1.1 200 OK\r\nx-kind: close\r\n\r\nuntil the end".to_vec(),
                close: true,
            }
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    let (status, headers, body) = send(&mut client, "GET", "/chunked").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-kind"], "chunked");
    assert_eq!(body, "hello, world");
    let (status, headers, body) = send(&mut client, "GET", "/close").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-kind"], "close");
    assert_eq!(body, "until the end");
    // The chunked answer left its connection reusable; the other closed.
    let (_, _, body) = send(&mut client, "GET", "/chunked").await;
    assert_eq!(body, "hello, world");
    assert_eq!(handler.connections(), 2);
}

#[tokio::test]
async fn answers_that_are_not_http_are_502_with_the_json_error() {
    let handler = RawHandler::start(|line, _, _| {
        let bytes: &[u8] = if line.contains("/garbage") {
            b"this is not http\r\n\r\n"
        } else if line.contains("/lengths") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"
        } else {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
        };
        Answer {
            bytes: bytes.to_vec(),
            close: true,
        }
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    for path in ["/garbage", "/lengths"] {
        let reply = server.get("raw.test", path).send().await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(reply.json()["error"], "handler failed", "{path}");
        assert_eq!(
            reply.json()["reason"],
            "the handler sent a response that is not valid HTTP",
            "{path}"
        );
    }
    // A bad chunk is found after the status was decided: the client's
    // answer is cut off (hyper drops the connection, before or after the
    // head went out), never completed.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/chunks")
        .header("host", "raw.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(response) = sender.send_request(request).await {
        assert!(response.into_body().collect().await.is_err());
    }
}
