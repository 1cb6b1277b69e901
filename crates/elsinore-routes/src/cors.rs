//! CORS, the one policy type for every list of allowed browser origins:
//! a project's `cors_origins` (carried by its [`ProjectRoute`](crate::ProjectRoute),
//! answered by the proxy) and the tenant admin API's top-level
//! `cors_origins` (answered by the admin crate with the same type). What
//! differs between the two is data (methods, allowed and exposed headers,
//! credentials), not code. The policy decides which origins are allowed
//! and writes the allow headers; turning a preflight into a response is
//! the proxy's (its `cors` module).

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use http::{HeaderMap, HeaderValue};

/// What a project's handlers may be called with.
const PROJECT_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
/// Browsers may cache a preflight answer this long (seconds).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// Which request headers a preflight answer allows.
#[derive(Debug, Clone)]
pub enum AllowHeaders {
    /// Whatever the preflight asks for (`Access-Control-Request-Headers`):
    /// the origin is trusted, the handler decides.
    Requested,
    /// Exactly these.
    Fixed(HeaderValue),
}

/// Allowed browser origins and what a preflight answer says about them.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Vec<HeaderValue>,
    any: bool,
    credentials: bool,
    methods: HeaderValue,
    allow_headers: AllowHeaders,
    expose_headers: Option<HeaderValue>,
}

impl CorsPolicy {
    /// From validated `cors_origins` entries (`"*"` allows any origin; an
    /// empty list allows none): no credentials, the preflight allows
    /// `methods` and the requested headers, nothing exposed.
    pub fn new(origins: &[String], methods: HeaderValue) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            credentials: false,
            methods,
            allow_headers: AllowHeaders::Requested,
            expose_headers: None,
        }
    }

    /// A project's policy from its `cors_origins` and `cors_credentials`;
    /// `None` when the list is empty (CORS is left to its handlers).
    pub fn for_project(origins: &[String], credentials: bool) -> Option<Self> {
        if origins.is_empty() {
            return None;
        }
        Some(Self::new(origins, PROJECT_METHODS).with_credentials(credentials))
    }

    /// Says `Access-Control-Allow-Credentials: true` to allowed origins.
    pub fn with_credentials(mut self, credentials: bool) -> Self {
        self.credentials = credentials;
        self
    }

    /// The request headers a preflight answer allows.
    pub fn with_allow_headers(mut self, allow: AllowHeaders) -> Self {
        self.allow_headers = allow;
        self
    }

    /// Response headers the page may read (`Access-Control-Expose-Headers`).
    pub fn with_expose_headers(mut self, expose: HeaderValue) -> Self {
        self.expose_headers = Some(expose);
        self
    }

    /// Whether `origin` is on the list (ASCII case-insensitive).
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.any
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// The `Origin` to echo back when it is allowed; `None` when there is
    /// none or it is not allowed.
    pub fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        origin.filter(|origin| self.allows(origin)).cloned()
    }

    /// The headers of a preflight answer to the allowed `origin`;
    /// `requested` is the preflight's `Access-Control-Request-Headers`.
    pub fn add_preflight_headers(
        &self,
        out: &mut HeaderMap,
        origin: HeaderValue,
        requested: Option<&HeaderValue>,
    ) {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        match (&self.allow_headers, requested) {
            (AllowHeaders::Fixed(allowed), _) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
            }
            (AllowHeaders::Requested, Some(asked)) => {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            (AllowHeaders::Requested, None) => {}
        }
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    }

    /// Sets the allow headers on a response to a request from `origin`,
    /// and `Vary: Origin`. The list is authoritative: allow headers already
    /// there (a handler's own) are removed, so a handler that echoes every
    /// origin cannot widen it.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
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
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_are_allowed() {
        let methods = HeaderValue::from_static("GET");
        let cors = CorsPolicy::new(&["https://admin.example.com".into()], methods.clone());
        let listed = HeaderValue::from_static("https://admin.example.com");
        assert_eq!(cors.allowed(Some(&listed)), Some(listed.clone()));
        let shouted = HeaderValue::from_static("HTTPS://ADMIN.EXAMPLE.COM");
        assert_eq!(cors.allowed(Some(&shouted)), Some(shouted));
        for other in [
            "https://evil.example",
            "https://admin.example.com:8443",
            "null",
        ] {
            assert_eq!(
                cors.allowed(Some(&HeaderValue::from_static(other))),
                None,
                "{other}"
            );
        }
        assert_eq!(cors.allowed(None), None);
        let none = CorsPolicy::new(&[], methods.clone());
        assert_eq!(none.allowed(Some(&listed)), None, "none by default");
        let any = CorsPolicy::new(&["*".into()], methods);
        assert_eq!(any.allowed(Some(&listed)), Some(listed));
    }

    #[test]
    fn empty_lists_leave_cors_to_the_handlers() {
        assert!(CorsPolicy::for_project(&[], true).is_none());
    }

    #[test]
    fn preflight_headers_follow_the_policy() {
        let origin = HeaderValue::from_static("https://app.example");
        let asked = HeaderValue::from_static("X-Custom");
        let project =
            CorsPolicy::for_project(&["https://app.example".into()], true).expect("origins");
        let mut out = HeaderMap::new();
        project.add_preflight_headers(&mut out, origin.clone(), Some(&asked));
        assert_eq!(out.get(ACCESS_CONTROL_ALLOW_HEADERS), Some(&asked));
        assert_eq!(
            out.get(ACCESS_CONTROL_ALLOW_METHODS),
            Some(&PROJECT_METHODS)
        );
        assert_eq!(out.get(ACCESS_CONTROL_ALLOW_CREDENTIALS), Some(&TRUE));

        let fixed = HeaderValue::from_static("Authorization");
        let admin = CorsPolicy::new(&["*".into()], HeaderValue::from_static("GET"))
            .with_allow_headers(AllowHeaders::Fixed(fixed.clone()))
            .with_expose_headers(HeaderValue::from_static("X-Request-Id"));
        let mut out = HeaderMap::new();
        admin.add_preflight_headers(&mut out, origin.clone(), Some(&asked));
        assert_eq!(out.get(ACCESS_CONTROL_ALLOW_HEADERS), Some(&fixed));
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let mut response = HeaderMap::new();
        admin.decorate(Some(&origin), &mut response);
        assert_eq!(
            response
                .get(ACCESS_CONTROL_EXPOSE_HEADERS)
                .map(HeaderValue::as_bytes),
            Some(&b"X-Request-Id"[..])
        );
    }

    #[test]
    fn credentials_only_when_configured() {
        let origin = HeaderValue::from_static("https://app.example");
        for credentials in [false, true] {
            let cors = CorsPolicy::for_project(&["https://app.example".into()], credentials)
                .expect("origins");
            let mut headers = HeaderMap::new();
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            cors.decorate(Some(&origin), &mut headers);
            assert_eq!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN), Some(&origin));
            assert_eq!(
                headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS),
                credentials
            );
            assert!(!headers.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS));
        }
    }
}
