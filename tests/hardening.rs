//! Protocol completeness and hardening: WebSocket upgrades across a table
//! swap, server-sent events, h2c, size limits (431, 413), the connection
//! cap, handler queues, slowloris, and handler failures (502, 504), all
//! answered with the one JSON error shape.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Asserts the JSON error shape: `error`, `request_id` equal to the
/// `X-Request-Id` header, `application/json`.
fn assert_error_shape(reply: &Reply, status: StatusCode, error: &str) -> serde_json::Value {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"], error, "{body}");
    let id = reply.header("x-request-id").expect("X-Request-Id");
    assert_eq!(body["request_id"], id, "{body}");
    body
}

/// An HTTP/2 client connection (cleartext, prior knowledge) to `addr`,
/// driven by a task of its own: the sender and that task's handle.
async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    (sender, tokio::spawn(connection))
}

/// Resolves once the server has closed `stream` (EOF or reset), bounded.
async fn wait_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server did not close the connection in time");
}

#[tokio::test]
async fn websocket_echo_survives_a_table_swap() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"watch": {"mode": "poll", "poll_interval": "1d"}}),
    ));
    let mut socket = WebSocket::connect(server.addr, "alpha.test", "/ws").await;
    socket.echo("hello").await;
    socket.send(0x9, b"ping").await;
    assert_eq!(socket.receive().await, (0xA, b"ping".to_vec()));

    std::fs::create_dir(project.join("hosts/swap.test")).unwrap();
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["changes"], json!(["+ host swap.test → alpha"]));
    assert_eq!(
        server.get("swap.test", "/").send().await.status,
        StatusCode::OK
    );

    socket.echo("still here after the swap").await;
    socket.send(0x8, b"").await;
    assert_eq!(socket.receive().await.0, 0x8, "close is echoed");
    // A second socket over the new table works too.
    let mut again = WebSocket::connect(server.addr, "swap.test", "/ws").await;
    again.echo("new host").await;
}

#[tokio::test]
async fn server_sent_events_arrive_before_the_stream_ends() {
    let ws = Workspace::new();
    let server = ws.serve_single("alpha", &echo_manifest());
    let gate = ws.path().join("sse-gate");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /sse?gate={} HTTP/1.1\r\nHost: alpha.test\r\nAccept: text/event-stream\r\n\r\n",
        gate.display()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The handler holds the stream open until the gate exists: the first
    // event can only arrive here if Elsinore relays it as it comes.
    let first = read_until(&mut stream, b"data: first").await;
    let first = String::from_utf8_lossy(&first).to_lowercase();
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(first.contains("content-type: text/event-stream"), "{first}");
    assert!(!first.contains("data: second"), "{first}");
    std::fs::write(&gate, "").unwrap();
    read_until(&mut stream, b"data: second").await;
}

// Multi-threaded: the client connection must keep being driven while the
// server is stopped (a blocking drop) at the end.
#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_is_served_to_an_http1_handler() {
    let ws = Workspace::new();
    let server = ws.serve_single("alpha", &echo_manifest());
    let (mut sender, _connection) = h2_client(server.addr).await;
    for path in ["/first", "/second"] {
        let request = Request::get(format!("http://alpha.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.expect("h2 response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["path"], path);
        assert_eq!(seen_in(&body, "host"), ["alpha.test"]);
    }
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"limits": {"max_header_bytes": "8KB"}}),
    ));
    let small = server
        .get("alpha.test", "/")
        .header("x-fill", &"a".repeat(1000))
        .send()
        .await;
    assert_eq!(small.status, StatusCode::OK);

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: alpha.test\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    // The server may answer and close before reading it all.
    let _ = stream.write_all(request.as_bytes()).await;
    let head = read_until(&mut stream, b"\r\n").await;
    assert!(
        head.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

fn limited_projects(ws: &Workspace) -> std::path::PathBuf {
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    ws.config_with(
        json!([{"path": "alpha", "max_body": "1KB"}, "beta"]),
        json!({"limits": {"max_body": 4096}}),
    )
}

#[tokio::test]
async fn declared_body_over_max_body_gets_413_before_the_handler() {
    let ws = Workspace::new();
    let server = Server::start(&limited_projects(&ws));
    let post = |host: &'static str, len: usize| {
        server
            .get(host, "/echo-body")
            .method("POST")
            .body(vec![b'x'; len])
            .send()
    };
    assert_eq!(post("alpha.test", 1024).await.status, StatusCode::OK);
    let refused = post("alpha.test", 1025).await;
    let body = assert_error_shape(
        &refused,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large",
    );
    assert_eq!(body["reason"], "at most 1024 bytes");
    // beta has no max_body of its own: the global limit applies.
    assert_eq!(post("beta.test", 4096).await.status, StatusCode::OK);
    assert_eq!(
        post("beta.test", 4097).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // The handlers' own lines arrive through a pipe: wait for beta's
    // before counting, so a slow pipe cannot pass for a refused body.
    server
        .logs
        .wait_for("echo POST /echo-body 200 project=beta");
    let handled = server.logs.all().join("\n");
    assert_eq!(
        handled.matches("echo POST /echo-body").count(),
        2,
        "only the accepted bodies reached a handler:\n{handled}"
    );
    // The access log agrees: no refused request spent time in a handler.
    // Its lines are written in batches (at least once a second): wait for
    // both refusals before reading them.
    eventually("both 413s in the access log", || {
        server.logs.all().join("\n").matches("status=413").count() == 2
    });
    let logged = server.logs.all().join("\n");
    for line in logged.lines().filter(|line| line.contains("status=413")) {
        assert!(
            !line.contains("handler_ms="),
            "a refused body reached its handler: {line}"
        );
    }
}

#[tokio::test]
async fn chunked_body_over_max_body_is_cut_with_413() {
    let ws = Workspace::new();
    let server = Server::start(&limited_projects(&ws));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo-body HTTP/1.1\r\nHost: alpha.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    // 1.5 KiB in three chunks, and the body never ends: only the limit can
    // end this request.
    for _ in 0..3 {
        let chunk = format!("200\r\n{}\r\n", "y".repeat(512));
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let reply = read_until(&mut stream, b"}\n").await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("\"error\":\"request body too large\""),
        "{reply}"
    );

    // A chunked body within the limit still goes through.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo-body HTTP/1.1\r\nHost: alpha.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(all.ends_with("hello"), "{all}");
}

#[tokio::test]
async fn connections_over_max_connections_get_503_at_once() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server =
        Server::start(&ws.config_with(json!(["alpha"]), json!({"limits": {"max_connections": 2}})));
    let mut first = KeepAlive::connect(server.addr).await;
    let mut second = KeepAlive::connect(server.addr).await;
    assert_eq!(
        first.get("alpha.test", "/").await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        second.get("alpha.test", "/").await.unwrap().0,
        StatusCode::OK
    );

    let refused = server.get("alpha.test", "/").send().await;
    let body = assert_error_shape(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections",
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(body["reason"].as_str().unwrap().contains("max_connections"));
    // Held connections keep working.
    assert_eq!(
        first.get("alpha.test", "/").await.unwrap().0,
        StatusCode::OK
    );

    drop(second);
    until("a slot frees when a connection closes", || async {
        server.get("alpha.test", "/").send().await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_handler_queues_then_refuses_with_503() {
    let ws = Workspace::new();
    let manifest = format!(
        "{}max_concurrent = 1\nqueue = 1\nqueue_timeout = \"1m\"\n\n{}max_concurrent = 1\nqueue = 1\nqueue_timeout = \"200ms\"\n",
        echo_manifest(),
        echo_manifest_entry("tight", &["/tight"], ""),
    );
    ws.project("alpha", &["alpha.test"], &manifest);
    // A short grace: the last slow request is still running at the end.
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({"shutdown_grace": "1s"})));
    let addr = server.addr;
    let get = move |path: &'static str, id: &'static str| {
        tokio::spawn(async move {
            Req::new(addr, http::Method::GET, path)
                .host("alpha.test")
                .header("x-request-id", id)
                .send()
                .await
        })
    };

    // web: one running, one queued, the others refused at once. Which of
    // the three waiting requests gets the queue place does not matter.
    let slow = get("/slow?ms=60000", "slow-web");
    server.logs.wait_for("slow request started: slow-web");
    let waiting = [get("/", "w1"), get("/", "w2"), get("/", "w3")];
    until("two of three are refused", || async {
        waiting.iter().filter(|w| w.is_finished()).count() == 2
    })
    .await;
    // The running client leaves: its turn goes to the queued request.
    slow.abort();
    let mut refused = Vec::new();
    let mut served = 0;
    for reply in waiting {
        let reply = reply.await.unwrap();
        if reply.status == StatusCode::OK {
            served += 1;
        } else {
            refused.push(reply);
        }
    }
    assert_eq!(served, 1, "the queued request is served");
    assert_eq!(refused.len(), 2);
    for full in &refused {
        let body = assert_error_shape(full, StatusCode::SERVICE_UNAVAILABLE, "handler busy");
        assert_eq!(body["handler"], "alpha/web");
        assert_eq!(
            body["reason"],
            "1 requests are running (max_concurrent) and 1 are queued (queue)"
        );
        assert_eq!(full.header("retry-after"), Some("1"));
    }

    // tight: a queued request waits queue_timeout at most.
    let _slow = get("/tight/slow?ms=60000", "slow-tight");
    server.logs.wait_for("slow request started: slow-tight");
    let waited = server.get("alpha.test", "/tight").send().await;
    let body = assert_error_shape(&waited, StatusCode::SERVICE_UNAVAILABLE, "handler busy");
    assert_eq!(body["handler"], "alpha/tight");
    assert_eq!(
        body["reason"],
        "no turn within 200 ms in the queue (queue_timeout)"
    );
    assert_eq!(waited.header("retry-after"), Some("1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_dropped_while_others_are_served() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(
        &ws.config_with(json!(["alpha"]), json!({"timeouts": {"header_read": "1s"}})),
    );
    let mut trickling = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: alpha.test\r\n")
            .await
            .unwrap();
        trickling.push(tokio::spawn(async move {
            let (mut read, mut write) = stream.into_split();
            // One header line every 100 ms, never the end of the head.
            let trickle = async move {
                for i in 0.. {
                    let line = format!("X-Slow-{i}: 1\r\n");
                    if write.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            let closed = async move {
                let mut buf = [0u8; 256];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(WAIT, async {
                tokio::select! {
                    () = closed => {}
                    () = trickle => {}
                }
            })
            .await
            .is_ok()
        }));
    }
    // Normal clients are answered while the trickling ones hang on.
    for _ in 0..5 {
        assert_eq!(
            server.get("alpha.test", "/").send().await.status,
            StatusCode::OK
        );
    }
    for slow in trickling {
        assert!(slow.await.unwrap(), "a trickling client was not dropped");
    }
    assert_eq!(
        server.get("alpha.test", "/").send().await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server =
        Server::start(&ws.config_with(json!(["alpha"]), json!({"timeouts": {"idle": "300ms"}})));
    // HTTP/2 has no header timer between requests: only the idle timeout
    // closes this connection.
    let (mut sender, connection) = h2_client(server.addr).await;
    let request = Request::get("http://alpha.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the idle h2 connection was not closed")
        .unwrap()
        .ok();

    // HTTP/1.1 keep-alive too.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, b"HTTP/1.1 200").await;
    wait_closed(&mut stream).await;
}

#[tokio::test]
async fn header_read_bounds_http1_keep_alive_waits_but_not_http2() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"timeouts": {"header_read": "300ms", "idle": "60s"}}),
    ));
    // HTTP/1.1: answered, then the wait for the next head runs out long
    // before `idle`, and the connection is closed without an answer.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, b"HTTP/1.1 200").await;
    // Half a head, then nothing: closed as well.
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    wait_closed(&mut stream).await;

    // HTTP/2 has no header read timeout: the connection outlives it
    // (several times over) and serves a second request.
    let (mut sender, connection) = h2_client(server.addr).await;
    for round in 0..2 {
        let request = Request::get("http://alpha.test/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "h2 request {round}");
        response.into_body().collect().await.unwrap();
        if round == 0 {
            // Waiting for a timeout not to fire: nothing to wait on instead.
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }
    assert!(!connection.is_finished(), "the h2 connection was closed");
    // Every body read and the sender gone: hyper's client closes the
    // connection, so the server's shutdown has nothing to wait for.
    drop(sender);
    let _ = connection.await;
}

#[tokio::test]
async fn refused_handler_connection_is_502_and_slow_handler_504() {
    let ws = Workspace::new();
    // A port nothing listens on.
    let port = common::ports::free_port();
    let manifest = format!(
        "[[handler]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{port}\"\nroutes = [\"/gone\"]\n\n{}response_timeout = \"300ms\"\n",
        echo_manifest()
    );
    ws.project("alpha", &["alpha.test"], &manifest);
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"timeouts": {"handler_connect": "2s"}}),
    ));

    let refused = server.get("alpha.test", "/gone").send().await;
    let body = assert_error_shape(&refused, StatusCode::BAD_GATEWAY, "handler unreachable");
    assert_eq!(body["handler"], "alpha/gone");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "the handler address stays in the log: {body}"
    );

    let slow = server.get("alpha.test", "/slow?ms=60000").send().await;
    let body = assert_error_shape(&slow, StatusCode::GATEWAY_TIMEOUT, "handler timed out");
    assert_eq!(body["handler"], "alpha/web");
    assert_eq!(body["reason"], "no response within 300 ms");
}

#[tokio::test]
async fn response_timeouts_hold_request_after_request_on_http1_and_on_http2() {
    let ws = Workspace::new();
    let manifest = format!("{}response_timeout = \"300ms\"\n", echo_manifest());
    ws.project("alpha", &["alpha.test"], &manifest);
    let server = Server::start(&ws.config(json!(["alpha"])));
    let get = |path: &str| {
        Request::get(format!("http://alpha.test{path}"))
            .header("host", "alpha.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // HTTP/1.1 keeps the deadline with the connection's own timer: each
    // request on one keep-alive connection gets its own.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    for (path, status) in [
        ("/slow?ms=60000", StatusCode::GATEWAY_TIMEOUT),
        ("/", StatusCode::OK),
        ("/slow?ms=60000", StatusCode::GATEWAY_TIMEOUT),
        ("/slow?ms=50", StatusCode::OK),
    ] {
        let response = tokio::time::timeout(WAIT, sender.send_request(get(path)))
            .await
            .unwrap_or_else(|_| panic!("no answer to {path} within {WAIT:?}"))
            .unwrap();
        assert_eq!(response.status(), status, "HTTP/1.1 {path}");
        response.into_body().collect().await.unwrap();
    }
    drop(sender);
    let _ = connection.await;

    // HTTP/2 streams run as tasks of their own, with a timer each.
    let (mut sender, connection) = h2_client(server.addr).await;
    let response = tokio::time::timeout(WAIT, sender.send_request(get("/slow?ms=60000")))
        .await
        .expect("no h2 answer in time")
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "HTTP/2");
    // Read to the end, so that hyper's HTTP/2 client (a task of its own)
    // closes the connection once the sender is gone.
    response.into_body().collect().await.unwrap();
    drop(sender);
    let _ = connection.await;
}

#[test]
fn invalid_limits_are_refused_with_field_paths() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let config = ws.config_with(
        json!([{"path": "alpha", "max_body": "big"}]),
        json!({
            "limits": {"max_header_bytes": 100, "max_connections": 0},
            "timeouts": {"idle": "forever"}
        }),
    );
    let output = run_cli(&["check"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for field in [
        "projects[0].max_body",
        "limits.max_header_bytes",
        "limits.max_connections",
        "timeouts.idle",
    ] {
        assert!(stderr.contains(field), "{field} not named in:\n{stderr}");
    }
}

#[tokio::test]
async fn a_replaced_handler_is_kept_while_its_websocket_is_open() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"watch": {"mode": "poll", "poll_interval": "1d"}}),
    ));
    let old_pid = server.get("alpha.test", "/").send().await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    let mut socket = WebSocket::connect(server.addr, "alpha.test", "/ws").await;
    socket.echo("before").await;

    std::fs::write(
        project.join("project.toml"),
        echo_manifest_entry("web", &["/"], "EXTRA = \"v2\""),
    )
    .unwrap();
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    server
        .logs
        .wait_for("~ project alpha: handler web replaced");
    let fresh = server.get("alpha.test", "/").send().await.json();
    assert_eq!(fresh["env_extra"], "v2");
    assert_ne!(fresh["pid"], old_pid, "new requests go to the new handler");

    // The old handler still serves the open socket...
    assert!(alive(old_pid));
    socket.echo("after the replacement").await;
    // ...and is stopped once it closes.
    socket.send(0x8, b"").await;
    assert_eq!(socket.receive().await.0, 0x8);
    drop(socket);
    eventually("the replaced handler stops after its socket closed", || {
        !alive(old_pid)
    });
}

#[tokio::test]
async fn shutdown_closes_open_websockets_at_the_end_of_the_grace_period() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let mut server =
        Server::start(&ws.config_with(json!(["alpha"]), json!({"shutdown_grace": "1s"})));
    let mut socket = WebSocket::connect(server.addr, "alpha.test", "/ws").await;
    socket.echo("hello").await;
    server.signal(nix::sys::signal::Signal::SIGTERM);
    // Still open when the grace period ran out: closed by Elsinore then.
    let line = server
        .logs
        .wait_for("grace period over; closing remaining connections");
    assert!(line.contains("upgraded=1"), "{line}");
    wait_closed(&mut socket.stream).await;
    assert!(server.wait_exit().success());
}

#[tokio::test]
async fn expect_100_continue_is_answered_and_refused_bodies_are_never_asked_for() {
    let ws = Workspace::new();
    let server = Server::start(&limited_projects(&ws));

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo-body HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n").await;
    stream.write_all(b"hello").await.unwrap();
    let reply = read_until(&mut stream, b"hello").await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("HTTP/1.1 200"), "{reply}");

    // Over max_body: 413 at once, without a 100 first.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo-body HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until(&mut stream, b"\r\n").await;
    assert!(
        reply.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

// Multi-threaded: the client connection must keep being driven while the
// server is stopped (a blocking drop) at the end.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_http2_header_blocks_get_431() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"limits": {"max_header_bytes": "8KB"}}),
    ));
    let (mut sender, _connection) = h2_client(server.addr).await;
    let request = Request::get("http://alpha.test/")
        .header("x-fill", "a".repeat(16 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match sender.send_request(request).await {
        Ok(response) => assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(err) => panic!("no 431: {err:?}"),
    }
    // The connection stays usable for requests that fit.
    let request = Request::get("http://alpha.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_projects_max_body_changes_at_the_next_reload() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let watch = json!({"watch": {"mode": "poll", "poll_interval": "1d"}});
    let server = Server::start(
        &ws.config_with(json!([{"path": "alpha", "max_body": "1KB"}]), watch.clone()),
    );
    let post = || {
        server
            .get("alpha.test", "/echo-body")
            .method("POST")
            .body(vec![b'x'; 2000])
            .send()
    };
    assert_eq!(post().await.status, StatusCode::PAYLOAD_TOO_LARGE);
    ws.config_with(json!([{"path": "alpha", "max_body": "4KB"}]), watch);
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["ok"], true, "{}", reply.json());
    assert_eq!(post().await.status, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_without_waiting_for_the_grace_period() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    // A grace far longer than the test may take: only the connections
    // being told to close lets the server exit in time.
    let mut server =
        Server::start(&ws.config_with(json!(["alpha"]), json!({"shutdown_grace": "1h"})));
    // One idle HTTP/1.1 keep-alive connection per request thread, and then
    // some (the kernel picks each connection's thread by a hash).
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
            .await
            .unwrap();
        read_until(&mut stream, b"HTTP/1.1 200").await;
        idle.push(stream);
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    for stream in &mut idle {
        wait_closed(stream).await;
    }
    assert!(server.wait_exit().success());
}

#[tokio::test]
async fn a_second_server_on_a_taken_port_fails_with_address_in_use_and_the_first_keeps_serving() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    // Several request threads, so the first server listens with one
    // `SO_REUSEPORT` socket per thread: a second one must still not join.
    let first = Server::start_with_env(
        &ws.config(json!(["alpha"])),
        &[("ELSINORE_HTTP_THREADS", "4")],
    );
    let other = Workspace::new();
    other.project("beta", &["beta.test"], &echo_manifest());
    let config = other.write_config(&json!({
        "listen": first.addr.to_string(),
        "database": "data/elsinore.db",
        "projects": ["beta"],
    }));
    let mut second = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .env("ELSINORE_HTTP_THREADS", "4")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second server on {} kept running", first.addr);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    let expected = format!("cannot listen on {} (config.json `listen`)", first.addr);
    assert!(
        stderr.contains(&expected) && stderr.contains("in use"),
        "{stderr}"
    );
    // Every request still reaches the first server's project.
    for _ in 0..16 {
        let reply = first.get("alpha.test", "/").send().await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["project"], "alpha");
    }
}

#[tokio::test]
async fn a_request_whose_first_bytes_look_like_the_http2_preface_is_still_http1() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config(json!(["alpha"])));
    // "PRI" alone could still become the HTTP/2 preface: Elsinore must
    // wait for more before deciding, then serve HTTP/1.1.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"PRI").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(b" /split HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until(&mut stream, b"\"method\": \"PRI\"").await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// A connection accepted just before a drain began, whose request is
/// still on its way (new connections race the listener's close; during a
/// binary upgrade, SIGTERM or a reload of the unit), gets that request
/// answered instead of a reset.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_accepted_before_the_drain_gets_its_first_request_answered() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let mut server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Accepted: the public listener counts it open.
    let accepted = || async {
        let metrics = server.op("GET", "/metrics").send().await;
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .any(|line| line == "elsinore_open_connections 1")
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !accepted().await {
        assert!(std::time::Instant::now() < deadline, "never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.logs.wait_for("stopped accepting");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut stream, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(server.wait_exit().success());
}
