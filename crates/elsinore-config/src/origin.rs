//! `cors_origins` entries: browser origins allowed to call the admin API.

/// Checks one `cors_origins` entry and returns it as browsers send it in
/// `Origin` (scheme and host lower-case). `"*"` (any origin) is accepted
/// only when written explicitly.
pub fn parse_origin(text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok(text.to_owned());
    }
    let example = "expected scheme://host[:port] with nothing after it, e.g. \"https://admin.example.com\" or \"chrome-extension://abcdefghijklmnop\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("{text:?} is not an origin: {example}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("{text:?} is not an origin: bad scheme; {example}"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    if !host_ok || !port_ok {
        return Err(format!(
            "{text:?} is not an origin (no path, not even \"/\", no query or user): {example}"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// Validates every entry of a `cors_origins` list found at `field` (the
/// top-level one or a project's), reporting each bad one with its index;
/// duplicates are dropped.
pub(crate) fn parse_origins(
    raw: Option<Vec<String>>,
    field: &str,
    problems: &mut Vec<crate::Problem>,
) -> Vec<String> {
    let mut origins: Vec<String> = Vec::new();
    for (index, text) in raw.unwrap_or_default().iter().enumerate() {
        match parse_origin(text) {
            Ok(origin) if !origins.contains(&origin) => origins.push(origin),
            Ok(_) => {}
            Err(why) => problems.push(crate::Problem::field(format!("{field}[{index}]"), why)),
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for (text, want) in [
            ("https://admin.example.com", "https://admin.example.com"),
            ("HTTP://Blog.Localhost:8080", "http://blog.localhost:8080"),
            (
                "chrome-extension://abcdefghijklmnop",
                "chrome-extension://abcdefghijklmnop",
            ),
            ("moz-extension://2f1c-77aa", "moz-extension://2f1c-77aa"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("*", "*"),
        ] {
            assert_eq!(parse_origin(text).as_deref(), Ok(want), "{text}");
        }
        for bad in [
            "admin.example.com",
            "https://admin.example.com/",
            "https://admin.example.com/path",
            "https://user@admin.example.com",
            "https://admin.example.com:99999",
            "https://admin.example.com:",
            "https://",
            "null",
            "*.example.com",
            "1http://x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
