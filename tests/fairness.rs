//! Per-tenant fairness: a handler's queue takes turns across hosts, so one
//! host's flood does not make another host of the same project wait
//! behind it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// The handler's `queued` count in `/routes`.
async fn queued(server: &Server) -> u64 {
    let routes = server.routes().await;
    routes["projects"]["alpha"]["handlers"][0]["queued"]
        .as_u64()
        .unwrap_or_else(|| panic!("no queued count in {routes}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_host_does_not_make_another_host_wait_its_turns() {
    let ws = Workspace::new();
    let manifest = format!(
        "{}max_concurrent = 1\nqueue = 200\nqueue_timeout = \"1m\"\n",
        echo_manifest()
    );
    ws.project("alpha", &["a.test", "b.test"], &manifest);
    let server = Server::start(&ws.config_with(json!(["alpha"]), json!({})));
    let addr = server.addr;

    // Host a takes the only turn with a stream the test ends when it wants.
    let gate = ws.path().join("release");
    let mut holder = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /sse?gate={} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        gate.display()
    );
    holder.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut holder, b"data: first").await;

    // Host a floods 50 more; they all queue.
    let finished = Arc::new(Mutex::new(Vec::new()));
    let get = |host: &'static str, n: usize| {
        let finished = finished.clone();
        tokio::spawn(async move {
            let reply = Req::new(addr, http::Method::GET, "/")
                .host(host)
                .send()
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{host} #{n}");
            finished.lock().await.push((host, n));
        })
    };
    let mut requests: Vec<_> = (0..50).map(|n| get("a.test", n)).collect();
    until("host a's 50 requests queue", || async {
        queued(&server).await == 50
    })
    .await;
    // Then host b sends one.
    requests.push(get("b.test", 0));
    until("host b's request queues", || async {
        queued(&server).await == 51
    })
    .await;

    std::fs::write(&gate, "").unwrap();
    read_until(&mut holder, b"data: second").await;
    for request in requests {
        request.await.unwrap();
    }
    let finished = finished.lock().await;
    let b_at = finished
        .iter()
        .position(|(host, _)| *host == "b.test")
        .expect("b served");
    // Turns alternate between the hosts with waiters: b's is the first or
    // second turn after the holder's. Completion order can differ from turn
    // order by a request or two, since they finish on different tasks.
    assert!(
        b_at <= 3,
        "host b finished after {b_at} of host a's 50 queued requests: {finished:?}"
    );
}
