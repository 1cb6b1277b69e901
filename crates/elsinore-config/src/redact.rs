//! Keeping secrets out of logs: `name=value` pairs whose name ends in
//! `key` or `token` (`project_key=`, `api_token=`, `X-Host-Key=`) have
//! their value replaced. Used on access-log query strings and on the
//! stdout/stderr lines handlers print, which often echo request targets.

use std::borrow::Cow;

/// What a secret value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// `text` with the value of every `…key=` / `…token=` pair (names compared
/// case-insensitively) replaced by [`REDACTED`]. Borrows when there is
/// nothing to hide.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    if !text.contains('=') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            i += 1;
            continue;
        }
        let name_start = text[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |at| at + 1);
        let name = &text[name_start..i];
        let value_start = i + 1;
        let value_end = text[value_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | '#' | ';' | ','))
            .map_or(text.len(), |at| value_start + at);
        if is_secret_name(name) && value_end > value_start {
            out.push_str(&text[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
            i = value_end;
        } else {
            // Not a secret: its value may itself hold `…key=` (`a=b,key=c`
            // or `x==key=v`), so look at every later `=`.
            i += 1;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with("key") || lower.ends_with("token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_key_and_token_values_only() {
        assert_eq!(
            redact_secrets("/a?project_key=s3cret&x=1&api_TOKEN=t&monkey=m"),
            "/a?project_key=[redacted]&x=1&api_TOKEN=[redacted]&monkey=[redacted]"
        );
        assert_eq!(
            redact_secrets("echo GET /p?project_key=abc 200"),
            "echo GET /p?project_key=[redacted] 200"
        );
        assert!(matches!(redact_secrets("/a?x=1&keys=2"), Cow::Borrowed(_)));
        assert_eq!(redact_secrets("key="), "key=");
        assert_eq!(redact_secrets("==key=v"), "==key=[redacted]");
        assert_eq!(
            redact_secrets("a=xproject_key=s"),
            "a=xproject_key=[redacted]"
        );
    }
}
