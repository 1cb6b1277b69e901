//! The one JSON error writer. Every error Elsinore answers itself, on a
//! public listener ([`crate::ProxyError`]) or on the operator listener,
//! has the same shape: `{"error": …, …details, "request_id": …}` and a
//! newline, `Content-Type: application/json` and `X-Request-Id`, so a
//! script reads one format and a report quotes one id to grep the logs for.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Map, Value};

use crate::headers::{answered_request_id, X_REQUEST_ID};

/// The response for an error: `status`, `error` (a short phrase),
/// `details` (more fields; an `error` or `request_id` among them is
/// overwritten) and `request_id`. Headers other than the content type and
/// the request id are the caller's to add.
pub fn json_error(
    status: StatusCode,
    error: &str,
    details: Map<String, Value>,
    request_id: &HeaderValue,
) -> Response<Full<Bytes>> {
    let mut body = details;
    body.insert("error".into(), json!(error));
    body.insert(
        "request_id".into(),
        json!(request_id.to_str().unwrap_or_default()),
    );
    let mut text = Value::Object(body).to_string();
    text.push('\n');

    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_REQUEST_ID, answered_request_id(request_id.clone()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_and_request_id_in_one_object() {
        let mut details = Map::new();
        details.insert("reason".into(), json!("because"));
        details.insert("request_id".into(), json!("spoofed"));
        let id = HeaderValue::from_static("abc");
        let response = json_error(StatusCode::IM_A_TEAPOT, "teapot", details, &id);
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[X_REQUEST_ID], "abc");
    }
}
