//! One access-log line (target `elsinore::access`, written by
//! [`crate::access_log`], not through tracing) and one metrics sample per
//! request, made when the response is complete: at once for answers
//! Elsinore writes itself, when the last byte of a handler's streamed body
//! has gone (or the client left) otherwise.
//!
//! Never logged: header values (so no `X-Hamlet-*-Key` or `Authorization`)
//! and the values of query parameters named `…key` or `…token`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use elsinore_metrics::{
    HandlerErrorKind, Metrics, RequestSample, ThreadShard, ADMIN_HANDLER, DEFAULT_HOST_LABEL,
    STATIC_HANDLER,
};
use elsinore_routes::ProjectRoute;
use elsinore_supervisor::HandlerHandle;
use elsinore_tracing::{RequestSpan, TraceContext, Tracer};
use http::{HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Body;

use crate::access_line::Line;
use crate::access_log::ThreadLog;
use crate::conn_info::ConnInfo;
use crate::error::ProxyError;
use crate::limits::BodyProgress;
use crate::rate_limit::Passed;
use crate::ProxyBody;

/// The `target` of access-log lines (as tracing named it when it wrote
/// them): `jq 'select(.target == "elsinore::access")'`.
pub const ACCESS_TARGET: &str = "elsinore::access";

/// What is known about a request so far; finished into a log line.
#[derive(Debug)]
pub(crate) struct Access {
    start: Instant,
    /// The connection's peer.
    client: SocketAddr,
    /// The client behind a trusted proxy, when it is not the peer itself
    /// (`trusted_proxies`); logged as the client, the peer beside it.
    forwarded_client: Option<IpAddr>,
    method: Method,
    /// This request thread's access-log buffer, when the log is on: the
    /// URI and the request id are only kept, and the redacted path only
    /// formatted, for the log line.
    log: Option<Arc<ThreadLog>>,
    /// Kept as is (a reference-counted clone) when logged.
    uri: Option<Uri>,
    request_id: Option<HeaderValue>,
    /// The normalised host, once known to be served, when the log wants
    /// it (see [`Access::set_host`]).
    host: Option<String>,
    /// The `host` label with `metrics.per_host`: set by the router, never
    /// the name the client sent.
    pub(crate) host_label: Option<HostLabel>,
    /// The project and handler, shared rather than copied.
    pub(crate) project: Option<Arc<ProjectRoute>>,
    pub(crate) handler: Option<Arc<HandlerHandle>>,
    /// Whether the reserved-path hook (the tenant admin API) answered.
    pub(crate) reserved: bool,
    /// Whether Elsinore answered from the host's `public/` folder.
    pub(crate) static_file: bool,
    bytes_in: BytesIn,
    /// Until the handler's response headers.
    pub(crate) handler_time: Option<Duration>,
    /// The `rate_limits` scope that refused the request.
    pub(crate) limited: Option<&'static str>,
    /// What the tightest `rate_limits` scope has left, for the response's
    /// `RateLimit` header.
    pub(crate) quota: Option<Passed>,
    metrics: Arc<Metrics>,
    /// The request thread answering: its own shard of the metrics.
    shard: ThreadShard,
    /// The trace id for the log line, when the log is on.
    trace_id: Option<[u8; 32]>,
    /// The span of a sampled request, when spans are exported: boxed, so
    /// that an unsampled request carries one pointer.
    pub(crate) span: Option<Box<Traced>>,
}

/// A sampled request's span and where it goes when finished.
#[derive(Debug)]
pub(crate) struct Traced {
    pub(crate) span: RequestSpan,
    tracer: Tracer,
}

#[derive(Debug)]
enum BytesIn {
    /// From `Content-Length` (requests Elsinore answers itself).
    Declared(u64),
    /// Counted as the body streams to the handler.
    Counted(Arc<BodyProgress>),
}

impl Access {
    pub(crate) fn begin<B>(
        request: &http::Request<B>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
        trace: &TraceContext,
        tracer: &Tracer,
        metrics: Arc<Metrics>,
        log: Option<Arc<ThreadLog>>,
    ) -> Self {
        let start = Instant::now();
        let client = conn.peer;
        let logged = log.is_some();
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let span = tracer.records(trace).then(|| {
            let mut span = RequestSpan::begin(trace, start);
            // Named by what answers it once routed; the method alone
            // until then (a request refused before routing).
            span.set_name(request.method().to_string());
            span.attribute("http.request.method", request.method().to_string());
            Box::new(Traced {
                span,
                tracer: tracer.clone(),
            })
        });
        Self {
            start,
            client,
            forwarded_client: None,
            method: request.method().clone(),
            log,
            uri: logged.then(|| request.uri().clone()),
            request_id: logged.then(|| request_id.clone()),
            host: None,
            host_label: None,
            project: None,
            handler: None,
            reserved: false,
            static_file: false,
            bytes_in: BytesIn::Declared(declared),
            handler_time: None,
            limited: None,
            quota: None,
            metrics,
            shard: conn.shard,
            trace_id: logged.then(|| trace.trace_id_hex()),
            span,
        }
    }

    /// Records the client's address as a trusted proxy gave it.
    pub(crate) fn set_client(&mut self, ip: IpAddr) {
        if ip != self.client.ip().to_canonical() {
            self.forwarded_client = Some(ip);
        }
    }

    /// Records the routed host, if the log will print it: one allocation
    /// per request saved when it is off.
    pub(crate) fn set_host(&mut self, host: &str) {
        if self.log.is_some() {
            self.host = Some(host.to_owned());
        }
    }

    /// Whether the metrics read [`Access::host_label`].
    pub(crate) fn wants_host_label(&self) -> bool {
        self.metrics.per_host()
    }

    /// Where the request body records the bytes it passes to the handler
    /// (see [`crate::RequestBody`]); the access line reads it.
    pub(crate) fn body_progress(&mut self) -> Arc<BodyProgress> {
        let progress = Arc::new(BodyProgress::default());
        self.bytes_in = BytesIn::Counted(progress.clone());
        progress
    }

    /// Counts a failed handler request under its kind.
    pub(crate) fn failed(&self, error: &ProxyError) {
        let kind = match error {
            ProxyError::HandlerUnreachable { .. } => HandlerErrorKind::Refused,
            ProxyError::HandlerFailed { .. } => HandlerErrorKind::Reset,
            ProxyError::HandlerTimeout { .. } => HandlerErrorKind::Timeout,
            ProxyError::HandlerStarting { .. }
            | ProxyError::HandlerCrashed { .. }
            | ProxyError::HandlerStopped { .. } => HandlerErrorKind::Unavailable,
            _ => return,
        };
        self.metrics
            .handler_error(self.project_name(), self.handler_name(), kind);
    }

    /// Logs now if Elsinore wrote the body, else when the handler's body
    /// is done.
    pub(crate) fn attach(self, response: &mut Response<ProxyBody>) {
        let status = response.status();
        match response.body_mut() {
            // Boxed: the body is moved several times on its way into
            // hyper, and the record is most of its size.
            Either::Left(body) => body.attach(Box::new(Finish {
                access: self,
                status,
                bytes_out: 0,
            })),
            Either::Right(full) => {
                let bytes_out = full.size_hint().exact().unwrap_or(0);
                self.finish(status, bytes_out);
            }
        }
    }

    fn project_name(&self) -> &str {
        self.project.as_ref().map_or("", |p| p.name.as_str())
    }

    fn handler_name(&self) -> &str {
        if self.reserved {
            return ADMIN_HANDLER;
        }
        if self.static_file {
            return STATIC_HANDLER;
        }
        self.handler.as_ref().map_or("", |h| h.name())
    }

    fn finish(mut self, status: StatusCode, bytes_out: u64) {
        let total = self.start.elapsed();
        if let Some(traced) = self.span.take() {
            let Traced { span, tracer } = *traced;
            tracer.submit(span.finish(status.as_u16(), Some(bytes_out)));
        }
        let bytes_in = match &self.bytes_in {
            BytesIn::Declared(n) => *n,
            BytesIn::Counted(progress) => progress.sent(),
        };
        let status = status.as_u16();
        if let Some(log) = &self.log {
            self.log(log, status, bytes_in, bytes_out, total);
        }
        let project = self.project_name();
        self.metrics.record(&RequestSample {
            shard: self.shard,
            project,
            handler: self.handler_name(),
            host: self.host_label.as_ref().map(HostLabel::as_str),
            status,
            bytes_in,
            bytes_out,
            total,
            handler_time: self.handler_time,
        });
        if let Some(scope) = self.limited {
            self.metrics
                .rate_limited(project, scope, self.host.as_deref());
        }
        if self.reserved && matches!(status, 401 | 403 | 429) {
            self.metrics.key_auth_failure(project, status);
        }
    }

    /// The access-log line, into this thread's buffer.
    fn log(&self, log: &ThreadLog, status: u16, bytes_in: u64, bytes_out: u64, total: Duration) {
        let query = self
            .uri
            .as_ref()
            .and_then(Uri::query)
            .map(elsinore_config::redact_secrets);
        log.append(&Line {
            at: SystemTime::now(),
            peer: self.client,
            named_client: self.forwarded_client,
            host: self.host.as_deref().unwrap_or("-"),
            project: or_dash(self.project_name()),
            handler: or_dash(self.handler_name()),
            method: self.method.as_str(),
            path: self.uri.as_ref().map_or("-", Uri::path),
            query: query.as_deref(),
            status,
            bytes_in,
            bytes_out,
            total,
            handler_time: self.handler_time,
            limited: self.limited,
            request_id: self
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or("-"),
            trace: self.trace_id.as_ref(),
        });
    }
}

/// `name`, or `-` for none.
fn or_dash(name: &str) -> &str {
    if name.is_empty() {
        "-"
    } else {
        name
    }
}

/// The `host` label of a routed request, shared with the route table.
#[derive(Debug, Clone)]
pub(crate) enum HostLabel {
    /// A declared host pattern, or the preview host.
    Declared(Arc<str>),
    /// Any host `default_project` answers.
    Default,
}

impl HostLabel {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Declared(name) => name,
            Self::Default => DEFAULT_HOST_LABEL,
        }
    }
}

/// An [`Access`] waiting for the end of a streamed response body.
#[derive(Debug)]
pub(crate) struct Finish {
    access: Access,
    status: StatusCode,
    bytes_out: u64,
}

impl Finish {
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    pub(crate) fn done(self) {
        self.access.finish(self.status, self.bytes_out);
    }
}
