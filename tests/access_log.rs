//! The access log, black-box: config.json `access_log` (a file, `"stdout"`
//! by default, `"off"`), lines written within about a second while the
//! server idles, every line written by a graceful shutdown, the file
//! reopened on SIGUSR1 after logrotate renamed it, hostile paths that
//! cannot break a line, and secrets still redacted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Project `lear` (host `lear.test`, the echo handler) with `extra` in
/// config.json.
fn lear(ws: &Workspace, extra: Value) -> PathBuf {
    ws.project("lear", &["lear.test"], &echo_manifest());
    ws.config_with(json!(["lear"]), extra)
}

/// The lines of `file` (none while it does not exist).
fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Waits up to `within` for a line of `file` containing `needle`.
fn wait_in_file(file: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(line) = lines(file).into_iter().find(|l| l.contains(needle)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no line containing {needle:?} in {} within {within:?}; it holds:\n{}",
            file.display(),
            lines(file).join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn request_id(reply: &Reply) -> String {
    reply
        .header("x-request-id")
        .expect("X-Request-Id")
        .to_owned()
}

/// SIGTERM, then waits for the exit and for stdout to be read to its end.
fn stop(server: &mut Server) {
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "a graceful stop");
    server.stdout.wait_for(STDOUT_CLOSED);
}

/// One request for a host nobody declares, written by hand (a target no
/// HTTP library would send), answered and closed; returns the answer.
async fn raw_get(server: &Server, target: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: nobody.test\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_file_gets_text_lines_within_a_second_and_stdout_gets_none() {
    let ws = Workspace::new();
    let server = Server::start(&lear(&ws, json!({"access_log": "access.log"})));
    let file = ws.path().join("access.log");
    let reply = server
        .get("lear.test", "/echo-body?page=2")
        .method("POST")
        .body("hello")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = request_id(&reply);
    // The server now idles: the line must still come out, by the
    // once-a-second flush (a generous bound for a loaded machine, far
    // below "never until 64 KiB").
    let line = wait_in_file(&file, &format!("request_id={id}"), Duration::from_secs(5));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields[0].ends_with('Z') && fields[0].contains('T'),
        "a UTC timestamp first: {line}"
    );
    assert_eq!(&fields[1..4], ["INFO", "elsinore::access:", "request"]);
    for field in [
        "host=lear.test",
        "project=lear",
        "handler=web",
        "method=POST",
        "path=/echo-body?page=2",
        "status=200",
        "bytes_in=5",
        "bytes_out=5",
    ] {
        assert!(fields.contains(&field), "lacks `{field}`: {line}");
    }
    for prefix in ["client=127.0.0.1:", "total_ms=", "handler_ms="] {
        assert!(
            fields.iter().any(|f| f.starts_with(prefix)),
            "lacks `{prefix}`: {line}"
        );
    }
    assert!(
        !server
            .stdout
            .all()
            .iter()
            .any(|l| l.contains("elsinore::access")),
        "the access log went to the file only"
    );
    assert!(
        !server
            .logs
            .all()
            .iter()
            .any(|l| l.contains(&format!("request_id={id}"))),
        "and not to stderr"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "created 0640");
    }
}

#[tokio::test]
async fn json_lines_in_a_file_parse_and_keep_tracings_keys() {
    let ws = Workspace::new();
    let server = Server::start(&lear(
        &ws,
        json!({"access_log": "access.json", "log_format": "json"}),
    ));
    let file = ws.path().join("access.json");
    let reply = server
        .get("lear.test", "/page?project_key=s3cret-key-value&x=1")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = request_id(&reply);
    let line = wait_in_file(&file, &id, WAIT);
    let entry: Value = serde_json::from_str(&line).expect("a JSON line");
    // What `jq 'select(.target == "elsinore::access")'` selects on.
    assert_eq!(entry["target"], "elsinore::access");
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["message"], "request");
    assert!(entry["timestamp"].is_string(), "{line}");
    assert_eq!(entry["host"], "lear.test");
    assert_eq!(entry["project"], "lear");
    assert_eq!(entry["handler"], "web");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/page?project_key=[redacted]&x=1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_out"].as_u64(), Some(reply.body.len() as u64));
    assert!(entry["total_ms"].is_f64(), "{line}");
    assert!(entry["handler_ms"].is_f64(), "{line}");
    assert_eq!(entry["request_id"], id.as_str());
    assert!(
        !std::fs::read_to_string(&file)
            .expect("file")
            .contains("s3cret-key-value"),
        "the key is redacted"
    );
}

#[tokio::test]
async fn stdout_is_the_default_and_diagnostics_stay_on_stderr() {
    let ws = Workspace::new();
    let server = Server::start(&lear(&ws, json!({})));
    let reply = server
        .get("lear.test", "/p?api_token=t0ken-value")
        .send()
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = request_id(&reply);
    let line = server.stdout.wait_for(&format!("request_id={id}"));
    assert!(line.contains(" INFO elsinore::access: request "), "{line}");
    assert!(
        line.contains(" path=/p?api_token=[redacted] "),
        "redacted as before: {line}"
    );
    assert!(
        !server
            .stdout
            .all()
            .iter()
            .any(|l| l.contains("listening on")),
        "diagnostics are not on stdout"
    );
}

#[tokio::test]
async fn off_writes_no_access_line_anywhere() {
    let ws = Workspace::new();
    let mut server = Server::start(&lear(&ws, json!({"access_log": "off"})));
    let reply = server.get("lear.test", "/").send().await;
    assert_eq!(reply.status, StatusCode::OK);
    let id = request_id(&reply);
    stop(&mut server);
    let everything = server.logs.all().join("\n");
    assert!(
        !everything.contains("elsinore::access") && !everything.contains(&id),
        "no access line:\n{everything}"
    );
}

#[tokio::test]
async fn every_line_is_written_by_a_graceful_stop() {
    const REQUESTS: usize = 150;
    let ws = Workspace::new();
    // Without a handler (an unknown host, answered 404 by Elsinore):
    // quick, so the stop comes while lines are still buffered.
    let mut server = Server::start(&lear(&ws, json!({"access_log": "access.log"})));
    let file = ws.path().join("access.log");
    for _ in 0..REQUESTS {
        let reply = server.get("nobody.test", "/gone").send().await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    stop(&mut server);
    let logged = lines(&file);
    assert_eq!(
        logged
            .iter()
            .filter(|l| l.contains("path=/gone status=404"))
            .count(),
        REQUESTS,
        "one line per request after SIGTERM:\n{}",
        logged.join("\n")
    );
    assert!(
        logged.iter().all(|l| l.contains(" elsinore::access: ")),
        "whole lines only"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_file_after_logrotate_renamed_it() {
    let ws = Workspace::new();
    let mut server = Server::start(&lear(&ws, json!({"access_log": "access.log"})));
    let file = ws.path().join("access.log");
    let rotated = ws.path().join("access.log.1");

    let before = server.get("nobody.test", "/before").send().await;
    let before = request_id(&before);
    wait_in_file(&file, &before, WAIT);
    std::fs::rename(&file, &rotated).expect("rename, as logrotate does");
    let after_rename = server.get("nobody.test", "/after-rename").send().await;
    let after_rename = request_id(&after_rename);
    server.signal(Signal::SIGUSR1);
    server.logs.wait_for("access log reopened");
    let after = server.get("nobody.test", "/after").send().await;
    let after = request_id(&after);

    wait_in_file(&file, &after, WAIT);
    // Buffered before the signal: still the old file's.
    wait_in_file(&rotated, &after_rename, WAIT);
    let (old, new) = (lines(&rotated).join("\n"), lines(&file).join("\n"));
    assert!(old.contains(&before), "{old}");
    assert!(!old.contains(&after), "{old}");
    assert!(
        !new.contains(&before) && !new.contains(&after_rename),
        "{new}"
    );
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "SIGUSR1 does not stop the server"
    );
}

#[tokio::test]
async fn a_hostile_path_cannot_break_a_text_or_json_line() {
    // `"`, `\` and bytes past ASCII are accepted in a request path; a
    // line break is not (refused before any log), so a forged or broken
    // line would have to come from them.
    let target: &[u8] = b"/a\"b\\c\xC3\xA9?q=x&project_key=hush";
    for (format, name) in [("text", "access.log"), ("json", "access.json")] {
        let ws = Workspace::new();
        let server = Server::start(&lear(
            &ws,
            json!({"access_log": name, "log_format": format}),
        ));
        let answer = raw_get(&server, target).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let file = ws.path().join(name);
        let line = wait_in_file(&file, "/a", WAIT);
        assert_eq!(lines(&file).len(), 1, "one line: {:?}", lines(&file));
        assert!(!line.contains("hush"), "redacted: {line}");
        if format == "text" {
            assert!(
                line.split_whitespace()
                    .any(|f| f == r"path=/a\x22b\x5Cc\xC3\xA9?q=x&project_key=[redacted]"),
                "quote and backslash escaped: {line}"
            );
        } else {
            let entry: Value = serde_json::from_str(&line).expect("still JSON");
            assert_eq!(entry["path"], "/a\"b\\c\u{e9}?q=x&project_key=[redacted]");
        }
    }
}

#[test]
fn a_file_that_cannot_be_opened_stops_the_start_naming_path_and_field() {
    let ws = Workspace::new();
    let config = lear(&ws, json!({"access_log": "no-such-dir/access.log"}));
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start elsinore");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("elsinore started with an access log it cannot open");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(
        stderr.contains("config.json: access_log: cannot open")
            && stderr.contains("no-such-dir/access.log"),
        "{stderr}"
    );
}

/// A full disk under the access log (here /dev/full, where every write
/// fails with ENOSPC) loses lines, never requests: they are answered, the
/// failure is reported once, not once per line.
#[tokio::test]
async fn a_full_disk_loses_lines_not_requests() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: no /dev/full to stand for a full disk");
        return;
    }
    let ws = Workspace::new();
    let server = Server::start(&lear(&ws, json!({"access_log": "/dev/full"})));
    for _ in 0..20 {
        let reply = server.get("lear.test", "/").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    server.logs.wait_for("cannot write the access log");
    // More lines, more failed writes (at least one a second; nothing
    // signals a report that does not come, so one flush interval and a
    // half is waited): still one report.
    for _ in 0..20 {
        let reply = server.get("lear.test", "/").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reports = server
        .logs
        .all()
        .iter()
        .filter(|line| line.contains("cannot write the access log"))
        .count();
    assert_eq!(reports, 1, "reported once a minute at most");
}
