//! ACME HTTP-01 answers on the plain listener: `GET
//! /.well-known/acme-challenge/<token>` for a token Elsinore's own ACME
//! client is being validated with, answered before any routing. Other
//! tokens fall through to the host's project (which may run its own ACME
//! client).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ProxyBody;

/// The path prefix of HTTP-01 validation requests (RFC 8555 section 8.3).
pub(crate) const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// A key authorization being looked up ([`Http01Answers::stored_answer`]).
pub type StoredAnswer = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// The key authorizations of pending HTTP-01 challenges, by token.
pub trait Http01Answers: Send + Sync + fmt::Debug + 'static {
    /// The key authorization for `token`, while its challenge is pending.
    fn answer(&self, token: &str) -> Option<String>;

    /// [`Self::answer`] found none: where else one may be kept (ACME
    /// across a fleet: the state database, which a validation can reach
    /// this front door before its own copy does). `None` when there is
    /// nowhere else to look.
    fn stored_answer(&self, token: &str) -> Option<StoredAnswer> {
        let _ = token;
        None
    }
}

/// The token of a validation request for `path`, if it is one.
pub(crate) fn token(path: &str) -> Option<&str> {
    path.strip_prefix(ACME_CHALLENGE)
}

/// The response to a validation request for `token`, if it is one of
/// `answers`' tokens.
pub(crate) async fn respond(
    answers: &dyn Http01Answers,
    token: &str,
) -> Option<Response<ProxyBody>> {
    let body = match answers.answer(token) {
        Some(body) => body,
        // Only what can be an ACME token (RFC 8555 section 8.3: base64url,
        // at least 128 bits) is looked for elsewhere.
        None if is_token(token) => answers.stored_answer(token)?.await?,
        None => return None,
    };
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

/// Whether `token` can be an ACME challenge token: 22 to 128 base64url
/// characters (128 bits at least; CAs use 32 bytes, 43 characters).
fn is_token(token: &str) -> bool {
    (22..=128).contains(&token.len())
        && token
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_can_be_a_token_is_looked_up() {
        assert!(is_token("wWx5-K0RY-uWZZrGYepTusAacmndz49y9i3SxJAC6Wg"));
        assert!(!is_token("short"));
        assert!(!is_token("../../etc/passwd-and-more-padding-here"));
        assert!(!is_token(&"a".repeat(129)));
    }
}
