//! CORS for a project's own handlers (a project's `cors_origins` in
//! config.json): Elsinore answers preflights itself and decorates the
//! handler's responses, so every handler of the project gets the same
//! allow-list without implementing it. Projects without `cors_origins` are
//! untouched: their handlers' own CORS headers pass through.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::error::ProxyError;
use crate::ProxyBody;

const ALLOW_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
/// Browsers may cache a preflight answer this long (seconds).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// A project's allowed browser origins.
#[derive(Debug, Clone)]
pub struct ProjectCors {
    origins: Vec<HeaderValue>,
    any: bool,
    credentials: bool,
}

impl ProjectCors {
    /// From validated `cors_origins` (`"*"` allows any origin) and
    /// `cors_credentials`; `None` when the list is empty.
    pub fn new(origins: &[String], credentials: bool) -> Option<Self> {
        if origins.is_empty() {
            return None;
        }
        Some(Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            credentials,
        })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` when the request is not
    /// one and goes to the handler.
    pub(crate) fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Result<Response<ProxyBody>, ProxyError>> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = headers.get(ORIGIN)?;
        if !self.allows(origin) {
            return Some(Err(ProxyError::OriginNotAllowed {
                origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
            }));
        }
        let mut response = Response::new(Either::Right(Full::default()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        // Whatever headers the page wants to send (the project's own, the
        // Hamlet key headers): the origin is trusted, the handler decides.
        if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        for varies in [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers",
        ] {
            out.append(VARY, HeaderValue::from_static(varies));
        }
        Some(Ok(response))
    }

    /// Sets the allow headers on a handler's response to a request from
    /// `origin`. The list is authoritative: a handler's own
    /// `Access-Control-Allow-Origin` / `-Credentials` are removed, so a
    /// handler that echoes every origin cannot widen it.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.remove(ACCESS_CONTROL_ALLOW_ORIGIN);
        headers.remove(ACCESS_CONTROL_ALLOW_CREDENTIALS);
        headers.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|origin| self.allows(origin)) else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preflight_from(origin: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_static(origin));
        headers.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("PUT"),
        );
        headers
    }

    #[test]
    fn empty_lists_leave_cors_to_the_handlers() {
        assert!(ProjectCors::new(&[], true).is_none());
    }

    #[test]
    fn only_preflights_are_answered() {
        let cors = ProjectCors::new(&["https://app.example".into()], false).expect("origins");
        let mut plain = preflight_from("https://app.example");
        assert!(cors.preflight(&Method::GET, &plain).is_none());
        plain.remove(ACCESS_CONTROL_REQUEST_METHOD);
        assert!(cors.preflight(&Method::OPTIONS, &plain).is_none());
    }

    #[test]
    fn credentials_only_when_configured() {
        let origin = HeaderValue::from_static("https://app.example");
        for credentials in [false, true] {
            let cors =
                ProjectCors::new(&["https://app.example".into()], credentials).expect("origins");
            let mut headers = HeaderMap::new();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            cors.decorate(Some(&origin), &mut headers);
            assert_eq!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN), Some(&origin));
            assert_eq!(
                headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS),
                credentials
            );
        }
    }

    #[test]
    fn other_origins_get_no_allow_headers_even_from_the_handler() {
        let cors = ProjectCors::new(&["https://app.example".into()], true).expect("origins");
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        cors.decorate(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut headers,
        );
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(matches!(
            cors.preflight(&Method::OPTIONS, &preflight_from("https://evil.example")),
            Some(Err(ProxyError::OriginNotAllowed { .. }))
        ));
    }
}
