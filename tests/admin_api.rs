//! The admin API (`/admin/api/_keys…`, `/admin/api/_hosts…`) and the
//! `X-Elsinore-Auth` context it and the project keys produce, against the
//! real binary with echo handlers and a real SQLite file.

mod common;

use std::path::Path;

use common::{auth_seen, echo_manifest, Reply, Req, Server, Workspace};
use http::StatusCode;
use serde_json::{json, Value};

const ALPHA_KEY: &str = "alpha-project-key";
const BETA_KEY: &str = "beta-project-key";
const PROJECT_HEADER: &str = "x-hamlet-project-key";
const HOST_HEADER: &str = "x-hamlet-host-key";

/// action, actor, client, key_id, key_prefix, at
type AuditRow = (String, String, String, Option<i64>, Option<String>, i64);
/// what, host, request headers, expected X-Elsinore-Auth
type AuthCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// alpha (key, hosts alpha.test and a2.test), beta (key, beta.test) and
/// keyless (no key, keyless.test); extra top-level config merged in.
fn setup(extra: Value) -> (Workspace, Server) {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test", "a2.test"], &echo_manifest());
    ws.project("beta", &["beta.test"], &echo_manifest());
    ws.project("keyless", &["keyless.test"], &echo_manifest());
    let mut config = json!({
        "listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "projects": [
            {"path": "alpha", "key": ALPHA_KEY},
            {"path": "beta", "key": BETA_KEY},
            "keyless",
        ],
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let server = Server::start(&ws.write_config(&config));
    (ws, server)
}

fn admin(server: &Server, method: &str, host: &str, path: &str) -> Req {
    server.get(host, path).method(method)
}

/// An admin request with alpha's project key.
fn alpha(server: &Server, method: &str, host: &str, path: &str) -> Req {
    admin(server, method, host, path).header(PROJECT_HEADER, ALPHA_KEY)
}

async fn create_key(server: &Server, host: &str, label: &str) -> Value {
    let reply = alpha(server, "POST", host, "/admin/api/_keys")
        .header("content-type", "application/json")
        .body(json!({ "label": label }).to_string())
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    reply.json()
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn key_of(created: &Value) -> String {
    created["key"].as_str().expect("key in body").to_owned()
}

fn error_of(reply: &Reply) -> Value {
    let body = reply.json();
    assert!(body["request_id"].is_string(), "one error shape: {body}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    body
}

#[tokio::test]
async fn keys_are_created_listed_rotated_and_revoked() {
    let (ws, server) = setup(json!({}));

    let created = create_key(&server, "alpha.test", "laptop").await;
    let key = key_of(&created);
    assert!(key.starts_with("ehk_") && key.len() == 47, "{key}");
    assert_eq!(created["label"], "laptop");
    assert_eq!(created["host"], "alpha.test");
    assert!(created["created_at"].as_i64().is_some_and(|t| t > 0));
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["prefix"], key[..12]);

    // An empty body is an empty label.
    let unlabeled = alpha(&server, "POST", "alpha.test", "/admin/api/_keys")
        .send()
        .await;
    assert_eq!(unlabeled.status, StatusCode::CREATED);
    assert_eq!(unlabeled.json()["label"], "");

    let list = alpha(&server, "GET", "alpha.test", "/admin/api/_keys")
        .send()
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("cache-control"), Some("no-store"));
    assert!(
        !text(&list).contains(&key[4..]),
        "a listing never shows a key"
    );
    let listed = list.json();
    assert_eq!(listed["host"], "alpha.test");
    assert_eq!(listed["project"], "alpha");
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(2));
    let first = &listed["keys"][0];
    assert_eq!(first["id"], id);
    assert_eq!(first["label"], "laptop");
    assert_eq!(first["status"], "live");
    assert_eq!(first["revoked_at"], Value::Null);
    assert!(first.get("key").is_none() && first.get("key_hash").is_none());

    // Another host of the same project has its own (empty) list, and
    // cannot touch this host's keys.
    let other = alpha(&server, "GET", "a2.test", "/admin/api/_keys")
        .send()
        .await
        .json();
    assert_eq!(other["keys"], json!([]));
    let reply = alpha(
        &server,
        "DELETE",
        "a2.test",
        &format!("/admin/api/_keys/{id}"),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", text(&reply));

    // Rotate: a new key with the same label; the old one is revoked.
    let reply = alpha(
        &server,
        "POST",
        "alpha.test",
        &format!("/admin/api/_keys/{id}/rotate"),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    let rotated = reply.json();
    let new_id = rotated["id"].as_i64().expect("id");
    assert_ne!(new_id, id);
    assert_ne!(key_of(&rotated), key);
    assert_eq!(rotated["label"], "laptop");
    assert_eq!(rotated["replaces"], id);
    assert_eq!(rotated["old_key"]["status"], "revoked");

    // A revoked key cannot be rotated again.
    let reply = alpha(
        &server,
        "POST",
        "alpha.test",
        &format!("/admin/api/_keys/{id}/rotate"),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", text(&reply));

    // Revoke: 204, and idempotent.
    for _ in 0..2 {
        let reply = alpha(
            &server,
            "DELETE",
            "alpha.test",
            &format!("/admin/api/_keys/{new_id}"),
        )
        .send()
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", text(&reply));
        assert!(reply.body.is_empty());
    }
    let reply = alpha(&server, "DELETE", "alpha.test", "/admin/api/_keys/9999")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(error_of(&reply)["reason"]
        .as_str()
        .is_some_and(|r| r.contains("no key with id 9999")));

    let statuses: Vec<Value> = alpha(&server, "GET", "alpha.test", "/admin/api/_keys")
        .send()
        .await
        .json()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| json!([k["id"], k["status"]]))
        .collect();
    assert_eq!(
        statuses,
        [
            json!([id, "revoked"]),
            json!([id + 1, "live"]),
            json!([new_id, "revoked"])
        ]
    );

    // Every change is in the audit table: who, what, when, from where.
    let conn = rusqlite::Connection::open(ws.state_database()).expect("open db");
    let mut statement = conn
        .prepare(
            "SELECT action, actor, client, key_id, key_prefix, at FROM elsinore_audit
             WHERE host = 'alpha.test' ORDER BY id",
        )
        .expect("prepare");
    let rows: Vec<AuditRow> = statement
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let actions: Vec<(&str, Option<i64>)> = rows.iter().map(|r| (r.0.as_str(), r.3)).collect();
    assert_eq!(
        actions,
        [
            ("create", Some(id)),
            ("create", Some(id + 1)),
            ("rotate", Some(id)),
            ("revoke", Some(new_id)),
        ]
    );
    for row in &rows {
        assert_eq!((row.1.as_str(), row.2.as_str()), ("project", "127.0.0.1"));
        assert!(row.4.as_deref().is_some_and(|p| p.starts_with("ehk_")));
        assert!(row.5 > 0);
    }
}

#[tokio::test]
async fn the_context_carries_the_right_auth_level() {
    let (_ws, server) = setup(json!({}));
    let alpha_host_key = key_of(&create_key(&server, "alpha.test", "a").await);
    let a2_host_key = key_of(&create_key(&server, "a2.test", "b").await);
    let revoked = create_key(&server, "alpha.test", "revoked").await;
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        &format!("/admin/api/_keys/{}", revoked["id"]),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let revoked_key = key_of(&revoked);
    let beta_host_key = {
        let reply = admin(&server, "POST", "beta.test", "/admin/api/_keys")
            .header("authorization", &format!("Bearer {BETA_KEY}"))
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
        key_of(&reply.json())
    };

    let cases: &[AuthCase] = &[
        ("nothing", "alpha.test", &[], "none"),
        (
            "project key",
            "alpha.test",
            &[(PROJECT_HEADER, ALPHA_KEY)],
            "projectAdmin",
        ),
        (
            "project key on another host of the project",
            "a2.test",
            &[(PROJECT_HEADER, ALPHA_KEY)],
            "projectAdmin",
        ),
        (
            "another project's key",
            "alpha.test",
            &[(PROJECT_HEADER, BETA_KEY)],
            "none",
        ),
        (
            "alpha's key on beta",
            "beta.test",
            &[(PROJECT_HEADER, ALPHA_KEY)],
            "none",
        ),
        (
            "a keyless project",
            "keyless.test",
            &[(PROJECT_HEADER, ALPHA_KEY)],
            "none",
        ),
        (
            "wrong project key",
            "alpha.test",
            &[(PROJECT_HEADER, "alpha-project-ke")],
            "none",
        ),
        (
            "host key",
            "alpha.test",
            &[(HOST_HEADER, &alpha_host_key)],
            "hostAdmin",
        ),
        (
            "another host's key",
            "alpha.test",
            &[(HOST_HEADER, &a2_host_key)],
            "none",
        ),
        (
            "own host key on the other host",
            "a2.test",
            &[(HOST_HEADER, &alpha_host_key)],
            "none",
        ),
        (
            "another project's host key",
            "alpha.test",
            &[(HOST_HEADER, &beta_host_key)],
            "none",
        ),
        (
            "revoked key",
            "alpha.test",
            &[(HOST_HEADER, &revoked_key)],
            "none",
        ),
        (
            "project key beats host key",
            "alpha.test",
            &[(PROJECT_HEADER, ALPHA_KEY), (HOST_HEADER, &alpha_host_key)],
            "projectAdmin",
        ),
        (
            "spoofed context",
            "alpha.test",
            &[("x-elsinore-auth", "projectAdmin")],
            "none",
        ),
        (
            "bearer is not a context key",
            "alpha.test",
            &[("authorization", "Bearer alpha-project-key")],
            "none",
        ),
    ];
    for (what, host, headers, want) in cases {
        assert_eq!(
            &auth_seen(&server, host, "/", headers).await,
            want,
            "{what}"
        );
    }
    assert_eq!(
        auth_seen(
            &server,
            "alpha.test",
            "/page?x=1&project_key=alpha-project-key",
            &[]
        )
        .await,
        "projectAdmin",
        "?project_key="
    );
    assert_eq!(
        auth_seen(
            &server,
            "beta.test",
            "/page?project_key=alpha-project-key",
            &[]
        )
        .await,
        "none"
    );

    // The client's Hamlet key headers reach the handler untouched.
    let reply = server
        .get("alpha.test", "/")
        .header(PROJECT_HEADER, ALPHA_KEY)
        .header(HOST_HEADER, &alpha_host_key)
        .send()
        .await;
    assert_eq!(reply.seen(PROJECT_HEADER), [ALPHA_KEY]);
    assert_eq!(reply.seen(HOST_HEADER), [alpha_host_key.as_str()]);
}

#[tokio::test]
async fn rotation_with_and_without_grace() {
    let (_ws, server) = setup(json!({}));
    let rotate = |id: i64, body: Value| {
        alpha(
            &server,
            "POST",
            "alpha.test",
            &format!("/admin/api/_keys/{id}/rotate"),
        )
        .body(body.to_string())
        .send()
    };
    let level = |key: String| {
        let server = &server;
        async move { auth_seen(server, "alpha.test", "/", &[(HOST_HEADER, &key)]).await }
    };

    // Without grace the old key stops at once.
    let first = create_key(&server, "alpha.test", "ci").await;
    let reply = rotate(first["id"].as_i64().expect("id"), json!({})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    let second = reply.json();
    assert_eq!(level(key_of(&first)).await, "none");
    assert_eq!(level(key_of(&second)).await, "hostAdmin");

    // With grace both work until it ends.
    let reply = rotate(
        second["id"].as_i64().expect("id"),
        json!({"grace_seconds": 3600}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    let third = reply.json();
    assert_eq!(third["old_key"]["status"], "grace");
    let until = third["old_key"]["grace_until"]
        .as_i64()
        .expect("grace_until");
    let created = third["created_at"].as_i64().expect("created_at");
    assert_eq!(until - created, 3_600_000);
    assert_eq!(level(key_of(&second)).await, "hostAdmin");
    assert_eq!(level(key_of(&third)).await, "hostAdmin");

    // Revoking a key in its grace period ends it at once.
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        &format!("/admin/api/_keys/{}", second["id"]),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(level(key_of(&second)).await, "none");
    assert_eq!(level(key_of(&third)).await, "hostAdmin");

    // Bad bodies are 400 with the reason.
    let id = third["id"].as_i64().expect("id");
    for (body, needle) in [
        (json!({"grace_seconds": -1}), "invalid JSON body"),
        (json!({"grace_seconds": 604_801}), "too long"),
        (json!({"grace_second": 5}), "unknown field"),
    ] {
        let reply = rotate(id, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", text(&reply));
        let reason = error_of(&reply)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains(needle), "{reason}");
    }
    assert_eq!(
        level(key_of(&third)).await,
        "hostAdmin",
        "failed calls change nothing"
    );
}

/// Every value of every column of every table, as bytes.
fn every_value(db: &Path) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("tables");
    assert!(tables.iter().any(|t| t == "host_secrets"));
    assert!(tables.iter().any(|t| t == "elsinore_audit"));
    let mut values = Vec::new();
    for table in tables {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("select");
        let columns = statement.column_count();
        let mut rows = statement.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for column in 0..columns {
                use rusqlite::types::ValueRef;
                values.push(match row.get_ref(column).expect("value") {
                    ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.to_vec(),
                    ValueRef::Integer(i) => i.to_string().into_bytes(),
                    ValueRef::Real(f) => f.to_string().into_bytes(),
                    ValueRef::Null => Vec::new(),
                });
            }
        }
    }
    values
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_plaintext_key_in_the_database_and_keys_survive_a_restart() {
    let ws = Workspace::new();
    ws.project("alpha", &["alpha.test"], &echo_manifest());
    let config = ws.config(json!([{"path": "alpha", "key": ALPHA_KEY}]));
    let server = Server::start(&config);
    let kept = key_of(&create_key(&server, "alpha.test", "kept").await);
    let revoked = create_key(&server, "alpha.test", "revoked").await;
    let rotated = create_key(&server, "alpha.test", "rotated").await;
    let reply = alpha(
        &server,
        "POST",
        "alpha.test",
        &format!("/admin/api/_keys/{}/rotate", rotated["id"]),
    )
    .body(r#"{"grace_seconds": 600}"#)
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let replacement = key_of(&reply.json());
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        &format!("/admin/api/_keys/{}", revoked["id"]),
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let keys = [
        kept.clone(),
        key_of(&revoked),
        key_of(&rotated),
        replacement.clone(),
    ];

    // The secret part of a key (after `ehk_`) is in no column of any table,
    // nor anywhere in the database files (WAL included).
    let values = every_value(&ws.state_database());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(ws.path().join("data")).expect("data dir") {
        let path = entry.expect("entry").path();
        // (`run/` holds the server's pid file and handler sockets.)
        if path.is_file() {
            files.extend(std::fs::read(path).expect("read"));
        }
    }
    for key in &keys {
        let secret = &key.as_bytes()[4..];
        assert!(
            !values.iter().any(|v| contains(v, secret)),
            "a key is stored in a column"
        );
        assert!(!contains(&files, secret), "a key is in the database files");
    }

    // Restart: the same keys work, the revoked one still does not.
    drop(server);
    let server = Server::start(&config);
    for (key, want) in [
        (&kept, "hostAdmin"),
        (&keys[1], "none"),
        (&keys[2], "hostAdmin"),
        (&replacement, "hostAdmin"),
    ] {
        assert_eq!(
            auth_seen(&server, "alpha.test", "/", &[(HOST_HEADER, key)]).await,
            want
        );
    }
    let listed = alpha(&server, "GET", "alpha.test", "/admin/api/_keys")
        .send()
        .await
        .json();
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn wrong_missing_and_foreign_keys_are_refused() {
    let (_ws, server) = setup(json!({}));
    let host_key = key_of(&create_key(&server, "alpha.test", "").await);
    let keys = "/admin/api/_keys";

    let reply = admin(&server, "GET", "alpha.test", keys).send().await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer realm=\"elsinore\"")
    );
    let body = error_of(&reply);
    assert_eq!(body["error"], "unauthorized");
    assert!(body["reason"]
        .as_str()
        .is_some_and(|r| r.contains("missing project key")));

    let reply = admin(&server, "GET", "alpha.test", keys)
        .header(PROJECT_HEADER, "nope")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&reply)["reason"], "wrong project key");

    // A valid key of another project: 403, for headers and Bearer alike.
    for header in [
        (PROJECT_HEADER, BETA_KEY.to_owned()),
        ("authorization", format!("Bearer {BETA_KEY}")),
    ] {
        let reply = admin(&server, "GET", "alpha.test", keys)
            .header(header.0, &header.1)
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", text(&reply));
        assert_eq!(error_of(&reply)["error"], "forbidden");
    }
    // A host key opens the host for its handlers, not the admin API.
    for header in [
        (HOST_HEADER, host_key.clone()),
        ("authorization", format!("Bearer {host_key}")),
    ] {
        let reply = admin(&server, "POST", "alpha.test", keys)
            .header(header.0, &header.1)
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", text(&reply));
        assert!(error_of(&reply)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("host key")));
    }
    // A project without a key has a closed admin API.
    let reply = admin(&server, "GET", "keyless.test", keys)
        .header(PROJECT_HEADER, "anything")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&reply)["reason"]
        .as_str()
        .is_some_and(|r| r.contains("has no key")));

    // The accepted forms of the right key.
    for req in [
        admin(&server, "GET", "alpha.test", keys).header(PROJECT_HEADER, ALPHA_KEY),
        admin(&server, "GET", "alpha.test", keys)
            .header("authorization", &format!("bearer {ALPHA_KEY}")),
        admin(
            &server,
            "GET",
            "alpha.test",
            &format!("{keys}?project_key={ALPHA_KEY}"),
        ),
    ] {
        assert_eq!(req.send().await.status, StatusCode::OK);
    }

    // Wrong methods, unknown endpoints and bad ids.
    let reply = alpha(&server, "PUT", "alpha.test", keys).send().await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, POST, OPTIONS"));
    let reply = alpha(&server, "DELETE", "alpha.test", "/admin/api/_keys/x1")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = alpha(&server, "GET", "alpha.test", "/admin/api/_keys/1/other")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // Near misses are the handler's.
    let reply = alpha(&server, "GET", "alpha.test", "/admin/api/_keysX")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["path"], "/admin/api/_keysX");
}

#[tokio::test]
async fn bodies_are_bounded_and_checked() {
    let (_ws, server) = setup(json!({}));
    let keys = "/admin/api/_keys";
    let big = format!(r#"{{"label": "{}"}}"#, "x".repeat(20 * 1024));
    let reply = alpha(&server, "POST", "alpha.test", keys)
        .body(big)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_of(&reply)["error"], "request body too large");
    for (body, status) in [
        ("{not json", StatusCode::BAD_REQUEST),
        (r#"{"label": 5}"#, StatusCode::BAD_REQUEST),
        (r#"{"label": "a\nb"}"#, StatusCode::BAD_REQUEST),
        (r#"{"labl": "x"}"#, StatusCode::BAD_REQUEST),
        ("  ", StatusCode::CREATED),
    ] {
        let reply = alpha(&server, "POST", "alpha.test", keys)
            .body(body)
            .send()
            .await;
        assert_eq!(reply.status, status, "{body}: {}", text(&reply));
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled() {
    let (_ws, server) = setup(json!({}));
    let keys = "/admin/api/_keys";
    for attempt in 0..10 {
        let reply = admin(&server, "GET", "alpha.test", keys)
            .header(PROJECT_HEADER, &format!("guess-{attempt}"))
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // From now on, even the right key waits; on any host, for any endpoint.
    for (host, path) in [("alpha.test", keys), ("beta.test", "/admin/api/_hosts")] {
        let reply = admin(&server, "GET", host, path)
            .header(PROJECT_HEADER, ALPHA_KEY)
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            text(&reply)
        );
        let retry: u64 = reply
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(error_of(&reply)["error"], "too many failed attempts");
    }
    // The same window holds proxied requests presenting a key (guesses
    // must not move there); those without a key are not affected.
    let reply = server
        .get("alpha.test", "/")
        .header(PROJECT_HEADER, ALPHA_KEY)
        .send()
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        text(&reply)
    );
    assert_eq!(auth_seen(&server, "alpha.test", "/", &[]).await, "none");
}

#[tokio::test]
async fn cors_preflight_for_configured_origins_only() {
    let allowed = "chrome-extension://hamletextensionid";
    let (_ws, server) = setup(json!({"cors_origins": [allowed]}));
    let preflight = |origin: &str| {
        admin(&server, "OPTIONS", "alpha.test", "/admin/api/_keys/3")
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .header("access-control-request-headers", "x-hamlet-project-key")
            .send()
    };

    let reply = preflight(allowed).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
    assert!(reply
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("DELETE")));
    assert!(reply
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("X-Hamlet-Project-Key") && h.contains("Authorization")));
    assert_eq!(reply.header("vary"), Some("Origin"));

    let reply = preflight("https://evil.example").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(error_of(&reply)["error"], "origin not allowed");

    // Actual requests: the allowed origin may read the answer (errors too).
    let reply = alpha(&server, "GET", "alpha.test", "/admin/api/_keys")
        .header("origin", allowed)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
    assert!(reply
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("Retry-After")));
    let reply = admin(&server, "GET", "alpha.test", "/admin/api/_keys")
        .header("origin", allowed)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("access-control-allow-origin"), Some(allowed));
    // Another origin gets the answer without CORS headers: its browser
    // will not let the page read it.
    let reply = alpha(&server, "GET", "alpha.test", "/admin/api/_keys")
        .header("origin", "https://evil.example")
        .send()
        .await;
    assert_eq!(reply.header("access-control-allow-origin"), None);

    // OPTIONS without Origin is not a preflight.
    let reply = admin(&server, "OPTIONS", "alpha.test", "/admin/api/_hosts")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("allow"), Some("GET, POST, DELETE, OPTIONS"));
}

#[tokio::test]
async fn no_cors_origin_is_allowed_by_default() {
    let (_ws, server) = setup(json!({}));
    let reply = admin(&server, "OPTIONS", "alpha.test", "/admin/api/_keys")
        .header("origin", "https://admin.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn hosts_are_listed_created_and_removed() {
    let (ws, server) = setup(json!({}));
    let hosts = "/admin/api/_hosts";
    let listed = alpha(&server, "GET", "alpha.test", hosts).send().await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.json(),
        json!({"project": "alpha", "hosts": ["a2.test", "alpha.test"]})
    );

    // Create: 201 once live, and the new host routes to this project.
    let reply = alpha(&server, "POST", "alpha.test", hosts)
        .body(r#"{"hostname": "New.Alpha.test"}"#)
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", text(&reply));
    assert_eq!(
        reply.json(),
        json!({"hostname": "new.alpha.test", "project": "alpha", "live": true})
    );
    assert!(ws.path().join("alpha/hosts/new.alpha.test").is_dir());
    let echoed = server.get("new.alpha.test", "/").send().await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.json()["project"], "alpha");
    assert_eq!(
        alpha(&server, "GET", "a2.test", hosts).send().await.json()["hosts"],
        json!(["a2.test", "alpha.test", "new.alpha.test"])
    );

    // Taken names: 409, whichever project has them.
    for name in ["alpha.test", "new.alpha.test", "beta.test"] {
        let reply = alpha(&server, "POST", "alpha.test", hosts)
            .body(json!({ "hostname": name }).to_string())
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{name}: {}",
            text(&reply)
        );
    }

    // Anything that is not a hostname: 400, and nothing is created anywhere.
    let before = tree(ws.path());
    for name in [
        "../beta/hosts/evil.test",
        "..",
        "a/b",
        "/tmp/x",
        "%2e%2e",
        "..%2fbeta",
        "*.alpha.test",
        "has space.test",
        "host.test:8080",
        "",
    ] {
        let reply = alpha(&server, "POST", "alpha.test", hosts)
            .body(json!({ "hostname": name }).to_string())
            .send()
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name:?}: {}",
            text(&reply)
        );
        assert_eq!(error_of(&reply)["error"], "bad request");
    }
    for body in ["{}", r#"{"hostname": 3}"#, r#"{"host": "x.test"}"#] {
        let reply = alpha(&server, "POST", "alpha.test", hosts)
            .body(body)
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    }
    for path in [
        "/admin/api/_hosts/..%2Fbeta%2Fhosts%2Fbeta.test",
        "/admin/api/_hosts/*.alpha.test",
    ] {
        let reply = alpha(&server, "DELETE", "alpha.test", path).send().await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            text(&reply)
        );
    }
    // Dot segments are resolved before any path is matched (the one path
    // normalisation): these name no host; they are other paths, the
    // handler's or the host list's, and delete nothing.
    for (path, status, handler_path) in [
        ("/admin/api/_hosts/..", StatusCode::OK, Some("/admin/api/")),
        (
            "/admin/api/_hosts/%2e%2e",
            StatusCode::OK,
            Some("/admin/api/"),
        ),
        (
            "/admin/api/_hosts/../beta",
            StatusCode::OK,
            Some("/admin/api/beta"),
        ),
        (
            "/admin/api/_hosts/beta.test/..",
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
    ] {
        let reply = alpha(&server, "DELETE", "alpha.test", path).send().await;
        assert_eq!(reply.status, status, "{path}: {}", text(&reply));
        if let Some(handler_path) = handler_path {
            assert_eq!(reply.json()["path"], handler_path, "{path}");
        }
    }
    assert_eq!(tree(ws.path()), before, "nothing created or removed");

    // Another project's host is not ours to remove.
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        "/admin/api/_hosts/beta.test",
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", text(&reply));
    assert!(ws.path().join("beta/hosts/beta.test").is_dir());

    // A folder with content stays, and the 409 says what is inside.
    std::fs::write(ws.path().join("alpha/hosts/a2.test/index.html"), "hi").expect("file");
    std::fs::create_dir(ws.path().join("alpha/hosts/a2.test/public")).expect("dir");
    let reply = alpha(&server, "DELETE", "alpha.test", "/admin/api/_hosts/a2.test")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", text(&reply));
    assert_eq!(error_of(&reply)["entries"], json!(["index.html", "public"]));
    assert!(ws.path().join("alpha/hosts/a2.test/index.html").is_file());

    // An empty one goes, and the host stops being served.
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        "/admin/api/_hosts/new.alpha.test",
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", text(&reply));
    assert!(!ws.path().join("alpha/hosts/new.alpha.test").exists());
    assert_eq!(
        server.get("new.alpha.test", "/").send().await.status,
        StatusCode::NOT_FOUND
    );
    let reply = alpha(
        &server,
        "DELETE",
        "alpha.test",
        "/admin/api/_hosts/new.alpha.test",
    )
    .send()
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Host changes are audited too.
    let conn = rusqlite::Connection::open(ws.state_database()).expect("open db");
    let actions: Vec<String> = conn
        .prepare("SELECT action FROM elsinore_audit WHERE host = 'new.alpha.test' ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(actions, ["host_create", "host_delete"]);
}

/// Every path under `dir`, sorted (the database files left out).
fn tree(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.starts_with(dir.join("data")) {
                continue;
            }
            if path.is_dir() {
                stack.push(path.clone());
            }
            paths.push(path.display().to_string());
        }
    }
    paths.sort();
    paths
}
