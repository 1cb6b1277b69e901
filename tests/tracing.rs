//! Distributed tracing, black-box: W3C `traceparent`/`tracestate` from the
//! client to the handler (continued, started, or replaced when malformed),
//! the trace id in the access line, and spans exported over OTLP/HTTP to a
//! receiver this test runs on loopback (and none with sampling 0); a dead
//! collector never delays a request.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{until, Reply, Server, WebSocket, Workspace, WAIT};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Project `polonius` on `polonius.test`, its echo handler `api` on `/api`.
fn polonius(ws: &Workspace, extra: Value) -> std::path::PathBuf {
    ws.project(
        "polonius",
        &["polonius.test"],
        &common::echo_manifest_entry("api", &["/api"], ""),
    );
    ws.config_with(json!(["polonius"]), extra)
}

/// The one `traceparent` the handler saw, split into its four fields.
fn handler_traceparent(reply: &Reply) -> [String; 4] {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let seen = reply.seen("traceparent");
    assert_eq!(seen.len(), 1, "exactly one traceparent: {seen:?}");
    let fields: Vec<String> = seen[0].split('-').map(str::to_owned).collect();
    let fields: [String; 4] = fields
        .try_into()
        .unwrap_or_else(|f| panic!("four fields: {f:?}"));
    assert_valid(&fields, &seen[0]);
    fields
}

fn assert_valid(fields: &[String; 4], text: &str) {
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert_eq!(fields[0], "00", "{text}");
    assert!(hex(&fields[1], 32) && fields[1] != "0".repeat(32), "{text}");
    assert!(hex(&fields[2], 16) && fields[2] != "0".repeat(16), "{text}");
    assert!(hex(&fields[3], 2), "{text}");
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_with_elsinores_span_as_parent() {
    let ws = Workspace::new();
    let server = Server::start(&polonius(&ws, json!({})));
    let reply = server
        .get("polonius.test", "/api/x")
        .header("traceparent", INCOMING)
        .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        .send()
        .await;
    let [_, trace, parent, flags] = handler_traceparent(&reply);
    assert_eq!(trace, INCOMING_TRACE, "same trace");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "Elsinore's own span is the parent"
    );
    assert_eq!(flags, "01", "the client's sampling decision is kept");
    assert_eq!(
        reply.seen("tracestate"),
        ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"]
    );
    // X-Request-Id is as before: made by Elsinore, given to both sides.
    let id = reply.header("x-request-id").expect("request id").to_owned();
    assert_eq!(reply.seen("x-request-id"), std::slice::from_ref(&id));
    let line = server.stdout.wait_for(&format!("request_id={id}"));
    assert!(line.contains(&format!(" trace={INCOMING_TRACE}")), "{line}");
}

#[tokio::test]
async fn without_a_traceparent_a_new_trace_starts_and_is_in_the_access_line() {
    let ws = Workspace::new();
    let server = Server::start(&polonius(&ws, json!({})));
    let first = server.get("polonius.test", "/api/x").send().await;
    let second = server.get("polonius.test", "/api/x").send().await;
    let [_, trace, _, flags] = handler_traceparent(&first);
    let [_, other, _, _] = handler_traceparent(&second);
    assert_ne!(trace, other, "each request starts its own trace");
    assert_eq!(flags, "00", "no tracing block: not sampled");
    assert!(first.seen("tracestate").is_empty());
    let id = first.header("x-request-id").expect("request id");
    let line = server.stdout.wait_for(&format!("request_id={id}"));
    assert!(line.ends_with(&format!(" trace={trace}")), "{line}");
}

#[tokio::test]
async fn malformed_traceparents_are_replaced_and_their_tracestate_dropped() {
    let ws = Workspace::new();
    let server = Server::start(&polonius(&ws, json!({})));
    let malformed = [
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e47361-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
        "garbage",
    ];
    for value in malformed {
        let reply = server
            .get("polonius.test", "/api/x")
            .header("traceparent", value)
            .header("tracestate", "congo=t61rcWkgMzE")
            .send()
            .await;
        let [_, trace, _, _] = handler_traceparent(&reply);
        assert_ne!(trace, INCOMING_TRACE, "{value} continued");
        assert!(
            reply.seen("tracestate").is_empty(),
            "{value}: tracestate kept"
        );
    }
    // Two traceparent headers: which one counts would be each hop's guess.
    let reply = server
        .get("polonius.test", "/api/x")
        .header("traceparent", INCOMING)
        .header("traceparent", INCOMING)
        .send()
        .await;
    let [_, trace, _, _] = handler_traceparent(&reply);
    assert_ne!(trace, INCOMING_TRACE, "two traceparents continued");
}

/// A small OTLP/HTTP receiver: every `POST /v1/traces` body, decoded.
#[derive(Clone, Default)]
struct Collector {
    exports: Arc<Mutex<Vec<(ExportTraceServiceRequest, Bytes)>>>,
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Self::default();
        let shared = collector.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, hyper::Error>(shared.receive(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, addr)
    }

    async fn receive(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let right = request.method() == http::Method::POST
            && request.uri().path() == "/v1/traces"
            && request
                .headers()
                .get("content-type")
                .is_some_and(|t| t == "application/x-protobuf");
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let (true, Ok(body)) = (right, body) else {
            return Response::builder()
                .status(400)
                .body(Full::default())
                .expect("response");
        };
        let decoded = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
        self.exports.lock().expect("lock").push((decoded, body));
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        Response::builder()
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(answer)))
            .expect("response")
    }

    fn spans(&self) -> Vec<Span> {
        let exports = self.exports.lock().expect("lock");
        exports
            .iter()
            .flat_map(|(request, _)| &request.resource_spans)
            .flat_map(|resource| &resource.scope_spans)
            .flat_map(|scope| scope.spans.clone())
            .collect()
    }

    fn exports(&self) -> usize {
        self.exports.lock().expect("lock").len()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue::StringValue(value.to_owned()))
}

#[tokio::test]
async fn sampled_requests_export_a_server_span_and_its_children_over_otlp() {
    let (collector, addr) = Collector::start().await;
    let ws = Workspace::new();
    let tracing = json!({"tracing": {
        "sample_ratio": 1.0,
        "otlp_endpoint": format!("http://{addr}"),
        "service_instance": "castle-1",
        "export_interval": "100ms",
    }});
    let server = Server::start(&polonius(&ws, tracing));
    let reply = server
        .get("polonius.test", "/api/feed/7?secret=hunter2&key=abc123")
        .header("authorization", "Bearer sesame-token")
        .send()
        .await;
    let [_, trace, parent, flags] = handler_traceparent(&reply);
    assert_eq!(flags, "01", "sample_ratio 1.0 samples every new trace");

    until("the request's spans at the collector", || {
        let found = collector
            .spans()
            .iter()
            .any(|s| hex(&s.trace_id) == trace && s.kind == SpanKind::Server as i32);
        async move { found }
    })
    .await;
    let spans: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .collect();
    let server_span = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("server span");
    assert_eq!(server_span.name, "GET /api");
    assert_eq!(
        hex(&server_span.span_id),
        parent,
        "the handler's parent is Elsinore's span"
    );
    assert!(
        server_span.parent_span_id.is_empty(),
        "a new trace has no parent"
    );
    assert!(server_span.end_time_unix_nano >= server_span.start_time_unix_nano);
    let attributes = &server_span.attributes;
    assert_eq!(attribute(attributes, "http.request.method"), text("GET"));
    assert_eq!(attribute(attributes, "http.route"), text("/api"));
    assert_eq!(
        attribute(attributes, "http.response.status_code"),
        Some(AnyValue::IntValue(200))
    );
    assert_eq!(attribute(attributes, "elsinore.project"), text("polonius"));
    assert_eq!(attribute(attributes, "elsinore.handler"), text("api"));
    assert_eq!(
        attribute(attributes, "elsinore.host_pattern"),
        text("polonius.test")
    );
    assert_eq!(
        attribute(attributes, "http.response.body.size"),
        Some(AnyValue::IntValue(reply.body.len() as i64))
    );
    let mut children: Vec<&str> = spans
        .iter()
        .filter(|s| s.kind != SpanKind::Server as i32)
        .map(|s| {
            assert_eq!(
                hex(&s.parent_span_id),
                parent,
                "{} is a child of the request",
                s.name
            );
            assert!(
                s.start_time_unix_nano >= server_span.start_time_unix_nano,
                "{}",
                s.name
            );
            assert!(
                s.end_time_unix_nano <= server_span.end_time_unix_nano,
                "{}",
                s.name
            );
            s.name.as_str()
        })
        .collect();
    children.sort_unstable();
    assert_eq!(
        children,
        ["connect", "handler", "queue"],
        "the first request opens a connection"
    );

    // The resource names the service; nothing the client sent leaks.
    let exports = collector.exports.lock().expect("lock").clone();
    let resource = exports[0].0.resource_spans[0]
        .resource
        .clone()
        .expect("resource");
    assert_eq!(
        attribute(&resource.attributes, "service.name"),
        text("elsinore")
    );
    assert_eq!(
        attribute(&resource.attributes, "service.instance.id"),
        text("castle-1")
    );
    assert!(attribute(&resource.attributes, "service.version").is_some());
    for (_, raw) in &exports {
        for secret in ["hunter2", "abc123", "sesame", "/api/feed"] {
            assert!(
                !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} was exported"
            );
        }
    }
}

#[tokio::test]
async fn static_files_and_the_admin_api_get_their_own_span_names() {
    let (collector, addr) = Collector::start().await;
    let ws = Workspace::new();
    let tracing = json!({"tracing": {
        "sample_ratio": 1.0,
        "otlp_endpoint": format!("http://{addr}/"),
        "export_interval": "100ms",
    }});
    let config = polonius(&ws, tracing);
    let public = ws.path().join("polonius/hosts/polonius.test/public");
    std::fs::create_dir_all(&public).expect("public dir");
    std::fs::write(public.join("robots.txt"), "User-agent: *\n").expect("file");
    let server = Server::start(&config);
    let file = server.get("polonius.test", "/robots.txt").send().await;
    assert_eq!(file.status, StatusCode::OK);
    let admin = server.get("polonius.test", "/admin/api/_keys").send().await;
    assert_eq!(admin.status, StatusCode::UNAUTHORIZED, "{:?}", admin.body);
    until("both spans at the collector", || {
        let names: Vec<String> = collector.spans().into_iter().map(|s| s.name).collect();
        async move { names.iter().any(|n| n == "static") && names.iter().any(|n| n == "admin_api") }
    })
    .await;
}

#[tokio::test]
async fn sampling_zero_exports_nothing() {
    let (collector, addr) = Collector::start().await;
    let ws = Workspace::new();
    let tracing = json!({"tracing": {
        "sample_ratio": 0.0,
        "otlp_endpoint": format!("http://{addr}"),
        "export_interval": "100ms",
    }});
    let server = Server::start(&polonius(&ws, tracing));
    for _ in 0..5 {
        let reply = server.get("polonius.test", "/api/x").send().await;
        let [_, _, _, flags] = handler_traceparent(&reply);
        assert_eq!(flags, "00");
    }
    // Absence cannot be signalled: ten export intervals.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        collector.exports(),
        0,
        "nothing is exported with sampling 0"
    );
}

/// 50 sampled requests against a collector at `endpoint` that never
/// takes a span: all answered, promptly, and the lost spans counted.
async fn requests_do_not_wait_for(endpoint: String) {
    let ws = Workspace::new();
    let tracing = json!({"tracing": {
        "sample_ratio": 1.0,
        "otlp_endpoint": endpoint,
        "export_interval": "100ms",
        "export_timeout": "300ms",
    }});
    let server = Server::start(&polonius(&ws, tracing));
    let started = Instant::now();
    for _ in 0..50 {
        let reply = server.get("polonius.test", "/api/x").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let took = started.elapsed();
    // On a loopback echo handler 50 requests take well under a second;
    // waiting on the collector would take 50 export timeouts (15 s).
    assert!(took < Duration::from_secs(5), "50 requests took {took:?}");
    until("dropped spans in the metrics", || {
        let request = server.op("GET", "/metrics");
        async move {
            let reply = request.send().await;
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            text.lines().any(|line| {
                line.starts_with("elsinore_trace_spans_dropped_total ") && !line.ends_with(" 0")
            })
        }
    })
    .await;
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_no_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and holds every connection without reading a byte.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    requests_do_not_wait_for(format!("http://{addr}")).await;
}

#[tokio::test]
async fn a_collector_that_refuses_connections_delays_no_request() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    requests_do_not_wait_for(format!("http://{addr}")).await;
}

#[tokio::test]
async fn a_sampled_client_span_is_continued_at_ratio_zero_and_an_upgrade_ends_at_the_101() {
    let (collector, addr) = Collector::start().await;
    let ws = Workspace::new();
    ws.project("polonius", &["polonius.test"], &common::echo_manifest());
    let config = ws.config_with(
        json!(["polonius"]),
        json!({"tracing": {
            "sample_ratio": 0.0,
            "otlp_endpoint": format!("http://{addr}"),
            "export_interval": "100ms",
        }}),
    );
    let server = Server::start(&config);
    // The client's sampled flag wins over sample_ratio 0.
    let reply = server
        .get("polonius.test", "/x")
        .header("traceparent", INCOMING)
        .send()
        .await;
    let [_, _, parent, _] = handler_traceparent(&reply);
    until("the continued trace's server span", || {
        let found = collector
            .spans()
            .iter()
            .any(|s| hex(&s.trace_id) == INCOMING_TRACE && s.kind == SpanKind::Server as i32);
        async move { found }
    })
    .await;
    let span = collector
        .spans()
        .into_iter()
        .find(|s| hex(&s.trace_id) == INCOMING_TRACE && s.kind == SpanKind::Server as i32)
        .expect("server span");
    assert_eq!(
        hex(&span.parent_span_id),
        "00f067aa0ba902b7",
        "the client's span is the parent"
    );
    assert_eq!(hex(&span.span_id), parent);
    assert_eq!(span.name, "GET /");

    // A WebSocket: its span is exported while the socket is still open.
    let upgrade_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut socket = WebSocket::connect_with(
        server.addr,
        "polonius.test",
        "/ws",
        &[(
            "traceparent",
            &format!("00-{upgrade_trace}-b7ad6b7169203331-01"),
        )],
    )
    .await;
    socket.echo("to be or not to be").await;
    until("the upgrade's span while the socket is open", || {
        let found = collector.spans().iter().any(|s| {
            hex(&s.trace_id) == upgrade_trace
                && s.kind == SpanKind::Server as i32
                && attribute(&s.attributes, "http.response.status_code")
                    == Some(AnyValue::IntValue(101))
        });
        async move { found }
    })
    .await;
    socket.echo("still open").await;
}

/// Waits (bounded, without blocking the test's runtime, where the
/// collector runs) for the server to exit; how long it took.
async fn exit_after_sigterm(server: &mut Server) -> Duration {
    let asked = Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let child = &mut server.child;
    until("elsinore to exit after SIGTERM", || {
        let exited = child.try_wait().expect("wait").is_some();
        async move { exited }
    })
    .await;
    asked.elapsed()
}

#[tokio::test]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let (collector, addr) = Collector::start().await;
    let ws = Workspace::new();
    // The interval never comes: only the shutdown can send these spans.
    let tracing = json!({"tracing": {
        "sample_ratio": 1.0,
        "otlp_endpoint": format!("http://{addr}"),
        "export_interval": "60s",
    }});
    let mut server = Server::start(&polonius(&ws, tracing));
    let mut traces = Vec::new();
    for _ in 0..3 {
        let reply = server.get("polonius.test", "/api/x").send().await;
        let [_, trace, _, _] = handler_traceparent(&reply);
        traces.push(trace);
    }
    assert_eq!(collector.exports(), 0, "nothing sent before the interval");
    exit_after_sigterm(&mut server).await;
    let spans = collector.spans();
    for trace in &traces {
        assert!(
            spans
                .iter()
                .any(|s| &hex(&s.trace_id) == trace && s.kind == SpanKind::Server as i32),
            "request {trace} lost at shutdown; exported: {:?}",
            spans.iter().map(|s| hex(&s.trace_id)).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_holds_shutdown_no_longer_than_export_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let ws = Workspace::new();
    let tracing = json!({"tracing": {
        "sample_ratio": 1.0,
        "otlp_endpoint": format!("http://{addr}"),
        "export_interval": "60s",
        "export_timeout": "1s",
    }});
    let mut server = Server::start(&polonius(&ws, tracing));
    for _ in 0..3 {
        let reply = server.get("polonius.test", "/api/x").send().await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let took = exit_after_sigterm(&mut server).await;
    // One export timeout, plus stopping the echo handler (well under a
    // second when it exits at SIGTERM).
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with export_timeout 1s"
    );
    // Whichever gave up first, the export or the shutdown's wait for it,
    // the log says the spans were lost.
    let line = server.logs.wait_for("trace export");
    assert!(line.contains("WARN"), "{line}");
}
