//! The operator listener's trust boundary: a browser page elsewhere (DNS
//! rebinding, cross-site POST) cannot drive it, and with `admin_token_env`
//! nobody without the token can either.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::*;
use http::{Method, StatusCode};
use serde_json::json;

const TOKEN: &str = "c0ffee5eed0123456789abcdef0123456789abcd";
const TOKEN_VAR: &str = "ELSINORE_TEST_OPERATOR_TOKEN";

/// A request to the operator listener with `host` as its `Host`.
fn op(server: &Server, method: &str, path: &str, host: &str) -> Req {
    Req::new(server.operator(), Method::GET, path)
        .method(method)
        .host(host)
}

/// `host:port` of the operator listener, as a browser would send it.
fn own(server: &Server, name: &str) -> String {
    let addr: SocketAddr = server.operator();
    format!("{name}:{}", addr.port())
}

/// What triggered the last reload, asked with the token when there is one.
async fn last_trigger(server: &Server, token: Option<&str>) -> String {
    let mut req = op(server, "GET", "/routes", "localhost");
    if let Some(token) = token {
        req = req.header("authorization", &format!("Bearer {token}"));
    }
    let reply = req.send().await;
    assert_eq!(reply.status, StatusCode::OK, "GET /routes");
    reply.json()["last_reload"]["trigger"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn serve(ws: &Workspace, extra: serde_json::Value, env: &[(&str, &str)]) -> Server {
    ws.project("elsinore", &["elsinore.test"], &echo_manifest());
    Server::start_with_env(&ws.config_with(json!(["elsinore"]), extra), env)
}

#[tokio::test]
async fn a_foreign_host_is_misdirected_and_reloads_nothing() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({"admin_hosts": ["ops.example.com"]}), &[]);

    // DNS rebinding: a page on attacker.example whose name now resolves to
    // 127.0.0.1 sends its own name.
    for (method, path) in [
        ("POST", "/reload"),
        ("POST", "/events/run"),
        ("GET", "/routes"),
        ("GET", "/"),
    ] {
        for host in ["attacker.example", &own(&server, "attacker.example")] {
            let reply = op(&server, method, path, host).send().await;
            assert_eq!(
                reply.status,
                StatusCode::MISDIRECTED_REQUEST,
                "{method} {path} Host: {host}"
            );
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                error.contains(host) && error.contains("admin_hosts"),
                "{error}"
            );
        }
    }
    assert_eq!(
        last_trigger(&server, None).await,
        "startup",
        "nothing was reloaded"
    );

    // Its own address, localhost and admin_hosts names, with or without the
    // port, in any case.
    let port_less = ["localhost", "LocalHost", "127.0.0.1", "ops.example.com"];
    let with_port = ["localhost", "127.0.0.1", "OPS.example.com"].map(|name| own(&server, name));
    for host in port_less
        .iter()
        .copied()
        .chain(with_port.iter().map(String::as_str))
    {
        let reply = op(&server, "GET", "/routes", host).send().await;
        assert_eq!(reply.status, StatusCode::OK, "Host: {host}");
    }
    let reply = op(&server, "POST", "/reload", &own(&server, "127.0.0.1"))
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(last_trigger(&server, None).await, "POST /reload");
}

#[tokio::test]
async fn admin_hosts_apply_on_reload() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({}), &[]);
    let reply = op(&server, "GET", "/routes", "ops.example.com")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);

    ws.config_with(
        json!(["elsinore"]),
        json!({"admin_hosts": ["ops.example.com"]}),
    );
    let reply = op(&server, "POST", "/reload", "localhost").send().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let reply = op(&server, "GET", "/routes", "ops.example.com")
        .send()
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "admin_hosts is live after a reload"
    );
}

#[tokio::test]
async fn a_cross_site_post_is_forbidden_and_a_script_post_is_not() {
    let ws = Workspace::new();
    let server = serve(&ws, json!({}), &[]);
    let host = own(&server, "localhost");

    for (origin, fetch_site) in [
        (Some("https://attacker.example"), None),
        (Some("null"), None),
        (Some("http://localhost:1"), None),
        (None, Some("cross-site")),
    ] {
        for path in ["/reload", "/events/run"] {
            let mut req = op(&server, "POST", path, &host);
            if let Some(origin) = origin {
                req = req.header("origin", origin);
            }
            if let Some(site) = fetch_site {
                req = req.header("sec-fetch-site", site);
            }
            let reply = req.send().await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "POST {path} Origin {origin:?} Sec-Fetch-Site {fetch_site:?}"
            );
            assert!(reply.json()["error"].is_string());
        }
    }
    assert_eq!(
        last_trigger(&server, None).await,
        "startup",
        "nothing was reloaded"
    );

    // The listener's own page, and curl (no Origin).
    let same = format!("http://{host}");
    let reply = op(&server, "POST", "/reload", &host)
        .header("origin", &same)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "same origin");
    let reply = op(&server, "POST", "/reload", &host).send().await;
    assert_eq!(reply.status, StatusCode::OK, "no Origin");
    assert_eq!(last_trigger(&server, None).await, "POST /reload");
}

#[tokio::test]
async fn with_admin_token_env_everything_but_health_needs_the_token() {
    let ws = Workspace::new();
    let server = serve(
        &ws,
        json!({"admin_token_env": TOKEN_VAR}),
        &[(TOKEN_VAR, TOKEN)],
    );
    let host = own(&server, "localhost");
    let bearer = format!("Bearer {TOKEN}");

    let reply = op(&server, "GET", "/healthz", &host).send().await;
    assert_eq!(reply.status, StatusCode::OK, "GET /healthz without a token");
    // 503 while the handler starts, but never 401.
    until("GET /readyz without a token answers 200", || async {
        op(&server, "GET", "/readyz", &host).send().await.status == StatusCode::OK
    })
    .await;
    for (method, path) in [
        ("GET", "/routes"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("POST", "/reload"),
        ("POST", "/events/run"),
    ] {
        for authorization in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some(&format!("Basic {TOKEN}")),
        ] {
            let mut req = op(&server, method, path, &host);
            if let Some(value) = authorization {
                req = req.header("authorization", value);
            }
            let reply = req.send().await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"elsinore operator\"")
            );
            let error = reply.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(error.contains("admin_token_env"), "{error}");
        }
    }
    assert_eq!(
        last_trigger(&server, Some(TOKEN)).await,
        "startup",
        "nothing was reloaded"
    );

    // The host check still comes first.
    let reply = op(&server, "GET", "/routes", "attacker.example")
        .header("authorization", &bearer)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);

    let reply = op(&server, "POST", "/reload", &host)
        .header("authorization", &bearer)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(last_trigger(&server, Some(TOKEN)).await, "POST /reload");
    let reply = op(&server, "GET", "/", &host)
        .header("authorization", &bearer)
        .header("accept", "text/html")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&reply.body).contains("<title>Elsinore status</title>"));

    // A browser opening the page without the token gets a page that asks
    // for it, holding nothing of the server's.
    let reply = op(&server, "GET", "/", &host)
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let page = String::from_utf8_lossy(&reply.body);
    assert!(
        page.contains("#token=") && page.contains("admin_token_env"),
        "{page}"
    );
    assert!(
        !page.contains("elsinore.test"),
        "the token page shows no data:\n{page}"
    );

    // The token never reaches a handler's environment, nor the log.
    let env = |name: &str| {
        let server = &server;
        let path = format!("/env?name={name}");
        async move { server.get("elsinore.test", &path).send().await.json()["value"].clone() }
    };
    assert!(
        env("PATH").await.is_string(),
        "handlers do inherit ordinary variables"
    );
    assert_eq!(
        env(TOKEN_VAR).await,
        serde_json::Value::Null,
        "{TOKEN_VAR} reached the handler"
    );
    let leaked: Vec<String> = server
        .logs
        .all()
        .into_iter()
        .filter(|l| l.contains(TOKEN))
        .collect();
    assert!(leaked.is_empty(), "the token is in the log: {leaked:?}");
}

/// `elsinore check` with `TOKEN_VAR` set to `token` (unset when `None`).
fn check(ws: &Workspace, token: Option<&str>) -> std::process::Output {
    ws.project("elsinore", &["elsinore.test"], &echo_manifest());
    let config = ws.config_with(json!(["elsinore"]), json!({"admin_token_env": TOKEN_VAR}));
    let mut command = Command::new(binary());
    command
        .args(["check", "--config"])
        .arg(&config)
        .env_remove(TOKEN_VAR)
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env(TOKEN_VAR, token);
    }
    command.output().expect("run elsinore check")
}

#[test]
fn check_refuses_a_short_or_missing_token_naming_the_field() {
    let ws = Workspace::new();
    for (token, expected) in [
        (Some("tooshort"), "the token in ELSINORE_TEST_OPERATOR_TOKEN has 8 characters; at least 16 are needed (make one with `openssl rand -hex 24`)"),
        (None, "environment variable ELSINORE_TEST_OPERATOR_TOKEN is not set"),
        (Some(""), "environment variable ELSINORE_TEST_OPERATOR_TOKEN is empty"),
    ] {
        let output = check(&ws, token);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "check accepted token {token:?}");
        assert!(stderr.contains(&format!("config.json: admin_token_env: {expected}")), "{stderr}");
        assert!(!stderr.contains("tooshort"), "the token itself is not printed: {stderr}");
    }
    let output = check(&ws, Some(TOKEN));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
