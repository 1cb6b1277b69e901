//! A project's `admin_api` mode, against the real binary with echo
//! handlers: `"elsinore"` (the default, Elsinore's own shapes), `"hamlet"`
//! (Elsinore answers in the Hamlet framework's shapes, as its admin UI
//! sends and reads them) and `"handler"` (the admin API paths reach the
//! project's handler like any other request).

mod common;

use std::collections::BTreeSet;

use common::{auth_seen, echo_manifest, run_cli, Reply, Req, Server, Workspace};
use http::StatusCode;
use serde_json::{json, Value};

const PLAIN_KEY: &str = "plain-project-key";
const HAM_KEY: &str = "hamlet-project-key";
const HAND_KEY: &str = "handler-project-key";
const PROJECT_HEADER: &str = "x-hamlet-project-key";
const HOST_HEADER: &str = "x-hamlet-host-key";

/// The three projects, one per mode; `plain_mode` sets plain's
/// `admin_api` (absent: the default).
fn config(plain_mode: Option<&str>) -> Value {
    let mut plain = json!({"path": "plain", "key": PLAIN_KEY});
    if let Some(mode) = plain_mode {
        plain["admin_api"] = json!(mode);
    }
    json!({
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "projects": [
            plain,
            {"path": "ham", "key": HAM_KEY, "admin_api": "hamlet"},
            {"path": "hand", "key": HAND_KEY, "admin_api": "handler"},
        ],
    })
}

/// plain (default mode, plain.test), ham (`"hamlet"`, ham.test and
/// h2.test), hand (`"handler"`, hand.test), all echo handlers.
fn setup() -> (Workspace, Server) {
    let ws = Workspace::new();
    ws.project("plain", &["plain.test"], &echo_manifest());
    ws.project("ham", &["ham.test", "h2.test"], &echo_manifest());
    ws.project("hand", &["hand.test"], &echo_manifest());
    let server = Server::start(&ws.write_config(&config(None)));
    (ws, server)
}

/// A request as Hamlet's admin UI sends it: its project key in
/// `X-Hamlet-Project-Key`, a JSON body.
fn ui(server: &Server, method: &str, host: &str, path: &str, key: &str) -> Req {
    server
        .get(host, path)
        .method(method)
        .header(PROJECT_HEADER, key)
        .header("content-type", "application/json")
}

fn ham(server: &Server, method: &str, path: &str) -> Req {
    ui(server, method, "ham.test", path, HAM_KEY)
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn fields(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// ISO 8601 UTC with milliseconds, as Hamlet's JSON writes times.
fn assert_iso(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("a time string: {value}"));
    let ok = text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.starts_with("20");
    assert!(ok, "ISO 8601 UTC (2026-01-01T00:00:00.000Z): {text:?}");
}

/// Hamlet's error shape: a JSON object with `error`, and the status.
fn assert_error(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(reply.status, status, "{}", text(reply));
    let body = reply.json();
    assert!(body["error"].is_string(), "{{\"error\": …}}: {body}");
    body
}

#[tokio::test]
async fn the_default_mode_is_elsinores_own_and_a_reload_switches_modes() {
    let (ws, server) = setup();
    let reply = ui(&server, "GET", "plain.test", "/admin/api/_keys", PLAIN_KEY)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        reply.json(),
        json!({"host": "plain.test", "project": "plain", "keys": []}),
        "Elsinore's own shape, unchanged"
    );

    // Live on reload: plain's admin API goes to its handler.
    ws.write_config(&config(Some("handler")));
    let reload = server.op("POST", "/reload").send().await;
    assert_eq!(reload.status, StatusCode::OK, "{}", text(&reload));
    // The operator is told what changed.
    server
        .logs
        .wait_for("~ project plain: admin_api elsinore → handler");
    let reply = ui(&server, "GET", "plain.test", "/admin/api/_keys", PLAIN_KEY)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(
        reply.json()["path"],
        "/admin/api/_keys",
        "the handler answered"
    );

    // And to Hamlet's shape.
    ws.write_config(&config(Some("hamlet")));
    let reload = server.op("POST", "/reload").send().await;
    assert_eq!(reload.status, StatusCode::OK, "{}", text(&reload));
    let reply = ui(&server, "GET", "plain.test", "/admin/api/_keys", PLAIN_KEY)
        .send()
        .await;
    assert_eq!(reply.json(), json!([]), "{}", text(&reply));
}

#[tokio::test]
async fn hamlet_mode_keys_work_with_the_admin_uis_exact_requests() {
    let (_ws, server) = setup();

    // The UI's create: `JSON.stringify({ label: label || null })`.
    let reply = ham(&server, "POST", "/admin/api/_keys")
        .body(r#"{"label":null}"#)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    let first = reply.json();
    assert_eq!(
        fields(&first),
        set(&["id", "target_host", "key", "label", "created_at"]),
        "{first}"
    );
    assert_eq!(first["target_host"], "ham.test");
    assert_eq!(first["label"], Value::Null);
    assert_iso(&first["created_at"]);
    let full_key = first["key"].as_str().expect("the key").to_owned();
    assert!(
        full_key.starts_with("ehk_") && full_key.len() > 40,
        "{full_key}"
    );

    let labelled = ham(&server, "POST", "/admin/api/_keys")
        .body(r#"{"label":"laptop"}"#)
        .send()
        .await;
    assert_eq!(labelled.status, StatusCode::CREATED, "{}", text(&labelled));
    assert_eq!(labelled.json()["label"], "laptop");
    let absent = ham(&server, "POST", "/admin/api/_keys").send().await;
    assert_eq!(absent.status, StatusCode::CREATED, "{}", text(&absent));
    assert_eq!(absent.json()["label"], Value::Null, "no body: no label");

    // The full key opens the host as host admin, as Elsinore's keys do.
    assert_eq!(
        auth_seen(&server, "ham.test", "/", &[(HOST_HEADER, &full_key)]).await,
        "hostAdmin"
    );

    // The UI's list: `keys.map(k => …)` over a bare array.
    let reply = ham(&server, "GET", "/admin/api/_keys").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let keys = reply.json();
    let rows = keys.as_array().expect("a bare JSON array");
    assert_eq!(rows.len(), 3, "{keys}");
    for row in rows {
        assert_eq!(
            fields(row),
            set(&[
                "id",
                "target_host",
                "key",
                "label",
                "created_at",
                "revoked_at"
            ]),
            "{row}"
        );
        assert_eq!(row["target_host"], "ham.test");
        assert_iso(&row["created_at"]);
        assert_eq!(row["revoked_at"], Value::Null);
        let prefix = row["key"].as_str().expect("key prefix");
        assert_eq!(prefix.len(), 12, "only the display prefix: {prefix}");
    }
    let oldest = &rows[2];
    assert_eq!(oldest["id"], first["id"], "newest first, as Hamlet lists");
    assert!(full_key.starts_with(oldest["key"].as_str().unwrap_or("-")));

    // The UI's revoke: DELETE /admin/api/_keys/<id>.
    let id = first["id"].as_i64().expect("numeric id");
    let path = format!("/admin/api/_keys/{id}");
    let reply = ham(&server, "DELETE", &path).send().await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", text(&reply));
    assert!(reply.body.is_empty());
    assert_eq!(
        auth_seen(&server, "ham.test", "/", &[(HOST_HEADER, &full_key)]).await,
        "none",
        "a revoked key opens nothing"
    );
    let keys = ham(&server, "GET", "/admin/api/_keys").send().await.json();
    let revoked = keys
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["id"] == id))
        .expect("revoked keys are listed");
    assert_iso(&revoked["revoked_at"]);

    // Already revoked, or unknown: 404 with Hamlet's {"error": …}.
    let again = ham(&server, "DELETE", &path).send().await;
    assert_error(&again, StatusCode::NOT_FOUND);
    let unknown = ham(&server, "DELETE", "/admin/api/_keys/9999").send().await;
    assert_error(&unknown, StatusCode::NOT_FOUND);
    // Hamlet has no rotation.
    let rotate = ham(&server, "POST", &format!("/admin/api/_keys/{id}/rotate"))
        .send()
        .await;
    assert_error(&rotate, StatusCode::NOT_FOUND);
    // A wrong type is still a precise 400.
    let bad = ham(&server, "POST", "/admin/api/_keys")
        .body(r#"{"label": 7}"#)
        .send()
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn hamlet_mode_keeps_elsinores_auth_rules() {
    let (_ws, server) = setup();
    let none = server.get("ham.test", "/admin/api/_keys").send().await;
    assert_error(&none, StatusCode::UNAUTHORIZED);
    let other = ui(&server, "GET", "ham.test", "/admin/api/_keys", PLAIN_KEY)
        .send()
        .await;
    assert_error(&other, StatusCode::FORBIDDEN);
    let created = ham(&server, "POST", "/admin/api/_keys").send().await.json();
    let host_key = created["key"].as_str().expect("key").to_owned();
    let with_host_key = server
        .get("ham.test", "/admin/api/_keys")
        .header(HOST_HEADER, &host_key)
        .send()
        .await;
    assert_error(&with_host_key, StatusCode::FORBIDDEN);
    // Keys stay per host: h2.test (same project) does not list ham.test's.
    let h2 = ui(&server, "GET", "h2.test", "/admin/api/_keys", HAM_KEY)
        .send()
        .await;
    assert_eq!(h2.json(), json!([]), "{}", text(&h2));
}

#[tokio::test]
async fn hamlet_mode_hosts() {
    let (_ws, server) = setup();
    let reply = ham(&server, "GET", "/admin/api/_hosts").send().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let hosts = reply.json();
    let rows = hosts.as_array().expect("a bare JSON array");
    let names: BTreeSet<&str> = rows.iter().filter_map(|r| r["hostname"].as_str()).collect();
    assert_eq!(names, set(&["ham.test", "h2.test"]), "only ham's: {hosts}");
    for row in rows {
        assert_eq!(
            fields(row),
            set(&["id", "hostname", "project", "created_at"]),
            "{row}"
        );
        assert_eq!(row["id"], row["hostname"], "a host's id is its name");
        assert_eq!(row["project"], "ham");
        assert_iso(&row["created_at"]);
    }

    // Missing fields: 400, as Hamlet.
    for body in [
        json!({"hostname": "new.test"}),
        json!({"project": "ham"}),
        json!({}),
    ] {
        let reply = ham(&server, "POST", "/admin/api/_hosts")
            .body(body.to_string())
            .send()
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST);
    }
    // Another project's name: 403, and nothing is created.
    let reply = ham(&server, "POST", "/admin/api/_hosts")
        .body(json!({"hostname": "new.test", "project": "plain"}).to_string())
        .send()
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN);
    assert_eq!(
        server.get("new.test", "/").send().await.status,
        StatusCode::NOT_FOUND
    );

    let reply = ham(&server, "POST", "/admin/api/_hosts")
        .body(json!({"hostname": "new.test", "project": "ham"}).to_string())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    let row = reply.json();
    assert_eq!(
        fields(&row),
        set(&["id", "hostname", "project", "created_at"])
    );
    assert_eq!(row["id"], "new.test");
    assert_eq!(row["hostname"], "new.test");
    assert_eq!(row["project"], "ham");
    assert_iso(&row["created_at"]);
    let served = server.get("new.test", "/").send().await;
    assert_eq!(served.status, StatusCode::OK, "{}", text(&served));
    assert_eq!(served.seen("x-elsinore-project"), ["ham"]);
    let again = ham(&server, "POST", "/admin/api/_hosts")
        .body(json!({"hostname": "new.test", "project": "ham"}).to_string())
        .send()
        .await;
    assert_error(&again, StatusCode::CONFLICT);

    // DELETE by id (the hostname): 204, then 404.
    let reply = ham(&server, "DELETE", "/admin/api/_hosts/new.test")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", text(&reply));
    assert_eq!(
        server.get("new.test", "/").send().await.status,
        StatusCode::NOT_FOUND
    );
    let gone = ham(&server, "DELETE", "/admin/api/_hosts/new.test")
        .send()
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND);
    // Another project's host is not ham's to delete.
    let others = ham(&server, "DELETE", "/admin/api/_hosts/plain.test")
        .send()
        .await;
    assert_error(&others, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn handler_mode_sends_the_admin_api_to_the_handler() {
    let (_ws, server) = setup();
    // A client's own X-Elsinore-Auth is still replaced by Elsinore's.
    let reply = server
        .get("hand.test", "/admin/api/_keys")
        .header("x-elsinore-auth", "projectAdmin")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    let seen = reply.json();
    assert_eq!(seen["path"], "/admin/api/_keys", "{seen}");
    assert_eq!(seen["method"], "GET");
    assert_eq!(reply.seen("x-elsinore-auth"), ["none"]);
    assert_eq!(reply.seen("x-elsinore-project"), ["hand"]);
    assert_eq!(reply.seen("x-elsinore-host"), ["hand.test"]);

    // The UI's create, with the project key: the handler gets it and the
    // context says who the caller is.
    let reply = ui(&server, "POST", "hand.test", "/admin/api/_keys", HAND_KEY)
        .body(r#"{"label":null}"#)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(reply.json()["method"], "POST");
    assert_eq!(reply.json()["path"], "/admin/api/_keys");
    assert_eq!(reply.seen("x-elsinore-auth"), ["projectAdmin"]);
    assert_eq!(reply.seen(PROJECT_HEADER), [HAND_KEY]);

    let reply = ui(
        &server,
        "DELETE",
        "hand.test",
        "/admin/api/_hosts/7",
        HAND_KEY,
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));
    assert_eq!(reply.json()["path"], "/admin/api/_hosts/7");

    // A path that names the admin API only once %2F is decoded stays
    // refused: whether it is the handler's admin API depends on its
    // decoding.
    let disguised = server.get("hand.test", "/admin%2Fapi/_keys").send().await;
    assert_error(&disguised, StatusCode::BAD_REQUEST);
}

#[test]
fn an_unknown_mode_is_a_config_error_naming_line_and_field() {
    let ws = Workspace::new();
    ws.project("plain", &["plain.test"], &echo_manifest());
    let path = ws.path().join("config.json");
    std::fs::write(
        &path,
        "{\n  \"listen\": \"127.0.0.1:0\",\n  \"projects\": [\n    {\"path\": \"plain\", \"admin_api\": \"Hamlet\"}\n  ]\n}\n",
    )
    .expect("write config");
    let output = run_cli(&["check"], &path);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config.json:4:")
            && stderr.contains("projects[0].admin_api: unknown variant `Hamlet`, expected one of `elsinore`, `hamlet`, `handler`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn handler_mode_host_keys_elsinore_does_not_know_are_not_throttled() {
    let (_ws, server) = setup();
    // The handler keeps its own host keys: one Elsinore never made is not
    // a guess. Past the throttle's 10 failures a minute, every request
    // still reaches the handler, which decides.
    for attempt in 0..15 {
        let reply = server
            .get("hand.test", "/admin/api/_keys")
            .header(HOST_HEADER, "3f1e2d4c-hamlet-own-host-key")
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "attempt {attempt}: {}",
            text(&reply)
        );
        assert_eq!(reply.seen("x-elsinore-auth"), ["none"]);
        assert_eq!(reply.seen(HOST_HEADER), ["3f1e2d4c-hamlet-own-host-key"]);
    }
    // A wrong project key is still a guess (the project key is Elsinore's
    // too), counted in the same window.
    let mut throttled = false;
    for _ in 0..11 {
        let reply = ui(&server, "GET", "hand.test", "/", "wrong-project-key-x")
            .send()
            .await;
        throttled |= reply.status == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(throttled, "wrong project keys are still throttled");
}
