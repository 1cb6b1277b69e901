//! Observability, black-box: the access log (text and JSON), keys kept out
//! of every log line, `GET /metrics` as parseable Prometheus text whose
//! counters follow traffic, and the status page in headless Chromium.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use serde_json::{json, Value};

const PROJECT_KEY: &str = "othello-project-key-0f3a9c";

/// othello (key, hosts othello.test and www.othello.test), operator API on.
fn othello(ws: &Workspace, extra: Value) -> PathBuf {
    ws.project(
        "othello",
        &["othello.test", "www.othello.test"],
        &echo_manifest(),
    );
    ws.config_with(json!([{"path": "othello", "key": PROJECT_KEY}]), extra)
}

/// The access-log line of the request whose reply carried `reply`'s
/// X-Request-Id (written when the response is complete, so waited for).
fn access_line(server: &Server, reply: &Reply) -> String {
    let id = reply
        .header("x-request-id")
        .expect("X-Request-Id")
        .to_owned();
    let line = server.logs.wait_for(&format!("request_id={id}"));
    assert!(
        line.contains("elsinore::access"),
        "not an access line: {line}"
    );
    line
}

fn assert_has(line: &str, fields: &[&str]) {
    for field in fields {
        assert!(
            line.split_whitespace().any(|part| part == *field),
            "access line lacks `{field}`: {line}"
        );
    }
    for field in ["total_ms=", "client=127.0.0.1:"] {
        assert!(line.contains(field), "access line lacks `{field}`: {line}");
    }
}

#[tokio::test]
async fn access_log_has_a_line_for_proxied_404_and_502_requests() {
    let ws = Workspace::new();
    let server = Server::start(&othello(&ws, json!({})));

    let ok = server
        .get("othello.test", "/echo-body?page=2")
        .method("POST")
        .body("hello")
        .send()
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let line = access_line(&server, &ok);
    assert_has(
        &line,
        &[
            "host=othello.test",
            "project=othello",
            "handler=web",
            "method=POST",
            "path=/echo-body?page=2",
            "status=200",
            "bytes_in=5",
            "bytes_out=5",
        ],
    );
    assert!(line.contains("handler_ms="), "{line}");

    let missing = server.get("nobody.test", "/x").send().await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let line = access_line(&server, &missing);
    assert_has(
        &line,
        &[
            "host=-",
            "project=-",
            "handler=-",
            "method=GET",
            "path=/x",
            "status=404",
            "bytes_in=0",
        ],
    );
    assert!(
        !line.contains("handler_ms="),
        "no handler was asked: {line}"
    );

    // The handler reads the request and exits without answering.
    let failed = server.get("othello.test", "/crash").send().await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    let line = access_line(&server, &failed);
    assert_has(
        &line,
        &[
            "project=othello",
            "handler=web",
            "path=/crash",
            "status=502",
        ],
    );
    let bytes_out = format!("bytes_out={}", failed.body.len());
    assert_has(&line, &[&bytes_out]);
}

#[tokio::test]
async fn json_log_format_writes_every_line_as_json() {
    let ws = Workspace::new();
    let server = Server::start(&othello(&ws, json!({"log_format": "json"})));
    let reply = server
        .get("othello.test", "/page?project_key=nope")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = reply
        .header("x-request-id")
        .expect("X-Request-Id")
        .to_owned();
    let line = server.logs.wait_for(&format!("\"request_id\":\"{id}\""));
    let entry: Value = serde_json::from_str(&line).expect("an access line is JSON");
    assert_eq!(entry["target"], "elsinore::access");
    assert_eq!(entry["host"], "othello.test");
    assert_eq!(entry["project"], "othello");
    assert_eq!(entry["handler"], "web");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/page?project_key=[redacted]");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_out"].as_u64(), Some(reply.body.len() as u64));
    assert!(entry["total_ms"].is_f64(), "{line}");
    assert!(entry["timestamp"].is_string(), "{line}");
    // Startup, handler output and everything else: JSON too.
    for line in server.logs.all() {
        if line.starts_with('<') {
            continue; // the test harness's own marker
        }
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
    }
    let serving = server.logs.wait_for("\"message\":\"serving\"");
    let serving: Value = serde_json::from_str(&serving).expect("JSON");
    assert_eq!(serving["projects"], 1);
    assert!(serving["database"]
        .as_str()
        .is_some_and(|d| d.ends_with("elsinore.db")));
}

#[tokio::test]
async fn log_format_flag_overrides_the_config() {
    let ws = Workspace::new();
    let config = othello(&ws, json!({"log_format": "json"}));
    let server = Server::start_with(&config, &["--log-format", "text"], &[]);
    let reply = server.get("othello.test", "/").send().await;
    let line = access_line(&server, &reply);
    assert!(!line.starts_with('{'), "text wanted: {line}");
}

#[tokio::test]
async fn keys_never_appear_in_any_log_line() {
    let ws = Workspace::new();
    let config = othello(&ws, json!({}));
    // Debug level through --log: more lines that could leak.
    let server = Server::start_with(&config, &["--log", "debug"], &[]);

    // A real host key, created with the project key.
    let created = server
        .get("othello.test", "/admin/api/_keys")
        .method("POST")
        .header("x-hamlet-project-key", PROJECT_KEY)
        .header("content-type", "application/json")
        .body(r#"{"label": "laptop"}"#)
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let host_key = created.json()["key"]
        .as_str()
        .expect("key in the body")
        .to_owned();

    let query_secret = "query-secret-5d1e77";
    let token_secret = "token-secret-91b2c4";
    let wrong_key = "wrong-host-key-7aa0e2";
    let bearer = "bearer-secret-3c9f00";
    let mut replies = vec![
        server
            .get(
                "othello.test",
                &format!("/page?project_key={query_secret}&api_token={token_secret}&x=1"),
            )
            .header("x-hamlet-project-key", PROJECT_KEY)
            .header("x-hamlet-host-key", &host_key)
            .header("authorization", &format!("Bearer {bearer}"))
            .send()
            .await,
        server
            .get("othello.test", "/admin/api/_keys")
            .header("x-hamlet-host-key", wrong_key)
            .send()
            .await,
        server
            .get(
                "othello.test",
                &format!("/admin/api/_keys?project_key={query_secret}"),
            )
            .send()
            .await,
        server
            .get("nobody.test", &format!("/?project_key={query_secret}"))
            .header("x-hamlet-project-key", PROJECT_KEY)
            .send()
            .await,
    ];
    assert_eq!(replies[0].status, StatusCode::OK);
    assert_eq!(replies[1].status, StatusCode::UNAUTHORIZED);
    replies.push(created);
    for reply in &replies {
        access_line(&server, reply);
    }
    // The handler printed its request line (with the query) too.
    server
        .logs
        .wait_for("project_key=[redacted]&api_token=[redacted]&x=1");

    let logs = server.logs.all().join("\n");
    for secret in [
        PROJECT_KEY,
        host_key.as_str(),
        query_secret,
        token_secret,
        wrong_key,
        bearer,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} appears in the log:\n{logs}"
        );
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A strict-enough parser for the text format: `# HELP`/`# TYPE`/`# UNIT`/
/// `# EOF` comments and `name{label="value",…} number` samples, with the
/// format's escapes. Panics on anything else.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "content after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts.next().expect("a metric name in the comment");
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kind {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let metric_type = parts.next().expect("a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&metric_type),
                        "bad type in {line:?}"
                    );
                    typed.insert(name.to_owned(), metric_type.to_owned());
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name in {line:?}");
        let mut rest = &line[name_end..];
        let mut labels = HashMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                let (start, c) = chars.next().expect("unterminated labels");
                if c == '}' {
                    rest = &inner[start + 1..];
                    break;
                }
                if c == ',' {
                    continue;
                }
                let eq = inner[start..].find('=').expect("label without =") + start;
                let key = &inner[start..eq];
                assert!(valid_name(key), "bad label name {key:?} in {line:?}");
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("unterminated label value") {
                        (_, '"') => break,
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line:?}"),
                        },
                        (_, c) => value.push(c),
                    }
                }
                assert!(
                    labels.insert(key.to_owned(), value).is_none(),
                    "duplicate label in {line:?}"
                );
            }
        }
        let value = rest
            .trim()
            .split(' ')
            .next()
            .expect("a value")
            .parse::<f64>()
            .unwrap_or_else(|err| panic!("bad value in {line:?}: {err}"));
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample without # TYPE: {line:?}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(saw_eof, "no # EOF at the end");
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

async fn scrape(server: &Server) -> Vec<Sample> {
    let reply = server.op("GET", "/metrics").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.headers
    );
    parse_exposition(std::str::from_utf8(&reply.body).expect("UTF-8"))
}

/// The value of the sample `name` whose labels include `labels`, summed
/// when several match; 0 when none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_follow_traffic() {
    let ws = Workspace::new();
    let server = Server::start(&othello(&ws, json!({"metrics": {"per_host": true}})));
    until("othello/web is ready in elsinore_handler_state", || async {
        let now = scrape(&server).await;
        let state = |state| {
            value(
                &now,
                "elsinore_handler_state",
                &[("project", "othello"), ("handler", "web"), ("state", state)],
            )
        };
        // Exactly one state is 1 at any time.
        let states: f64 = [
            "starting", "ready", "backoff", "stopping", "stopped", "external",
        ]
        .into_iter()
        .map(state)
        .sum();
        assert_eq!(states, 1.0, "one current state");
        state("ready") == 1.0
    })
    .await;
    let before = scrape(&server).await;
    assert!(value(&before, "elsinore_table_swaps_total", &[]) >= 1.0);
    let ok = [
        ("project", "othello"),
        ("handler", "web"),
        ("host", "othello.test"),
        ("class", "2xx"),
    ];
    let served_before = value(&before, "elsinore_requests_total", &ok);

    for _ in 0..3 {
        let reply = server
            .get("othello.test", "/echo-body")
            .method("POST")
            .body("12345678")
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        access_line(&server, &reply);
    }
    let missing = server.get("nobody.test", "/").send().await;
    access_line(&server, &missing);
    let refused = server
        .get("othello.test", "/admin/api/_keys")
        .header("x-hamlet-host-key", "not-a-key")
        .send()
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    access_line(&server, &refused);
    let failed = server.get("othello.test", "/crash").send().await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    access_line(&server, &failed);

    let after = scrape(&server).await;
    assert_eq!(
        value(&after, "elsinore_requests_total", &ok) - served_before,
        3.0
    );
    let by_host = [
        ("project", "othello"),
        ("handler", "web"),
        ("host", "othello.test"),
    ];
    assert!(value(&after, "elsinore_request_bytes_total", &by_host) >= 24.0);
    assert!(value(&after, "elsinore_response_bytes_total", &by_host) >= 24.0);
    assert!(value(&after, "elsinore_request_duration_seconds_count", &by_host) >= 3.0);
    assert!(value(&after, "elsinore_handler_duration_seconds_count", &by_host) >= 3.0);
    assert_eq!(
        value(
            &after,
            "elsinore_requests_total",
            &[("project", ""), ("class", "4xx")]
        ),
        1.0,
        "unknown hosts count with an empty project"
    );
    assert_eq!(
        value(
            &after,
            "elsinore_key_auth_failures_total",
            &[("project", "othello"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "elsinore_handler_errors_total",
            &[
                ("project", "othello"),
                ("handler", "web"),
                ("kind", "reset")
            ]
        ),
        1.0
    );
    assert!(
        after.iter().any(|s| s.name == "elsinore_open_connections"),
        "open connections gauge"
    );
    for name in [
        "elsinore_reload_failures_total",
        "elsinore_events_rows_deleted_total",
        "elsinore_handler_restarts_total",
    ] {
        assert!(after.iter().any(|s| s.name == name), "{name} missing");
    }
    // The crashed handler comes back and its restart is counted.
    until("the crashed handler's restart is counted", || async {
        let now = scrape(&server).await;
        value(
            &now,
            "elsinore_handler_restarts_total",
            &[("project", "othello"), ("handler", "web")],
        ) >= 1.0
    })
    .await;
}

/// Debian's Chromium, or `$CHROMIUM`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium with `args` and returns its stdout; bounded.
fn run_chromium(chromium: &Path, profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            assert!(status.success(), "chromium {args:?} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 60s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("stdout reader")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_page_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED status_page_in_headless_chromium: no Chromium at /usr/bin/chromium \
             (install Debian's `chromium` package, as .ci/run does, or set $CHROMIUM)"
        );
        return;
    };
    let ws = Workspace::new();
    ws.project("othello", &["othello.test"], &echo_manifest());
    // hamlet also declares othello.test (a conflict) and has a handler
    // that exits at once (backoff, restarts, a last error).
    ws.project(
        "hamlet",
        &["hamlet.test", "othello.test"],
        &format!(
            "{}{}",
            echo_manifest_entry("web", &["/"], ""),
            echo_manifest_entry("broken", &["/broken"], "CRASH_ON_START = \"1\"")
        ),
    );
    let config = ws.config_with(json!(["othello", "hamlet"]), json!({}));
    let server = Server::start(&config);
    for _ in 0..5 {
        let reply = server.get("othello.test", "/").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    until("hamlet/broken has restarted", || async {
        let routes = server.routes().await;
        routes["projects"]["hamlet"]["handlers"][1]["restarts"]
            .as_u64()
            .is_some_and(|r| r >= 1)
    })
    .await;

    let url = format!("http://{}/", server.operator());
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = tokio::task::spawn_blocking({
        let (chromium, profile, url) = (chromium.clone(), profile.path().to_owned(), url.clone());
        move || run_chromium(&chromium, &profile, &["--dump-dom".to_owned(), url])
    })
    .await
    .expect("chromium thread");
    for fact in [
        "<title>Elsinore status</title>",
        "othello.test",
        "hamlet.test",
        ">othello<",
        ">hamlet<",
        ">broken<",
        "class=\"ready\">ready<",
        "Host conflicts",
        "<td>othello.test</td><td>othello</td><td>hamlet</td>",
        "Last reload",
        "class=\"ok\">applied<",
        "Requests/s (last minute)",
        "Certificates",
        "Events",
        "Last run: none yet.",
    ] {
        assert!(dom.contains(fact), "the page lacks {fact:?}:\n{dom}");
    }
    // othello's 5 requests are counted; broken shows why it failed.
    let row = dom
        .find("<tr><td>othello</td><td><ul>")
        .map(|start| &dom[start..])
        .and_then(|row| row.find("</tr>").map(|end| &row[..end]))
        .unwrap_or_else(|| panic!("no row for othello in the projects table:\n{dom}"));
    assert!(
        row.ends_with("<td>5</td>"),
        "othello's request total: {row}"
    );
    assert!(
        dom.contains("exit") || dom.contains("status 2"),
        "broken's last error missing:\n{dom}"
    );
    assert!(!dom.contains("<script"), "no JavaScript on the page");

    let artifacts = repo_root().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("test-artifacts/");
    let screenshot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    tokio::task::spawn_blocking({
        let (profile, screenshot) = (profile.path().to_owned(), screenshot.clone());
        move || {
            run_chromium(
                &chromium,
                &profile,
                &[
                    format!("--screenshot={}", screenshot.display()),
                    "--window-size=1280,1400".to_owned(),
                    url,
                ],
            )
        }
    })
    .await
    .expect("chromium thread");
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("status page screenshot: {}", screenshot.display());
}

/// With `admin_token_env`, the page opened as `/#token=…` still works in
/// a browser (the token page fetches it with the header); a wrong token or
/// none shows no data.
#[tokio::test(flavor = "multi_thread")]
async fn status_page_with_a_token_in_headless_chromium() {
    const TOKEN: &str = "5ca1ab1e0123456789abcdef5ca1ab1e";
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED status_page_with_a_token_in_headless_chromium: no Chromium (see above)");
        return;
    };
    let ws = Workspace::new();
    ws.project("othello", &["othello.test"], &echo_manifest());
    let config = ws.config_with(
        json!(["othello"]),
        json!({"admin_token_env": "ELSINORE_TEST_STATUS_TOKEN"}),
    );
    let server = Server::start_with_env(&config, &[("ELSINORE_TEST_STATUS_TOKEN", TOKEN)]);
    let base = format!("http://{}", server.operator());
    let dump = |url: String| {
        let chromium = chromium.clone();
        async move {
            let profile = tempfile::tempdir().expect("profile dir");
            tokio::task::spawn_blocking(move || {
                // Virtual time lets the page's fetch finish before the dump.
                let args = [
                    "--virtual-time-budget=10000".to_owned(),
                    "--dump-dom".to_owned(),
                    url,
                ];
                run_chromium(&chromium, profile.path(), &args)
            })
            .await
            .expect("chromium thread")
        }
    };
    for url in [
        format!("{base}/#token={TOKEN}"),
        format!("{base}/routes#token={TOKEN}"),
    ] {
        let dom = dump(url.clone()).await;
        assert!(dom.contains("othello.test"), "{url} shows no data:\n{dom}");
        assert!(!dom.contains("needs a token"), "{url}:\n{dom}");
    }
    let dom = dump(format!("{base}/#token=wrong-token-0123456789")).await;
    assert!(dom.contains("The token was refused"), "{dom}");
    assert!(!dom.contains("othello.test"), "{dom}");
    let dom = dump(format!("{base}/")).await;
    assert!(
        dom.contains("needs a token") && !dom.contains("othello.test"),
        "{dom}"
    );
}

#[tokio::test]
async fn handler_timeouts_are_logged_and_counted_by_kind() {
    let ws = Workspace::new();
    let manifest = format!(
        "{}response_timeout = \"200ms\"\n",
        echo_manifest_entry("web", &["/"], "")
    );
    ws.project("slowpoke", &["slowpoke.test"], &manifest);
    let server = Server::start(&ws.config_with(json!(["slowpoke"]), json!({})));
    // The handler answers after 3 s; Elsinore gives up after 200 ms.
    let reply = server
        .get("slowpoke.test", "/slow?ms=3000&session_token=abc123secret")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    let line = access_line(&server, &reply);
    assert_has(
        &line,
        &[
            "project=slowpoke",
            "handler=web",
            "path=/slow?ms=3000&session_token=[redacted]",
            "status=504",
        ],
    );
    assert!(line.contains("handler_ms="), "{line}");
    let samples = scrape(&server).await;
    assert_eq!(
        value(
            &samples,
            "elsinore_handler_errors_total",
            &[
                ("project", "slowpoke"),
                ("handler", "web"),
                ("kind", "timeout")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "elsinore_requests_total",
            &[("project", "slowpoke"), ("class", "5xx")]
        ),
        1.0
    );
    assert!(!server.logs.all().join("\n").contains("abc123secret"));
}
