//! `rate_limits`: bursts over each scope (per client address, per host,
//! per project) get 429 with `Retry-After` and the `RateLimit` headers,
//! recover once tokens are back, and leave other addresses, hosts and
//! projects alone; limits change live on reload; bad values are refused
//! naming their field.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpSocket;

/// A GET of `/` on `host` from the client address `from` (any 127.0.0.x
/// reaches the loopback listener).
async fn get_from(addr: SocketAddr, from: &str, host: &str) -> (StatusCode, HeaderMap, Bytes) {
    let request = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        let stream = socket.connect(addr).await.expect("connect to elsinore");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::get("/")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    };
    tokio::time::timeout(WAIT, request)
        .await
        .expect("request did not complete in time")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
}

/// Asserts a 429 from `scope` and returns its `Retry-After` seconds.
fn assert_limited(reply: &(StatusCode, HeaderMap, Bytes), scope: &str) -> u64 {
    let (status, headers, body) = reply;
    assert_eq!(
        *status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(header(headers, "content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"], "rate limited", "{body}");
    assert_eq!(body["scope"], scope, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("rate_limits.{scope}"))),
        "{body}"
    );
    assert_eq!(body["request_id"], header(headers, "x-request-id"));
    let retry_after: u64 = header(headers, "retry-after").parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        header(headers, "ratelimit"),
        format!("\"{scope}\";r=0;t={retry_after}")
    );
    assert!(header(headers, "ratelimit-policy").contains(&format!("\"{scope}\";q=")));
    retry_after
}

async fn until_served(addr: SocketAddr, from: &str, host: &str) {
    until(&format!("{host} from {from} is served again"), || async {
        get_from(addr, from, host).await.0 == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_ip_limits_one_address_not_another() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config_with(
        json!(["alpha"]),
        json!({"rate_limits": {"per_ip": {"rate": "1/s", "burst": 3}}}),
    ));
    let addr = server.addr;
    for left in [2, 1, 0] {
        let (status, headers, _) = get_from(addr, "127.0.0.1", "alpha.test").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "ratelimit-policy"), "\"per_ip\";q=1;w=1");
        assert!(
            header(&headers, "ratelimit").starts_with(&format!("\"per_ip\";r={left};t=")),
            "{headers:?}"
        );
    }
    let refused = get_from(addr, "127.0.0.1", "alpha.test").await;
    assert_eq!(assert_limited(&refused, "per_ip"), 1);
    // Another client address has its own bucket.
    assert_eq!(
        get_from(addr, "127.0.0.2", "alpha.test").await.0,
        StatusCode::OK
    );
    until_served(addr, "127.0.0.1", "alpha.test").await;

    // Seen: in the access log and the metrics.
    server.logs.wait_for("status=429");
    let limited_line = server
        .logs
        .all()
        .into_iter()
        .find(|line| line.contains("status=429"))
        .unwrap();
    assert!(limited_line.contains("limited=per_ip"), "{limited_line}");
    let metrics = server.op("GET", "/metrics").send().await;
    let text = String::from_utf8_lossy(&metrics.body);
    // At least the one above (the wait for recovery was refused too).
    let count: u64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("elsinore_rate_limited_total{project=\"alpha\",scope=\"per_ip\"} ")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no per_ip count in {text}"));
    assert!(count >= 1, "{text}");
    // And on the status page, by tenant host.
    let page = server.op("GET", "/").send().await;
    let page = String::from_utf8_lossy(&page.body).to_string();
    let section = page
        .split("<h2 id=\"rate-limited\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no most-limited section: {page}"));
    assert!(section.contains("<td>alpha.test</td>"), "{section}");
}

#[tokio::test(flavor = "multi_thread")]
async fn per_host_limits_one_host_whoever_asks() {
    let ws = Workspace::new();
    ws.project("alpha", &["a.test", "b.test"], &echo_manifest());
    // The project's own limit; the global per_ip is left generous.
    let server = Server::start(&ws.config_with(
        json!([{"path": "alpha", "rate_limits": {"per_host": {"rate": "1/s", "burst": 2}}}]),
        json!({"rate_limits": {"per_ip": {"rate": "100/s"}}}),
    ));
    let addr = server.addr;
    for from in ["127.0.0.1", "127.0.0.2"] {
        assert_eq!(get_from(addr, from, "a.test").await.0, StatusCode::OK);
    }
    // From a third address: the host's bucket is empty.
    let refused = get_from(addr, "127.0.0.3", "a.test").await;
    assert_limited(&refused, "per_host");
    // The project's other host is untouched.
    assert_eq!(
        get_from(addr, "127.0.0.1", "b.test").await.0,
        StatusCode::OK
    );
    until_served(addr, "127.0.0.3", "a.test").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn per_project_limits_one_project_not_another_and_follows_reloads() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let config = |rate: &str| {
        ws.config_with(
            json!(["alpha", "beta"]),
            json!({"rate_limits": {"per_project": {"rate": rate, "burst": 2}}}),
        )
    };
    let server = Server::start(&config("1/s"));
    let addr = server.addr;
    for host in ["alpha.test", "alpha.test"] {
        assert_eq!(get_from(addr, "127.0.0.1", host).await.0, StatusCode::OK);
    }
    let refused = get_from(addr, "127.0.0.2", "alpha.test").await;
    assert_limited(&refused, "per_project");
    assert_eq!(
        get_from(addr, "127.0.0.1", "beta.test").await.0,
        StatusCode::OK
    );
    until_served(addr, "127.0.0.2", "alpha.test").await;

    // Live: one per minute from the next reload on, no restart.
    config("1/m");
    let reply = server.op("POST", "/reload").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let mut refused = None;
    for _ in 0..3 {
        let reply = get_from(addr, "127.0.0.1", "beta.test").await;
        if reply.0 != StatusCode::OK {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("the new limit applies after the reload");
    let retry_after = assert_limited(&refused, "per_project");
    assert!(retry_after > 1, "a token per minute: {retry_after}");
    assert_eq!(
        header(&refused.1, "ratelimit-policy"),
        "\"per_project\";q=1;w=60"
    );
}

#[test]
fn bad_rate_limits_name_their_field() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let config = ws.config_with(
        json!([{"path": "alpha", "rate_limits": {"per_host": {"rate": "5/h"}}}]),
        json!({"rate_limits": {"per_ip": {"rate": "10/s", "burst": 0}}}),
    );
    let output = run_cli(&["check"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = config.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}: rate_limits.per_ip.burst: must be at least 1"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}: projects[0].rate_limits.per_host.rate: \"5/h\" is not a rate"
        )),
        "{stderr}"
    );
}
