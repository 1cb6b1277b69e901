//! The operator listener (`admin_listen`): health, readiness, the live route
//! table and forced reloads, as JSON for scripts and people with curl;
//! Prometheus metrics at `/metrics` and an HTML status page at `/`.
//!
//! Served by the proxy's server machinery ([`elsinore_proxy::serve_with`]),
//! like the public listeners: `limits.max_connections` and
//! `max_connections_per_ip`, the header read and idle timeouts, HTTP/1.1
//! and h2c, and a drain within `shutdown_grace` on shutdown. Errors are
//! [`OperatorError`]s, written by the proxy's JSON error writer.
//!
//! Every request first passes `operator_guard` (`Host`, then the optional
//! bearer token of `admin_token_env`, then `Origin` on state changes). A
//! bare port still binds on loopback: without a token, the listener must
//! only be reachable from a trusted interface.

use std::future::Future;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use bytes::Bytes;
use elsinore_events::EventScheduler;
use elsinore_metrics::Metrics;
use elsinore_proxy::{
    ConnInfo, ListenerService, ProxyBody, ProxyError, RequestIds, ServeSettings, X_REQUEST_ID,
};
use elsinore_routes::RouteTable;
use elsinore_supervisor::{HandlerHandle, HandlerState};
use elsinore_watch::FolderWatcher;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::operator_error::OperatorError;
use crate::operator_guard;
use crate::status_page::{self, Rates, StatusInput};
use elsinore_live::{Live, ReloadReport};

/// An endpoint's answer, or the error to answer instead.
type Answer = Result<Response<Full<Bytes>>, OperatorError>;

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

/// Starts serving `listener` (see [`serve`]) and logs where; warns when
/// it is reachable off loopback without `has_token`. The task ends once
/// the listener has drained after `shutdown`.
pub fn start(
    listener: TcpListener,
    operator: Operator,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServeSettings,
    has_token: bool,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = listener
        .local_addr()
        .context("operator listener has no address")?;
    let task = tokio::spawn(serve(listener, operator, shutdown, settings));
    if !addr.ip().is_loopback() && !has_token {
        tracing::warn!("the operator listener on {addr} has no token; set admin_token_env, or keep it on loopback or a trusted network");
    }
    // Tests and scripts wait for this exact line too.
    tracing::info!("operator API on http://{addr}");
    Ok(task)
}

/// Serves `listener` with `settings` (limits, timeouts, grace) until
/// `shutdown` resolves, then drains it like a public listener.
pub async fn serve(
    listener: TcpListener,
    operator: Operator,
    shutdown: impl Future<Output = ()>,
    settings: ServeSettings,
) {
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
    let service = Arc::new(OperatorService {
        operator,
        request_ids: RequestIds::new(),
    });
    elsinore_proxy::serve_with(listener, service, shutdown, settings).await;
}

/// The operator listener as the server machinery sees it: the guard, then
/// the endpoints; every response carries an `X-Request-Id`.
#[derive(Debug)]
struct OperatorService {
    operator: Operator,
    request_ids: RequestIds,
}

impl ListenerService for OperatorService {
    const NAME: &'static str = "operator";
    // The `Host` check accepts the address the connection arrived on (the
    // interface's, when bound on 0.0.0.0).
    const LOCAL_ADDR: bool = true;

    async fn call(&self, request: Request<Incoming>, conn: &ConnInfo) -> Response<ProxyBody> {
        let request_id = self
            .request_ids
            .for_request(request.headers().get(X_REQUEST_ID));
        let browser = wants_html(&request);
        let answer = match conn.local() {
            Some(local) => self.operator.guarded(request, local).await,
            None => Err(OperatorError::Internal(
                "cannot tell which address this connection arrived on".to_owned(),
            )),
        };
        let mut response = match answer {
            Ok(response) => response,
            Err(error) => error.into_response(&request_id, browser),
        };
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        response.map(Either::Right)
    }

    /// Over `limits.max_connections`: the proxy's 503, same shape.
    fn refuse(&self, request: &Request<Incoming>, error: ProxyError) -> Response<ProxyBody> {
        let request_id = self
            .request_ids
            .for_request(request.headers().get(X_REQUEST_ID));
        error.into_response(&request_id)
    }
}

impl Operator {
    /// Answers `request` if `operator_guard` lets it through, else the
    /// refusal. `local` is the address the connection arrived on.
    async fn guarded(&self, request: Request<Incoming>, local: std::net::SocketAddr) -> Answer {
        let access = self.live.operator_access();
        match operator_guard::check(&access, &request, local) {
            Ok(()) => self.handle(request).await,
            Err(refusal) => Err(OperatorError::Refused {
                refusal,
                method: request.method().clone(),
            }),
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Answer {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET, "/") => Ok(self.status_page().await),
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, "/healthz") => Ok(reply(StatusCode::OK, &json!({"status": "ok"}))),
            (&Method::GET, "/readyz") => Ok(self.readyz()),
            (&Method::GET, "/routes") => Ok(reply(StatusCode::OK, &self.routes())),
            (&Method::POST, "/reload") => {
                let report = self.live.reload("POST /reload").await;
                let status = if report.ok() {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                Ok(reply(status, &report_json(&report)))
            }
            (&Method::POST, "/events/run") => self.run_events().await,
            (&Method::GET, "/events") => self.events_status(request.uri().query()).await,
            (
                _,
                "/" | "/metrics" | "/healthz" | "/readyz" | "/routes" | "/reload" | "/events/run"
                | "/events",
            ) => Err(OperatorError::WrongMethod {
                method: request.method().clone(),
                path: path.to_owned(),
            }),
            _ => Err(OperatorError::NoEndpoint {
                path: path.to_owned(),
            }),
        }
    }

    /// Prometheus text format (OpenMetrics 1.0, which Prometheus reads).
    fn metrics(&self) -> Answer {
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
                Ok(response)
            }
            Err(err) => Err(OperatorError::Internal(format!(
                "cannot encode the metrics: {err}"
            ))),
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
    async fn run_events(&self) -> Answer {
        match self.events.run_now().await {
            Ok(report) => reply_serialized(StatusCode::OK, &report),
            Err(err @ elsinore_events::Error::Stopped) => {
                Err(OperatorError::Unavailable(err.to_string()))
            }
            Err(err) => Err(OperatorError::Internal(err.to_string())),
        }
    }

    /// The schedule and the most recent runs (`?limit=N`, default 20, at
    /// most 500).
    async fn events_status(&self, query: Option<&str>) -> Answer {
        let limit = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("limit="))
            .map(str::parse::<usize>);
        let limit = match limit {
            None => DEFAULT_EVENTS_LIMIT,
            Some(Ok(limit)) if (1..=MAX_EVENTS_LIMIT).contains(&limit) => limit,
            Some(_) => {
                return Err(OperatorError::BadRequest(format!(
                    "limit must be a number from 1 to {MAX_EVENTS_LIMIT}"
                )))
            }
        };
        match self.events.status(limit).await {
            Ok(status) => reply_serialized(StatusCode::OK, &status),
            Err(err) => Err(OperatorError::Internal(err.to_string())),
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

/// A browser navigating (a GET that accepts HTML), not a script.
fn wants_html<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

fn reply_serialized(status: StatusCode, body: &impl serde::Serialize) -> Answer {
    match serde_json::to_value(body) {
        Ok(value) => Ok(reply(status, &value)),
        Err(err) => Err(OperatorError::Internal(format!(
            "cannot encode the answer: {err}"
        ))),
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
