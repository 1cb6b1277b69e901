//! From a request path to a path inside `public/`, or a refusal.
//!
//! The path is first put in the normal form every path match of Elsinore
//! uses ([`elsinore_config::normalize_path`]): `//` collapsed, dot
//! segments (`..`, `%2e%2e`) resolved, never above the root, so they
//! cannot leave the folder. Each segment is then decoded once. What would
//! still step outside is refused rather than resolved: an encoded separator
//! (`%2f`, `%5c`) or NUL, and a segment that would become `..` or one of
//! those if decoded a second time (`%252e%252e`), in case something behind
//! us decodes again. Symbolic links are checked later, against the real
//! file system ([`crate::lookup`]).

use elsinore_config::normalize_path;
use percent_encoding::percent_decode_str;

/// What to do with a request path.
#[derive(Debug, PartialEq, Eq)]
pub enum PathCheck {
    /// Look for this file.
    Look(RelPath),
    /// Not a static-file path (hidden name, not UTF-8): the handler gets it.
    Pass,
    /// A traversal attempt, answered 404 with this reason.
    Refuse(&'static str),
}

/// A normalised path relative to `public/`: `/`-separated decoded
/// segments, none empty, `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelPath {
    /// `css/site.css`; empty for the folder itself.
    pub path: String,
    /// The request named a folder (`/docs/`, or `/`): serve its
    /// `index.html`.
    pub folder: bool,
}

/// Why a path is refused, as the 404 says it.
const TRAVERSAL: &str = "the path leaves the host's public folder";
const ENCODED_SEPARATOR: &str =
    "the path has an encoded '/', '\\' or NUL, which could lead outside the host's public folder";

/// Checks a request's path (without the query).
pub fn check(raw: &str) -> PathCheck {
    // Already normal when the proxy calls: then this borrows, no copy.
    let normal = normalize_path(raw);
    let Some(rest) = normal.strip_prefix('/') else {
        return PathCheck::Pass;
    };
    let mut path = String::with_capacity(rest.len());
    for segment in rest.split('/') {
        if segment.is_empty() {
            continue;
        }
        let Ok(decoded) = percent_decode_str(segment).decode_utf8() else {
            return PathCheck::Pass;
        };
        // Normalisation resolved every dot segment; one decoded from an
        // escape it kept (`%2e` is not kept) cannot occur, so this is
        // defence in depth.
        match decoded.as_ref() {
            "." => continue,
            ".." => return PathCheck::Refuse(TRAVERSAL),
            _ => {}
        }
        if decoded.contains(['/', '\\', '\0']) {
            return PathCheck::Refuse(ENCODED_SEPARATOR);
        }
        if decoded.contains('%') {
            if let Ok(twice) = percent_decode_str(&decoded).decode_utf8() {
                if twice == ".." || twice.contains(['/', '\\', '\0']) {
                    return PathCheck::Refuse(TRAVERSAL);
                }
            }
        }
        // Dotfiles (`.env`, `.git/`) are never published by accident;
        // only `.well-known` (RFC 8615) is a public name.
        if decoded.starts_with('.') && decoded != ".well-known" {
            return PathCheck::Pass;
        }
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&decoded);
    }
    let folder = path.is_empty() || normal.ends_with('/');
    PathCheck::Look(RelPath { path, folder })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(path: &str, folder: bool) -> PathCheck {
        PathCheck::Look(RelPath {
            path: path.to_owned(),
            folder,
        })
    }

    #[test]
    fn plain_paths_are_normalised() {
        assert_eq!(check("/"), look("", true));
        assert_eq!(check("/style.css"), look("style.css", false));
        assert_eq!(check("/css//site.css"), look("css/site.css", false));
        assert_eq!(check("/./css/./site.css"), look("css/site.css", false));
        assert_eq!(check("/docs/"), look("docs", true));
        assert_eq!(check("/a%20b.txt"), look("a b.txt", false));
        assert_eq!(check("/caf%C3%A9.html"), look("café.html", false));
        assert_eq!(
            check("/.well-known/security.txt"),
            look(".well-known/security.txt", false)
        );
    }

    #[test]
    fn dot_segments_are_resolved_inside_the_folder() {
        for path in [
            "/../secret",
            "/a/../../secret",
            "/%2e%2e/secret",
            "/%2E%2E/secret",
            "/.%2e/secret",
            "//secret",
            "/a/b/../../%2e%2e/secret",
        ] {
            assert_eq!(check(path), look("secret", false), "{path}");
        }
        assert_eq!(check("/docs/sub/.."), look("docs", true));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for path in ["/%252e%252e/secret", "/a/%252E%252E/%252E%252E/secret"] {
            assert_eq!(check(path), PathCheck::Refuse(TRAVERSAL), "{path}");
        }
        for path in [
            "/..%2fsecret",
            "/a%5c..%5csecret",
            "/a%00.html",
            "/%252fetc",
        ] {
            assert!(matches!(check(path), PathCheck::Refuse(_)), "{path}");
        }
    }

    #[test]
    fn hidden_and_undecodable_names_go_to_the_handler() {
        assert_eq!(check("/.env"), PathCheck::Pass);
        assert_eq!(check("/.git/config"), PathCheck::Pass);
        assert_eq!(check("/a/%2eenv"), PathCheck::Pass);
        assert_eq!(check("/%ff.html"), PathCheck::Pass);
        assert_eq!(check("*"), PathCheck::Pass);
    }
}
