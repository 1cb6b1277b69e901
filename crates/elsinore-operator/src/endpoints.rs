//! The operator's endpoints: health, readiness, the live route table and
//! forced reloads as JSON, framework events, Prometheus metrics and the
//! HTML status page; [`Operator`] is what they read.

use std::sync::Arc;

use bytes::Bytes;
use elsinore_events::EventScheduler;
use elsinore_metrics::Metrics;
use elsinore_supervisor::HandlerState;
use elsinore_watch::FolderWatcher;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::error::OperatorError;
use crate::guard;
use crate::routes_json::{certificates_json, hosts_json, projects_json, report_json};
use crate::status_page::{self, Rates, StatusInput};
use elsinore_live::Live;

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
    /// Which process serves: 1 for a server started as such, N+1 for one
    /// that took over from generation N by a binary upgrade.
    pub generation: u64,
    /// Automatic certificates (`acme`), when configured: `/routes`
    /// shows them under `acme`.
    pub acme: Option<Arc<elsinore_acme::Acme>>,
    /// Whether a PostgreSQL state database answers (`None` on SQLite):
    /// `/readyz`, `/routes` and the status page show it.
    pub state: Option<Arc<elsinore_store::StateHealth>>,
}

impl Operator {
    /// Answers `request` if the guard lets it through, else the
    /// refusal. `local` is the address the connection arrived on.
    pub(crate) async fn guarded(
        &self,
        request: Request<Incoming>,
        local: std::net::SocketAddr,
    ) -> Answer {
        let access = self.live.operator_access();
        match guard::check(&access, &request, local) {
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
            acme: self.acme.as_ref().map(|acme| acme.status()),
            most_limited: self.metrics.most_limited_hosts(10),
            state_database: self.state.as_ref().map(|state| state.describe()),
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
            // A PostgreSQL shared database that cannot be reached is away,
            // not broken: 503, and the next run tries again.
            Err(err @ (elsinore_events::Error::Stopped | elsinore_events::Error::Connect(_))) => {
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
    /// that cannot. A sleeping handler can: a request wakes it. A
    /// PostgreSQL state database out of reach is reported in
    /// `state_database` but does not make the answer 503: requests are
    /// still served, with the keys held (only admin API changes wait).
    /// The same for ACME's refresh (`acme_refresh`).
    fn readyz(&self) -> Response<Full<Bytes>> {
        let table = self.live.table().load_full();
        let waiting: Vec<String> = table
            .projects
            .iter()
            .flat_map(|p| p.handlers.iter())
            .filter(|h| {
                !matches!(
                    h.state(),
                    HandlerState::Ready | HandlerState::External | HandlerState::Sleeping
                )
            })
            .map(|h| format!("{}/{}: {}", h.project(), h.name(), h.state()))
            .collect();
        let (status, mut body) = if waiting.is_empty() {
            (StatusCode::OK, json!({"ready": true}))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"ready": false, "not_ready": waiting}),
            )
        };
        if let Some(state) = &self.state {
            body["state_database"] = json!(state.describe());
        }
        // Like the state database: reported, never a 503 (the
        // certificates held keep serving).
        if let Some(refresh) = self.acme.as_ref().and_then(|acme| acme.fleet_refresh()) {
            body["acme_refresh"] = json!(refresh);
        }
        reply(status, &body)
    }

    fn routes(&self) -> Value {
        let table = self.live.table().load_full();
        json!({
            "generation": self.generation,
            "pid": std::process::id(),
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
            "certificates": certificates_json(&table.certs, std::time::SystemTime::now()),
            "acme": self.acme.as_ref().map(|acme| acme.status_json()),
            "state_database": self.state.as_ref().map(|state| state.describe()),
        })
    }
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
