//! The `acme` key of `config.json`: automatic certificates for tenant
//! hosts from an ACME CA (RFC 8555). Restart-only: the account, the
//! storage folder and the issuing task are set up once at startup.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::Problem;
use crate::parse_duration;

/// `acme.storage` when absent, relative to config.json's folder.
pub const DEFAULT_ACME_STORAGE: &str = "data/acme";
/// `acme.rate` when absent: new orders per minute across all names.
pub const DEFAULT_ACME_RATE: u32 = 10;
/// Above this `acme.rate` is refused: public CAs allow far fewer orders
/// than this, and a typo should not turn into a flood.
const MAX_ACME_RATE: u32 = 1000;

/// A challenge type Elsinore answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeChallenge {
    /// `http-01`: a file under `/.well-known/acme-challenge/` on the plain
    /// listener.
    Http01,
    /// `tls-alpn-01`: a special certificate on the HTTPS listener for ALPN
    /// `acme-tls/1`.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// The name as config.json and the ACME protocol spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl fmt::Display for AcmeChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated `acme` settings. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The ACME directory URL (`https://…/directory`).
    pub directory: String,
    /// Contact address given to the CA, if any.
    pub email: Option<String>,
    /// A PEM file of roots trusted for the ACME server itself (test CAs
    /// such as Pebble); the system's roots otherwise.
    pub ca_roots: Option<PathBuf>,
    /// The challenge types offered, in order of preference; never empty.
    pub challenges: Vec<AcmeChallenge>,
    /// Renew this long before `notAfter`; `None`: a third of the
    /// certificate's lifetime.
    pub renew_before: Option<Duration>,
    /// The folder holding the account key and the issued certificates.
    pub storage: PathBuf,
    /// Names under wildcard folders and the default project get a
    /// certificate at their first handshake.
    pub on_demand: bool,
    /// A path on the name's own project asked `GET <ask>?domain=<name>`
    /// before an on-demand order; 2xx allows it.
    pub ask: Option<String>,
    /// New orders per minute, across all names.
    pub rate: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcme {
    directory: Option<String>,
    email: Option<String>,
    ca_roots: Option<String>,
    challenges: Option<Vec<String>>,
    renew_before: Option<String>,
    storage: Option<String>,
    on_demand: Option<bool>,
    ask: Option<String>,
    rate: Option<u32>,
}

/// Validates `acme`; `base` is config.json's folder. `None` when absent
/// or wrong (the problems say why).
pub(crate) fn validate_acme(
    raw: Option<RawAcme>,
    base: &Path,
    has_tls_listen: bool,
    problems: &mut Vec<Problem>,
) -> Option<AcmeConfig> {
    let raw = raw?;
    let before = problems.len();
    if !has_tls_listen {
        problems.push(Problem::field(
            "acme",
            "needs tls_listen: certificates are only used by the HTTPS listener",
        ));
    }
    let directory = match raw.directory {
        None => {
            problems.push(Problem::field(
                "acme.directory",
                "is required: the ACME directory URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
            ));
            String::new()
        }
        Some(url) if !url.starts_with("https://") || url.len() == "https://".len() => {
            problems.push(Problem::field(
                "acme.directory",
                format!(
                    "{url:?} is not an https:// URL (ACME servers are only reached over HTTPS)"
                ),
            ));
            url
        }
        Some(url) => url,
    };
    if let Some(email) = &raw.email {
        let valid = email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            problems.push(Problem::field(
                "acme.email",
                format!("{email:?} is not an email address"),
            ));
        }
    }
    let ca_roots = match raw.ca_roots.as_deref() {
        Some("") => {
            problems.push(Problem::field("acme.ca_roots", "must not be empty"));
            None
        }
        Some(path) => Some(base.join(path)),
        None => None,
    };
    let challenges = validate_challenges(raw.challenges, problems);
    let renew_before = match raw.renew_before.as_deref().map(parse_duration) {
        None => None,
        Some(Ok(duration)) if !duration.is_zero() => Some(duration),
        Some(Ok(_)) => {
            problems.push(Problem::field("acme.renew_before", "must be more than 0"));
            None
        }
        Some(Err(err)) => {
            problems.push(Problem::field("acme.renew_before", err.to_string()));
            None
        }
    };
    let storage = match raw.storage.as_deref().unwrap_or(DEFAULT_ACME_STORAGE) {
        "" => {
            problems.push(Problem::field("acme.storage", "must not be empty"));
            PathBuf::new()
        }
        path => base.join(path),
    };
    let on_demand = raw.on_demand.unwrap_or(false);
    if let Some(ask) = &raw.ask {
        if !ask.starts_with('/') || ask.contains('?') || ask.contains('#') {
            problems.push(Problem::field(
                "acme.ask",
                format!("{ask:?} is not a path: expected one starting with / and without ? or #, e.g. \"/allow-certificate\""),
            ));
        } else if !on_demand {
            problems.push(Problem::field(
                "acme.ask",
                "is only used with \"on_demand\": true (exact host folders never ask)",
            ));
        }
    }
    let rate = raw.rate.unwrap_or(DEFAULT_ACME_RATE);
    if rate == 0 || rate > MAX_ACME_RATE {
        problems.push(Problem::field(
            "acme.rate",
            format!("must be from 1 to {MAX_ACME_RATE} (new orders per minute), not {rate}"),
        ));
    }
    (problems.len() == before).then_some(AcmeConfig {
        directory,
        email: raw.email,
        ca_roots,
        challenges,
        renew_before,
        storage,
        on_demand,
        ask: raw.ask,
        rate,
    })
}

fn validate_challenges(
    raw: Option<Vec<String>>,
    problems: &mut Vec<Problem>,
) -> Vec<AcmeChallenge> {
    let Some(names) = raw else {
        return vec![AcmeChallenge::Http01, AcmeChallenge::TlsAlpn01];
    };
    let mut out = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let challenge = match name.as_str() {
            "http-01" => AcmeChallenge::Http01,
            "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
            other => {
                problems.push(Problem::field(
                    format!("acme.challenges[{index}]"),
                    format!("unknown challenge {other:?}; expected \"http-01\" or \"tls-alpn-01\""),
                ));
                continue;
            }
        };
        if out.contains(&challenge) {
            problems.push(Problem::field(
                format!("acme.challenges[{index}]"),
                format!("{name:?} is listed twice"),
            ));
            continue;
        }
        out.push(challenge);
    }
    if names.is_empty() {
        problems.push(Problem::field(
            "acme.challenges",
            "must list at least one of \"http-01\", \"tls-alpn-01\"",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Config;

    fn parse(dir: &Path, text: &str) -> crate::Result<Config> {
        std::fs::create_dir_all(dir.join("a")).expect("project dir");
        Config::parse(text, &dir.join("config.json"), |_| None)
    }

    fn error(text: &str) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        match parse(dir.path(), text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults_fill_everything_but_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = parse(
            dir.path(),
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "https://ca.test/dir"}}"#,
        )
        .expect("valid");
        let acme = config.startup.acme.expect("acme");
        assert_eq!(acme.directory, "https://ca.test/dir");
        assert_eq!(
            acme.challenges,
            [AcmeChallenge::Http01, AcmeChallenge::TlsAlpn01]
        );
        assert_eq!(acme.storage, dir.path().join("data/acme"));
        assert_eq!(
            (acme.on_demand, acme.rate, acme.renew_before),
            (false, 10, None)
        );
        assert_eq!((acme.email, acme.ask, acme.ca_roots), (None, None, None));
    }

    #[test]
    fn every_key_is_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = parse(
            dir.path(),
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "https://ca.test/dir", "email": "ops@example.com",
                         "ca_roots": "pebble.pem", "challenges": ["tls-alpn-01"],
                         "renew_before": "30d", "storage": "/var/lib/acme", "on_demand": true,
                         "ask": "/allow", "rate": 3}}"#,
        )
        .expect("valid");
        let acme = config.startup.acme.expect("acme");
        assert_eq!(acme.ca_roots, Some(dir.path().join("pebble.pem")));
        assert_eq!(acme.challenges, [AcmeChallenge::TlsAlpn01]);
        assert_eq!(acme.renew_before, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(acme.storage, Path::new("/var/lib/acme"));
        assert_eq!(
            (acme.on_demand, acme.ask.as_deref(), acme.rate),
            (true, Some("/allow"), 3)
        );
    }

    #[test]
    fn mistakes_name_the_field() {
        let err = error(r#"{"projects": ["a"], "acme": {"directory": "https://ca.test/dir"}}"#);
        assert!(err.contains("acme: needs tls_listen"), "{err}");
        let err = error(r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0", "acme": {}}"#);
        assert!(err.contains("acme.directory: is required"), "{err}");
        let err = error(
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "http://ca.test", "email": "nobody", "challenges": ["dns-01", "http-01", "http-01"],
                         "renew_before": "soon", "rate": 0, "ask": "allow", "storage": ""}}"#,
        );
        for expected in [
            "acme.directory: \"http://ca.test\" is not an https:// URL",
            "acme.email: \"nobody\" is not an email address",
            "acme.challenges[0]: unknown challenge \"dns-01\"",
            "acme.challenges[2]: \"http-01\" is listed twice",
            "acme.renew_before:",
            "acme.rate: must be from 1 to 1000",
            "acme.ask: \"allow\" is not a path",
            "acme.storage: must not be empty",
        ] {
            assert!(err.contains(expected), "{expected} missing in {err}");
        }
        let err = error(
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "https://ca.test/dir", "ask": "/allow"}}"#,
        );
        assert!(
            err.contains("acme.ask: is only used with \"on_demand\": true"),
            "{err}"
        );
        let err = error(
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "https://ca.test/dir", "challenges": []}}"#,
        );
        assert!(
            err.contains("acme.challenges: must list at least one"),
            "{err}"
        );
        let err = error(
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0",
                "acme": {"directory": "https://ca.test/dir", "renew": "1d"}}"#,
        );
        assert!(err.contains("acme"), "{err}");
    }

    #[test]
    fn a_changed_acme_block_waits_for_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let old = parse(
            dir.path(),
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0", "acme": {"directory": "https://ca.test/dir"}}"#,
        )
        .expect("valid");
        let new = parse(
            dir.path(),
            r#"{"projects": ["a"], "tls_listen": "127.0.0.1:0", "acme": {"directory": "https://ca.test/dir", "rate": 2}}"#,
        )
        .expect("valid");
        let messages: Vec<String> = old
            .startup
            .differences(&new.startup)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            ["config.json `acme` changed; it takes effect after a restart"]
        );
    }
}
