//! Thousands of host folders: the server's inotify watches stay few
//! (they do not grow with the hosts), and every kind of change to one host
//! folder still goes live: a new host, a removed one, a `public/` and a
//! `tls/` made inside an existing host folder.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use serde_json::json;

/// Enough host folders that one watch each would be obvious.
const HOSTS: usize = 2_000;
/// config.json's folder, the project, its hosts/, a tls/, a public/ (and
/// its tree): a handful, whatever the number of hosts.
const MAX_WATCHES: usize = 32;

/// The inotify watches `pid` holds: one `inotify wd:` line per watch in
/// the fdinfo of each of its inotify descriptors.
fn inotify_watches(pid: i32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:inotify")
        })
        .map(|fd| {
            let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            std::fs::read_to_string(info)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

async fn status(server: &Server, host: &str) -> StatusCode {
    server.get(host, "/").send().await.status
}

#[tokio::test]
async fn watches_stay_few_with_thousands_of_host_folders_and_changes_still_go_live() {
    let ws = Workspace::new();
    let project = ws.project("alpha", &["alpha.test"], &echo_manifest());
    let hosts = project.join("hosts");
    for i in 0..HOSTS {
        std::fs::create_dir(hosts.join(format!("h{i}.test"))).unwrap();
    }
    // One host with a site, so that public/ watches are counted too.
    std::fs::create_dir_all(hosts.join("h1.test/public")).unwrap();
    std::fs::write(hosts.join("h1.test/public/index.html"), "site h1").unwrap();
    let config = ws.config_with(json!(["alpha"]), json!({"tls_listen": "127.0.0.1:0"}));
    let server = Server::start(&config);
    server.https();
    assert_eq!(status(&server, "h1999.test").await, StatusCode::OK);
    assert_eq!(server.get("h1.test", "/").send().await.body, "site h1");

    let watches = inotify_watches(server.pid());
    assert!(
        watches <= MAX_WATCHES,
        "{watches} inotify watches for {HOSTS} host folders (at most {MAX_WATCHES} expected)"
    );

    // A new host serves, a removed one is gone.
    std::fs::create_dir(hosts.join("new.test")).unwrap();
    until("new.test serves", || async {
        status(&server, "new.test").await == StatusCode::OK
    })
    .await;
    server.logs.wait_for("+ host new.test → alpha");
    std::fs::remove_dir(hosts.join("h7.test")).unwrap();
    until("h7.test is gone", || async {
        status(&server, "h7.test").await == StatusCode::NOT_FOUND
    })
    .await;
    server.logs.wait_for("- host h7.test (was alpha)");

    // A public/ made inside an existing host folder is served.
    std::fs::create_dir(hosts.join("h8.test/public")).unwrap();
    std::fs::write(hosts.join("h8.test/public/index.html"), "site h8").unwrap();
    until("h8.test serves its new public/", || async {
        server.get("h8.test", "/").send().await.body == "site h8"
    })
    .await;

    // And removed again: the handler answers for it (a host folder named
    // by the sweep is only skipped when it had no site and still has none).
    std::fs::remove_dir_all(hosts.join("h8.test/public")).unwrap();
    until("h8.test's site is gone", || async {
        let reply = server.get("h8.test", "/").send().await;
        reply.status == StatusCode::OK && reply.body != "site h8"
    })
    .await;

    // A tls/ made inside an existing host folder is loaded.
    let output = run_cli(&["dev-cert", "h9.test", "--project", "alpha"], &config);
    assert!(
        output.status.success(),
        "dev-cert: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.logs.wait_for("+ certificate h9.test");

    // Watches were added for the new tls/ and public/ only.
    let watches = inotify_watches(server.pid());
    assert!(
        watches <= MAX_WATCHES,
        "{watches} inotify watches after the changes (at most {MAX_WATCHES} expected)"
    );
    assert_eq!(status(&server, "alpha.test").await, StatusCode::OK);
}
