//! The operator listener as the server machinery sees it: [`start`] and
//! [`serve`] put the operator's endpoints behind the proxy's accept loop
//! ([`elsinore_proxy::serve_with`]), with the same limits, timeouts and
//! drain as the public listeners; every request passes the guard first
//! and every answer carries an `X-Request-Id`.

use std::future::Future;
use std::sync::Arc;

use elsinore_proxy::{
    ConnInfo, ListenerService, ProxyBody, ProxyError, RequestIds, ServeSettings, X_REQUEST_ID,
};
use http::{header, Method, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::endpoints::Operator;
use crate::error::OperatorError;
use crate::status_page;

/// Where the operator's own log lines go: the target they had when this
/// was the binary's `operator` module, so filters written for it still
/// select them.
const LOG_TARGET: &str = "elsinore::operator";

/// Starts serving `listener` (see [`serve`]) and logs where; warns when
/// it is reachable off loopback without `has_token`. The task ends once
/// the listener has drained after `shutdown`. Fails only when the
/// listener has no local address.
pub fn start(
    listener: TcpListener,
    operator: Operator,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ServeSettings,
    has_token: bool,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, operator, shutdown, settings));
    if !addr.ip().is_loopback() && !has_token {
        tracing::warn!(target: LOG_TARGET, "the operator listener on {addr} has no token; set admin_token_env, or keep it on loopback or a trusted network");
    }
    // Tests and scripts wait for this exact line too.
    tracing::info!(target: LOG_TARGET, "operator API on http://{addr}");
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

/// A browser navigating (a GET that accepts HTML), not a script.
fn wants_html<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// Stops the rate sampler when the listener stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
