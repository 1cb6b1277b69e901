//! Hamlet and Hatchr compatibility (issue 9): `default_project`,
//! `preview_host`, a project's `cors_origins`, `public_url`.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const ALPHA_KEY: &str = "alpha-project-key-0123456789";

/// `/respond` asking the echo handler to answer with these headers.
fn respond(status: u16, headers: &[&str]) -> String {
    let mut path = format!("/respond?status={status}");
    for header in headers {
        let encoded: String = form_urlencoded::byte_serialize(header.as_bytes()).collect();
        path.push_str("&header=");
        path.push_str(&encoded);
    }
    path
}

fn assert_json_404(reply: &Reply, error: &str) -> serde_json::Value {
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["request_id"].is_string(), "one error shape: {body}");
    body
}

/// Writes config.json with `extra` merged into the usual test config.
fn rewrite(ws: &Workspace, projects: serde_json::Value, extra: serde_json::Value) {
    ws.config_with(projects, extra);
}

#[tokio::test]
async fn unknown_hosts_go_to_the_default_project_and_keep_their_host() {
    let ws = Workspace::new();
    ws.project("horatio", &["horatio.test"], &echo_manifest());
    ws.project("othello", &["othello.test"], &echo_manifest());
    let projects = json!(["horatio", "othello"]);
    let server =
        Server::start(&ws.config_with(projects.clone(), json!({"default_project": "horatio"})));

    let reply = server.get("tenant.example", "/page").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["project"], "horatio");
    assert_eq!(reply.seen("x-elsinore-host"), ["tenant.example"]);
    assert_eq!(reply.seen("x-elsinore-project"), ["horatio"]);
    // Declared hosts are untouched.
    let reply = server.get("othello.test", "/").send().await;
    assert_eq!(reply.json()["project"], "othello");
    assert_eq!(
        server.routes().await["default_project"],
        "horatio",
        "/routes says who answers unknown hosts"
    );

    // Removing the setting brings the JSON 404 back, live.
    rewrite(&ws, projects, json!({}));
    until("unknown hosts answer 404 again", || async {
        server.get("tenant.example", "/").send().await.status == StatusCode::NOT_FOUND
    })
    .await;
    let reply = server.get("tenant.example", "/").send().await;
    assert_eq!(
        assert_json_404(&reply, "unknown host")["host"],
        "tenant.example"
    );
}

#[tokio::test]
async fn a_default_project_never_grants_host_keys_or_the_admin_api_to_unknown_hosts() {
    let ws = Workspace::new();
    let project = ws.project("horatio", &["horatio.test", "gone.test"], &echo_manifest());
    let projects = json!([{"path": "horatio", "key": ALPHA_KEY}]);
    let server = Server::start(&ws.config_with(projects, json!({"default_project": "horatio"})));
    let created = server
        .get("gone.test", "/admin/api/_keys")
        .method("POST")
        .header("x-hamlet-project-key", ALPHA_KEY)
        .header("content-type", "application/json")
        .body(json!({"label": "tenant"}).to_string())
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let key = created.json()["key"].as_str().expect("key").to_owned();
    assert_eq!(
        auth_seen(&server, "gone.test", "/", &[("x-hamlet-host-key", &key)]).await,
        "hostAdmin"
    );

    // The folder goes: gone.test is now answered by default_project, and
    // the key left in the database must not open it.
    std::fs::remove_dir(project.join("hosts/gone.test")).expect("remove gone.test");
    until("gone.test is no longer declared", || async {
        server.routes().await["hosts"].get("gone.test").is_none()
    })
    .await;
    assert_eq!(
        auth_seen(&server, "gone.test", "/", &[("x-hamlet-host-key", &key)]).await,
        "none"
    );
    // The project's own key still says who the caller is.
    assert_eq!(
        auth_seen(
            &server,
            "gone.test",
            "/",
            &[("x-hamlet-project-key", ALPHA_KEY)]
        )
        .await,
        "projectAdmin"
    );
    // No keys can be made for a host no project declares.
    let refused = server
        .get("gone.test", "/admin/api/_keys")
        .header("x-hamlet-project-key", ALPHA_KEY)
        .send()
        .await;
    let body = assert_json_404(&refused, "not found");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("default_project")),
        "{body}"
    );
}

fn preview_server(ws: &Workspace) -> Server {
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    Server::start(&ws.config_with(
        json!(["alpha", "beta"]),
        json!({"preview_host": "preview.localhost"}),
    ))
}

#[tokio::test]
async fn preview_paths_reach_the_named_project_with_the_prefix_stripped() {
    let ws = Workspace::new();
    let server = preview_server(&ws);

    let reply = server
        .get("preview.localhost", "/projects/alpha/feed/today?page=2")
        .header("x-forwarded-prefix", "/spoofed")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["project"], "alpha");
    assert_eq!(body["path"], "/feed/today?page=2");
    assert_eq!(reply.seen("x-forwarded-prefix"), ["/projects/alpha"]);
    assert_eq!(reply.seen("x-elsinore-host"), ["preview.localhost"]);
    assert_eq!(reply.seen("x-elsinore-project"), ["alpha"]);

    let reply = server
        .get("preview.localhost", "/projects/beta/")
        .send()
        .await;
    assert_eq!(reply.json()["project"], "beta");
    assert_eq!(reply.json()["path"], "/");

    // Without its slash, the browser is sent inside the project.
    let reply = server
        .get("preview.localhost", "/projects/beta?x=1")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.header("location"), Some("/projects/beta/?x=1"));

    let reply = server
        .get("preview.localhost", "/projects/nobody/")
        .send()
        .await;
    assert_eq!(
        assert_json_404(&reply, "unknown project")["project"],
        "nobody"
    );
    let reply = server.get("preview.localhost", "/elsewhere").send().await;
    assert_json_404(&reply, "not found");
    // The admin API manages a declared host's keys: not served here.
    let reply = server
        .get("preview.localhost", "/projects/alpha/admin/api/_keys")
        .send()
        .await;
    assert_json_404(&reply, "not found");

    // On an ordinary host, no prefix, and a client's copy is dropped.
    let reply = server
        .get("alpha.test", "/feed")
        .header("x-forwarded-prefix", "/spoofed")
        .send()
        .await;
    assert_eq!(reply.json()["path"], "/feed");
    assert!(reply.seen("x-forwarded-prefix").is_empty());
}

#[tokio::test]
async fn preview_redirects_and_cookie_paths_get_the_prefix_back() {
    let ws = Workspace::new();
    let server = preview_server(&ws);
    let get = |path: String| {
        server
            .get("preview.localhost", &format!("/projects/alpha{path}"))
            .send()
    };

    let reply = get(respond(302, &["Location: /login?next=/cart"])).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.header("location"),
        Some("/projects/alpha/login?next=/cart")
    );
    for elsewhere in ["https://alpha.example/login", "//cdn.example/x", "next"] {
        let reply = get(respond(302, &[&format!("Location: {elsewhere}")])).await;
        assert_eq!(reply.header("location"), Some(elsewhere), "left alone");
    }
    let reply = get(respond(
        200,
        &[
            "Set-Cookie: hamlet_session_id=abc; Path=/; HttpOnly",
            "Set-Cookie: theme=dark",
        ],
    ))
    .await;
    let cookies: Vec<&str> = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        [
            "hamlet_session_id=abc; Path=/projects/alpha/; HttpOnly",
            "theme=dark"
        ]
    );

    // The same handler on its own host keeps its own paths.
    let reply = server
        .get("alpha.test", &respond(302, &["Location: /login"]))
        .send()
        .await;
    assert_eq!(reply.header("location"), Some("/login"));
}

#[tokio::test]
async fn a_project_cors_list_answers_preflights_and_decorates_responses() {
    let ws = Workspace::new();
    ws.project("app", &["app.test"], &echo_manifest());
    ws.project("open", &["open.test"], &echo_manifest());
    ws.project("plain", &["plain.test"], &echo_manifest());
    let server = Server::start(&ws.config(json!([
        {"path": "app", "cors_origins": ["https://front.example"], "cors_credentials": true},
        {"path": "open", "cors_origins": ["https://front.example"]},
        "plain",
    ])));
    let preflight = |host: &'static str, origin: &'static str| {
        server
            .get(host, "/api/GetFeed")
            .method("OPTIONS")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-hamlet-host-key",
            )
            .send()
    };

    let allowed = preflight("app.test", "https://front.example").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://front.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("content-type, x-hamlet-host-key")
    );
    assert!(allowed
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));

    let refused = preflight("app.test", "https://evil.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"], "origin not allowed");
    assert_eq!(refused.header("access-control-allow-origin"), None);

    // Credentials only where configured.
    let open = preflight("open.test", "https://front.example").await;
    assert_eq!(open.status, StatusCode::NO_CONTENT);
    assert_eq!(open.header("access-control-allow-credentials"), None);

    // Ordinary requests: the allowed origin is echoed; another gets no
    // allow header even when the handler itself would allow everyone.
    let handler_allows_all = respond(200, &["Access-Control-Allow-Origin: *"]);
    let reply = server
        .get("app.test", &handler_allows_all)
        .header("origin", "https://front.example")
        .send()
        .await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://front.example")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(reply
        .headers
        .get_all("vary")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin")));
    let reply = server
        .get("app.test", &handler_allows_all)
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "the request itself is served");
    assert_eq!(reply.header("access-control-allow-origin"), None);

    // A project without cors_origins leaves CORS to its handler.
    let reply = preflight("plain.test", "https://evil.example").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["method"], "OPTIONS", "the handler answered");
    let reply = server
        .get("plain.test", &handler_allows_all)
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

    // Elsinore answered app's preflights itself.
    let logs = server.logs.all().join("\n");
    assert_eq!(
        logs.matches("echo OPTIONS").count(),
        1,
        "only plain's preflight reached a handler:\n{logs}"
    );
}

#[tokio::test]
async fn public_url_reaches_the_handlers_and_follows_edits() {
    let ws = Workspace::new();
    ws.project("shop", &["shop.test"], &echo_manifest());
    ws.project("blog", &["blog.test"], &echo_manifest());
    let with_url = |url: &str| json!([{"path": "shop", "public_url": url}, "blog"]);
    let server = Server::start(&ws.config_with(with_url("https://shop.example.com/"), json!({})));
    let public_url = |host: &'static str| {
        let request = server.get(host, "/env?name=ELSINORE_PUBLIC_URL").send();
        async move { request.await.json()["value"].clone() }
    };
    assert_eq!(
        public_url("shop.test").await,
        "https://shop.example.com",
        "passed on without its trailing slash"
    );
    assert_eq!(public_url("blog.test").await, serde_json::Value::Null);

    // A new address replaces the handlers (blue/green) with the new value.
    rewrite(&ws, with_url("https://shop.example.org"), json!({}));
    until("the new public_url is served", || async {
        public_url("shop.test").await == "https://shop.example.org"
    })
    .await;
}

#[test]
fn check_shows_the_compat_settings() {
    let ws = Workspace::new();
    ws.project("shop", &["shop.test"], &echo_manifest());
    let config = ws.write_config(&json!({
        "default_project": "shop",
        "preview_host": "preview.localhost",
        "projects": [{"path": "shop", "public_url": "https://shop.example.com",
                      "cors_origins": ["https://front.example"]}],
    }));
    let output = run_cli(&["check"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for expected in [
        "unknown hosts: → shop (default_project)",
        "previews: http://preview.localhost/projects/<project>/",
        "    public_url https://shop.example.com",
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("no key, CORS from https://front.example)"),
        "{stdout}"
    );
}

#[test]
fn bad_compat_settings_are_reported_with_their_field() {
    let ws = Workspace::new();
    ws.project("shop", &["shop.test"], &echo_manifest());
    let cases = [
        (
            json!({"default_project": "nobody", "projects": ["shop"]}),
            "default_project: no project is named \"nobody\"",
        ),
        (
            json!({"preview_host": "preview.localhost:8080", "projects": ["shop"]}),
            "preview_host:",
        ),
        (
            json!({"projects": [{"path": "shop", "public_url": "shop.example.com"}]}),
            "projects[0].public_url:",
        ),
        (
            json!({"projects": [{"path": "shop", "cors_origins": ["*"], "cors_credentials": true}]}),
            "projects[0].cors_credentials:",
        ),
        (
            json!({"projects": [{"path": "shop", "cors_origins": ["https://front.example/"]}]}),
            "projects[0].cors_origins[0]:",
        ),
    ];
    for (config, expected) in cases {
        let path = ws.write_config(&config);
        let output = run_cli(&["check"], &path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{config} was accepted");
        assert!(stderr.contains(expected), "{config}: {stderr}");
    }
    // A manifest cannot set the variable Elsinore owns.
    ws.project(
        "rogue",
        &["rogue.test"],
        &echo_manifest_entry("web", &["/"], "ELSINORE_PUBLIC_URL = \"x\""),
    );
    let output = run_cli(&["check"], &ws.config(json!(["rogue"])));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("ELSINORE_PUBLIC_URL"), "{stderr}");
}
