//! `database` / `state_database` given as a PostgreSQL connection URL
//! (`postgres://user:password@host:port/dbname?sslmode=require`) instead of
//! a SQLite path.
//!
//! Only the shape is checked here (scheme, a host, a port that is a
//! number); the client library reads the rest when it connects, and its
//! error then names the URL in its redacted form. The password never
//! reaches a log line, `elsinore check` output or `/routes`:
//! [`PostgresUrl`]'s `Display` and `Debug` print `***` in its place.

use std::fmt;

/// A PostgreSQL connection URL from config.json.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
}

impl PostgresUrl {
    /// Whether a `database` value is meant as a URL rather than a path.
    pub fn looks_like_url(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Checks the URL's shape; `Err` is the reason, for a field problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
            .ok_or("expected a postgres:// or postgresql:// URL")?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        // `postgresql:///db?host=/var/run/postgresql`: a Unix socket folder
        // (or a host) given in the query, as libpq allows.
        let query_host = rest
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("host=")));
        if host_port.is_empty() && query_host {
            return Ok(Self {
                url: text.to_owned(),
            });
        }
        // Several hosts (`h1:5432,h2:5432`) are allowed by libpq's syntax.
        for one in host_port.split(',') {
            let (host, port) = split_host_port(one);
            if host.is_empty() {
                return Err(format!(
                    "{}: names no host (expected postgres://user@host:5432/dbname, or ?host=/var/run/postgresql for a Unix socket)",
                    Self::redact(text)
                ));
            }
            if let Some(port) = port {
                if port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(format!(
                        "{}: port {port:?} is not a port number",
                        Self::redact(text)
                    ));
                }
            }
        }
        Ok(Self {
            url: text.to_owned(),
        })
    }

    /// The URL with its password, for the client library and for
    /// handlers' `ELSINORE_DB` (never for logs).
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        Self::redact(&self.url)
    }

    fn redact(text: &str) -> String {
        let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
            return text.to_owned();
        };
        let authority_end = text[scheme_end..]
            .find(['/', '?'])
            .map_or(text.len(), |i| scheme_end + i);
        let authority = &text[scheme_end..authority_end];
        let Some(at) = authority.rfind('@') else {
            return redact_query_password(text);
        };
        let userinfo = &authority[..at];
        let redacted_userinfo = match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => userinfo.to_owned(),
        };
        redact_query_password(&format!(
            "{}{}{}",
            &text[..scheme_end],
            redacted_userinfo,
            &text[scheme_end + at..]
        ))
    }
}

/// `?password=` is also accepted by libpq-style URLs.
fn redact_query_password(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

fn split_host_port(text: &str) -> (&str, Option<&str>) {
    if let Some(rest) = text.strip_prefix('[') {
        // [::1]:5432
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => ("", None),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn password_never_printed() {
        let url = PostgresUrl::parse("postgres://app:s3cret@db.internal:5432/tenants").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://app:***@db.internal:5432/tenants"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(
            url.expose(),
            "postgres://app:s3cret@db.internal:5432/tenants"
        );
        let url =
            PostgresUrl::parse("postgresql://db/x?user=a&password=s3cret&sslmode=require").unwrap();
        assert_eq!(
            url.to_string(),
            "postgresql://db/x?user=a&password=***&sslmode=require"
        );
    }

    #[test]
    fn shape_errors_name_the_problem() {
        assert!(PostgresUrl::parse("postgres:///x")
            .unwrap_err()
            .contains("names no host"));
        let err = PostgresUrl::parse("postgres://u:pw@h:54x/x").unwrap_err();
        assert!(err.contains("\"54x\" is not a port number"), "{err}");
        assert!(!err.contains("pw"), "{err}");
        assert!(PostgresUrl::parse("postgres://[::1]:5432/x").is_ok());
        // A local server's Unix socket, as libpq writes it.
        assert!(PostgresUrl::parse("postgresql:///tenants?host=/var/run/postgresql").is_ok());
        assert!(
            PostgresUrl::parse("postgres://app@/tenants?host=/run/postgresql&sslmode=disable")
                .is_ok()
        );
        assert!(PostgresUrl::parse("postgres://h1:5432,h2:5433/x").is_ok());
        assert!(PostgresUrl::looks_like_url("postgresql://x"));
        assert!(!PostgresUrl::looks_like_url("data/x.db"));
    }
}
