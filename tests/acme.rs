//! Automatic certificates against Pebble, the ACME test CA (Debian package
//! `pebble`): an exact host folder without `tls/` gets a Pebble-issued
//! certificate without a restart, a host folder added later gets one too,
//! and the certificates survive a restart without a new order.
//!
//! Skipped, with a message, when `pebble` or `pebble-challtestsrv` is not
//! installed (`.ci/run` installs them).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pebble::{free_port, pebble_installed, until_issued, verified, Pebble};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use serde_json::json;

fn acme_config(ws: &Workspace, pebble: &Pebble, http: u16, https: u16) -> PathBuf {
    ws.config_with(
        json!(["blog"]),
        json!({
            "listen": format!("127.0.0.1:{http}"),
            "tls_listen": format!("127.0.0.1:{https}"),
            "acme": {
                "directory": pebble.directory,
                "email": "ops@example.com",
                "ca_roots": pebble.api_roots,
                "storage": "data/acme",
                "challenges": ["http-01"],
            },
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_hosts_get_pebble_certificates_that_survive_a_restart() {
    if !pebble_installed() {
        return;
    }
    let ws = Workspace::new();
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), http, https);
    let project = ws.project("blog", &["blog.test"], &echo_manifest());
    let config = acme_config(&ws, &pebble, http, https);
    let root = pebble.issuing_root().await;

    let server = Server::start(&config);
    let addr = server.https();
    until_issued(addr, "blog.test", &root).await;
    server.logs.wait_for("certificate issued");
    // The account key and the certificate's key are Elsinore's alone.
    for file in [
        "data/acme/account.json",
        "data/acme/certs/blog.test/key.pem",
    ] {
        let mode = std::fs::metadata(ws.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }

    // `/routes` shows it: issuer, not_after, next renewal, no error.
    let routes = server.routes().await;
    let status = &routes["acme"]["names"]["blog.test"];
    assert!(
        status["issuer"].as_str().unwrap().contains("Pebble"),
        "{status}"
    );
    assert!(
        status["not_after"].is_string() && status["next_renewal"].is_string(),
        "{status}"
    );
    assert!(status["last_error"].is_null(), "{status}");
    // So do the metrics and the status page.
    let metrics = server.op("GET", "/metrics").send().await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        metrics.contains("elsinore_acme_certificate_expiry_timestamp_seconds{name=\"blog.test\"}")
            && metrics.contains("elsinore_acme_order_failing{name=\"blog.test\"} 0"),
        "{metrics}"
    );
    let page = server.op("GET", "/").send().await;
    let page = String::from_utf8_lossy(&page.body).to_string();
    let acme = page
        .split("<h2 id=\"acme\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no ACME section: {page}"));
    assert!(
        acme.contains("<td>blog.test</td>") && acme.contains("Pebble"),
        "{acme}"
    );

    // A host folder that appears while running gets one too, no restart.
    std::fs::create_dir_all(project.join("hosts/shop.test")).unwrap();
    until_issued(addr, "shop.test", &root).await;

    // After a restart both serve at once, from storage, with no new order.
    drop(server);
    let server = Server::start(&config);
    let addr = server.https();
    assert!(
        verified(addr, "blog.test", &root).await,
        "blog.test after restart"
    );
    assert!(
        verified(addr, "shop.test", &root).await,
        "shop.test after restart"
    );
    server.logs.wait_for("certificate loaded from storage");
    let orders: Vec<String> = server
        .logs
        .all()
        .into_iter()
        .filter(|line| line.contains("ordering a certificate"))
        .collect();
    assert!(orders.is_empty(), "new orders after restart: {orders:?}");
}

/// Whether a handshake with SNI `name` is refused (no certificate yet).
async fn refused(addr: SocketAddr, name: &str, root: &CertificateDer<'static>) -> bool {
    !verified(addr, name, root).await
}

fn lines_with(server: &Server, needles: &[&str]) -> Vec<String> {
    server
        .logs
        .all()
        .into_iter()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_names_are_asked_rate_limited_and_validated_with_tls_alpn() {
    if !pebble_installed() {
        return;
    }
    let ws = Workspace::new();
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), http, https);
    // `shop` answers every path (so `/allow` is a 200); `closed` has no
    // handler for `/allow` (a 404: ask refuses).
    ws.project("shop", &["*.shop.test"], &echo_manifest());
    ws.project(
        "closed",
        &["*.closed.test"],
        &echo_manifest_entry("web", &["/app"], ""),
    );
    let config = ws.config_with(
        json!(["shop", "closed"]),
        json!({
            "listen": format!("127.0.0.1:{http}"),
            "tls_listen": format!("127.0.0.1:{https}"),
            "acme": {
                "directory": pebble.directory,
                "ca_roots": pebble.api_roots,
                "storage": "data/acme",
                "challenges": ["tls-alpn-01"],
                "on_demand": true,
                "ask": "/allow",
                "rate": 2,
            },
        }),
    );
    let root = pebble.issuing_root().await;
    let server = Server::start(&config);
    let addr = server.https();

    // The first handshake is refused at once, not held; the order follows.
    let started = Instant::now();
    assert!(refused(addr, "a.shop.test", &root).await);
    assert!(started.elapsed() < Duration::from_secs(5), "handshake held");
    until_issued(addr, "a.shop.test", &root).await;

    // `ask` refuses: no order, the refusal logged.
    assert!(refused(addr, "x.closed.test", &root).await);
    server.logs.wait_for("ask refused: /allow answered 404");
    // A name no project serves never gets that far.
    assert!(refused(addr, "nobody.example", &root).await);

    // A burst of 50 names: at most `rate` (2) orders in the minute, the
    // one for a.shop.test included.
    let burst = (0..50).map(|i| {
        let root = root.clone();
        async move { refused(addr, &format!("r{i}.shop.test"), &root).await }
    });
    let refusals = futures_join_all(burst).await;
    assert!(
        refusals.iter().all(|r| *r),
        "a burst name was served at once"
    );
    server.logs.wait_for("acme.rate reached");
    let orders = lines_with(&server, &["ordering a certificate"]);
    assert!(orders.len() <= 2, "more than `rate` orders: {orders:#?}");
    assert!(lines_with(&server, &["ordering a certificate", "closed.test"]).is_empty());
    assert!(lines_with(&server, &["nobody.example"]).is_empty());
}

/// Runs every future to completion, concurrently.
async fn futures_join_all<F: std::future::Future<Output = bool> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<bool> {
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_certificate_due_for_renewal_is_replaced() {
    if !pebble_installed() {
        return;
    }
    let ws = Workspace::new();
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), http, https);
    ws.project("blog", &["blog.test"], &echo_manifest());
    // A certificate stored by an earlier run, expiring tomorrow: with
    // `renew_before` two days it is due at once.
    let stored = ws.path().join("data/acme/certs/blog.test");
    std::fs::create_dir_all(&stored).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["blog.test".to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now + time::Duration::days(1);
    params
        .distinguished_name
        .push(DnType::CommonName, "old self-signed");
    let old = params.self_signed(&key).unwrap();
    std::fs::write(stored.join("cert.pem"), old.pem()).unwrap();
    std::fs::write(stored.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::set_permissions(
        stored.join("key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(acme_config(&ws, &pebble, http, https)).unwrap(),
    )
    .unwrap();
    config["acme"]["renew_before"] = json!("2d");
    let config = ws.write_config(&config);
    let root = pebble.issuing_root().await;

    let server = Server::start(&config);
    server.logs.wait_for("certificate loaded from storage");
    until_issued(server.https(), "blog.test", &root).await;
    server.logs.wait_for("certificate issued");
    let renewed = std::fs::read_to_string(stored.join("cert.pem")).unwrap();
    assert_ne!(
        renewed,
        old.pem(),
        "the stored certificate was not replaced"
    );
}

/// A CA of its own for one certificate, so a client trusting only that CA
/// tells which certificate a handshake got.
fn issued_by_own_ca(name: &str, label: &str) -> (String, String, CertificateDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, label);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (
        format!("{}{}", leaf.pem(), ca.pem()),
        key.serialize_pem(),
        ca.der().clone(),
    )
}

fn write_pair(dir: &Path, (cert, key, _): &(String, String, CertificateDer<'static>)) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
}

/// Needs no CA: nothing is ordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_folders_own_tls_wins_over_acme_and_acme_takes_over_when_it_goes() {
    let ws = Workspace::new();
    let project = ws.project("blog", &["blog.test"], &echo_manifest());
    let own = issued_by_own_ca("blog.test", "own CA");
    let stored = issued_by_own_ca("blog.test", "ACME-stored CA");
    write_pair(&project.join("hosts/blog.test/tls"), &own);
    write_pair(&ws.path().join("data/acme/certs/blog.test"), &stored);
    let config = ws.config_with(
        json!(["blog"]),
        json!({
            "tls_listen": "127.0.0.1:0",
            // Nothing listens there: an order would fail and be logged.
            "acme": {"directory": "https://127.0.0.1:9/dir", "storage": "data/acme"},
        }),
    );
    let server = Server::start(&config);
    let addr = server.https();
    assert!(
        verified(addr, "blog.test", &own.2).await,
        "own tls/ not served"
    );
    assert!(!verified(addr, "blog.test", &stored.2).await);

    // Without its tls/, the host gets ACME's stored certificate, no order.
    std::fs::remove_dir_all(project.join("hosts/blog.test/tls")).unwrap();
    until("ACME's stored certificate served", || async {
        verified(addr, "blog.test", &stored.2).await
    })
    .await;
    assert!(lines_with(&server, &["ordering a certificate"]).is_empty());
    assert!(lines_with(&server, &["certificate order failed"]).is_empty());
}
