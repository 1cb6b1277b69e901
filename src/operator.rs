//! The operator listener (`admin_listen`): health, readiness, the live route
//! table and forced reloads, as JSON for scripts and people with curl;
//! Prometheus metrics at `/metrics` and an HTML status page at `/`.
//!
//! Every request first passes `operator_guard` (`Host`, then the optional
//! bearer token of `admin_token_env`, then `Origin` on state changes). A
//! bare port still binds on loopback: without a token, the listener must
//! only be reachable from a trusted interface.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use elsinore_events::EventScheduler;
use elsinore_metrics::Metrics;
use elsinore_proxy::RouteTable;
use elsinore_supervisor::{HandlerHandle, HandlerState};
use elsinore_watch::FolderWatcher;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::operator_guard::{self, Refusal};
use crate::status_page::{self, Rates, StatusInput};
use elsinore_live::{Live, ReloadReport};

/// `GET /events` lists this many runs unless `?limit=` says otherwise.
const DEFAULT_EVENTS_LIMIT: usize = 20;
const MAX_EVENTS_LIMIT: usize = 500;

/// What the operator endpoints read.
#[derive(Debug, Clone)]
pub struct Operator {
    pub live: Arc<Live>,
    pub watcher: Option<Arc<FolderWatcher>>,
    pub events: EventScheduler,
    /// The registry `GET /metrics` encodes (shared with the proxy).
    pub metrics: Arc<Metrics>,
    /// Counter samples for the status page's request rates.
    pub rates: Arc<Rates>,
}

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, operator: Operator, shutdown: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    // Rates need samples even when nobody is looking at the page.
    let sampler = {
        let (metrics, rates) = (operator.metrics.clone(), operator.rates.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(status_page::RATE_SAMPLE_EVERY);
            loop {
                tick.tick().await;
                rates.sample(&metrics);
            }
        })
    };
    let _stop_sampler = AbortOnDrop(sampler);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::error!(%err, "operator listener: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        // The address this connection arrived on is the listener's own
        // address as far as `Host` goes (the interface's, when bound on
        // 0.0.0.0).
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "operator connection has no local address");
                continue;
            }
        };
        let operator = operator.clone();
        let service = service_fn(move |request| {
            let operator = operator.clone();
            async move { Ok::<_, Infallible>(operator.guarded(request, local).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "operator connection ended with an error");
            }
        });
    }
}

impl Operator {
    /// Answers `request` if `operator_guard` lets it through, else the
    /// refusal.
    async fn guarded(
        &self,
        request: Request<Incoming>,
        local: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let access = self.live.operator_access();
        match operator_guard::check(&access, &request, local) {
            Ok(()) => self.handle(request).await,
            Err(refusal) => refuse(&refusal, &request),
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET, "/") => self.status_page().await,
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/healthz") => reply(StatusCode::OK, &json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/routes") => reply(StatusCode::OK, &self.routes()),
            (&Method::POST, "/reload") => {
                let report = self.live.reload("POST /reload").await;
                let status = if report.ok() {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                reply(status, &report_json(&report))
            }
            (&Method::POST, "/events/run") => self.run_events().await,
            (&Method::GET, "/events") => self.events_status(request.uri().query()).await,
            (
                _,
                "/" | "/metrics" | "/healthz" | "/readyz" | "/routes" | "/reload" | "/events/run"
                | "/events",
            ) => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("{} is not allowed on {path}", request.method())}),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                &json!({
                    "error": format!("no operator endpoint {path}"),
                    "endpoints": [
                        "GET /", "GET /metrics", "GET /healthz", "GET /readyz", "GET /routes", "POST /reload",
                        "GET /events", "POST /events/run",
                    ],
                }),
            ),
        }
    }

    /// Prometheus text format (OpenMetrics 1.0, which Prometheus reads).
    fn metrics(&self) -> Response<Full<Bytes>> {
        match self.metrics.encode() {
            Ok(text) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(elsinore_metrics::CONTENT_TYPE),
                );
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                response
            }
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": format!("cannot encode the metrics: {err}")}),
            ),
        }
    }

    /// The HTML status page.
    async fn status_page(&self) -> Response<Full<Bytes>> {
        let table = self.live.table().load_full();
        let last_reload = self.live.last_reload();
        let pending = self.live.pending_restart();
        let rates = self.rates.per_project(&self.metrics);
        let last_event_run = self
            .events
            .recent(1)
            .await
            .map(|runs| runs.into_iter().next())
            .map_err(|err| err.to_string());
        let html = status_page::render(&StatusInput {
            table: &table,
            last_reload: &last_reload,
            pending_restart: &pending,
            swaps: self.live.swaps(),
            rates: &rates,
            last_event_run,
            events_rows_deleted: self.events.rows_deleted(),
        });
        let mut response = Response::new(Full::new(Bytes::from(html)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        response
    }

    /// Runs SoftDeleteCleanup and SessionExpiry now (after any run in
    /// progress) and answers the per-table counts.
    async fn run_events(&self) -> Response<Full<Bytes>> {
        match self.events.run_now().await {
            Ok(report) => reply_serialized(StatusCode::OK, &report),
            Err(err @ elsinore_events::Error::Stopped) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": err.to_string()}),
            ),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": err.to_string()}),
            ),
        }
    }

    /// The schedule and the most recent runs (`?limit=N`, default 20, at
    /// most 500).
    async fn events_status(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let limit = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("limit="))
            .map(str::parse::<usize>);
        let limit = match limit {
            None => DEFAULT_EVENTS_LIMIT,
            Some(Ok(limit)) if (1..=MAX_EVENTS_LIMIT).contains(&limit) => limit,
            Some(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("limit must be a number from 1 to {MAX_EVENTS_LIMIT}")}),
                )
            }
        };
        match self.events.status(limit).await {
            Ok(status) => reply_serialized(StatusCode::OK, &status),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": err.to_string()}),
            ),
        }
    }

    /// 200 when every handler can take requests, else 503 listing those
    /// that cannot.
    fn readyz(&self) -> Response<Full<Bytes>> {
        let table = self.live.table().load_full();
        let waiting: Vec<String> = table
            .projects
            .iter()
            .flat_map(|p| p.handlers.iter())
            .filter(|h| !matches!(h.state(), HandlerState::Ready | HandlerState::External))
            .map(|h| format!("{}/{}: {}", h.project(), h.name(), h.state()))
            .collect();
        if waiting.is_empty() {
            reply(StatusCode::OK, &json!({"ready": true}))
        } else {
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "not_ready": waiting}),
            )
        }
    }

    fn routes(&self) -> Value {
        let table = self.live.table().load_full();
        json!({
            "swaps": self.live.swaps(),
            "watching": self.watcher.as_ref().map_or("off", |w| w.backend_name()),
            "hosts": hosts_json(&table),
            "projects": projects_json(&table),
            "default_project": table.default_project.as_ref().map(|p| &p.name),
            "preview_host": table.preview.as_ref().map(|p| p.host()),
            "conflicts": table.conflicts.iter().map(|c| json!({
                "host": c.host,
                "kept_by": c.kept_by,
                "refused_for": c.refused_for,
            })).collect::<Vec<_>>(),
            "last_reload": report_json(&self.live.last_reload()),
            "pending_restart": self.live.pending_restart().as_ref(),
            "certificates": crate::tls::certificates_json(&table.certs, std::time::SystemTime::now()),
        })
    }
}

fn hosts_json(table: &RouteTable) -> Value {
    let hosts: serde_json::Map<String, Value> = table
        .hosts
        .entries()
        .into_iter()
        .map(|(host, route)| {
            let project = &route.project;
            let handlers: Vec<Value> = project
                .handlers
                .iter()
                .zip(&project.routes)
                .map(|(handle, routes)| {
                    json!({"name": handle.name(), "routes": routes, "state": handle.state().as_str()})
                })
                .collect();
            let public = route.site.as_ref().map(|site| site.root().display().to_string());
            (
                host,
                json!({"project": project.name, "handlers": handlers, "public": public}),
            )
        })
        .collect();
    Value::Object(hosts)
}

fn projects_json(table: &RouteTable) -> Value {
    let projects: serde_json::Map<String, Value> = table
        .projects
        .iter()
        .map(|project| {
            let handlers: Vec<Value> = project
                .handlers
                .iter()
                .zip(&project.routes)
                .map(|(handle, routes)| handler_json(handle, routes))
                .collect();
            let hosts: Vec<String> = project.hosts.iter().map(ToString::to_string).collect();
            (
                project.name.clone(),
                json!({
                    "path": project.path.display().to_string(),
                    "hosts": hosts,
                    "handlers": handlers,
                }),
            )
        })
        .collect();
    Value::Object(projects)
}

fn handler_json(handle: &HandlerHandle, routes: &[String]) -> Value {
    let status = handle.status();
    json!({
        "name": handle.name(),
        "routes": routes,
        "state": status.state.as_str(),
        "address": handle.authority().as_str(),
        "pid": status.pid,
        "restarts": status.restarts,
        "last_error": status.last_error,
        "in_flight": handle.in_flight(),
    })
}

pub fn report_json(report: &ReloadReport) -> Value {
    json!({
        "at": humantime::format_rfc3339_millis(report.at).to_string(),
        "at_ms": report.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "trigger": report.trigger,
        "ok": report.ok(),
        "swapped": report.swapped,
        "took_ms": report.took.as_secs_f64() * 1000.0,
        "changes": report.changes,
        "errors": report.errors,
        "warnings": report.warnings,
    })
}

/// The response to a request `operator_guard` refused: JSON, except
/// for a browser opening a page without the token, which gets the page
/// that asks for it (`status_page::TOKEN_PAGE`).
fn refuse<B>(refusal: &Refusal, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, error) = match refusal {
        Refusal::TwoHosts => (
            StatusCode::BAD_REQUEST,
            "the request has more than one Host header".to_owned(),
        ),
        Refusal::NoHost => (
            StatusCode::MISDIRECTED_REQUEST,
            "the request has no Host; the operator listener answers its own address, localhost and the names in config.json \"admin_hosts\"".to_owned(),
        ),
        Refusal::ForeignHost(host) => (
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host {host:?} is not this operator listener: it answers its own address, localhost and the names in config.json \"admin_hosts\" (add the name there to allow it)"),
        ),
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            "this operator listener needs Authorization: Bearer <token>, the value of the variable config.json \"admin_token_env\" names".to_owned(),
        ),
        Refusal::WrongToken => (
            StatusCode::UNAUTHORIZED,
            "the bearer token is not this operator listener's (config.json \"admin_token_env\")".to_owned(),
        ),
        Refusal::ForeignOrigin(origin) => (
            StatusCode::FORBIDDEN,
            format!("{} from Origin {origin:?} refused: only pages of this operator listener may change anything; scripts send no Origin", request.method()),
        ),
        Refusal::CrossSite => (
            StatusCode::FORBIDDEN,
            format!("cross-site {} refused (Sec-Fetch-Site: cross-site)", request.method()),
        ),
    };
    let mut response = if status == StatusCode::UNAUTHORIZED && wants_html(request) {
        let mut page = Response::new(Full::new(Bytes::from_static(
            status_page::TOKEN_PAGE.as_bytes(),
        )));
        *page.status_mut() = status;
        page.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        page.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        page
    } else {
        reply(status, &json!({"error": error}))
    };
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"elsinore operator\""),
        );
    }
    response
}

/// A browser navigating (a GET that accepts HTML), not a script.
fn wants_html<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

fn reply_serialized(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_value(body) {
        Ok(value) => reply(status, &value),
        Err(err) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": format!("cannot encode the answer: {err}")}),
        ),
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_default();
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Stops the rate sampler when the listener stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
