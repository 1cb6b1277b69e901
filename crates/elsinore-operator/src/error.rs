//! Every error the operator listener answers, and its status code: one
//! place. Rendered by the proxy's JSON error writer
//! ([`elsinore_proxy::json_error`]), so the operator's errors have the
//! public listeners' shape (`{"error": …, "request_id": …, …details}`,
//! `X-Request-Id`).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use crate::guard::Refusal;
use crate::status_page;

/// The endpoints a 404 lists.
const ENDPOINTS: [&str; 8] = [
    "GET /",
    "GET /metrics",
    "GET /healthz",
    "GET /readyz",
    "GET /routes",
    "POST /reload",
    "GET /events",
    "POST /events/run",
];

/// A request the operator listener does not answer as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorError {
    /// the guard refused it (`Host`, token, `Origin`).
    Refused {
        /// Why.
        refusal: Refusal,
        /// The request's method, which some refusals name.
        method: Method,
    },
    /// An endpoint that exists, with another method.
    WrongMethod {
        /// The method used.
        method: Method,
        /// The endpoint.
        path: String,
    },
    /// No such endpoint.
    NoEndpoint {
        /// The path asked for.
        path: String,
    },
    /// A query parameter out of its range.
    BadRequest(String),
    /// The events thread has stopped (shutdown).
    Unavailable(String),
    /// Elsinore itself failed (encoding the metrics, the events database).
    Internal(String),
}

impl std::fmt::Display for OperatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { refusal, method } => f.write_str(&refusal_text(refusal, method)),
            Self::WrongMethod { method, path } => write!(f, "{method} is not allowed on {path}"),
            Self::NoEndpoint { path } => write!(f, "no operator endpoint {path}"),
            Self::BadRequest(reason) | Self::Unavailable(reason) | Self::Internal(reason) => {
                f.write_str(reason)
            }
        }
    }
}

impl std::error::Error for OperatorError {}

impl OperatorError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Refused { refusal, .. } => match refusal {
                Refusal::TwoHosts => StatusCode::BAD_REQUEST,
                Refusal::NoHost | Refusal::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
                Refusal::NoToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
                Refusal::ForeignOrigin(_) | Refusal::CrossSite => StatusCode::FORBIDDEN,
            },
            Self::WrongMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoEndpoint { .. } => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn details(&self) -> Map<String, Value> {
        let mut details = Map::new();
        if let Self::NoEndpoint { .. } = self {
            details.insert("endpoints".into(), json!(ENDPOINTS));
        }
        details
    }

    /// The response: JSON, except for a browser (`browser`: a GET that
    /// accepts HTML) opening a page without the token, which gets the page
    /// that asks for it (`status_page::TOKEN_PAGE`).
    pub fn into_response(self, request_id: &HeaderValue, browser: bool) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = if status == StatusCode::UNAUTHORIZED && browser {
            let mut page = Response::new(Full::new(Bytes::from_static(
                status_page::TOKEN_PAGE.as_bytes(),
            )));
            *page.status_mut() = status;
            page.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            page.headers_mut()
                .insert(elsinore_proxy::X_REQUEST_ID, request_id.clone());
            page
        } else {
            elsinore_proxy::json_error(status, &self.to_string(), self.details(), request_id)
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"elsinore operator\""),
            );
        }
        response
    }
}

/// What a refusal says: enough for the operator to fix the request, and
/// the config key to change if it should have been let through.
fn refusal_text(refusal: &Refusal, method: &Method) -> String {
    match refusal {
        Refusal::TwoHosts => "the request has more than one Host header".to_owned(),
        Refusal::NoHost => "the request has no Host; the operator listener answers its own address, localhost and the names in config.json \"admin_hosts\"".to_owned(),
        Refusal::ForeignHost(host) => format!("Host {host:?} is not this operator listener: it answers its own address, localhost and the names in config.json \"admin_hosts\" (add the name there to allow it)"),
        Refusal::NoToken => "this operator listener needs Authorization: Bearer <token>, the value of the variable config.json \"admin_token_env\" names".to_owned(),
        Refusal::WrongToken => "the bearer token is not this operator listener's (config.json \"admin_token_env\")".to_owned(),
        Refusal::ForeignOrigin(origin) => format!("{method} from Origin {origin:?} refused: only pages of this operator listener may change anything; scripts send no Origin"),
        Refusal::CrossSite => format!("cross-site {method} refused (Sec-Fetch-Site: cross-site)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: Response<Full<Bytes>>) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn errors_have_the_proxy_shape_with_a_request_id() {
        let id = HeaderValue::from_static("op-1");
        let response = OperatorError::NoEndpoint {
            path: "/nope".into(),
        }
        .into_response(&id, false);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-request-id"], "op-1");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = body_json(response).await;
        assert_eq!(body["error"], "no operator endpoint /nope");
        assert_eq!(body["request_id"], "op-1");
        assert_eq!(body["endpoints"].as_array().map(Vec::len), Some(8));
    }

    #[tokio::test]
    async fn a_missing_token_asks_for_it_in_json_or_as_a_page() {
        let id = HeaderValue::from_static("op-2");
        let refused = OperatorError::Refused {
            refusal: Refusal::NoToken,
            method: Method::GET,
        };
        let json = refused.clone().into_response(&id, false);
        assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            json.headers()["www-authenticate"],
            "Bearer realm=\"elsinore operator\""
        );
        let body = body_json(json).await;
        assert!(body["error"]
            .as_str()
            .is_some_and(|e| e.contains("admin_token_env")));
        let page = refused.into_response(&id, true);
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(page.headers()["x-request-id"], "op-2");
    }
}
