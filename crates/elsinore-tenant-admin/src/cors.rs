//! The admin API's CORS policy (config.json's top-level `cors_origins`):
//! the one [`CorsPolicy`] type (crate `elsinore-routes`), with what the admin API allows.

use elsinore_routes::{AllowHeaders, CorsPolicy};
use http::header::VARY;
use http::{HeaderMap, HeaderValue};

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "Authorization, Content-Type, X-Hamlet-Project-Key, X-Hamlet-Host-Key, X-Request-Id",
);
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("Retry-After, X-Request-Id");

/// The admin API's policy for the validated `cors_origins` (`"*"` allows
/// any origin, an empty list none): its methods and key headers, no
/// credentials (keys travel in headers, never cookies).
pub(crate) fn policy(origins: &[String]) -> CorsPolicy {
    CorsPolicy::new(origins, ALLOW_METHODS)
        .with_allow_headers(AllowHeaders::Fixed(ALLOW_HEADERS))
        .with_expose_headers(EXPOSE_HEADERS)
}

/// Every admin response depends on `Origin`, so caches must key on it
/// (responses other than preflights get it from [`CorsPolicy::decorate`]).
pub(crate) fn add_vary(headers: &mut HeaderMap) {
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    };

    #[test]
    fn listed_origins_get_the_admin_headers() {
        let cors = policy(&["https://admin.example.com".into()]);
        let listed = HeaderValue::from_static("https://admin.example.com");
        let mut response = HeaderMap::new();
        cors.decorate(Some(&listed), &mut response);
        assert_eq!(response.get(ACCESS_CONTROL_ALLOW_ORIGIN), Some(&listed));
        assert_eq!(
            response.get(ACCESS_CONTROL_EXPOSE_HEADERS),
            Some(&EXPOSE_HEADERS)
        );
        assert_eq!(
            response.get(VARY).map(HeaderValue::as_bytes),
            Some(&b"Origin"[..])
        );

        let mut preflight = HeaderMap::new();
        let asked = HeaderValue::from_static("X-Other");
        cors.add_preflight_headers(&mut preflight, listed, Some(&asked));
        assert_eq!(
            preflight.get(ACCESS_CONTROL_ALLOW_HEADERS),
            Some(&ALLOW_HEADERS),
            "the admin API's list, not what was asked"
        );

        let mut other = HeaderMap::new();
        let evil = HeaderValue::from_static("https://evil.example");
        cors.decorate(Some(&evil), &mut other);
        assert!(!other.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(
            policy(&[]).allowed(Some(&evil)).is_none(),
            "none by default"
        );
    }
}
