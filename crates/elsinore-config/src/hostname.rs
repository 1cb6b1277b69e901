//! Hostnames: the request's `Host` (normalised on the hot path) and the
//! `hosts/<name>/` folder names that declare them.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Longest name DNS allows (without the trailing dot).
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Why a hostname was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No `Host` header and no authority in the request target.
    #[error("missing host")]
    Missing,
    /// Not a DNS name (bad characters, empty or over-long label, IP literal…).
    #[error("invalid host {0:?}: not a DNS name")]
    Invalid(String),
    /// A port was present where only a name is allowed (folder names).
    #[error("invalid host {0:?}: a host folder name cannot carry a port")]
    Port(String),
}

/// A validated, lower-case DNS name without port or trailing dot.
///
/// Its text is shared (`Arc`): a host's name is held by the host scan,
/// the owner table and the route table (its key and its metrics label),
/// and with a million hosts one copy instead of four is most of their
/// memory (docs/performance.md). Cloning it copies no text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(Arc<str>);

impl Hostname {
    /// Parses a name as written in a folder or an API call: letters are
    /// lower-cased, but a port or trailing dot is refused rather than fixed,
    /// so that one folder always means exactly one name.
    pub fn parse(name: &str) -> Result<Self, HostError> {
        if name.contains(':') {
            return Err(HostError::Port(name.to_owned()));
        }
        if !is_dns_name(name) {
            return Err(HostError::Invalid(name.to_owned()));
        }
        // Folder names are usually lower case already: one allocation.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Ok(Self(Arc::from(name.to_ascii_lowercase())));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's shared text, for a table that keys or labels by it
    /// without a copy of its own.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// What a `hosts/<name>/` folder declares: one exact name, or a wildcard
/// `*.suffix` that matches one or more labels in front of `suffix`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// `blog.example.com`
    Exact(Hostname),
    /// `*.example.com`, holding `example.com`.
    Wildcard(Hostname),
}

impl HostPattern {
    /// The name, or a wildcard's suffix, as shared text (see [`Hostname`]).
    pub fn key(&self) -> &Arc<str> {
        match self {
            Self::Exact(name) | Self::Wildcard(name) => name.shared(),
        }
    }

    /// Parses a folder name: `name` or `*.name`.
    pub fn parse(folder: &str) -> Result<Self, HostError> {
        match folder.strip_prefix("*.") {
            Some(suffix) => Hostname::parse(suffix)
                .map(Self::Wildcard)
                .map_err(|_| HostError::Invalid(folder.to_owned())),
            None => Hostname::parse(folder).map(Self::Exact),
        }
    }

    /// Whether `host` (already normalised) is covered by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name.as_str() == host,
            Self::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => write!(f, "{name}"),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Normalises a request's `Host` header (or HTTP/2 authority): removes the
/// port and one trailing dot, lower-cases, and checks it is a DNS name.
///
/// Borrows when the input is already normal, which is the common case, so
/// the request path does not allocate for it. IPv6 literals are refused:
/// tenants are DNS names, and a bracketed address never names a host folder.
pub fn normalize_request_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Missing);
    }
    let invalid = || HostError::Invalid(raw.to_owned());
    // One pass over the bytes: the rules of `is_dns_name`, the end of the
    // name (the first `:`) and whether anything needs lower-casing. Every
    // request runs this; splitting into labels and scanning three times
    // cost several times more.
    let bytes = raw.as_bytes();
    let (mut end, mut label_len, mut previous, mut upper) = (0, 0usize, b'.', false);
    while let Some(&byte) = bytes.get(end) {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' => label_len += 1,
            b'A'..=b'Z' => {
                upper = true;
                label_len += 1;
            }
            // Not at the start of a label.
            b'-' if label_len > 0 => label_len += 1,
            // Not after an empty label or one ending with `-`.
            b'.' if label_len > 0 && previous != b'-' => label_len = 0,
            b':' => break,
            _ => return Err(invalid()),
        }
        if label_len > MAX_LABEL_LEN {
            return Err(invalid());
        }
        previous = byte;
        end += 1;
    }
    if let Some(port) = raw.get(end + 1..) {
        if !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err(invalid());
        }
    }
    let name = &raw[..end];
    // One trailing dot is dropped (its label was checked at the dot);
    // otherwise the last label must be complete.
    let name = match name.strip_suffix('.') {
        Some(name) => name,
        None if label_len > 0 && previous != b'-' => name,
        None => return Err(invalid()),
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid());
    }
    if upper {
        Ok(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(name))
    }
}

/// Letters, digits, `-` and `_` in labels of 1–63 bytes, no label starting or
/// ending with `-`, at most 253 bytes. Underscores are tolerated because
/// browsers send them and real tenants use them.
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    name.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_LABEL_LEN
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_host_normalisation() {
        let cases = [
            ("blog.localhost", Ok("blog.localhost")),
            ("Blog.LocalHost", Ok("blog.localhost")),
            ("blog.localhost:8080", Ok("blog.localhost")),
            ("blog.localhost.", Ok("blog.localhost")),
            ("BLOG.localhost.:80", Ok("blog.localhost")),
            ("127.0.0.1:8080", Ok("127.0.0.1")),
            ("my_host.example.com", Ok("my_host.example.com")),
            ("a-b.c:0", Ok("a-b.c")),
            ("X.", Ok("x")),
            ("", Err(HostError::Missing)),
        ];
        for (raw, want) in cases {
            let got = normalize_request_host(raw).map(|h| h.into_owned());
            assert_eq!(got, want.map(str::to_owned), "input {raw:?}");
        }
    }

    #[test]
    fn request_host_rejects_non_dns() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        for raw in [
            "blog..localhost",
            "blog.localhost..",
            ".blog",
            "-blog.localhost",
            "blog-.localhost",
            "blog localhost",
            "blog.localhost:",
            "blog.localhost:abc",
            "blog.localhost:123456",
            "blog.localhost:99999",
            "blog.localhost:+80",
            "blog.localhost:80:80",
            "blog.localhost-",
            "blog.localhost-.",
            ".",
            ":80",
            "..",
            "[::1]:8080",
            "a/b",
            "exa%mple.com",
            "user@host",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(
                matches!(normalize_request_host(raw), Err(HostError::Invalid(_))),
                "{raw:?} should be invalid"
            );
        }
    }

    #[test]
    fn borrowed_when_already_normal() {
        assert!(matches!(
            normalize_request_host("blog.localhost:8080"),
            Ok(Cow::Borrowed("blog.localhost"))
        ));
    }

    #[test]
    fn folder_names() {
        assert_eq!(
            HostPattern::parse("Blog.Example.com").map(|p| p.to_string()),
            Ok("blog.example.com".to_owned())
        );
        assert_eq!(
            HostPattern::parse("*.example.com").map(|p| p.to_string()),
            Ok("*.example.com".to_owned())
        );
        for bad in [
            "*",
            "*.",
            "a.*.com",
            "**.com",
            "blog.localhost:80",
            "blog.",
            "x y",
            ".hidden",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn wildcard_matches_one_or_more_leading_labels() {
        let pattern = HostPattern::parse("*.example.com").expect("valid pattern");
        assert!(pattern.matches("a.example.com"));
        assert!(pattern.matches("a.b.example.com"));
        assert!(!pattern.matches("example.com"));
        assert!(!pattern.matches("badexample.com"));
        assert!(!pattern.matches("a.example.org"));
    }
}
