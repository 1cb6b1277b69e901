//! `preview_host`: on one shared host, `/projects/<name>/<rest>` reaches
//! project `<name>` as `/<rest>`, so a project can be tried before its DNS
//! exists (Hatchr's previews). The handler learns the prefix from
//! `X-Forwarded-Prefix`; redirects and cookie paths it sends are given the
//! prefix back so the browser stays inside the project. Which projects are
//! reachable is the table's [`Preview`].

use std::sync::Arc;

use elsinore_config::same_host_location;
use elsinore_routes::{Preview, ProjectRoute};
use http::header::{LOCATION, SET_COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Uri};

use crate::error::ProxyError;

/// Where every preview path starts.
const PREFIX: &str = "/projects/";

/// What a request on the preview host asks for.
#[derive(Debug)]
pub(crate) enum PreviewRoute {
    /// Forward to `project` with `path` (and the query) in place of the
    /// client's.
    Project {
        project: Arc<ProjectRoute>,
        /// `/projects/<name>`, for `X-Forwarded-Prefix` and rewrites.
        prefix: HeaderValue,
        path: PathAndQuery,
    },
    /// `/projects/<name>` without its slash: send the browser to
    /// `/projects/<name>/` so that relative links resolve inside it.
    AddSlash(HeaderValue),
}

/// Which project of `preview` `uri` (its path already normalised by the
/// caller) names, or the JSON 404 when it names none.
pub(crate) fn route(preview: &Preview, uri: &Uri) -> Result<PreviewRoute, ProxyError> {
    let Some(rest) = uri.path().strip_prefix(PREFIX) else {
        return Err(ProxyError::NotFound {
            reason: format!(
                "{} serves previews only, at /projects/<project>/",
                preview.host()
            ),
        });
    };
    let (name, tail) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let project = preview
        .project(name)
        .ok_or_else(|| ProxyError::UnknownProject {
            project: name.to_owned(),
        })?;
    // Project names are header-safe ASCII (config.json validation), so
    // these always parse; a failure would be a bug, answered as 404.
    let not_found = || ProxyError::UnknownProject {
        project: name.to_owned(),
    };
    if tail.is_empty() {
        let folder = format!("{PREFIX}{name}/");
        let location = HeaderValue::try_from(same_host_location(&folder, uri.query()))
            .map_err(|_| not_found())?;
        return Ok(PreviewRoute::AddSlash(location));
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let prefix = HeaderValue::try_from(format!("{PREFIX}{name}")).map_err(|_| not_found())?;
    let path = PathAndQuery::try_from(format!("{tail}{query}")).map_err(|_| not_found())?;
    Ok(PreviewRoute::Project {
        project: project.clone(),
        prefix,
        path,
    })
}

/// Puts the prefix back on what the handler said in terms of its own
/// paths: a `Location` that is an absolute path, and the `Path` of each
/// cookie (so one project's session cookie is not sent to every other
/// project on the preview host).
pub(crate) fn restore_prefix(headers: &mut HeaderMap, prefix: &HeaderValue) {
    let Ok(prefix) = prefix.to_str() else {
        return;
    };
    if let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        if let Some(rewritten) = prefixed_location(location, prefix) {
            headers.insert(LOCATION, rewritten);
        }
    }
    if !headers.contains_key(SET_COOKIE) {
        return;
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|cookie| prefixed_cookie(cookie, prefix).unwrap_or_else(|| cookie.clone()))
        .collect();
    headers.remove(SET_COOKIE);
    for cookie in cookies {
        headers.append(SET_COOKIE, cookie);
    }
}

/// `/login` → `/projects/p/login`; full URLs and protocol-relative
/// `//host/…` are left alone (they do not name a path of this project).
fn prefixed_location(location: &str, prefix: &str) -> Option<HeaderValue> {
    if !location.starts_with('/') || location.starts_with("//") {
        return None;
    }
    HeaderValue::try_from(format!("{prefix}{location}")).ok()
}

/// `Path=/x` → `Path=/projects/p/x` in one `Set-Cookie` value.
fn prefixed_cookie(cookie: &HeaderValue, prefix: &str) -> Option<HeaderValue> {
    let text = cookie.to_str().ok()?;
    let mut changed = false;
    let parts: Vec<String> = text
        .split(';')
        .enumerate()
        .map(|(index, part)| {
            let trimmed = part.trim_start();
            // The first part is name=value, never an attribute.
            let is_path = index > 0
                && trimmed
                    .get(..5)
                    .is_some_and(|name| name.eq_ignore_ascii_case("path="));
            match trimmed.get(5..) {
                Some(path) if is_path && path.starts_with('/') => {
                    changed = true;
                    format!(" Path={prefix}{path}")
                }
                _ => part.to_owned(),
            }
        })
        .collect();
    if !changed {
        return None;
    }
    HeaderValue::try_from(parts.join(";")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_that_are_paths_get_the_prefix() {
        let prefix = "/projects/shop";
        assert_eq!(
            prefixed_location("/login?next=/cart", prefix).as_ref(),
            Some(&HeaderValue::from_static("/projects/shop/login?next=/cart"))
        );
        for untouched in [
            "https://shop.example.com/login",
            "//cdn.example.com/x",
            "login",
        ] {
            assert_eq!(prefixed_location(untouched, prefix), None, "{untouched}");
        }
    }

    #[test]
    fn cookie_paths_get_the_prefix() {
        let prefix = "/projects/shop";
        let cookie = HeaderValue::from_static("hamlet_session_id=abc; Path=/; HttpOnly");
        assert_eq!(
            prefixed_cookie(&cookie, prefix).as_ref(),
            Some(&HeaderValue::from_static(
                "hamlet_session_id=abc; Path=/projects/shop/; HttpOnly"
            ))
        );
        let lower = HeaderValue::from_static("a=1; path=/api");
        assert_eq!(
            prefixed_cookie(&lower, prefix).as_ref(),
            Some(&HeaderValue::from_static("a=1; Path=/projects/shop/api"))
        );
        // A cookie without Path defaults to the client's URL, which already
        // holds the prefix; a value that merely looks like one is data.
        for untouched in ["a=1; HttpOnly", "path=/x; Secure"] {
            let cookie = HeaderValue::from_static(untouched);
            assert_eq!(prefixed_cookie(&cookie, prefix), None, "{untouched}");
        }
    }

    #[test]
    fn preview_paths_name_a_project() {
        let preview = Preview::new("preview.localhost", &[]);
        let uri: Uri = "/elsewhere".parse().expect("static uri");
        assert!(matches!(
            route(&preview, &uri),
            Err(ProxyError::NotFound { .. })
        ));
        let uri: Uri = "/projects/nobody/x".parse().expect("static uri");
        assert!(matches!(
            route(&preview, &uri),
            Err(ProxyError::UnknownProject { project }) if project == "nobody"
        ));
    }
}
