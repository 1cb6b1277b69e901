//! Key guessing and metrics cardinality, black-box: wrong project or host
//! keys on proxied requests count in the admin API's failure throttle,
//! `check` refuses guessable and shared project keys, and `metrics.per_host`
//! labels requests by the host pattern as declared, so clients choosing
//! names under a wildcard cannot grow `/metrics`.

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

const ALPHA_KEY: &str = "alpha-project-key-7c1e5b";
const PROJECT_HEADER: &str = "x-hamlet-project-key";
const HOST_HEADER: &str = "x-hamlet-host-key";

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// A 429 from Elsinore's error writer, with a usable `Retry-After`.
fn assert_throttled(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: {}",
        text(reply)
    );
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: Retry-After in seconds"));
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["error"], "too many failed attempts", "{what}: {body}");
    assert!(body["request_id"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn wrong_keys_on_proxied_requests_are_throttled_per_address() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let server = Server::start(&ws.config(json!([{"path": "alpha", "key": ALPHA_KEY}])));

    // Nine wrong guesses, by every way of presenting a key: each reaches
    // the handler as an ordinary `none` request.
    let guesses: [(&str, &str, &str); 9] = [
        ("/", PROJECT_HEADER, "guess-000000000001"),
        ("/", PROJECT_HEADER, "guess-000000000002"),
        ("/", PROJECT_HEADER, "guess-000000000003"),
        ("/?project_key=guess-000000000004", "", ""),
        ("/?a=1&project_key=guess-000000000005", "", ""),
        ("/?project_key=guess-000000000006", "", ""),
        ("/", HOST_HEADER, "ehk_guess-000000000007"),
        ("/", HOST_HEADER, "ehk_guess-000000000008"),
        ("/", PROJECT_HEADER, "guess-000000000009"),
    ];
    for (path, header, value) in guesses {
        let headers: &[(&str, &str)] = if header.is_empty() {
            &[]
        } else {
            &[(header, value)]
        };
        assert_eq!(
            auth_seen(&server, "alpha.test", path, headers).await,
            "none",
            "{path} {header}"
        );
    }
    // Still under the limit: the right key works.
    assert_eq!(
        auth_seen(&server, "alpha.test", "/", &[(PROJECT_HEADER, ALPHA_KEY)]).await,
        "projectAdmin"
    );
    // The tenth wrong key reaches the limit.
    assert_eq!(
        auth_seen(
            &server,
            "alpha.test",
            "/?project_key=guess-000000000010",
            &[]
        )
        .await,
        "none"
    );

    // From now on every request presenting a key, even the right one, is
    // answered 429 by Elsinore and never reaches the handler.
    let throttled = [
        ("/slow?ms=0", PROJECT_HEADER, ALPHA_KEY, "throttled-header"),
        (
            "/slow?ms=0&project_key=alpha-project-key-7c1e5b",
            "",
            "",
            "throttled-query",
        ),
        (
            "/slow?ms=0",
            HOST_HEADER,
            "ehk_anything",
            "throttled-host-key",
        ),
    ];
    for (path, header, value, id) in throttled {
        let mut request = server.get("alpha.test", path).header("x-request-id", id);
        if !header.is_empty() {
            request = request.header(header, value);
        }
        assert_throttled(&request.send().await, id);
    }
    // The admin API shares the window.
    let reply = server
        .get("alpha.test", "/admin/api/_keys")
        .header(PROJECT_HEADER, ALPHA_KEY)
        .send()
        .await;
    assert_throttled(&reply, "admin API");

    // A request without a key from the same address is served as usual.
    let reply = server
        .get("alpha.test", "/slow?ms=0")
        .header("x-request-id", "keyless-after")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(reply.seen("x-elsinore-auth"), ["none"]);
    server.logs.wait_for("slow request started: keyless-after");
    let reached: Vec<String> = server
        .logs
        .all()
        .into_iter()
        .filter(|line| line.contains("slow request started: throttled-"))
        .collect();
    assert!(
        reached.is_empty(),
        "throttled requests reached the handler: {reached:?}"
    );
}

#[test]
fn check_refuses_short_and_shared_project_keys() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    let fix = "make one with: openssl rand -hex 24";

    let short = ws.config(json!([{"path": "alpha", "key": "secret"}]));
    let output = run_cli(&["check"], &short);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 6-character key: {stderr}");
    assert!(
        stderr.contains("config.json: projects[0].key: the project key is too short (6 characters, at least 16 needed)")
            && stderr.contains(fix),
        "{stderr}"
    );

    let shared = "shared-project-key-0123456789";
    let config = ws.config(json!([
        {"path": "alpha", "key": shared},
        {"path": "beta", "key": shared},
    ]));
    let output = run_cli(&["check"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a shared key: {stderr}");
    assert!(
        stderr.contains("config.json: projects[1].key: the same project key as projects[0].key")
            && stderr.contains(fix),
        "{stderr}"
    );
    assert!(
        !stderr.contains(shared),
        "the key is never printed: {stderr}"
    );

    let config = ws.config(json!([
        {"path": "alpha", "key": shared},
        {"path": "beta", "key": "another-project-key-987654"},
    ]));
    let output = run_cli(&["check"], &config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `elsinore_requests_total` lines of a scrape.
fn request_lines(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|line| line.starts_with("elsinore_requests_total{"))
        .collect()
}

/// The 2xx count of the series labelled `host`, if it exists.
fn served(metrics: &str, host: &str) -> Option<u64> {
    let label = format!("host=\"{host}\",class=\"2xx\"}}");
    request_lines(metrics)
        .into_iter()
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

async fn scrape(server: &Server) -> String {
    let reply = server.op("GET", "/metrics").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    text(&reply)
}

async fn get_ok(server: &Server, host: &str, path: &str) {
    let reply = server.get(host, path).send().await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{host}{path}: {}",
        text(&reply)
    );
}

#[tokio::test]
async fn per_host_metrics_are_labelled_by_declared_pattern() {
    let ws = Workspace::new();
    ws.project("wild", &["*.wild.test", "exact.test"], &echo_manifest());
    ws.project("fallback", &["fallback.test"], &echo_manifest());
    let config = ws.config_with(
        json!(["wild", "fallback"]),
        json!({
            "metrics": {"per_host": true},
            "default_project": "fallback",
            "preview_host": "preview.test",
        }),
    );
    let server = Server::start(&config);

    for i in 0..5 {
        get_ok(&server, &format!("n{i}.wild.test"), "/").await;
    }
    get_ok(&server, "exact.test", "/").await;
    get_ok(&server, "nobody-declares.test", "/").await;
    get_ok(&server, "preview.test", "/projects/wild/").await;
    let first = scrape(&server).await;
    assert_eq!(served(&first, "*.wild.test"), Some(5), "{first}");
    assert_eq!(served(&first, "exact.test"), Some(1), "{first}");
    assert_eq!(served(&first, "_default"), Some(1), "{first}");
    assert_eq!(served(&first, "preview.test"), Some(1), "{first}");

    // Many more names under the wildcard: the same series, no new lines.
    for i in 5..60 {
        get_ok(&server, &format!("n{i}.wild.test"), "/").await;
    }
    get_ok(&server, "someone-else.test", "/").await;
    let second = scrape(&server).await;
    assert_eq!(served(&second, "*.wild.test"), Some(60), "{second}");
    assert_eq!(served(&second, "_default"), Some(2), "{second}");
    assert_eq!(
        request_lines(&first).len(),
        request_lines(&second).len(),
        "no series per client-chosen name"
    );
    for name in ["n7.wild.test", "nobody-declares.test", "someone-else.test"] {
        assert!(!second.contains(name), "{name} is a label:\n{second}");
    }
    // Only the counts' digits may differ.
    assert!(
        second.len() < first.len() + 200,
        "/metrics grew from {} to {} bytes",
        first.len(),
        second.len()
    );
}
