//! What a host-based framework such as Hamlet needs from Elsinore (issue
//! 23, items 2 and 3): `forward_host = "tenant"` hands the handler the
//! tenant Elsinore routed by in `Host` and `X-Forwarded-Host` (over
//! HTTP/1.1 and h2c, on the preview host, behind a trusted proxy, live on
//! reload), and `handler_key_env` hands a project's handlers its own key
//! in the variable the framework reads, never another project's.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Projects `tenant` (host `blog.localhost`, `forward_host = "tenant"`)
/// and `plain` (host `plain.localhost`, the default), each one echo
/// handler; the preview host is `preview.localhost`.
fn start(ws: &Workspace, extra: Value) -> Server {
    ws.project("tenant", &["blog.localhost"], &echo_manifest());
    ws.project("plain", &["plain.localhost"], &echo_manifest());
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "preview_host": "preview.localhost",
        "projects": [
            {"path": "tenant", "forward_host": "tenant"},
            "plain",
        ],
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    Server::start(&ws.write_config(&config))
}

/// The `Host` and `X-Forwarded-Host` the echo handler saw.
fn hosts_seen(body: &Value) -> (Vec<String>, Vec<String>) {
    (seen_in(body, "host"), seen_in(body, "x-forwarded-host"))
}

async fn h1(server: &Server, host: &str, path: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = server.get(host, path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let reply = request.send().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// One GET over a fresh HTTP/2 prior-knowledge connection with
/// `:authority` = `authority`.
async fn h2c(server: &Server, authority: &str, path: &str) -> Value {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("h2c answer in time")
        .expect("h2c response");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn one(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[tokio::test]
async fn tenant_mode_hands_the_handler_the_routed_tenant_as_host() {
    let ws = Workspace::new();
    let server = start(&ws, json!({}));

    // A client's spelling (case, port) and its own X-Forwarded-Host: the
    // handler sees the tenant Elsinore routed by, in both headers.
    let body = h1(
        &server,
        "Blog.Localhost:8080",
        "/",
        &[("x-forwarded-host", "evil.example")],
    )
    .await;
    assert_eq!(
        hosts_seen(&body),
        (one(&["blog.localhost"]), one(&["blog.localhost"]))
    );
    assert_eq!(seen_in(&body, "x-elsinore-host"), one(&["blog.localhost"]));

    // The default is unchanged: the client's Host as sent.
    let body = h1(
        &server,
        "Plain.Localhost:8080",
        "/",
        &[("x-forwarded-host", "evil.example")],
    )
    .await;
    assert_eq!(
        hosts_seen(&body),
        (
            one(&["Plain.Localhost:8080"]),
            one(&["Plain.Localhost:8080"])
        )
    );

    // HTTP/2: `:authority` becomes the handler's Host header.
    let body = h2c(&server, "BLOG.localhost:8080", "/").await;
    assert_eq!(
        hosts_seen(&body),
        (one(&["blog.localhost"]), one(&["blog.localhost"]))
    );

    // The preview host: Host follows X-Elsinore-Host (the preview host,
    // lower case, no port), never the client's spelling.
    let body = h1(&server, "Preview.Localhost:8080", "/projects/tenant/x", &[]).await;
    assert_eq!(body["path"], "/x", "{body}");
    assert_eq!(
        seen_in(&body, "x-elsinore-host"),
        one(&["preview.localhost"])
    );
    assert_eq!(
        hosts_seen(&body),
        (one(&["preview.localhost"]), one(&["preview.localhost"]))
    );
}

#[tokio::test]
async fn tenant_mode_replaces_a_trusted_proxys_forwarded_host() {
    let ws = Workspace::new();
    let server = start(&ws, json!({"trusted_proxies": ["127.0.0.1"]}));
    let proxied = [("x-forwarded-host", "www.front.example")];
    // From a trusted proxy, the default keeps what it says...
    let body = h1(&server, "plain.localhost", "/", &proxied).await;
    assert_eq!(
        seen_in(&body, "x-forwarded-host"),
        one(&["www.front.example"])
    );
    // ...tenant mode does not: Host and X-Forwarded-Host never disagree.
    let body = h1(&server, "blog.localhost", "/", &proxied).await;
    assert_eq!(
        hosts_seen(&body),
        (one(&["blog.localhost"]), one(&["blog.localhost"]))
    );
}

#[tokio::test]
async fn forward_host_is_live_on_reload() {
    let ws = Workspace::new();
    let server = start(&ws, json!({}));
    let body = h1(&server, "Plain.Localhost:8080", "/", &[]).await;
    assert_eq!(seen_in(&body, "host"), one(&["Plain.Localhost:8080"]));

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("config.json")).unwrap())
            .unwrap();
    let mut config = config;
    config["projects"][1] = json!({"path": "plain", "forward_host": "tenant"});
    ws.write_config(&config);
    until("plain switches to forward_host tenant", || async {
        let body = h1(&server, "Plain.Localhost:8080", "/", &[]).await;
        seen_in(&body, "host") == one(&["plain.localhost"])
    })
    .await;
    server
        .logs
        .wait_for("~ project plain: forward_host original → tenant");
}

const ALPHA_KEY: &str = "alpha-project-key-0123456789";
const BRAVO_KEY: &str = "bravo-project-key-0123456789";

/// The value of `name` in the environment of the handler answering `host`.
async fn env_of(server: &Server, host: &str, name: &str) -> Value {
    let body = h1(server, host, &format!("/env?name={name}"), &[]).await;
    body["value"].clone()
}

#[tokio::test]
async fn handler_key_env_hands_over_the_projects_own_key_only() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.localhost"], &echo_manifest());
    ws.project("bravo", &["bravo.localhost"], &echo_manifest());
    ws.project("charlie", &["charlie.localhost"], &echo_manifest());
    // bravo's key comes from the very variable alpha's handlers read
    // theirs from: alpha must get alpha's, bravo and charlie nothing.
    let config = ws.config(json!([
        {"path": "alpha", "key": ALPHA_KEY, "handler_key_env": "HAMLET_PROJECT_KEY"},
        {"path": "bravo", "key_env": "HAMLET_PROJECT_KEY"},
        {"path": "charlie", "key_env": "CHARLIE_KEY", "handler_key_env": "CHARLIE_OWN_KEY"},
    ]));
    let server = Server::start_with_env(
        &config,
        &[
            ("HAMLET_PROJECT_KEY", BRAVO_KEY),
            ("CHARLIE_KEY", "charlie-project-key-0123456789"),
        ],
    );
    assert_eq!(
        env_of(&server, "alpha.localhost", "HAMLET_PROJECT_KEY").await,
        json!(ALPHA_KEY)
    );
    assert_eq!(
        env_of(&server, "bravo.localhost", "HAMLET_PROJECT_KEY").await,
        Value::Null
    );
    assert_eq!(
        env_of(&server, "charlie.localhost", "HAMLET_PROJECT_KEY").await,
        Value::Null
    );
    // A key from key_env is handed over too, under its own name only.
    assert_eq!(
        env_of(&server, "charlie.localhost", "CHARLIE_OWN_KEY").await,
        json!("charlie-project-key-0123456789")
    );
    assert_eq!(
        env_of(&server, "charlie.localhost", "CHARLIE_KEY").await,
        Value::Null
    );
    assert_eq!(
        env_of(&server, "alpha.localhost", "CHARLIE_OWN_KEY").await,
        Value::Null
    );

    // A new key restarts alpha's handlers with it.
    let new_key = "alpha-rotated-key-9876543210";
    ws.config(json!([
        {"path": "alpha", "key": new_key, "handler_key_env": "HAMLET_PROJECT_KEY"},
        {"path": "bravo", "key_env": "HAMLET_PROJECT_KEY"},
        {"path": "charlie", "key_env": "CHARLIE_KEY", "handler_key_env": "CHARLIE_OWN_KEY"},
    ]));
    until("alpha's handler gets its new key", || async {
        env_of(&server, "alpha.localhost", "HAMLET_PROJECT_KEY").await == json!(new_key)
    })
    .await;
}
