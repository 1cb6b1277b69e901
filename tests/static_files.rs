//! Static files from `hosts/<host>/public/` (issue 9): served before the
//! handler for GET and HEAD, with content types, validators and 304,
//! ranges, index.html, live changes, and no way out of `public/`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use http::StatusCode;
use serde_json::json;

const CSS: &str = "body { color: rebeccapurple; }\n";
const SECRET: &str = "the-secret-outside-public";

/// Project `site` with host `files.test` (with `public/`) and `plain.test`
/// (without), served by the echo handler.
fn site(ws: &Workspace) -> PathBuf {
    let project = ws.project("site", &["files.test", "plain.test"], &echo_manifest());
    let public = project.join("hosts/files.test/public");
    std::fs::create_dir_all(public.join("css")).unwrap();
    std::fs::create_dir_all(public.join("docs")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>files.test home</h1>").unwrap();
    std::fs::write(public.join("css/site.css"), CSS).unwrap();
    std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::write(public.join("logo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    public
}

/// With the periodic re-check off, only the watcher can make a change on
/// disk visible: the live tests prove it works.
fn start(ws: &Workspace) -> Server {
    Server::start(&ws.config_with(
        json!(["site"]),
        json!({"static_files": {"recheck_after": "off"}}),
    ))
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Whether the echo handler answered (not a static file).
fn from_handler(reply: &Reply) -> bool {
    reply.status == StatusCode::OK
        && serde_json::from_slice::<serde_json::Value>(&reply.body)
            .is_ok_and(|body| body["handler"] == "web")
}

/// The echo handler answered (not a static file).
fn assert_handler(reply: &Reply, path: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{}", text(reply));
    let body = reply.json();
    assert_eq!(body["handler"], "web", "the handler answers {path}: {body}");
    assert_eq!(body["path"], path);
}

#[tokio::test]
async fn files_in_public_are_served_before_the_handler() {
    let ws = Workspace::new();
    site(&ws);
    let server = start(&ws);

    let home = server.get("files.test", "/").send().await;
    assert_eq!(home.status, StatusCode::OK);
    assert_eq!(text(&home), "<h1>files.test home</h1>");
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        home.header("x-request-id").is_some(),
        "static answers carry a request id"
    );
    assert_eq!(home.header("x-content-type-options"), Some("nosniff"));

    let css = server.get("files.test", "/css/site.css").send().await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(text(&css), CSS);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(
        css.header("content-length"),
        Some(CSS.len().to_string().as_str())
    );
    assert_eq!(css.header("accept-ranges"), Some("bytes"));
    assert!(css.header("etag").is_some_and(|tag| tag.starts_with('"')));
    assert!(css
        .header("last-modified")
        .is_some_and(|d| d.ends_with("GMT")));
    // Normalised: empty and `.` segments do not matter.
    let messy = server.get("files.test", "/./css//site.css").send().await;
    assert_eq!(text(&messy), CSS);

    let png = server.get("files.test", "/logo.png").send().await;
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(&png.body[..], &[0x89, b'P', b'N', b'G']);

    // A folder: its index.html, and the slash-less URL is redirected.
    let docs = server.get("files.test", "/docs/").send().await;
    assert_eq!(text(&docs), "<h1>docs</h1>");
    let bare = server.get("files.test", "/docs?v=1").send().await;
    assert_eq!(bare.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(bare.header("location"), Some("/docs/?v=1"));

    // HEAD: the same headers, no body.
    let head = server
        .get("files.test", "/css/site.css")
        .method("HEAD")
        .send()
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.header("content-length"),
        Some(CSS.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // Everything else is the handler's: other paths, other methods, other
    // hosts of the project.
    assert_handler(
        &server.get("files.test", "/api/items").send().await,
        "/api/items",
    );
    let post = server
        .get("files.test", "/css/site.css")
        .method("POST")
        .body("x")
        .send()
        .await;
    assert_handler(&post, "/css/site.css");
    assert_handler(&server.get("plain.test", "/").send().await, "/");
    assert_handler(
        &server.get("files.test", "/docs/missing.html").send().await,
        "/docs/missing.html",
    );

    // /routes says which hosts have static files.
    let routes = server.routes().await;
    let public = routes["hosts"]["files.test"]["public"]
        .as_str()
        .unwrap_or_default();
    assert!(public.ends_with("hosts/files.test/public"), "{routes}");
    assert!(
        routes["hosts"]["plain.test"]["public"].is_null(),
        "{routes}"
    );

    // Counted under the handler label `_static`.
    let metrics = server.op("GET", "/metrics").send().await;
    let metrics = text(&metrics);
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("elsinore_requests_total")
                && line.contains("handler=\"_static\"")
                && line.contains("project=\"site\"")),
        "no _static series in /metrics"
    );
}

#[tokio::test]
async fn revalidation_gives_304_until_the_file_changes() {
    let ws = Workspace::new();
    let public = site(&ws);
    let server = start(&ws);

    let first = server.get("files.test", "/css/site.css").send().await;
    let etag = first.header("etag").unwrap().to_owned();
    let modified = first.header("last-modified").unwrap().to_owned();

    let same = server
        .get("files.test", "/css/site.css")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    let since = server
        .get("files.test", "/css/site.css")
        .header("if-modified-since", &modified)
        .send()
        .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);

    // Edited on disk: the next request sees the new content, and the old
    // validator no longer matches.
    let edited = "body { color: teal; }\n";
    std::fs::write(public.join("css/site.css"), edited).unwrap();
    until("the edited file is served", || async {
        text(&server.get("files.test", "/css/site.css").send().await) == edited
    })
    .await;
    let after = server
        .get("files.test", "/css/site.css")
        .header("if-none-match", &etag)
        .send()
        .await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(text(&after), edited);
    assert_ne!(after.header("etag"), Some(etag.as_str()));

    // A file added is served; a file removed goes back to the handler.
    std::fs::write(public.join("new.txt"), "fresh").unwrap();
    until("a new file is served", || async {
        text(&server.get("files.test", "/new.txt").send().await) == "fresh"
    })
    .await;
    assert_eq!(
        server
            .get("files.test", "/new.txt")
            .send()
            .await
            .header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    std::fs::remove_file(public.join("new.txt")).unwrap();
    until("a removed file goes to the handler", || async {
        from_handler(&server.get("files.test", "/new.txt").send().await)
    })
    .await;
}

#[tokio::test]
async fn ranges_of_small_and_streamed_files() {
    let ws = Workspace::new();
    let public = site(&ws);
    // Larger than static_files.cache_file_max: streamed from disk.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(public.join("big.bin"), &big).unwrap();
    let server = Server::start(&ws.config_with(
        json!(["site"]),
        json!({"static_files": {"cache_size": "8MB", "cache_file_max": "1MB"}}),
    ));

    let whole = server.get("files.test", "/big.bin").send().await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(
        whole.header("content-length"),
        Some(big.len().to_string().as_str())
    );
    assert!(
        whole.body[..] == big[..],
        "the streamed file arrives whole and intact"
    );

    let range = |path: &'static str, spec: &'static str| {
        server.get("files.test", path).header("range", spec).send()
    };
    let part = range("/big.bin", "bytes=1000-1999").await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 1000-1999/{}", big.len()).as_str())
    );
    assert!(part.body[..] == big[1000..2000]);
    let tail = range("/big.bin", "bytes=-100").await;
    assert!(tail.body[..] == big[big.len() - 100..]);
    let open = range("/big.bin", "bytes=3145000-").await;
    assert!(open.body[..] == big[3_145_000..]);

    let small = range("/css/site.css", "bytes=0-3").await;
    assert_eq!(small.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(text(&small), &CSS[..4]);

    let past = range("/css/site.css", "bytes=5000-").await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.header("content-range"),
        Some(format!("bytes */{}", CSS.len()).as_str())
    );

    // If-Range with a stale validator: the whole (changed) file instead.
    let stale = server
        .get("files.test", "/big.bin")
        .header("range", "bytes=0-9")
        .header("if-range", "\"not-the-current-tag\"")
        .send()
        .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body.len(), big.len());
}

/// A file outside `public/` that no request may reach.
fn plant_secrets(public: &Path) {
    let host_dir = public.parent().unwrap();
    std::fs::write(host_dir.join("secret.txt"), SECRET).unwrap();
    std::fs::write(host_dir.parent().unwrap().join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(host_dir.join("secret.txt"), public.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(host_dir, public.join("up")).unwrap();
    std::os::unix::fs::symlink(public.join("css"), public.join("styles")).unwrap();
    std::fs::write(public.join(".env"), SECRET).unwrap();
}

#[tokio::test]
async fn no_path_leaves_public() {
    let ws = Workspace::new();
    let public = site(&ws);
    plant_secrets(&public);
    let server = start(&ws);

    // Dot segments are resolved, never above the root (the one path
    // normalisation of every match): these name `/secret.txt` inside
    // public/, which holds none, so the handler gets that path.
    for path in [
        "/../secret.txt",
        "/css/../../secret.txt",
        "/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/secret.txt",
    ] {
        let reply = server.get("files.test", path).send().await;
        assert!(!text(&reply).contains(SECRET), "{path} leaked the secret");
        assert_handler(&reply, "/secret.txt");
    }

    for path in [
        "/css/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/%252e%252e%252fsecret.txt",
        "/..%5csecret.txt",
        "/leak.txt",
        "/up/secret.txt",
        "/up/",
    ] {
        let reply = server.get("files.test", path).send().await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            text(&reply)
        );
        assert!(!text(&reply).contains(SECRET), "{path} leaked the secret");
        let body = reply.json();
        assert_eq!(body["error"], "not found", "{path}: {body}");
        assert!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("public")),
            "{body}"
        );
    }

    // A symbolic link that stays inside public/ is fine.
    assert_eq!(
        text(&server.get("files.test", "/styles/site.css").send().await),
        CSS
    );
    // Dotfiles are never published: the handler gets the request.
    let env = server.get("files.test", "/.env").send().await;
    assert_handler(&env, "/.env");
    // On a host without public/ the handler gets the same normal path.
    assert_handler(&server.get("plain.test", "/%2e%2e/x").send().await, "/x");
}

#[tokio::test]
async fn a_public_folder_added_or_removed_live_changes_what_the_host_serves() {
    let ws = Workspace::new();
    let project = ws.project("site", &["plain.test"], &echo_manifest());
    let server = start(&ws);
    assert_handler(
        &server.get("plain.test", "/hello.txt").send().await,
        "/hello.txt",
    );

    let public = project.join("hosts/plain.test/public");
    std::fs::create_dir(&public).unwrap();
    std::fs::write(public.join("hello.txt"), "hello from public").unwrap();
    until("a new public/ is served", || async {
        text(&server.get("plain.test", "/hello.txt").send().await) == "hello from public"
    })
    .await;

    // Replaced wholesale (a deploy renaming a new folder into place).
    let staged = project.join("hosts/plain.test/public.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("hello.txt"), "hello from the new deploy").unwrap();
    std::fs::rename(&public, project.join("hosts/plain.test/public.old")).unwrap();
    std::fs::rename(&staged, &public).unwrap();
    until("the replaced public/ is served", || async {
        text(&server.get("plain.test", "/hello.txt").send().await) == "hello from the new deploy"
    })
    .await;

    std::fs::remove_dir_all(&public).unwrap();
    until("without public/ the handler answers again", || async {
        from_handler(&server.get("plain.test", "/hello.txt").send().await)
    })
    .await;
}

#[tokio::test]
async fn with_the_cache_off_files_are_read_for_every_request() {
    let ws = Workspace::new();
    let public = site(&ws);
    let server =
        Server::start(&ws.config_with(json!(["site"]), json!({"static_files": {"cache_size": 0}})));
    assert_eq!(
        text(&server.get("files.test", "/css/site.css").send().await),
        CSS
    );
    std::fs::write(public.join("css/site.css"), "changed").unwrap();
    // No watcher needed: nothing was kept.
    assert_eq!(
        text(&server.get("files.test", "/css/site.css").send().await),
        "changed"
    );
}

#[test]
fn check_refuses_a_bad_static_files_setting() {
    let ws = Workspace::new();
    site(&ws);
    let config = ws.config_with(
        json!(["site"]),
        json!({"static_files": {"cache_size": "1MB", "cache_file_max": "2MB"}}),
    );
    let output = run_cli(&["check"], &config);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("static_files.cache_file_max"),
        "the field is named: {stderr}"
    );
}
