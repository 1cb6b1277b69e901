//! A project's CORS preflight, answered by Elsinore itself: every handler
//! of the project gets the same allow-list (its [`CorsPolicy`], carried
//! by the route table) without implementing it, and its responses are
//! decorated with [`CorsPolicy::decorate`]. Projects without
//! `cors_origins` are untouched: their handlers' own CORS headers pass
//! through.

use elsinore_routes::CorsPolicy;
use http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::error::ProxyError;
use crate::ProxyBody;

/// A project's answer to a CORS preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), or `None` when the request is not
/// one and goes to the handler.
pub(crate) fn preflight(
    policy: &CorsPolicy,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Result<Response<ProxyBody>, ProxyError>> {
    if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = headers.get(ORIGIN)?;
    if !policy.allows(origin) {
        return Some(Err(ProxyError::OriginNotAllowed {
            origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
        }));
    }
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    policy.add_preflight_headers(
        out,
        origin.clone(),
        headers.get(ACCESS_CONTROL_REQUEST_HEADERS),
    );
    for varies in [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ] {
        out.append(VARY, HeaderValue::from_static(varies));
    }
    Some(Ok(response))
}

#[cfg(test)]
mod tests {
    use http::header::{ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN};

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
    fn only_preflights_are_answered() {
        let cors =
            CorsPolicy::for_project(&["https://app.example".into()], false).expect("origins");
        let mut plain = preflight_from("https://app.example");
        assert!(preflight(&cors, &Method::GET, &plain).is_none());
        plain.remove(ACCESS_CONTROL_REQUEST_METHOD);
        assert!(preflight(&cors, &Method::OPTIONS, &plain).is_none());
    }

    #[test]
    fn other_origins_get_no_allow_headers_even_from_the_handler() {
        let cors = CorsPolicy::for_project(&["https://app.example".into()], true).expect("origins");
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        cors.decorate(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut headers,
        );
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(matches!(
            preflight(
                &cors,
                &Method::OPTIONS,
                &preflight_from("https://evil.example")
            ),
            Some(Err(ProxyError::OriginNotAllowed { .. }))
        ));
    }
}
