//! ACME HTTP-01 answers on the plain listener: `GET
//! /.well-known/acme-challenge/<token>` for a token Elsinore's own ACME
//! client is being validated with, answered before any routing. Other
//! tokens fall through to the host's project (which may run its own ACME
//! client).

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ProxyBody;

/// The path prefix of HTTP-01 validation requests (RFC 8555 section 8.3).
pub(crate) const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The key authorizations of pending HTTP-01 challenges, by token.
pub trait Http01Answers: Send + Sync + fmt::Debug + 'static {
    /// The key authorization for `token`, while its challenge is pending.
    fn answer(&self, token: &str) -> Option<String>;
}

/// The response to a validation request for `path`, if it is one of
/// `answers`' tokens.
pub(crate) fn respond(answers: &dyn Http01Answers, path: &str) -> Option<Response<ProxyBody>> {
    let token = path.strip_prefix(ACME_CHALLENGE)?;
    let body = answers.answer(token)?;
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.clone()))));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Some(response)
}
