//! CORS for the admin API: which browser origins may call it (config.json
//! `cors_origins`), and the headers that say so.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use http::{HeaderMap, HeaderValue};

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Authorization, Content-Type, X-Hamlet-Project-Key, X-Hamlet-Host-Key, X-Request-Id",
);
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("Retry-After, X-Request-Id");
/// Browsers may cache a preflight answer this long (seconds).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    origins: Vec<HeaderValue>,
    any: bool,
}

impl Cors {
    /// From validated `cors_origins` entries (`"*"` allows any origin).
    pub(crate) fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        }
    }

    /// The `Origin` to echo back when it is allowed; `None` when the request
    /// has no `Origin` or it is not allowed.
    pub(crate) fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        let allowed = self.any
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
        allowed.then(|| origin.clone())
    }

    /// Headers for a response to an allowed origin.
    pub(crate) fn add_headers(headers: &mut HeaderMap, origin: HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    }

    /// Headers for a preflight answer to an allowed origin.
    pub(crate) fn add_preflight_headers(headers: &mut HeaderMap, origin: HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        headers.insert(ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    }

    /// Every admin response depends on `Origin`, so caches must key on it.
    pub(crate) fn add_vary(headers: &mut HeaderMap) {
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_are_allowed() {
        let cors = Cors::new(&["https://admin.example.com".into()]);
        let listed = HeaderValue::from_static("https://admin.example.com");
        assert_eq!(cors.allow(Some(&listed)), Some(listed.clone()));
        for other in [
            "https://evil.example",
            "https://admin.example.com:8443",
            "null",
        ] {
            assert_eq!(
                cors.allow(Some(&HeaderValue::from_static(other))),
                None,
                "{other}"
            );
        }
        assert_eq!(cors.allow(None), None);
        assert_eq!(
            Cors::default().allow(Some(&listed)),
            None,
            "none by default"
        );
        let any = Cors::new(&["*".into()]);
        assert_eq!(any.allow(Some(&listed)), Some(listed));
    }
}
