//! Who is calling: the `X-Elsinore-Auth` level of a request, resolved from
//! the client's `X-Hamlet-Project-Key` / `X-Hamlet-Host-Key` without I/O.

use std::borrow::Cow;

use elsinore_config::AdminApiMode;
use elsinore_keys::{now_ms, KeyHash, KeyRing};
use elsinore_routes::ProjectRoute;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

/// The project key, as Hamlet clients send it.
pub const X_HAMLET_PROJECT_KEY: HeaderName = HeaderName::from_static("x-hamlet-project-key");
/// A per-host admin key, as Hamlet clients send it.
pub const X_HAMLET_HOST_KEY: HeaderName = HeaderName::from_static("x-hamlet-host-key");
/// Hamlet's admin UI may send the project key in the query string.
const PROJECT_KEY_PARAM: &str = "project_key";
/// What both key headers' names start with.
const HAMLET_KEY_PREFIX: &str = "x-hamlet-";

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

/// The keys a request presents: `X-Hamlet-Project-Key` (else the
/// `project_key` query parameter) and `X-Hamlet-Host-Key`. Only a request
/// presenting one is a guess the failure throttle must see.
#[derive(Debug)]
pub(crate) struct Presented<'a> {
    project_key: Option<Cow<'a, str>>,
    host_key: Option<&'a str>,
}

impl<'a> Presented<'a> {
    /// The keys in `headers` and `query`; `None` when there are none (the
    /// common case, which then never touches the throttle).
    pub(crate) fn of(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<Self> {
        // One pass over the names (a length test and a compare each)
        // before two hashed look-ups of names most requests do not carry:
        // about 600 instructions a request saved (bench/callgrind.py).
        let named = headers
            .keys()
            .any(|name| name.as_str().starts_with(HAMLET_KEY_PREFIX));
        if !named && !query.is_some_and(|q| q.contains(PROJECT_KEY_PARAM)) {
            return None;
        }
        let presented = Self {
            project_key: project_key(headers, query),
            host_key: header_str(headers, &X_HAMLET_HOST_KEY),
        };
        (presented.project_key.is_some() || presented.host_key.is_some()).then_some(presented)
    }

    /// Whether a failure to open anything is a guess the throttle must
    /// count. With `admin_api: "handler"` the handler keeps its own host
    /// keys, so a host key Elsinore does not know is not one; a wrong
    /// project key still is (the project key is Elsinore's in every mode).
    pub(crate) fn failure_counts(&self, mode: AdminApiMode) -> bool {
        self.project_key.is_some() || mode != AdminApiMode::Handler
    }

    /// The level these keys give a request for `host`, owned by `project`:
    /// the project key of *this* project gives `projectAdmin`; else a host
    /// key accepted by `ring` for exactly this host and project gives
    /// `hostAdmin`; anything else `none` (a wrong key).
    pub(crate) fn level(
        &self,
        host: &str,
        project: &ProjectRoute,
        ring: Option<&KeyRing>,
    ) -> AuthLevel {
        if let (Some(expected), Some(presented)) = (project.key_hash(), &self.project_key) {
            if KeyHash::of(presented).ct_eq(expected) {
                return AuthLevel::ProjectAdmin;
            }
        }
        if let (Some(ring), Some(key)) = (ring, self.host_key) {
            if ring.opens(host, &project.name, key, now_ms()) {
                return AuthLevel::HostAdmin;
            }
        }
        AuthLevel::None
    }
}

/// The level of a request for `host`, owned by `project` (see
/// [`Presented::level`]); `none` without a key.
#[cfg(test)]
fn resolve(
    headers: &HeaderMap,
    query: Option<&str>,
    host: &str,
    project: &ProjectRoute,
    ring: Option<&KeyRing>,
) -> AuthLevel {
    Presented::of(headers, query).map_or(AuthLevel::None, |keys| keys.level(host, project, ring))
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
pub fn query_key(query: Option<&str>) -> Option<Cow<'_, str>> {
    // Cheap test first: most requests carry no such parameter.
    let query = query.filter(|q| q.contains(PROJECT_KEY_PARAM))?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == PROJECT_KEY_PARAM)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, &AUTHORIZATION)?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first value of `name`, if it is visible ASCII and not empty.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
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
    fn the_key_headers_share_the_prefix_the_quick_test_looks_for() {
        for name in [&X_HAMLET_PROJECT_KEY, &X_HAMLET_HOST_KEY] {
            assert!(name.as_str().starts_with(HAMLET_KEY_PREFIX), "{name}");
        }
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
    fn what_counts_as_presenting_a_key() {
        let presents =
            |headers: HeaderMap, query: Option<&str>| Presented::of(&headers, query).is_some();
        assert!(presents(headers(&[(&X_HAMLET_PROJECT_KEY, "k")]), None));
        assert!(presents(headers(&[(&X_HAMLET_HOST_KEY, "k")]), None));
        assert!(presents(HeaderMap::new(), Some("a=1&project_key=k")));
        assert!(!presents(HeaderMap::new(), None));
        assert!(!presents(HeaderMap::new(), Some("project_key=&a=1")));
        assert!(!presents(headers(&[(&X_HAMLET_PROJECT_KEY, " ")]), None));
        assert!(
            !presents(headers(&[(&AUTHORIZATION, "Bearer k")]), None),
            "a bearer token is the handler's business"
        );
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
