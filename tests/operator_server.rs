//! The operator listener (`admin_listen`) is served by the same server
//! machinery as the public listeners: the same connection limit, header
//! read timeout and drain on shutdown, and errors in the same JSON shape
//! with a `request_id`.

// A test that cannot set up its connection has nothing to report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The error shape of both listeners: `error`, `request_id` equal to the
/// `X-Request-Id` header, JSON.
fn assert_error_shape(reply: &Reply, status: StatusCode, error: &str) -> serde_json::Value {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains(error)),
        "{body}"
    );
    let id = reply.header("x-request-id").expect("X-Request-Id");
    assert_eq!(body["request_id"], id, "{body}");
    body
}

fn serve(ws: &Workspace, extra: serde_json::Value) -> Server {
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    Server::start(&ws.config_with(json!(["alpha"]), extra))
}

#[tokio::test]
async fn operator_errors_carry_a_request_id_like_the_proxys() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({}));

    // The client's id is kept, as on the public listener.
    let reply = server
        .op("GET", "/nope")
        .header("x-request-id", "trace-42")
        .send()
        .await;
    let body = assert_error_shape(&reply, StatusCode::NOT_FOUND, "no operator endpoint /nope");
    assert_eq!(body["request_id"], "trace-42");
    assert!(body["endpoints"].is_array(), "{body}");

    // Refusals too, and a made-up id when none is sent.
    let reply = Req::new(server.operator(), Method::GET, "/routes")
        .host("attacker.example")
        .send()
        .await;
    let body = assert_error_shape(&reply, StatusCode::MISDIRECTED_REQUEST, "admin_hosts");
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    let reply = server.op("PUT", "/reload").send().await;
    assert_error_shape(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "PUT is not allowed on /reload",
    );

    // Answers that are not errors say their id too.
    let reply = server.op("GET", "/healthz").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("x-request-id").is_some());
}

#[tokio::test]
async fn operator_connections_count_against_max_connections() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({"limits": {"max_connections": 2}}));
    let operator = server.operator();
    let mut first = KeepAlive::connect(operator).await;
    let mut second = KeepAlive::connect(operator).await;
    assert_eq!(
        first.get("localhost", "/healthz").await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        second.get("localhost", "/healthz").await.unwrap().0,
        StatusCode::OK
    );

    let refused = server.op("GET", "/healthz").send().await;
    let body = assert_error_shape(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "too many connections",
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(body["reason"]
        .as_str()
        .is_some_and(|r| r.contains("max_connections")));

    drop(second);
    until(
        "a slot frees when an operator connection closes",
        || async { server.op("GET", "/healthz").send().await.status == StatusCode::OK },
    )
    .await;
}

#[tokio::test]
async fn a_client_trickling_headers_to_the_operator_is_cut_off() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({"timeouts": {"header_read": "1s"}}));
    let mut stream = TcpStream::connect(server.operator()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the operator listener kept a connection with an unfinished head open for 10 s (timeouts.header_read is 1s)");
    assert!(
        read.is_ok(),
        "closed with an error instead of an end: {read:?}"
    );
    assert!(
        answer.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before header_read ran out"
    );
}

#[tokio::test]
async fn shutdown_drains_the_operator_listener_like_the_public_ones() {
    let ws = Workspace::new();
    let mut server = serve(&ws, json!({"shutdown_grace": "15s"}));
    let mut open = TcpStream::connect(server.operator()).await.unwrap();
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\"ok\"") {
        let n = tokio::time::timeout(WAIT, open.read(&mut buf))
            .await
            .expect("an answer to GET /healthz")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    // The idle keep-alive connection is closed by the drain.
    let rest = tokio::time::timeout(WAIT, open.read_to_end(&mut answer)).await;
    assert!(
        matches!(rest, Ok(Ok(_))),
        "the operator connection was not closed by shutdown: {rest:?}"
    );
    assert!(server.wait_exit().success());
    // Its accept loop stops and drains, and says so, like the public ones.
    let logs = server.logs.all();
    for needle in ["stopped accepting", "all connections closed"] {
        assert!(
            logs.iter()
                .any(|line| line.contains(needle) && line.contains("operator")),
            "no {needle:?} line for the operator listener:\n{}",
            logs.join("\n")
        );
    }
}
