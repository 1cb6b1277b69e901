//! The admin API's endpoints, their request bodies and the checks on what
//! a client sends: which endpoint a method and path name, key ids,
//! hostnames (never a path), and bounded JSON bodies.

use elsinore_config::Hostname;
use elsinore_proxy::ProxyError;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Largest request body accepted (bytes).
pub const MAX_BODY: usize = 16 * 1024;
const KEYS: &str = "/admin/api/_keys";
const HOSTS: &str = "/admin/api/_hosts";

/// The admin API's endpoints.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Endpoint<'a> {
    ListKeys,
    CreateKey,
    RotateKey(i64),
    RevokeKey(i64),
    ListHosts,
    CreateHost,
    DeleteHost(&'a str),
}

impl<'a> Endpoint<'a> {
    pub(crate) fn parse(method: &Method, path: &'a str) -> Result<Self, ProxyError> {
        let wrong = |allow| ProxyError::WrongMethod {
            method: method.to_string(),
            allow,
        };
        let not_found = || ProxyError::NotFound {
            reason: format!("no admin API endpoint {method} {path}"),
        };
        let (base, rest) = if let Some(rest) = path.strip_prefix(KEYS) {
            (KEYS, rest)
        } else if let Some(rest) = path.strip_prefix(HOSTS) {
            (HOSTS, rest)
        } else {
            return Err(not_found());
        };
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        match (base, rest) {
            (KEYS, "") => match *method {
                Method::GET => Ok(Self::ListKeys),
                Method::POST => Ok(Self::CreateKey),
                _ => Err(wrong("GET, POST, OPTIONS")),
            },
            (KEYS, rest) => match rest.split_once('/') {
                None => match *method {
                    Method::DELETE => Ok(Self::RevokeKey(parse_id(rest)?)),
                    _ => Err(wrong("DELETE, OPTIONS")),
                },
                Some((id, "rotate")) => match *method {
                    Method::POST => Ok(Self::RotateKey(parse_id(id)?)),
                    _ => Err(wrong("POST, OPTIONS")),
                },
                Some(_) => Err(not_found()),
            },
            (_, "") => match *method {
                Method::GET => Ok(Self::ListHosts),
                Method::POST => Ok(Self::CreateHost),
                _ => Err(wrong("GET, POST, OPTIONS")),
            },
            (_, name) => match *method {
                Method::DELETE => Ok(Self::DeleteHost(name)),
                _ => Err(wrong("DELETE, OPTIONS")),
            },
        }
    }
}

fn parse_id(text: &str) -> Result<i64, ProxyError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ProxyError::BadRequest {
            reason: format!("a key id is a positive whole number, not {text:?}"),
        })
}

/// A hostname from the API: an exact name (no wildcard, no port), never a
/// path. The text is used as given: `%2e%2e` is not decoded, so it is
/// refused like `..` and `/`.
pub(crate) fn parse_hostname(text: &str) -> Result<Hostname, ProxyError> {
    if text.starts_with("*.") {
        return Err(ProxyError::BadRequest {
            reason: format!("{text:?}: wildcard hosts are declared by the operator (a folder hosts/{text}/), not through the API"),
        });
    }
    Hostname::parse(text).map_err(|err| ProxyError::BadRequest {
        reason: format!(
            "{err}; a hostname is dot-separated labels of letters, digits, '-' and '_'"
        ),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    #[serde(default)]
    pub grace_seconds: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateHostBody {
    pub hostname: Option<String>,
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; an empty body is `{}`.
pub(crate) async fn read_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Incoming,
) -> Result<T, ProxyError> {
    let too_large = ProxyError::BodyTooLarge { limit: MAX_BODY };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large);
    }
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                too_large.clone()
            } else {
                ProxyError::BadRequest {
                    reason: "the request body could not be read".into(),
                }
            }
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|err| ProxyError::BadRequest {
        reason: format!("invalid JSON body: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let parse = |method: Method, path| Endpoint::parse(&method, path);
        assert_eq!(
            parse(Method::GET, "/admin/api/_keys"),
            Ok(Endpoint::ListKeys)
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_keys/"),
            Ok(Endpoint::CreateKey)
        );
        assert_eq!(
            parse(Method::DELETE, "/admin/api/_keys/7"),
            Ok(Endpoint::RevokeKey(7))
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_keys/7/rotate"),
            Ok(Endpoint::RotateKey(7))
        );
        assert_eq!(
            parse(Method::GET, "/admin/api/_hosts"),
            Ok(Endpoint::ListHosts)
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_hosts"),
            Ok(Endpoint::CreateHost)
        );
        assert_eq!(
            parse(Method::DELETE, "/admin/api/_hosts/../etc"),
            Ok(Endpoint::DeleteHost("../etc"))
        );
        assert!(matches!(
            parse(Method::PUT, "/admin/api/_keys"),
            Err(ProxyError::WrongMethod { .. })
        ));
        assert!(matches!(
            parse(Method::DELETE, "/admin/api/_keys/abc"),
            Err(ProxyError::BadRequest { .. })
        ));
        assert!(matches!(
            parse(Method::DELETE, "/admin/api/_keys/0"),
            Err(ProxyError::BadRequest { .. })
        ));
        assert!(matches!(
            parse(Method::POST, "/admin/api/_keys/7/other"),
            Err(ProxyError::NotFound { .. })
        ));
    }

    #[test]
    fn hostnames_cannot_be_paths() {
        assert_eq!(
            parse_hostname("New.Localhost").map(|h| h.to_string()),
            Ok("new.localhost".to_owned())
        );
        for bad in [
            "..",
            "../x",
            "a/b",
            "/etc",
            "%2e%2e",
            "..%2fx",
            "a\\b",
            "*.example.com",
            "blog.localhost:80",
            "",
            ".",
            "a..b",
        ] {
            assert!(
                matches!(parse_hostname(bad), Err(ProxyError::BadRequest { .. })),
                "{bad:?} should be refused"
            );
        }
    }
}
