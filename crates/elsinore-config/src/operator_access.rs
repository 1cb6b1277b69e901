//! `admin_hosts` and `admin_token_env`: who the operator listener
//! (`admin_listen`) answers. The checks themselves live with the listener;
//! this module only validates what the operator wrote.

use std::fmt;

use crate::error::Problem;
use crate::hostname::Hostname;

/// Shortest bearer token accepted: 16 characters is 96 bits of a hex
/// token, beyond guessing over a network.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Who may use the operator listener, beyond its own address and
/// `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorAccess {
    /// `admin_hosts`: further names accepted in `Host`, lower-case.
    pub hosts: Vec<Hostname>,
    /// The token every request but `/healthz` and `/readyz` must present
    /// (`admin_token_env`'s value); `None` means no token is asked.
    pub token: Option<AdminToken>,
    /// `admin_token_env`: the variable the token came from, kept out of
    /// every handler's environment.
    pub token_env: Option<String>,
}

/// The operator listener's bearer token. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The secret itself; callers compare it in constant time and must not
    /// log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Validates `admin_hosts` and `admin_token_env`; `env` answers the
/// variable lookup. `has_listener` is whether `admin_listen` is set.
pub(crate) fn validate_operator_access(
    hosts: Option<Vec<String>>,
    token_env: Option<String>,
    has_listener: bool,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> OperatorAccess {
    if !has_listener {
        for (field, set) in [
            ("admin_hosts", hosts.is_some()),
            ("admin_token_env", token_env.is_some()),
        ] {
            if set {
                problems.push(Problem::field(
                    field,
                    "needs admin_listen: there is no operator listener to protect",
                ));
            }
        }
    }
    let hosts = hosts
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(index, host)| match Hostname::parse(host) {
            Ok(host) => Some(host),
            Err(err) => {
                problems.push(Problem::field(
                    format!("admin_hosts[{index}]"),
                    format!("{err}; expected a host name such as \"ops.example.com\" (any port is accepted)"),
                ));
                None
            }
        })
        .collect();
    let token = token_env
        .as_deref()
        .and_then(|var| check_token(var, env(var), problems));
    OperatorAccess {
        hosts,
        token,
        token_env,
    }
}

fn check_token(
    var: &str,
    value: Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<AdminToken> {
    const HOW: &str = "make one with `openssl rand -hex 24`";
    let problem = match value {
        _ if var.is_empty() => "must name an environment variable".to_owned(),
        None => format!("environment variable {var} is not set ({HOW} and export it)"),
        Some(value) if value.is_empty() => format!("environment variable {var} is empty ({HOW})"),
        Some(value) if !value.bytes().all(|b| b.is_ascii_graphic()) => format!(
            "the token in {var} may only hold printable ASCII without spaces ({HOW})"
        ),
        Some(value) if value.chars().count() < MIN_ADMIN_TOKEN_LEN => format!(
            "the token in {var} has {} characters; at least {MIN_ADMIN_TOKEN_LEN} are needed ({HOW})",
            value.chars().count()
        ),
        Some(value) => return Some(AdminToken(value)),
    };
    problems.push(Problem::field("admin_token_env", problem));
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(
        hosts: Option<&[&str]>,
        token_env: Option<&str>,
        value: Option<&str>,
    ) -> (OperatorAccess, Vec<String>) {
        let mut problems = Vec::new();
        let access = validate_operator_access(
            hosts.map(|h| h.iter().map(|s| (*s).to_owned()).collect()),
            token_env.map(str::to_owned),
            true,
            &|_| value.map(str::to_owned),
            &mut problems,
        );
        let problems = problems
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        (access, problems)
    }

    #[test]
    fn hosts_are_names_and_the_token_is_long_enough() {
        let (access, problems) = validate(
            Some(&["Ops.Example.com"]),
            Some("OPS_TOKEN"),
            Some("0123456789abcdef"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(access.hosts[0].as_str(), "ops.example.com");
        assert_eq!(
            access.token.as_ref().map(AdminToken::expose),
            Some("0123456789abcdef")
        );
        assert!(!format!("{access:?}").contains("0123456789abcdef"));
        assert_eq!(validate(None, None, None).0, OperatorAccess::default());
    }

    #[test]
    fn refusals_name_the_field_and_say_how_to_fix_it() {
        let (_, problems) = validate(
            Some(&["ok.test", "bad:9090"]),
            Some("OPS_TOKEN"),
            Some("short"),
        );
        assert!(
            problems[0].starts_with("admin_hosts[1]: invalid host \"bad:9090\""),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "admin_token_env: the token in OPS_TOKEN has 5 characters; at least 16 are needed (make one with `openssl rand -hex 24`)"
        );
        let (_, problems) = validate(None, Some("OPS_TOKEN"), None);
        assert_eq!(
            problems,
            ["admin_token_env: environment variable OPS_TOKEN is not set (make one with `openssl rand -hex 24` and export it)"]
        );
        let (_, problems) = validate(None, Some("OPS_TOKEN"), Some(""));
        assert!(problems[0].contains("OPS_TOKEN is empty"), "{problems:?}");
        let (_, problems) = validate(None, Some("OPS_TOKEN"), Some("with a space 0123456"));
        assert!(problems[0].contains("printable ASCII"), "{problems:?}");

        let mut problems = Vec::new();
        validate_operator_access(
            Some(vec![]),
            Some("T".into()),
            false,
            &|_| None,
            &mut problems,
        );
        assert_eq!(problems[0].field, "admin_hosts");
        assert!(problems[0].message.starts_with("needs admin_listen"));
    }
}
