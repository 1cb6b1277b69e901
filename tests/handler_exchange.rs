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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the scripted handler does with one request: the bytes to write,
/// and whether to close the connection after them.
/// What the scripted handler does with one request: `early` is written
/// as soon as the head is read, before the body (declared by
/// `Content-Length`) is read; then `bytes`, in which `{received}` becomes
/// the number of body bytes read; then the connection is closed if `close`.
/// `never_read_body`: after `early`, the handler stops reading (and never
/// answers more), as one refusing an upload it does not want.
#[derive(Default)]
struct Answer {
    early: Vec<u8>,
    bytes: Vec<u8>,
    close: bool,
    never_read_body: bool,
    /// Right after the head, the handler drops the connection with the
    /// body unread, which makes the kernel reset it (as a crash does).
    reset: bool,
}

fn answer(bytes: impl AsRef<[u8]>) -> Answer {
    Answer {
        bytes: bytes.as_ref().to_vec(),
        ..Answer::default()
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
        self.behind_elsinore_with(ws, serde_json::json!({}))
    }

    /// The same, with `extra` config.json keys.
    fn behind_elsinore_with(&self, ws: &Workspace, extra: serde_json::Value) -> Server {
        let manifest = format!(
            "[[handler]]\nname = \"raw\"\nurl = \"http://127.0.0.1:{}\"\n",
            self.port
        );
        ws.project("raw", &["raw.test"], &manifest);
        Server::start(&ws.config_with(serde_json::json!(["raw"]), extra))
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
        if stream.write_all(&answer.early).is_err() {
            return;
        }
        if answer.reset {
            return;
        }
        if answer.never_read_body {
            // Holds the connection open, unread, until the test ends.
            std::thread::park();
            return;
        }
        let length: usize = head
            .lines()
            .filter_map(|header| header.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        while pending.len() < length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
        pending.drain(..length);
        let bytes =
            String::from_utf8_lossy(&answer.bytes).replace("{received}", &length.to_string());
        if stream.write_all(bytes.as_bytes()).is_err() {
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
    send_body(sender, method, path, Bytes::new(), &[]).await
}

async fn send_body(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "raw.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).unwrap();
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
    fn drops_the_second_request(_: &str, connection: usize, n: usize) -> Answer {
        if connection == 1 && n == 2 {
            Answer {
                close: true,
                ..Answer::default()
            }
        } else {
            answer(ok(&format!("connection {connection}")))
        }
    }
    let handler = RawHandler::start(drops_the_second_request);
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
    let handler = RawHandler::start(drops_the_second_request);
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
        ..Answer::default()
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
                ..Answer::default()
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
            ..Answer::default()
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

#[tokio::test]
async fn bodies_of_declared_length_arrive_whole() {
    let handler = RawHandler::start(|_, _, _| {
        answer("HTTP/1.1 200 OK\r\nx-received: {received}\r\ncontent-length: 2\r\n\r\nok")
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    for size in [1, 16 * 1024, 1024 * 1024 + 7] {
        let body = Bytes::from(vec![b'x'; size]);
        let (status, headers, _) = send_body(&mut client, "POST", "/upload", body, &[]).await;
        assert_eq!(status, StatusCode::OK, "{size} bytes");
        assert_eq!(headers["x-received"], size.to_string().as_str());
    }
}

#[tokio::test]
async fn an_interim_100_continue_does_not_stop_the_upload() {
    // The handler is asked `Expect: 100-continue` and says 100 before it
    // reads the body: the upload goes on, and the final answer follows.
    let handler = RawHandler::start(|_, _, _| Answer {
        early: b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
        bytes: b"HTTP/1.1 200 OK\r\nx-received: {received}\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ..Answer::default()
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    let mut client = connect(&server).await;
    let body = Bytes::from(vec![b'y'; 256 * 1024]);
    let (status, headers, body) = send_body(
        &mut client,
        "PUT",
        "/upload",
        body,
        &[("expect", "100-continue")],
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("ok")));
    assert_eq!(headers["x-received"], "262144");
}

#[tokio::test]
async fn an_answer_before_the_body_is_sent_is_relayed_and_its_connection_dropped() {
    // The handler refuses the upload as soon as it sees the head and
    // never reads the body: far more than socket buffers hold, so an
    // upload that did not watch for the answer would wait forever. The
    // client gets the refusal, and the next request a connection of its
    // own (the first one is mid-body).
    let handler = RawHandler::start(|line, connection, _| {
        if line.starts_with("POST") {
            Answer {
                early: b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo much"
                    .to_vec(),
                never_read_body: true,
                ..Answer::default()
            }
        } else {
            answer(ok(&format!("connection {connection}")))
        }
    });
    let ws = Workspace::new();
    let server =
        handler.behind_elsinore_with(&ws, serde_json::json!({"limits": {"max_body": "128MB"}}));
    // A raw client: it reads the answer while its body is still going
    // out (hyper's client may report its failed body write instead).
    let size = 64 * 1024 * 1024;
    let (mut reader, mut writer) = TcpStream::connect(server.addr).await.unwrap().into_split();
    let head = format!("POST /upload HTTP/1.1\r\nhost: raw.test\r\ncontent-length: {size}\r\n\r\n");
    writer.write_all(head.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        // Cut off once the answer is sent: the error is expected.
        let _ = writer.write_all(&vec![b'z'; size]).await;
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while !answer.ends_with(b"too much") {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the refusal within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\ntoo much"), "{answer}");
    let mut client = connect(&server).await;
    let (status, _, body) = send(&mut client, "GET", "/").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("connection 2"))
    );
}

#[tokio::test]
async fn a_handler_resetting_the_connection_before_answering_is_a_502_closed() {
    // Whether Elsinore sees the reset while writing the body or while
    // reading the answer, the client is told the same thing.
    let handler = RawHandler::start(|_, _, _| Answer {
        reset: true,
        ..Answer::default()
    });
    let ws = Workspace::new();
    let server = handler.behind_elsinore(&ws);
    for round in 1..=3 {
        let mut client = connect(&server).await;
        let body = Bytes::from(vec![b'r'; 64 * 1024]);
        let (status, _, body) = send_body(&mut client, "POST", "/upload", body, &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "round {round}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["reason"], "the handler closed the connection before responding",
            "round {round}"
        );
    }
}
