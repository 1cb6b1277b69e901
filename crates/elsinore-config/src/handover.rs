//! What a project entry says about what its handlers are handed:
//! `forward_host` (the `Host` they see) and `handler_key_env` (the
//! variable their project key arrives in). Both exist for frameworks that
//! cannot be taught Elsinore's own headers (Hamlet reads the tenant from
//! `Host` and its project key from `HAMLET_PROJECT_KEY`).

use serde::Deserialize;

use crate::config::ProjectKey;
use crate::manifest::RESERVED_ENV;

/// `forward_host`: which `Host` a project's handlers receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardHost {
    /// The client's own `Host` (or HTTP/2 `:authority`), as sent: port and
    /// case kept. `X-Forwarded-Host` carries it too (a trusted proxy's
    /// value is kept).
    #[default]
    Original,
    /// The normalised tenant host Elsinore routed by (`X-Elsinore-Host`:
    /// lower case, no port), in both `Host` and `X-Forwarded-Host`, so a
    /// framework that takes its tenant from either sees the same one.
    Tenant,
}

impl ForwardHost {
    /// The value as written in config.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Tenant => "tenant",
        }
    }
}

/// `handler_key_env`: the project key, handed to the project's own
/// command handlers under `name`. Compared as part of each handler's spec,
/// so a changed name or key restarts them. `Debug` never prints the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerKeyEnv {
    /// The variable's name.
    pub name: String,
    /// The project's key (from `key` or `key_env`).
    pub key: ProjectKey,
}

/// Why `name` cannot be `handler_key_env`: a portable variable name
/// (POSIX: letters, digits and `_`, not starting with a digit) that
/// Elsinore does not set itself.
pub(crate) fn check_env_name(name: &str) -> Result<(), String> {
    let portable = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !portable {
        return Err(format!(
            "{name:?} is not an environment variable name: letters, digits and '_', not starting with a digit (e.g. \"HAMLET_PROJECT_KEY\")"
        ));
    }
    if RESERVED_ENV.contains(&name) || name.starts_with("ELSINORE_") {
        return Err(format!(
            "{name} is set by Elsinore for every handler; choose another name"
        ));
    }
    // A key there would break the handler (PATH) or be overwritten by the
    // project `user`'s own (HOME, USER, LOGNAME).
    if ["PATH", "HOME", "USER", "LOGNAME"].contains(&name) {
        return Err(format!(
            "{name} is not for a key: the handler needs its own; choose another name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names() {
        assert!(check_env_name("HAMLET_PROJECT_KEY").is_ok());
        assert!(check_env_name("_k1").is_ok());
        for bad in ["", "1KEY", "A-B", "A B", "A=B", "KÉ"] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
        for reserved in ["PORT", "ELSINORE_DB", "ELSINORE_ANYTHING"] {
            let err = check_env_name(reserved).expect_err(reserved);
            assert!(err.contains("set by Elsinore"), "{err}");
        }
        assert!(check_env_name("PATH").is_err());
    }
}
