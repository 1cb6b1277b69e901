//! `redirect_http`: plain-HTTP requests for a host served over HTTPS are
//! sent there with a 308 (method and body are kept).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, LOCATION};
use http::{HeaderValue, Response, StatusCode, Uri};
use http_body_util::{Either, Full};

use crate::ProxyBody;

/// Kept on plain HTTP: ACME HTTP-01 challenges must be answered there.
use crate::acme_http01::ACME_CHALLENGE;

/// Whether a request for `path` may be redirected at all.
pub(crate) fn redirectable(path: &str) -> bool {
    !path.starts_with(ACME_CHALLENGE)
}

/// `https://<host>[:port]<path and query>`; the port is left out when it
/// is 443. The path is the normal one (`Proxy::route` normalises it
/// before anything is matched), so it starts with exactly one `/`. `None` if that is not a valid header (it always is for a
/// validated host).
pub(crate) fn location(host: &str, https_port: u16, uri: &Uri) -> Option<HeaderValue> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = if https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{https_port}{target}")
    };
    HeaderValue::from_str(&url).ok()
}

/// The 308 itself, empty-bodied.
pub(crate) fn response(location: HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_path_and_query_and_drops_port_443() {
        let uri: Uri = "/a/b?x=1&y=%20".parse().expect("uri");
        assert_eq!(
            location("blog.test", 8443, &uri).expect("location"),
            "https://blog.test:8443/a/b?x=1&y=%20"
        );
        assert_eq!(
            location("blog.test", 443, &uri).expect("location"),
            "https://blog.test/a/b?x=1&y=%20"
        );
        let bare: Uri = "http://blog.test".parse().expect("uri");
        assert_eq!(
            location("blog.test", 443, &bare).expect("location"),
            "https://blog.test/"
        );
    }

    #[test]
    fn acme_challenges_stay_on_http() {
        assert!(!redirectable("/.well-known/acme-challenge/token"));
        assert!(redirectable("/.well-known/other"));
        assert!(redirectable("/"));
    }
}
