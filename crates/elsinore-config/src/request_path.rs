//! The one normal form of a request path, and the one way to write a
//! `Location` that stays on the same host.
//!
//! Every match Elsinore makes on a path (the preview prefix, the admin
//! API, static files, the handler's route prefix) and the path forwarded to
//! the handler use [`normalize_path`]'s output, so no spelling of a path
//! can be matched one way by Elsinore and read another way by a handler
//! (`//admin/api/_keys`, `/admin/api/%5Fkeys`, `/x/../admin/api/_keys` all
//! are `/admin/api/_keys`).

use std::borrow::Cow;

/// The request path in its normal form (RFC 3986 §6.2.2):
///
/// - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
///   decoded; every other escape is kept, with upper-case hex;
/// - runs of `/` are collapsed to one;
/// - dot segments (`.`, `..`, also spelled `%2e`) are resolved as RFC 3986
///   §5.2.4 says, never above the root (`/../a` is `/a`);
/// - an encoded slash `%2F` stays encoded: it is data, not a separator;
/// - a trailing slash is kept; an empty path is `/`.
///
/// `path` is a path without its query. A path that does not start with `/`
/// (`*` of `OPTIONS *`) is returned as it is. Nothing is allocated when the
/// path already is normal, which is the common case: one pass over it
/// tells.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Cow::Borrowed(path);
    };
    if is_normal(rest.as_bytes()) {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalize_slow(rest))
    }
}

/// A `Location` for `path` (with `query`) on the host the client asked:
/// always exactly one `/` first. A browser reads `//docs/` or `/\docs/` as
/// the host `docs`, so leading runs of `/` and `\` are collapsed here, the
/// one place Elsinore writes a path-only `Location`, whatever the caller
/// passed.
pub fn same_host_location(path: &str, query: Option<&str>) -> String {
    let rest = path.trim_start_matches(['/', '\\']);
    let query_len = query.map_or(0, |q| q.len() + 1);
    let mut location = String::with_capacity(1 + rest.len() + query_len);
    location.push('/');
    location.push_str(rest);
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// Whether the path after its first `/` is already normal: no empty
/// segment but the last, no dot segment, no escape to decode or upper-case.
fn is_normal(rest: &[u8]) -> bool {
    let mut segment_start = 0;
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'/' => {
                if matches!(&rest[segment_start..i], b"" | b"." | b"..") {
                    return false;
                }
                segment_start = i + 1;
            }
            b'%' => {
                if let Some(byte) = escaped_byte(rest, i) {
                    if is_unreserved(byte) || rest[i + 1..i + 3].iter().any(u8::is_ascii_lowercase)
                    {
                        return false;
                    }
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // The last segment may be empty: that is a trailing slash.
    !matches!(&rest[segment_start..], b"." | b"..")
}

/// The normal form of a path that is not (see [`normalize_path`]).
fn normalize_slow(rest: &str) -> String {
    // Decoded first, so that `%2e%2e` is a dot segment below. Decoding
    // never makes a `%` or a `/`, so this cannot decode twice.
    let decoded = decode_unreserved(rest);
    let mut out = String::with_capacity(decoded.len() + 1);
    out.push('/');
    let mut segments = decoded.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" | "." => {}
            ".." => pop_segment(&mut out),
            _ => {
                out.push_str(segment);
                if !last {
                    out.push('/');
                }
            }
        }
    }
    out
}

/// Drops the last segment of `out` (which ends with `/`), never the root.
fn pop_segment(out: &mut String) {
    let without_slash = out.len().saturating_sub(1);
    let start = out[..without_slash].rfind('/').map_or(0, |slash| slash + 1);
    out.truncate(start.max(1));
}

/// `rest` with escapes of unreserved characters decoded and every other
/// escape's hex upper-cased; malformed escapes (`%zz`) are left alone.
fn decode_unreserved(rest: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = rest.as_bytes();
    let mut out = String::with_capacity(rest.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| escaped_byte(bytes, i)).flatten();
        let Some(byte) = escaped else {
            i += 1;
            continue;
        };
        // `i` is at an ASCII `%`, so this slice ends on a char boundary.
        out.push_str(&rest[copied..i]);
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        i += 3;
        copied = i;
    }
    out.push_str(&rest[copied..]);
    out
}

/// The byte `%XY` at `bytes[at..]` stands for, if it is a well-formed
/// escape.
fn escaped_byte(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let high = hex(*bytes.get(at + 1)?)?;
    let low = hex(*bytes.get(at + 2)?)?;
    u8::try_from(high * 16 + low).ok()
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let cases = [
            // Already normal: the same string back.
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/admin/api/_keys", "/admin/api/_keys"),
            ("/a%20b", "/a%20b"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a/%2F/b", "/a/%2F/b"),
            ("/a..b/.c/..d", "/a..b/.c/..d"),
            ("/%zz/%4", "/%zz/%4"),
            // The attacks of issue 21.
            ("/admin/api/%5Fkeys", "/admin/api/_keys"),
            ("/admin/api/%5fkeys", "/admin/api/_keys"),
            ("//admin/api/_keys", "/admin/api/_keys"),
            ("///admin//api///_keys", "/admin/api/_keys"),
            ("/x/../admin/api/_keys", "/admin/api/_keys"),
            ("/%61dmin/api/_keys", "/admin/api/_keys"),
            ("/x/%2e%2e/admin/api/_keys", "/admin/api/_keys"),
            ("/x/.%2E/admin/api/_keys", "/admin/api/_keys"),
            // Never above the root.
            ("/%2e%2e/admin", "/admin"),
            ("/../admin", "/admin"),
            ("/../../a/../../b", "/b"),
            ("/..", "/"),
            // Dot segments, RFC 3986 §5.2.4.
            ("/./", "/"),
            ("/.", "/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/%2e/b", "/a/b"),
            // Slashes.
            ("//", "/"),
            ("/a//", "/a/"),
            ("//docs", "/docs"),
            // Escapes: unreserved decoded, others upper-cased, %2F kept.
            ("/a/%2f/b", "/a/%2F/b"),
            ("/a%2Fb/..", "/"),
            ("/%7E%2D%2E%5F", "/~-._"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%2520b", "/a%2520b"),
            ("/%25%32%65", "/%252e"),
            ("/100%", "/100%"),
            ("/%4a%zz", "/J%zz"),
            // Not a path this applies to.
            ("", "/"),
            ("*", "*"),
        ];
        for (path, want) in cases {
            let got = normalize_path(path);
            assert_eq!(got, want, "normalize_path({path:?})");
            // The output is a fixed point, and recognised as one without
            // allocating.
            assert!(
                matches!(normalize_path(&got), Cow::Borrowed(again) if again == got),
                "{got:?} (from {path:?}) is not normal"
            );
        }
    }

    #[test]
    fn normal_paths_are_not_copied() {
        for path in ["/", "/index.html", "/api/GetFeed/123", "/a%20b/", "*"] {
            assert!(
                matches!(normalize_path(path), Cow::Borrowed(p) if std::ptr::eq(p, path)),
                "{path}"
            );
        }
        for path in ["//", "/a/../b", "/%41", "/%c3%a9"] {
            assert!(matches!(normalize_path(path), Cow::Owned(_)), "{path}");
        }
    }

    #[test]
    fn same_host_locations_never_name_another_host() {
        let cases = [
            ("/docs/", None, "/docs/"),
            ("/docs/", Some("x=1"), "/docs/?x=1"),
            ("//docs/", Some("x=1"), "/docs/?x=1"),
            ("///evil.example/", None, "/evil.example/"),
            ("/\\evil.example/", None, "/evil.example/"),
            ("\\/evil.example/", None, "/evil.example/"),
            ("docs/", None, "/docs/"),
            ("", None, "/"),
        ];
        for (path, query, want) in cases {
            assert_eq!(same_host_location(path, query), want, "{path:?} {query:?}");
        }
    }
}
