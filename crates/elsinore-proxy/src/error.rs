//! Every error Elsinore answers itself on a public listener, and its
//! status code: one place. The JSON shape (`{"error": …, "request_id": …,
//! …details}`) is `json_error`'s, shared with the operator listener.

use std::time::Duration;

use http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Either;
use serde_json::{json, Map, Value};

use crate::json_error::json_error;

/// `RateLimit-Policy` (IETF httpapi ratelimit-headers draft).
pub(crate) const RATELIMIT_POLICY: http::HeaderName =
    http::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (same draft): what is left in the tightest scope.
pub(crate) const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
use crate::ProxyBody;

/// A request Elsinore answers without (or instead of) a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No `Host` header and no authority.
    #[error("missing host")]
    MissingHost,
    /// More than one `Host` header (RFC 9112 §3.2: a server must answer
    /// 400): which one counts would be up to each hop.
    #[error("duplicate host")]
    DuplicateHost,
    /// `Host` is not a DNS name.
    #[error("invalid host")]
    InvalidHost {
        /// What the client sent.
        host: String,
    },
    /// HTTPS: the host is not covered by the certificate the connection
    /// was opened with (its SNI chose another tenant's certificate).
    #[error("misdirected request")]
    Misdirected {
        /// The normalised host.
        host: String,
        /// The server name the connection was opened for.
        sni: Option<String>,
    },
    /// No project declares this host.
    #[error("unknown host")]
    UnknownHost {
        /// The normalised host.
        host: String,
    },
    /// `preview_host`: `/projects/<name>/` names no project.
    #[error("unknown project")]
    UnknownProject {
        /// The name in the path.
        project: String,
    },
    /// The project has no handler whose routes match the path.
    #[error("no handler for this path")]
    NoRoute {
        /// The project.
        project: String,
        /// The request path.
        path: String,
    },
    /// The handler did not become ready within its start timeout.
    #[error("handler is starting")]
    HandlerStarting {
        /// `project/handler`.
        handler: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// The handler exited and is waiting to be restarted.
    #[error("handler crashed")]
    HandlerCrashed {
        /// `project/handler`.
        handler: String,
        /// Exit status or spawn error.
        reason: String,
        /// Until the next start.
        retry_in: Duration,
    },
    /// The handler was stopped (shutdown or removal).
    #[error("handler stopped")]
    HandlerStopped {
        /// `project/handler`.
        handler: String,
    },
    /// Connecting to the handler failed.
    #[error("handler unreachable")]
    HandlerUnreachable {
        /// `project/handler`.
        handler: String,
        /// Why, in words.
        reason: String,
    },
    /// The handler accepted the request but sent no response headers in time.
    #[error("handler timed out")]
    HandlerTimeout {
        /// `project/handler`.
        handler: String,
        /// How long Elsinore waited.
        waited: Duration,
    },
    /// `CONNECT`: Elsinore is a reverse proxy, not a tunnel.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The method.
        method: String,
    },
    /// The handler broke the connection or answered garbage.
    #[error("handler failed")]
    HandlerFailed {
        /// `project/handler`.
        handler: String,
        /// Why, in words.
        reason: String,
    },
    /// Admin API: no valid project key.
    #[error("unauthorized")]
    Unauthorized {
        /// Why, in words.
        reason: String,
    },
    /// Admin API: a valid credential that does not open this (another
    /// project's key, a host key).
    #[error("forbidden")]
    Forbidden {
        /// Why, in words.
        reason: String,
    },
    /// Admin API: too many failed attempts from this client address.
    #[error("too many failed attempts")]
    Throttled {
        /// Seconds until attempts are accepted again.
        retry_after: u64,
    },
    /// Admin API: the request is malformed.
    #[error("bad request")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// Admin API: no such key, host folder or endpoint.
    #[error("not found")]
    NotFound {
        /// What was not found.
        reason: String,
    },
    /// Admin API: the endpoint exists but not with this method.
    #[error("method not allowed")]
    WrongMethod {
        /// The method used.
        method: String,
        /// The methods the endpoint takes (`Allow`).
        allow: &'static str,
    },
    /// Admin API: the request conflicts with what exists.
    #[error("conflict")]
    Conflict {
        /// Why, in words.
        reason: String,
        /// What is in the way (e.g. the files in a host folder).
        entries: Vec<String>,
    },
    /// The request body is larger than accepted: the project's `max_body`
    /// (declared or streamed), or the admin API's own limit.
    #[error("request body too large")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Admin API: a CORS preflight from an origin not in `cors_origins`.
    #[error("origin not allowed")]
    OriginNotAllowed {
        /// The `Origin` sent.
        origin: String,
    },
    /// Admin API: Elsinore itself failed (the key database); the details
    /// are in its log, not in the response.
    #[error("internal error")]
    Internal {
        /// What failed, in words safe to show.
        reason: String,
    },
    /// Admin API: the PostgreSQL state database cannot be reached, so a
    /// key or host change cannot be stored; requests are still served with
    /// the keys this front door holds.
    #[error("state database unavailable")]
    StateUnavailable {
        /// What failed, in words safe to show.
        reason: String,
    },
    /// A reserved path (the tenant admin API) with no hook set up in this
    /// process to answer it.
    #[error("admin API unavailable")]
    ReservedUnavailable,
    /// The handler runs `max_concurrent` requests and its queue is full, or
    /// the request waited in the queue for `queue_timeout`.
    #[error("handler busy")]
    HandlerBusy {
        /// `project/handler`.
        handler: String,
        /// Why, in words.
        reason: String,
    },
    /// A `rate_limits` scope of the project has no token left for this
    /// request.
    #[error("rate limited")]
    RateLimited {
        /// `per_ip`, `per_host` or `per_project`.
        scope: &'static str,
        /// Why, in words.
        reason: String,
        /// Seconds until a token is back, at least 1.
        retry_after: u64,
        /// The project's `RateLimit-Policy` header value.
        policy: String,
    },
    /// `limits.max_connections` client connections are open.
    #[error("too many connections")]
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// `limits.max_connections_per_ip` connections from this client
    /// address are open.
    #[error("too many connections")]
    TooManyConnectionsFromAddress {
        /// The limit.
        limit: usize,
    },
}

impl ProxyError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingHost
            | Self::DuplicateHost
            | Self::InvalidHost { .. }
            | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownHost { .. }
            | Self::UnknownProject { .. }
            | Self::NoRoute { .. }
            | Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } | Self::WrongMethod { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Throttled { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ReservedUnavailable
            | Self::StateUnavailable { .. }
            | Self::HandlerBusy { .. }
            | Self::TooManyConnections { .. }
            | Self::TooManyConnectionsFromAddress { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::HandlerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::HandlerStarting { .. } | Self::HandlerStopped { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::HandlerCrashed { .. }
            | Self::HandlerUnreachable { .. }
            | Self::HandlerFailed { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// Seconds a client should wait before retrying, when that is known.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::HandlerStarting { .. }
            | Self::HandlerStopped { .. }
            | Self::HandlerBusy { .. }
            | Self::TooManyConnections { .. }
            | Self::TooManyConnectionsFromAddress { .. } => Some(1),
            Self::StateUnavailable { .. } => Some(5),
            Self::HandlerCrashed { retry_in, .. } => {
                Some(retry_in.as_secs_f64().ceil().max(1.0) as u64)
            }
            Self::Throttled { retry_after } | Self::RateLimited { retry_after, .. } => {
                Some((*retry_after).max(1))
            }
            _ => None,
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        let mut put = |key: &str, value: Value| {
            details.insert(key.to_owned(), value);
        };
        match self {
            Self::MissingHost | Self::ReservedUnavailable => {}
            Self::DuplicateHost => put(
                "reason",
                json!("the request has more than one Host header; send exactly one"),
            ),
            Self::Unauthorized { reason }
            | Self::Forbidden { reason }
            | Self::BadRequest { reason }
            | Self::NotFound { reason }
            | Self::Internal { reason }
            | Self::StateUnavailable { reason } => put("reason", json!(reason)),
            Self::Throttled { retry_after } => put(
                "reason",
                json!(format!(
                    "too many failed key checks from this address; retry in {retry_after} s"
                )),
            ),
            Self::RateLimited { scope, reason, .. } => {
                put("scope", json!(scope));
                put("reason", json!(reason));
            }
            Self::WrongMethod { method, allow } => {
                put("method", json!(method));
                put("allow", json!(allow));
            }
            Self::Conflict { reason, entries } => {
                put("reason", json!(reason));
                if !entries.is_empty() {
                    put("entries", json!(entries));
                }
            }
            Self::BodyTooLarge { limit } => {
                put("reason", json!(format!("at most {limit} bytes")));
            }
            Self::OriginNotAllowed { origin } => {
                put("origin", json!(origin));
                put(
                    "reason",
                    json!("this origin is not in cors_origins in config.json"),
                );
            }
            Self::InvalidHost { host } | Self::UnknownHost { host } => put("host", json!(host)),
            Self::Misdirected { host, sni } => {
                put("host", json!(host));
                put("sni", json!(sni));
                put(
                    "reason",
                    json!(format!(
                        "this connection's certificate does not cover {host}; open a new connection with {host} as the TLS server name"
                    )),
                );
            }
            Self::UnknownProject { project } => put("project", json!(project)),
            Self::NoRoute { project, path } => {
                put("project", json!(project));
                put("path", json!(path));
            }
            Self::HandlerStarting { handler, waited } => {
                put("handler", json!(handler));
                put(
                    "reason",
                    json!(format!("not ready after waiting {} ms", waited.as_millis())),
                );
            }
            Self::HandlerStopped { handler } => put("handler", json!(handler)),
            Self::TooManyConnections { limit } => put(
                "reason",
                json!(format!(
                    "{limit} connections are open (limits.max_connections); retry shortly"
                )),
            ),
            Self::TooManyConnectionsFromAddress { limit } => put(
                "reason",
                json!(format!(
                    "{limit} connections from this address are open (limits.max_connections_per_ip); close some or retry shortly"
                )),
            ),
            Self::HandlerTimeout { handler, waited } => {
                put("handler", json!(handler));
                put(
                    "reason",
                    json!(format!("no response within {} ms", waited.as_millis())),
                );
            }
            Self::MethodNotAllowed { method } => put("method", json!(method)),
            Self::HandlerCrashed {
                handler, reason, ..
            }
            | Self::HandlerUnreachable { handler, reason }
            | Self::HandlerBusy { handler, reason }
            | Self::HandlerFailed { handler, reason } => {
                put("handler", json!(handler));
                put("reason", json!(reason));
            }
        }
        details
    }

    /// The JSON response for this error (written by [`json_error`]).
    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let mut response = json_error(self.status(), &self.to_string(), self.details(), request_id)
            .map(Either::Right);
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        match self {
            Self::Unauthorized { .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"elsinore\""),
                );
            }
            Self::WrongMethod { allow, .. } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::RateLimited {
                scope,
                retry_after,
                policy,
                ..
            } => {
                // Made of scope names and numbers: always header text.
                if let Ok(value) = HeaderValue::from_str(&policy) {
                    headers.insert(RATELIMIT_POLICY, value);
                }
                if let Ok(value) = HeaderValue::from_str(&crate::rate_limit::remaining_header(
                    scope,
                    0,
                    retry_after.max(1),
                )) {
                    headers.insert(RATELIMIT, value);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::X_REQUEST_ID;
    use http::header::CONTENT_TYPE;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<ProxyBody>) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn unknown_host_shape() {
        let id = HeaderValue::from_static("abc");
        let response = ProxyError::UnknownHost {
            host: "nope.localhost".into(),
        }
        .into_response(&id);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[X_REQUEST_ID], "abc");
        assert_eq!(
            body_json(response).await,
            json!({"error": "unknown host", "host": "nope.localhost", "request_id": "abc"})
        );
    }

    #[tokio::test]
    async fn crashed_handler_gives_502_with_reason_and_retry_after() {
        let id = HeaderValue::from_static("abc");
        let error = ProxyError::HandlerCrashed {
            handler: "horatio/web".into(),
            reason: "exited unexpectedly (exit status: 3)".into(),
            retry_in: Duration::from_millis(200),
        };
        let response = error.into_response(&id);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let body = body_json(response).await;
        assert_eq!(body["handler"], "horatio/web");
        assert_eq!(body["reason"], "exited unexpectedly (exit status: 3)");
    }
}
