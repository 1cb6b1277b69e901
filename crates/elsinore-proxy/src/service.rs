//! The request path.

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use elsinore_config::{
    normalize_path, normalize_request_host, ForwardHost, HostError, Limits, Timeouts,
};
use elsinore_keys::KeyRing;
use elsinore_metrics::{Metrics, RequestThreads};
use elsinore_routes::{HostRoute, ProjectRoute, RouteTable};
use elsinore_static::{Outcome, Site, StaticBody};
use elsinore_supervisor::{Busy, HandlerHandle, Refused, Unavailable};
use elsinore_tracing::{TraceContext, Tracer};
use http::header::{CONNECTION, HOST, ORIGIN, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use crate::access::{Access, HostLabel};
use crate::access_log::AccessLog;
use crate::address_limit::AddressSlot;
use crate::auth::{self, AuthLevel};
use crate::body::HandlerBody;
use crate::client::{ClientError, HandlerClient};
use crate::conn_info::ConnInfo;
use crate::connection::Activity;
use crate::cors;
use crate::error::ProxyError;
use crate::exchange::ExchangeError;
use crate::headers::{self, Context, X_REQUEST_ID};
use crate::limits::{declared_length, BodyProgress, RequestBody};
use crate::preview::{self, PreviewRoute};
use crate::rate_limit::{self, RateLimiter};
use crate::redirect;
use crate::request_id::RequestIds;
use crate::reserved::{self, ReservedContext, ReservedPaths};
use crate::throttle::Throttle;
use crate::trust::{self, Client};
use crate::upgrade::{self, Tunnels};
use crate::ProxyBody;

/// What the accept loop puts in each connection's [`ConnInfo`]: the client
/// connection's slot under `limits.max_connections`, which an upgraded
/// connection keeps after its HTTP exchange is over.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlot {
    // Held, never read: dropping the last clone frees the slot (and the
    // place under `limits.max_connections_per_ip`, if counted).
    _held: Arc<(tokio::sync::OwnedSemaphorePermit, Option<AddressSlot>)>,
}

impl ConnectionSlot {
    pub(crate) fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        address: Option<AddressSlot>,
    ) -> Self {
        Self {
            _held: Arc::new((permit, address)),
        }
    }
}

/// Shared state of the request path: the live table and the handler pool.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<ArcSwap<RouteTable>>,
    client: HandlerClient,
    request_ids: RequestIds,
    /// `limits.max_body`, for projects without their own.
    max_body: u64,
    /// Open upgraded connections (WebSockets).
    tunnels: Arc<Tunnels>,
    /// Updated once per request, when its response is complete.
    metrics: Arc<Metrics>,
    /// Where each request's line goes (off by default).
    access_log: AccessLog,
    /// Answers reserved paths (the tenant admin API); without it they
    /// answer 503.
    reserved: Option<Arc<dyn ReservedPaths>>,
    /// The accepted host keys; without it host keys open nothing.
    keys: Option<Arc<KeyRing>>,
    /// The HTTPS listener's port, where `redirect_http` sends clients.
    https_port: Option<u16>,
    /// ACME HTTP-01 answers (`acme` in config.json), checked on plain
    /// HTTP before routing.
    http01: Option<Arc<dyn crate::acme_http01::Http01Answers>>,
    /// Failed key checks per client address: the admin API's and those of
    /// proxied requests presenting a key, counted in one window.
    throttle: Throttle,
    /// `rate_limits` buckets per client address, host and project.
    rate_limiter: RateLimiter,
    /// Trace context for every request; spans for sampled ones.
    tracer: Tracer,
}

impl Proxy {
    /// A proxy serving whatever `table` holds at each request.
    pub fn new(table: Arc<ArcSwap<RouteTable>>) -> Self {
        let defaults = Timeouts::default();
        Self {
            table,
            client: HandlerClient::new(defaults.handler_connect, RequestThreads::default()),
            request_ids: RequestIds::new(),
            max_body: Limits::default().max_body,
            tunnels: Tunnels::new(),
            reserved: None,
            keys: None,
            https_port: None,
            http01: None,
            metrics: Arc::new(Metrics::new(false)),
            access_log: AccessLog::off(),
            throttle: Throttle::default(),
            rate_limiter: RateLimiter::default(),
            tracer: Tracer::propagate_only(),
        }
    }

    /// Samples and exports spans as `tracer` says (by default trace ids
    /// are propagated and nothing is exported).
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Records requests in `metrics` (by default a private registry
    /// nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes one line per request to `log`.
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = log;
        self
    }

    /// The registry requests are recorded in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Applies `limits.max_body` and `timeouts.handler_connect`.
    pub fn with_limits(mut self, limits: &Limits, timeouts: &Timeouts) -> Self {
        self.max_body = limits.max_body;
        self.client = HandlerClient::new(timeouts.handler_connect, self.client.threads());
        self
    }

    /// Splits every handler's pool of idle connections into one list per
    /// request thread of `threads` (see `client`). The proxy's metrics
    /// are split by [`Metrics::with_request_threads`].
    pub fn with_request_threads(mut self, threads: RequestThreads) -> Self {
        self.client = HandlerClient::new(self.client.connect_timeout(), threads);
        self
    }

    pub(crate) fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// The JSON error response for a request Elsinore refuses before
    /// routing it (e.g. over `limits.max_connections`).
    pub(crate) fn refuse<B>(&self, request: &Request<B>, error: ProxyError) -> Response<ProxyBody> {
        let request_id = self
            .request_ids
            .for_request(request.headers().get(X_REQUEST_ID));
        error.into_response(&request_id)
    }

    /// Hands requests to reserved paths on a project's own hosts to
    /// `hook` (the tenant admin API).
    pub fn with_reserved(mut self, hook: Arc<dyn ReservedPaths>) -> Self {
        self.reserved = Some(hook);
        self
    }

    /// Resolves host keys (`X-Hamlet-Host-Key`) with `ring`.
    pub fn with_key_ring(mut self, ring: Arc<KeyRing>) -> Self {
        self.keys = Some(ring);
        self
    }

    /// The port `redirect_http` sends clients to (the HTTPS listener's);
    /// without one, nothing is redirected.
    pub fn with_https_port(mut self, port: Option<u16>) -> Self {
        self.https_port = port;
        self
    }

    /// Answers ACME HTTP-01 validations on plain HTTP from `answers`.
    pub fn with_http01(mut self, answers: Arc<dyn crate::acme_http01::Http01Answers>) -> Self {
        self.http01 = Some(answers);
        self
    }

    /// Whether `ip` is one of `trusted_proxies` (now).
    pub(crate) fn trusts_peer(&self, ip: std::net::IpAddr) -> bool {
        let table = self.table.load();
        let trusted = &table.client_policy.trusted_proxies;
        !trusted.is_empty() && trusted.contains(ip)
    }

    /// Answers one request from a plain-HTTP connection.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        self.handle_on(request, &ConnInfo::plain(peer)).await
    }

    /// Answers one request that came on `conn`; never fails (errors become
    /// JSON responses).
    ///
    /// This and [`Proxy::route`] return `async` blocks instead of being
    /// `async fn`s: one of those keeps its arguments twice (as passed and
    /// as moved into its body), and the request is ~260 bytes copied on
    /// every move.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    pub fn handle_on<'a>(
        &'a self,
        request: Request<Incoming>,
        conn: &'a ConnInfo,
    ) -> impl Future<Output = Response<ProxyBody>> + 'a {
        async move {
            let request_id = self
                .request_ids
                .for_request(request.headers().get(X_REQUEST_ID));
            let trace = self.tracer.context(request.headers());
            let mut access = Access::begin(
                &request,
                conn,
                &request_id,
                &trace,
                &self.tracer,
                self.metrics.clone(),
                self.access_log.thread(conn.shard),
            );
            let routed = self.route(request, conn, &request_id, &trace, &mut access);
            let mut response = match routed.await {
                Ok(response) => response,
                Err(error) => {
                    if error.status().is_server_error() {
                        tracing::warn!(request_id = ?request_id, %error, details = ?error, "request failed");
                    }
                    access.failed(&error);
                    let mut response = error.into_response(&request_id);
                    access.attach(&mut response);
                    return response;
                }
            };
            // A 101 keeps the headers that say what the connection became.
            let upgraded = (response.status() == StatusCode::SWITCHING_PROTOCOLS)
                .then(|| response.headers().get(UPGRADE).cloned())
                .flatten();
            headers::remove_hop_by_hop(response.headers_mut());
            if let Some(protocol) = upgraded {
                upgrade::restore_headers(response.headers_mut(), protocol);
            }
            response
                .headers_mut()
                .insert(X_REQUEST_ID, headers::answered_request_id(request_id));
            rate_limit_headers(&access, response.headers_mut());
            access.attach(&mut response);
            response
        }
    }

    /// Takes a token in each of the project's `rate_limits` scopes, or
    /// refuses with 429.
    fn limit_rate(
        &self,
        project: &ProjectRoute,
        host: &str,
        client: IpAddr,
        access: &mut Access,
    ) -> Result<(), ProxyError> {
        match self.rate_limiter.check(
            &project.rate_limits,
            &project.name,
            host,
            client,
            std::time::Instant::now(),
        ) {
            Ok(passed) => {
                access.quota = passed;
                Ok(())
            }
            Err(limited) => {
                let scope = limited.scope.as_str();
                access.limited = Some(scope);
                let whose = match limited.scope {
                    elsinore_config::RateScope::PerIp => "from this address",
                    elsinore_config::RateScope::PerHost => "to this host",
                    elsinore_config::RateScope::PerProject => "to this project",
                };
                let window = if limited.rate.window.as_secs() == 60 {
                    "minute"
                } else {
                    "second"
                };
                Err(ProxyError::RateLimited {
                    scope,
                    reason: format!(
                        "more than {} requests per {window} (burst {}) {whose} (rate_limits.{scope}); retry in {} s",
                        limited.rate.count, limited.rate.burst, limited.retry_after
                    ),
                    retry_after: limited.retry_after,
                    policy: project.rate_limits.policy(),
                })
            }
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    fn route<'a>(
        &'a self,
        mut request: Request<Incoming>,
        conn: &'a ConnInfo,
        request_id: &'a HeaderValue,
        trace: &'a TraceContext,
        access: &'a mut Access,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
        async move {
            if request.method() == Method::CONNECT {
                return Err(ProxyError::MethodNotAllowed {
                    method: request.method().to_string(),
                });
            }
            // Two Host headers: which one counts would be up to each hop
            // (RFC 9112 §3.2 asks for a 400).
            if request.headers().get_all(HOST).iter().nth(1).is_some() {
                return Err(ProxyError::DuplicateHost);
            }
            // The authority the request names: the URI's for HTTP/2 and
            // absolute-form targets (it takes precedence over Host, RFC 9112
            // §3.2.2), else the Host header. Elsinore routes by it and forwards
            // it as Host, so the two can never disagree.
            let host_from_header = request.uri().authority().is_none();
            let authority = match request.uri().authority() {
                Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
                None => request.headers().get(HOST).cloned(),
            };
            let raw_host = authority
                .as_ref()
                .map_or("", |value| value.to_str().unwrap_or("\u{0}"));
            let host = normalize_request_host(raw_host).map_err(|err| match err {
                HostError::Missing => ProxyError::MissingHost,
                _ => ProxyError::InvalidHost {
                    host: raw_host.to_owned(),
                },
            })?;

            // No domain fronting: on TLS the host must be one the
            // connection's certificate (chosen by SNI) covers.
            if let Some(tls) = &conn.tls {
                if !tls.cert.covers(&host) {
                    return Err(ProxyError::Misdirected {
                        host: host.into_owned(),
                        sni: tls.sni.clone(),
                    });
                }
            }

            // One spelling of the path for every match below (preview,
            // admin API, static files, route prefix) and for the handler:
            // `//admin/api/_keys` and `/admin/api/%5Fkeys` are the admin
            // API, never a handler that normalises them itself. The access
            // log keeps the client's spelling (taken at `Access::begin`).
            if let Some(normal) = normalized(request.uri())? {
                *request.uri_mut() = normal;
            }

            // Elsinore's own ACME validations, before routing: the host
            // may not even route to a project yet.
            if let (None, Some(answers)) = (&conn.tls, &self.http01) {
                if let Some(token) = crate::acme_http01::token(request.uri().path()) {
                    if let Some(response) =
                        crate::acme_http01::respond(answers.as_ref(), token).await
                    {
                        return Ok(response);
                    }
                }
            }

            // One load of the snapshot; the Arc keeps this project alive for
            // the whole request even if the table is swapped meanwhile.
            let (routed, client) = {
                let table = self.table.load();
                if let Some(location) = self.https_redirect(&table, conn, &host, request.uri()) {
                    return Ok(redirect::response(location));
                }
                let client = Client::of(&table.client_policy, conn, &request);
                let per_host = access.wants_host_label();
                let traced = access.span.is_some();
                let (routed, label) =
                    Routed::resolve(&table, &host, request.uri(), per_host || traced)?;
                if let (Some(traced), Some(label)) = (&mut access.span, &label) {
                    traced
                        .span
                        .attribute("elsinore.host_pattern", label.as_str().to_owned());
                }
                access.host_label = label.filter(|_| per_host);
                (routed, client)
            };
            access.set_client(client.ip);
            let (project, via, site) = match routed {
                Routed::Owner(project, site) => (project, Via::Owner, site),
                Routed::Fallback(project) => (project, Via::Fallback, None),
                Routed::Preview(PreviewRoute::AddSlash(location)) => {
                    return Ok(redirect::response(location));
                }
                Routed::Preview(PreviewRoute::Project {
                    project,
                    prefix,
                    path,
                }) => {
                    // The handler sees its own paths; the access log keeps the
                    // client's (taken at `Access::begin`).
                    *request.uri_mut() = Uri::from(path);
                    (project, Via::Preview(prefix), None)
                }
            };
            access.set_host(&host);
            if let Some(traced) = &mut access.span {
                traced
                    .span
                    .attribute("elsinore.project", project.name.clone());
                if let Via::Preview(_) = via {
                    traced.span.set_name("preview");
                }
            }
            access.project = Some(project.clone());
            // Before anything else is done for the project (admin API,
            // static files, handler): a refused request costs a lookup.
            if !project.rate_limits.is_empty() {
                self.limit_rate(&project, &host, client.ip, access)?;
            }
            // Usually the client's value already is the normalised name (lower
            // case, no port): then it is shared, not copied into a new one. A
            // validated DNS name is always a valid header value.
            let host_header = match &authority {
                Some(value) if value.as_bytes() == host.as_bytes() => value.clone(),
                _ => HeaderValue::from_str(&host).map_err(|_| ProxyError::InvalidHost {
                    host: host.clone().into_owned(),
                })?,
            };
            // Reserved paths, answered by Elsinore for the host's project.
            // One spelled with encoded separators is refused: a handler that
            // decodes them would see the admin API's path. Also for a project
            // with `admin_api: "handler"`: whether that path is its admin API
            // would depend on the handler's decoding, so it stays ambiguous.
            if reserved::is_disguised_reserved(request.uri().path()) {
                return Err(ProxyError::BadRequest {
                    reason: "an encoded / or \\ in a path that names the admin API (/admin/api/_keys, /admin/api/_hosts)".to_owned(),
                });
            }
            // `admin_api: "handler"`: the project's handler keeps its own
            // admin API, and these paths go on like any other request.
            if project.admin_api.answered_by_elsinore()
                && reserved::is_reserved(request.uri().path())
            {
                if let Some(reason) = via.reserved_refusal(&host) {
                    return Err(ProxyError::NotFound { reason });
                }
                let Some(hook) = &self.reserved else {
                    return Err(ProxyError::ReservedUnavailable);
                };
                access.reserved = true;
                if let Some(traced) = &mut access.span {
                    traced.span.set_name("admin_api");
                    traced
                        .span
                        .attribute("elsinore.handler", elsinore_metrics::ADMIN_HANDLER);
                }
                let cx = ReservedContext {
                    host: &host,
                    project: &project,
                    table: &self.table,
                    // The client, not a trusted proxy in front of it: the
                    // throttle counts failures per client.
                    client: client.ip,
                    request_id,
                    throttle: &self.throttle,
                };
                // Boxed by the hook (`ReservedFuture`): held in place, its
                // ~2 KB would be part of every request's future, and copied
                // with it, proxied or not.
                return Ok(hook.answer(request, cx).await);
            }
            // The project's own CORS (`cors_origins` on the project): Elsinore
            // answers preflights and decorates the handler's response.
            let cors_origin = match &project.cors {
                Some(policy) => {
                    if let Some(answer) =
                        cors::preflight(policy, request.method(), request.headers())
                    {
                        return answer;
                    }
                    request.headers().get(ORIGIN).cloned()
                }
                None => None,
            };
            // Host keys open only hosts the project declares: not the preview
            // host, not a host answered by default_project.
            let ring = match via {
                Via::Owner => self.keys.as_deref(),
                Via::Fallback | Via::Preview(_) => None,
            };
            let auth = self.authenticate(&request, &host, &project, ring, client.ip)?;
            // The host folder's public/ answers before the handler.
            if let Some(site) = &site {
                if let Some(mut response) = serve_static(site, &request, access).await? {
                    if let Some(cors) = &project.cors {
                        cors.decorate(cors_origin.as_ref(), response.headers_mut());
                    }
                    return Ok(response);
                }
            }
            let handler = project
                .handler_for(request.uri().path())
                .cloned()
                .ok_or_else(|| ProxyError::NoRoute {
                    project: project.name.clone(),
                    path: request.uri().path().to_owned(),
                })?;
            if let Some(traced) = &mut access.span {
                let route = project
                    .route_for(request.uri().path())
                    .unwrap_or("/")
                    .to_owned();
                if !matches!(via, Via::Preview(_)) {
                    traced
                        .span
                        .set_name(format!("{} {route}", request.method()));
                }
                traced.span.attribute("http.route", route);
                traced
                    .span
                    .attribute("elsinore.handler", handler.name().to_owned());
            }
            access.handler = Some(handler.clone());
            // Refused before the handler is contacted: the client (with
            // `Expect: 100-continue`) need not even send the body.
            let max_body = project.max_body.unwrap_or(self.max_body);
            if declared_length(request.headers()).is_some_and(|length| length > max_body) {
                return Err(body_too_large(max_body));
            }
            let queued = access.span.is_some().then(std::time::Instant::now);
            // Wakes a sleeping handler and waits until it is ready; then
            // queued turns rotate across hosts: one tenant's flood does
            // not make another tenant of the project wait behind it.
            let in_flight = handler.enter(&host).await.map_err(|why| match why {
                Refused::Unavailable(why) => unavailable(&handler, why),
                Refused::Busy(why) => busy(&handler, why),
            })?;
            if let (Some(traced), Some(queued)) = (&mut access.span, queued) {
                traced
                    .span
                    .child("queue", queued, std::time::Instant::now());
            }
            // Taken before the headers go: hop-by-hop removal drops Upgrade.
            let upgrade_to = client.upgrade;
            let client_upgrade = upgrade_to
                .is_some()
                .then(|| hyper::upgrade::on(&mut request));
            let has_body = !request.body().is_end_stream();
            let reuse = trust::reuse_after(request.method(), has_body, handler.reuses_after_body());
            let slot = conn.slot.clone();

            // `forward_host = "tenant"`: the handler's Host (and
            // X-Forwarded-Host) is the tenant Elsinore routed by, for
            // frameworks that take their tenant from Host. Made before
            // `host_header` moves into the context.
            let tenant_host = project.forward_host == ForwardHost::Tenant;
            let forwarded_host = if tenant_host {
                Some(host_header.clone())
            } else {
                authority
            };
            let context = Context {
                host: host_header,
                project: project.name_header(),
                project_key: project.key_header(),
                auth: auth.header_value(),
                request_id,
                client_ip: client.ip_header.as_ref().unwrap_or(&conn.peer_ip),
                peer_ip: &conn.peer_ip,
                trusted_peer: client.trusted_peer,
                underscores_in_headers: client.underscores_in_headers,
                proto: if conn.tls.is_some() { "https" } else { "http" },
                port: conn.port.as_ref(),
                forwarded_prefix: via.prefix(),
                tenant_host,
                traceparent: trace.traceparent(),
                tracestate: trace.tracestate.as_ref(),
            };
            let headers = request.headers_mut();
            headers::remove_hop_by_hop(headers);
            let context_headers = headers::set_context(headers, context, forwarded_host.as_ref());
            // Usually the Host header is already the value to forward: the
            // one Host header (two are refused above) named the authority,
            // and `forward_host = "tenant"` did not replace it. Inserting
            // it again would cost a hash and a probe for nothing.
            let host_is_forwarded = host_from_header && !tenant_host;
            if let Some(host) = forwarded_host.filter(|_| !host_is_forwarded) {
                headers.insert(HOST, host);
            }
            if let Some(protocol) = upgrade_to {
                upgrade::restore_headers(headers, protocol);
            } else if !reuse {
                // The handler closes after answering, so whatever it leaves
                // unread of the body is never parsed as a next request.
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            if request.uri().scheme().is_some() || request.uri().authority().is_some() {
                *request.uri_mut() = origin_form(request.uri());
            }
            // Handlers speak HTTP/1.1 whatever the client spoke.
            *request.version_mut() = Version::HTTP_11;

            // Only the wait for response headers is bounded: a streaming body
            // (server-sent events) may legitimately last for hours.
            // Counted as it streams; `progress` also tells a cut body from a
            // failure. A request without a body has neither to tell.
            let progress = (!request.body().is_end_stream()).then(|| access.body_progress());
            let request = request.map(|body| RequestBody::new(body, max_body, progress.clone()));
            let limit = handler.response_timeout();
            let asked = Instant::now();
            let mut connected = None;
            let response = Activity::within(
                conn.activity.as_ref(),
                asked + limit,
                self.client.request(
                    &handler,
                    request,
                    context_headers,
                    conn.shard,
                    &mut connected,
                ),
            )
            .await;
            access.handler_time = Some(asked.elapsed());
            if let Some(traced) = &mut access.span {
                if let Some((began, ended)) = connected {
                    traced.span.child("connect", began, ended);
                }
                let now = std::time::Instant::now();
                traced.span.child("handler", asked.into_std(), now);
            }
            let response = response
                .map_err(|_| ProxyError::HandlerTimeout {
                    handler: label(&handler),
                    waited: limit,
                })?
                .map_err(|err| {
                    // A streamed body went over the limit before the handler
                    // answered: that, not the broken handler exchange, is the
                    // client's answer.
                    if progress.as_deref().is_some_and(BodyProgress::over) {
                        body_too_large(max_body)
                    } else {
                        upstream_error(&handler, &err)
                    }
                })?;
            let mut response = response;
            if let Some(prefix) = via.prefix() {
                preview::restore_prefix(response.headers_mut(), prefix);
            }
            if let Some(cors) = &project.cors {
                cors.decorate(cors_origin.as_ref(), response.headers_mut());
            }
            // The handler agreed to switch: relay its 101 and pipe the two
            // connections once hyper hands them over. Any other answer is an
            // ordinary response.
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let Some(client_upgrade) = client_upgrade else {
                    // Nothing it may switch to was asked for (the client's
                    // Upgrade was not forwarded): relaying the 101 would
                    // hand the client a raw connection to the handler.
                    return Err(ProxyError::HandlerFailed {
                        handler: label(&handler),
                        reason: "the handler switched protocols (101) though no upgrade it may take was asked for (upgrade_protocols)".to_owned(),
                    });
                };
                let handler_upgrade = hyper::upgrade::on(&mut response);
                self.tunnels
                    .spawn(client_upgrade, handler_upgrade, in_flight, slot);
                let (parts, _) = response.into_parts();
                return Ok(Response::from_parts(parts, Either::Right(Full::default())));
            }
            Ok(response.map(|body| Either::Left(HandlerBody::new(body, in_flight))))
        }
    }
}

/// Who answers a request, decided from one table snapshot.
enum Routed {
    /// A project declares the host; its folder's `public/`, if any.
    Owner(Arc<ProjectRoute>, Option<Arc<Site>>),
    /// No project declares it; `default_project` answers.
    Fallback(Arc<ProjectRoute>),
    /// The preview host.
    Preview(PreviewRoute),
}

impl Routed {
    /// Who answers `host`, and with `per_host` its metrics label: the
    /// host as declared (the wildcard, not the name under it), the preview
    /// host, or `_default` (shared, not built per request).
    fn resolve(
        table: &RouteTable,
        host: &str,
        uri: &Uri,
        per_host: bool,
    ) -> Result<(Self, Option<HostLabel>), ProxyError> {
        if let Some(preview) = table.preview.as_ref().filter(|p| p.host() == host) {
            let label = per_host.then(|| HostLabel::Declared(preview.label().clone()));
            return Ok((Self::Preview(preview::route(preview, uri)?), label));
        }
        if let Some(HostRoute {
            project,
            site,
            label,
        }) = table.hosts.lookup(host)
        {
            let label = per_host.then(|| HostLabel::Declared(label.clone()));
            return Ok((Self::Owner(project.clone(), site.clone()), label));
        }
        match &table.default_project {
            Some(project) => Ok((
                Self::Fallback(project.clone()),
                per_host.then_some(HostLabel::Default),
            )),
            None => Err(ProxyError::UnknownHost {
                host: host.to_owned(),
            }),
        }
    }
}

/// How the request reached its project, once routed.
enum Via {
    Owner,
    Fallback,
    /// With the `/projects/<name>` prefix stripped from the path.
    Preview(HeaderValue),
}

impl Via {
    fn prefix(&self) -> Option<&HeaderValue> {
        match self {
            Self::Preview(prefix) => Some(prefix),
            Self::Owner | Self::Fallback => None,
        }
    }

    /// Why the admin API is not served here: it manages the keys of a host
    /// the project declares, and neither of these is one.
    fn reserved_refusal(&self, host: &str) -> Option<String> {
        match self {
            Self::Owner => None,
            Self::Fallback => Some(format!(
                "no project declares {host} (it is answered by default_project); the admin API is served on a project's own hosts"
            )),
            Self::Preview(_) => Some(format!(
                "{host} is the preview host; the admin API is served on a project's own hosts"
            )),
        }
    }
}

impl Proxy {
    /// The caller's level from the keys the request presents. A request
    /// presenting a key is refused (429) while its address is throttled,
    /// and a wrong key counts as a failure in the window the admin API
    /// uses (not a host key Elsinore does not know, for a project whose
    /// handler keeps its own keys: `admin_api: "handler"`); a request
    /// presenting none never touches the throttle.
    fn authenticate<B>(
        &self,
        request: &Request<B>,
        host: &str,
        project: &ProjectRoute,
        ring: Option<&KeyRing>,
        client_ip: IpAddr,
    ) -> Result<AuthLevel, ProxyError> {
        let Some(presented) = auth::Presented::of(request.headers(), request.uri().query()) else {
            return Ok(AuthLevel::None);
        };
        let now = std::time::Instant::now();
        if let Err(retry_after) = self.throttle.check(client_ip, now) {
            return Err(ProxyError::Throttled { retry_after });
        }
        let level = presented.level(host, project, ring);
        if level == AuthLevel::None && presented.failure_counts(project.admin_api) {
            self.throttle.record_failure(client_ip, now);
            tracing::warn!(client = %client_ip, host, project = %project.name, "wrong project or host key presented");
        }
        Ok(level)
    }

    /// Where to send a plain-HTTP request with `redirect_http`: only a host
    /// an HTTPS client would get a valid certificate for, and never an
    /// ACME challenge.
    fn https_redirect(
        &self,
        table: &RouteTable,
        conn: &ConnInfo,
        host: &str,
        uri: &Uri,
    ) -> Option<HeaderValue> {
        let port = self.https_port?;
        if conn.tls.is_some() || !table.redirect_http || !redirect::redirectable(uri.path()) {
            return None;
        }
        if !table.certs.serves(host) {
            return None;
        }
        redirect::location(host, port, uri)
    }
}

/// The answer from the host's `public/` folder, if it has the file:
/// `None` passes the request on to the handler.
async fn serve_static(
    site: &Site,
    request: &Request<Incoming>,
    access: &mut Access,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    match site
        .serve(request.method(), request.uri(), request.headers())
        .await
    {
        Outcome::Pass => Ok(None),
        Outcome::Refused(reason) => Err(ProxyError::NotFound {
            reason: reason.to_owned(),
        }),
        Outcome::Served(response) => {
            access.static_file = true;
            if let Some(traced) = &mut access.span {
                traced.span.set_name("static");
                traced
                    .span
                    .attribute("elsinore.handler", elsinore_metrics::STATIC_HANDLER);
            }
            Ok(Some(response.map(|body| match body {
                StaticBody::Bytes(bytes) => Either::Right(Full::new(bytes)),
                StaticBody::File(file) => Either::Left(HandlerBody::file(file)),
            })))
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi ratelimit-headers
/// draft) on a response of a project with `rate_limits`: its policies, and
/// what the scope closest to running out has left.
fn rate_limit_headers(access: &Access, headers: &mut http::HeaderMap) {
    let (Some(project), Some(passed)) = (&access.project, &access.quota) else {
        return;
    };
    if let Some(policy) = &project.rate_policy {
        headers.insert(crate::error::RATELIMIT_POLICY, policy.clone());
    }
    let value = rate_limit::remaining_header(
        passed.scope.as_str(),
        passed.quota.remaining,
        passed.quota.reset,
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(crate::error::RATELIMIT, value);
    }
}

fn body_too_large(limit: u64) -> ProxyError {
    ProxyError::BodyTooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

fn busy(handler: &HandlerHandle, why: Busy) -> ProxyError {
    let reason = match why {
        Busy::QueueFull {
            max_concurrent,
            queue,
        } => format!(
            "{max_concurrent} requests are running (max_concurrent) and {queue} are queued (queue)"
        ),
        Busy::HostShareFull {
            max_concurrent,
            per_host,
        } => format!(
            "{max_concurrent} requests are running (max_concurrent) and this host has {per_host} queued, its share of the queue"
        ),
        Busy::QueueTimeout { waited } => format!(
            "no turn within {} ms in the queue (queue_timeout)",
            waited.as_millis()
        ),
    };
    ProxyError::HandlerBusy {
        handler: label(handler),
        reason,
    }
}

/// `uri` with its path in the normal form (`elsinore_config::normalize_path`,
/// query untouched), or `None` when it already is: the common case, in
/// which nothing is allocated.
fn normalized(uri: &Uri) -> Result<Option<Uri>, ProxyError> {
    let Cow::Owned(path) = normalize_path(uri.path()) else {
        return Ok(None);
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    // Normalising only decodes unreserved characters and drops segments,
    // so the result is always a valid path; a failure would be a bug,
    // answered 400 rather than routed with the old spelling.
    let invalid = || ProxyError::BadRequest {
        reason: "the request path cannot be normalised".into(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|_| invalid())?);
    Uri::from_parts(parts).map(Some).map_err(|_| invalid())
}

/// `/<path>?<query>`: the (normalised) path and query, in the origin
/// form a request to the handler's own address is written in (the client
/// connects to the handler; the Host header stays the client's).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path_and_query) => Uri::from(path_and_query.clone()),
        None => Uri::from(PathAndQuery::from_static("/")),
    }
}

fn label(handler: &HandlerHandle) -> String {
    format!("{}/{}", handler.project(), handler.name())
}

fn unavailable(handler: &HandlerHandle, why: Unavailable) -> ProxyError {
    let handler = label(handler);
    match why {
        Unavailable::Starting { waited } => ProxyError::HandlerStarting { handler, waited },
        Unavailable::Crashed { reason, retry_in } => ProxyError::HandlerCrashed {
            handler,
            reason,
            retry_in,
        },
        Unavailable::Stopped => ProxyError::HandlerStopped { handler },
    }
}

/// Says in words what went wrong between Elsinore and the handler. The
/// handler's address stays in the log, not in the public response.
fn upstream_error(handler: &HandlerHandle, err: &ClientError) -> ProxyError {
    let name = label(handler);
    let e = match err {
        ClientError::Connect(_) => {
            tracing::warn!(handler = %name, addr = %handler.address(), error = ?err, "cannot connect to handler");
            return ProxyError::HandlerUnreachable {
                handler: name,
                reason: "the handler refused the connection or is not listening".into(),
            };
        }
        ClientError::Http(e) => e,
        ClientError::Exchange(e) => {
            let reason = match e {
                ExchangeError::Closed => {
                    "the handler closed the connection before responding".to_owned()
                }
                ExchangeError::Malformed(what) => {
                    tracing::warn!(handler = %name, problem = what, "handler response refused");
                    "the handler sent a response that is not valid HTTP".to_owned()
                }
                ExchangeError::Io(e) => format!("the handler connection failed: {e}"),
            };
            return ProxyError::HandlerFailed {
                handler: name,
                reason,
            };
        }
    };
    let reason = if e.is_incomplete_message() {
        "the handler closed the connection before responding".to_owned()
    } else if e.is_parse() {
        "the handler sent a response that is not valid HTTP".to_owned()
    } else {
        format!("the handler connection failed: {e}")
    };
    ProxyError::HandlerFailed {
        handler: name,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_rewrites_only_the_path() {
        let cases = [
            ("//admin/api/_keys", "/admin/api/_keys"),
            (
                "/admin/api/%5Fkeys?x=%2f&y=/../",
                "/admin/api/_keys?x=%2f&y=/../",
            ),
            ("http://site.test//docs?x=1", "http://site.test/docs?x=1"),
            ("http://site.test/a/../b", "http://site.test/b"),
        ];
        for (uri, want) in cases {
            let uri: Uri = uri.parse().expect("test uri");
            let normal = normalized(&uri).expect("valid").expect("rewritten");
            assert_eq!(normal.to_string(), want, "{uri}");
        }
        for uri in ["/", "/api/feed?q=//x", "http://site.test/a%20b", "*"] {
            let uri: Uri = uri.parse().expect("test uri");
            assert!(normalized(&uri).expect("valid").is_none(), "{uri}");
        }
    }
}
