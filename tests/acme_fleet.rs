//! Issue 30, point 2: ACME across a fleet whose `state_database` is
//! PostgreSQL. Two front doors share one state database and serve the
//! same host; Pebble validates HTTP-01 against front door B's plain port
//! only. The name is ordered once across both (the order lock), the
//! challenge is answered whichever front door ordered (the answers are
//! shared), and both serve the certificate over TLS.
//!
//! Skipped, with a message, when Pebble or a PostgreSQL server is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::pebble::{free_port, pebble_installed, until_issued, verified, Pebble};
use common::postgres::Postgres;
use common::{echo_manifest, eventually, Server, Workspace};
use serde_json::json;

const HOST: &str = "blog.test";

/// A front door's config in its own folder `door`: fixed ports (Pebble
/// must know B's in advance), the common project, the shared state.
fn door_config(
    ws: &Workspace,
    door: &str,
    pebble: &Pebble,
    ports: (u16, u16),
    state: &str,
) -> PathBuf {
    door_serving(ws, door, "blog", pebble, ports, state, "http-01")
}

/// [`door_config`] serving the project folder `project` of `ws`,
/// answering only `challenge`.
fn door_serving(
    ws: &Workspace,
    door: &str,
    project: &str,
    pebble: &Pebble,
    ports: (u16, u16),
    state: &str,
    challenge: &str,
) -> PathBuf {
    let dir = ws.path().join(door);
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({
        "listen": format!("127.0.0.1:{}", ports.0),
        "tls_listen": format!("127.0.0.1:{}", ports.1),
        "admin_listen": "127.0.0.1:0",
        "database": "data/elsinore.db",
        "state_database": state,
        "projects": [ws.path().join(project)],
        "acme": {
            "directory": pebble.directory,
            "ca_roots": pebble.api_roots,
            "challenges": [challenge],
        },
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

fn start_two(a: &Path, b: &Path) -> (Server, Server) {
    let (a, b) = (a.to_owned(), b.to_owned());
    let first = std::thread::spawn(move || Server::start(&a));
    let second = std::thread::spawn(move || Server::start(&b));
    (first.join().unwrap(), second.join().unwrap())
}

fn orders(server: &Server) -> Vec<String> {
    orders_of(server, "")
}

/// The order log lines of `server` for names containing `name`.
fn orders_of(server: &Server, name: &str) -> Vec<String> {
    server
        .logs
        .all()
        .into_iter()
        .filter(|line| line.contains("ordering a certificate") && line.contains(name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_ordered_once_and_served_by_every_front_door() {
    if !pebble_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let state = format!("{}?sslmode=disable", pg.create_database("fleet_acme"));
    let ws = Workspace::new();
    ws.project("blog", &[HOST], &echo_manifest());
    let a_ports = (free_port(), free_port());
    let b_ports = (free_port(), free_port());
    // The CA only ever reaches front door B.
    let pebble = Pebble::start(&ws.path().join("pebble"), b_ports.0, b_ports.1);
    let root = pebble.issuing_root().await;
    let a_config = door_config(&ws, "a", &pebble, a_ports, &state);
    let b_config = door_config(&ws, "b", &pebble, b_ports, &state);

    let (a, b) = start_two(&a_config, &b_config);
    until_issued(a.https(), HOST, &root).await;
    until_issued(b.https(), HOST, &root).await;

    // One order across the fleet: the other front door waited for it.
    let (a_orders, b_orders) = (orders(&a), orders(&b));
    assert_eq!(
        a_orders.len() + b_orders.len(),
        1,
        "orders on a: {a_orders:?}, on b: {b_orders:?}"
    );
    let waiter = if a_orders.is_empty() { &a } else { &b };
    waiter
        .logs
        .wait_for("certificate loaded from the state database");
    // Kept in the shared state, not in a local folder.
    assert_eq!(
        pg.psql(
            "fleet_acme",
            "SELECT count(*) FROM acme_certificates WHERE name = 'blog.test'"
        )
        .trim(),
        "1"
    );
    // The challenge answers go once the order is decided.
    eventually("the shared challenge answers are removed", || {
        pg.psql("fleet_acme", "SELECT count(*) FROM acme_challenges") == "0"
    });
    assert!(!ws.path().join("a/data/acme/certs").exists());

    // A restarted front door serves it from the state database at once,
    // with no new order.
    let (a_orders, b_orders) = (a_orders.len(), b_orders.len());
    drop(a);
    let a = Server::start(&a_config);
    assert!(
        verified(a.https(), HOST, &root).await,
        "{HOST} after restart"
    );
    a.logs.wait_for("certificate loaded from storage");
    assert_eq!(
        orders(&a).len() + orders(&b).len(),
        b_orders,
        "a ordered again after its restart (it had made {a_orders})"
    );
}

/// Front door B does not serve `blog.test` at all, so A alone orders it;
/// the CA asks B (over `challenge`), and B answers with what A shared.
async fn answered_by_the_other_front_door(challenge: &str) {
    if !pebble_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let state = format!("{}?sslmode=disable", pg.create_database("fleet_answers"));
    let ws = Workspace::new();
    ws.project("blog", &[HOST], &echo_manifest());
    ws.project("other", &["other.test"], &echo_manifest());
    let a_ports = (free_port(), free_port());
    let b_ports = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), b_ports.0, b_ports.1);
    let root = pebble.issuing_root().await;
    let a = door_serving(&ws, "a", "blog", &pebble, a_ports, &state, challenge);
    let b = door_serving(&ws, "b", "other", &pebble, b_ports, &state, challenge);

    let (a, b) = start_two(&a, &b);
    until_issued(a.https(), HOST, &root).await;
    assert_eq!(orders_of(&a, HOST).len(), 1, "{:?}", orders_of(&a, HOST));
    assert!(orders_of(&b, HOST).is_empty(), "{:?}", orders_of(&b, HOST));
    a.logs.wait_for("certificate issued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http01_challenge_is_answered_by_a_front_door_that_did_not_order() {
    answered_by_the_other_front_door("http-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_alpn01_challenge_is_answered_by_a_front_door_that_did_not_order() {
    answered_by_the_other_front_door("tls-alpn-01").await;
}

/// An operator moving a front door from SQLite to PostgreSQL: the
/// certificate and account ordered into `acme.storage` go along, so the
/// name is not ordered again (with thousands of tenants that would be
/// thousands of orders at once, past the CA's limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_to_postgresql_keeps_the_acme_certificates_and_account() {
    if !pebble_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let state = format!("{}?sslmode=disable", pg.create_database("acme_moved"));
    let ws = Workspace::new();
    ws.project("blog", &[HOST], &echo_manifest());
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), ports.0, ports.1);
    let root = pebble.issuing_root().await;

    // On SQLite: ordered into the storage folder.
    let on_sqlite = door_config(&ws, "a", &pebble, ports, "data/elsinore-state.db");
    let server = Server::start(&on_sqlite);
    until_issued(server.https(), HOST, &root).await;
    assert_eq!(orders(&server).len(), 1, "{:?}", orders(&server));
    drop(server);
    let folder = ws.path().join("a/data/acme");
    assert!(folder.join("certs").join(HOST).join("cert.pem").is_file());

    // The same front door on PostgreSQL: served at once, no new order.
    let on_postgres = door_config(&ws, "a", &pebble, ports, &state);
    let server = Server::start(&on_postgres);
    assert!(
        verified(server.https(), HOST, &root).await,
        "{HOST} is not served after the move"
    );
    server
        .logs
        .wait_for("acme.storage carried over to the state database");
    assert!(
        orders(&server).is_empty(),
        "ordered again after the move: {:?}",
        orders(&server)
    );
    for table in ["acme_certificates", "acme_accounts"] {
        assert_eq!(
            pg.psql("acme_moved", &format!("SELECT count(*) FROM {table}"))
                .trim(),
            "1",
            "{table}"
        );
    }
    // The folder is left as it was (going back to SQLite finds it).
    assert!(folder.join("certs").join(HOST).join("key.pem").is_file());

    // After the move the folder is not read again: a certificate put
    // there later (a handler sharing Elsinore's user could) stays out.
    drop(server);
    let planted = folder.join("certs").join("planted.test");
    std::fs::create_dir_all(&planted).unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["planted.test".to_owned()]).unwrap();
    std::fs::write(planted.join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(planted.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&on_postgres);
    assert!(verified(server.https(), HOST, &root).await);
    assert_eq!(
        pg.psql("acme_moved", "SELECT count(*) FROM acme_certificates")
            .trim(),
        "1",
        "a file put in acme.storage after the move reached the fleet"
    );
}

/// A validation can reach a front door before its refresh has loaded the
/// answer another front door shared (a busy machine: the ordering door
/// asks the CA once its own refresh has it). Here the answers are in the
/// state database and no notification will ever bring them (the counter
/// is not moved), as for a refresh running behind: the front door finds
/// them there, over HTTP-01 (the key authorization) and over TLS-ALPN-01
/// (the challenge certificate). A made-up token is still not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_ahead_of_the_refresh_is_answered_from_the_state_database() {
    if !pebble_installed() {
        return;
    }
    let Some(pg) = Postgres::start() else {
        return;
    };
    let state = format!("{}?sslmode=disable", pg.create_database("fleet_ahead"));
    let ws = Workspace::new();
    // No host: this front door orders nothing, so nothing of its own
    // moves the counter and reloads the answers.
    ws.project("quiet", &[], &echo_manifest());
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(&ws.path().join("pebble"), ports.0, ports.1);
    let config = door_serving(&ws, "b", "quiet", &pebble, ports, &state, "http-01");
    let door = Server::start(&config);
    // Its refresh has made its first load: what is written from now on
    // comes only with a notification.
    door.logs.wait_for("ACME fleet refresh: following");

    let token = "aheadOfTheRefresh-0123456789_abcdefghijklm";
    let digest = [0x5au8; 32];
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    pg.psql(
        "fleet_ahead",
        &format!(
            "INSERT INTO acme_challenges (kind, key, name, answer, created_at) VALUES
             ('http-01', '{token}', '{HOST}', '{token}.thumbprint', 0),
             ('tls-alpn-01', '{HOST}', '{HOST}', '{hex}', 0)"
        ),
    );

    let reply = door
        .get(HOST, &format!("/.well-known/acme-challenge/{token}"))
        .send()
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(&reply.body[..], format!("{token}.thumbprint").as_bytes());
    let made_up = door
        .get(
            HOST,
            "/.well-known/acme-challenge/madeUpToken-0123456789_abcdefghijklmn",
        )
        .send()
        .await;
    assert_eq!(made_up.status, 404, "{:?}", made_up.body);

    // The CA's TLS-ALPN-01 handshake: SNI the name, ALPN acme-tls/1 only.
    let connector =
        tokio_rustls::TlsConnector::from(common::inspect_tls::accepting_anything(&[b"acme-tls/1"]));
    let tcp = tokio::net::TcpStream::connect(door.https()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .expect("the TLS-ALPN-01 handshake is answered");
    let (_, session) = tls.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    let served = session.peer_certificates().unwrap()[0].as_ref().to_vec();
    assert!(
        served.windows(digest.len()).any(|window| window == digest),
        "the challenge certificate carries the stored digest (acmeIdentifier)"
    );
}
