//! Who is calling: the `X-Elsinore-Auth` level of a request, resolved from
//! the client's `X-Hamlet-Project-Key` / `X-Hamlet-Host-Key` without I/O.

use std::borrow::Cow;

use elsinore_keys::{now_ms, KeyHash, KeyRing};
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

use crate::ProjectRoute;

/// The project key, as Hamlet clients send it.
pub(crate) const X_HAMLET_PROJECT_KEY: HeaderName = HeaderName::from_static("x-hamlet-project-key");
/// A per-host admin key, as Hamlet clients send it.
pub(crate) const X_HAMLET_HOST_KEY: HeaderName = HeaderName::from_static("x-hamlet-host-key");
/// Hamlet's admin UI may send the project key in the query string.
const PROJECT_KEY_PARAM: &str = "project_key";

/// The caller's level, as told to handlers in `X-Elsinore-Auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// No key, or none that opens this host.
    None,
    /// A live host key of exactly this host.
    HostAdmin,
    /// The key of the project owning this host.
    ProjectAdmin,
}

impl AuthLevel {
    /// `none`, `hostAdmin` or `projectAdmin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::HostAdmin => "hostAdmin",
            Self::ProjectAdmin => "projectAdmin",
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// The level of a request for `host`, owned by `project`: the project key
/// (header, else `?project_key=`) of *this* project gives `projectAdmin`;
/// else a host key accepted by `ring` for exactly this host and project
/// gives `hostAdmin`; anything else `none`.
pub(crate) fn resolve(
    headers: &HeaderMap,
    query: Option<&str>,
    host: &str,
    project: &ProjectRoute,
    ring: Option<&KeyRing>,
) -> AuthLevel {
    // Only a project with a key looks for one (a header lookup and a
    // query scan saved on every request to the others).
    if let Some(expected) = &project.key_hash {
        if let Some(presented) = project_key(headers, query) {
            if KeyHash::of(&presented).ct_eq(expected) {
                return AuthLevel::ProjectAdmin;
            }
        }
    }
    if let (Some(ring), Some(key)) = (ring, header_str(headers, &X_HAMLET_HOST_KEY)) {
        if ring.opens(host, &project.name, key, now_ms()) {
            return AuthLevel::HostAdmin;
        }
    }
    AuthLevel::None
}

/// The project key the client sent: `X-Hamlet-Project-Key`, else the
/// `project_key` query parameter.
pub(crate) fn project_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    match header_str(headers, &X_HAMLET_PROJECT_KEY) {
        Some(key) => Some(Cow::Borrowed(key)),
        None => query_key(query),
    }
}

/// The `project_key` query parameter, percent-decoded.
pub(crate) fn query_key(query: Option<&str>) -> Option<Cow<'_, str>> {
    // Cheap test first: most requests carry no such parameter.
    let query = query.filter(|q| q.contains(PROJECT_KEY_PARAM))?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == PROJECT_KEY_PARAM)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, &AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first value of `name`, if it is visible ASCII and not empty.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn project(name: &str, key: Option<&str>) -> ProjectRoute {
        ProjectRoute::new(name, PathBuf::from("/p"), key, Vec::new()).expect("route")
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                (*name).clone(),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn project_key_of_this_project_only() {
        let horatio = project("horatio", Some("horatio-key"));
        let keyless = project("keyless", None);
        let cases = [
            (
                &horatio,
                headers(&[(&X_HAMLET_PROJECT_KEY, "horatio-key")]),
                None,
                AuthLevel::ProjectAdmin,
            ),
            (
                &horatio,
                headers(&[(&X_HAMLET_PROJECT_KEY, "horatio-ke")]),
                None,
                AuthLevel::None,
            ),
            (
                &horatio,
                headers(&[(&X_HAMLET_PROJECT_KEY, "othello-key")]),
                None,
                AuthLevel::None,
            ),
            (
                &horatio,
                HeaderMap::new(),
                Some("a=1&project_key=horatio-key"),
                AuthLevel::ProjectAdmin,
            ),
            (
                &horatio,
                HeaderMap::new(),
                Some("project_key=horatio%2Dkey"),
                AuthLevel::ProjectAdmin,
            ),
            (
                &horatio,
                HeaderMap::new(),
                Some("project_key="),
                AuthLevel::None,
            ),
            (
                &horatio,
                headers(&[(&AUTHORIZATION, "Bearer horatio-key")]),
                None,
                AuthLevel::None,
            ),
            (
                &keyless,
                headers(&[(&X_HAMLET_PROJECT_KEY, "")]),
                None,
                AuthLevel::None,
            ),
            (
                &keyless,
                headers(&[(&X_HAMLET_PROJECT_KEY, "anything")]),
                None,
                AuthLevel::None,
            ),
        ];
        for (project, headers, query, want) in cases {
            assert_eq!(
                resolve(&headers, query, "blog.localhost", project, None),
                want,
                "{project:?} {headers:?} {query:?}"
            );
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            bearer(&headers(&[(&AUTHORIZATION, "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[(&AUTHORIZATION, "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[(&AUTHORIZATION, "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[(&AUTHORIZATION, "Bearer ")])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
