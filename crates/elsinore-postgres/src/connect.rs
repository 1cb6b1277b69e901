//! One connection with Elsinore's defaults.

use std::str::FromStr;
use std::time::Duration;

use elsinore_config::PostgresUrl;
use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};

use crate::tls;

/// Used when the URL sets no `connect_timeout`: a database that does not
/// answer must not hold start-up or a refresh thread for the OS's minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection could not be made. Every message names the URL in its
/// redacted form.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The client library refused the URL (an unknown option, a bad value).
    #[error("{url}: {}", describe(source))]
    Url {
        /// The URL, password hidden.
        url: String,
        /// The library's reason.
        #[source]
        source: postgres::Error,
    },
    /// TLS was asked for but could not be set up (no CA roots, an
    /// unreadable `PGSSLROOTCERT`).
    #[error("{url}: TLS: {reason}")]
    Tls {
        /// The URL, password hidden.
        url: String,
        /// What failed.
        reason: String,
    },
    /// Connecting or authenticating failed.
    #[error("{url}: cannot connect: {}", describe(source))]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// The library's reason.
        #[source]
        source: postgres::Error,
    },
}

/// Connects to `url`, naming the connection `application_name` (seen in
/// `pg_stat_activity`, e.g. `elsinore state 1234`).
///
/// TLS follows the URL's `sslmode`: `disable` never, `prefer` (the
/// library's default) when the server offers it, `require` always. When TLS
/// is used the server's certificate is always verified, against the
/// system's roots or the PEM file named by `PGSSLROOTCERT` (libpq's
/// variable): a front door must not send keys to whoever answers.
pub fn connect(url: &PostgresUrl, application_name: &str) -> Result<Client, PgError> {
    let redacted = || url.redacted();
    let mut config =
        Config::from_str(&libpq_sslmodes(url.expose())).map_err(|source| PgError::Url {
            url: redacted(),
            source,
        })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    let result = match config.get_ssl_mode() {
        SslMode::Disable => config.connect(NoTls),
        _ => {
            let connector = tls::connector().map_err(|reason| PgError::Tls {
                url: redacted(),
                reason,
            })?;
            config.connect(connector)
        }
    };
    result.map_err(|source| PgError::Connect {
        url: redacted(),
        source,
    })
}

/// `sslmode=verify-ca` and `verify-full` are libpq's spellings for what
/// Elsinore always does with TLS (verify the chain and the host name); the
/// client library knows only `require`, and refusing the spelling every
/// libpq user writes would be a trap.
fn libpq_sslmodes(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair {
            "sslmode=verify-ca" | "sslmode=verify-full" => "sslmode=require",
            other => other,
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// `err` with its causes, `: `-separated: the client library's own message
/// ("error connecting to server") does not say why (refused, timed out,
/// the certificate).
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let more = err.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = err.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn libpq_verify_modes_mean_require() {
        assert_eq!(
            libpq_sslmodes("postgres://h/d?user=a&sslmode=verify-full"),
            "postgres://h/d?user=a&sslmode=require"
        );
        assert_eq!(libpq_sslmodes("postgres://h/d"), "postgres://h/d");
        let url = PostgresUrl::parse("postgres://h/d?sslmode=verify-ca").unwrap();
        assert!(Config::from_str(&libpq_sslmodes(url.expose())).is_ok());
    }

    #[test]
    fn errors_never_show_the_password() {
        let url = PostgresUrl::parse("postgres://app:s3cret@127.0.0.1:1/db?sslmode=disable")
            .expect("url");
        let Err(err) = connect(&url, "test") else {
            panic!("nothing listens on port 1");
        };
        let text = err.to_string();
        assert!(text.contains("postgres://app:***@127.0.0.1:1/db"), "{text}");
        assert!(text.contains("refused"), "the cause is named: {text}");
        assert!(!text.contains("s3cret"), "{text}");

        let url = PostgresUrl::parse("postgres://app:s3cret@h/db?bogus=1").expect("url");
        let Err(err) = connect(&url, "test") else {
            panic!("unknown option accepted");
        };
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
    }
}
