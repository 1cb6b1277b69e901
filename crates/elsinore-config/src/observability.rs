//! `log_format`, `access_log` and `metrics` in config.json: how logs are
//! written, where access-log lines go, and which labels the metrics carry.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Problem;

/// `log_format`: how every log line is written (restart-only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, `key=value` fields (default).
    #[default]
    Text,
    /// One JSON object per line, fields as keys.
    Json,
}

impl LogFormat {
    /// `"text"` or `"json"`, as written in config.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// `access_log`: where the one line per request goes (restart-only; the
/// file is reopened on SIGUSR1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `"stdout"` (default): the process's standard output, apart from
    /// the diagnostics on standard error.
    #[default]
    Stdout,
    /// `"off"`: no access log.
    Off,
    /// A file, absolute (relative paths resolve against config.json's
    /// folder), opened for appending.
    File(PathBuf),
}

impl AccessLogTarget {
    /// The value of `access_log` resolved against `base` (config.json's
    /// folder); a problem names the field when it is empty.
    pub(crate) fn parse(text: Option<&str>, base: &Path) -> Result<Self, Problem> {
        match text {
            None | Some("stdout") => Ok(Self::Stdout),
            Some("off") => Ok(Self::Off),
            Some("") => Err(Problem::field(
                "access_log",
                "must not be empty; use a file path, \"stdout\" or \"off\"",
            )),
            Some(path) => Ok(Self::File(base.join(path))),
        }
    }
}

impl fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::Off => f.write_str("off"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `metrics` in config.json (restart-only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Add a `host` label to the request metrics. Off by default: one
    /// series per host multiplies the series count by the number of hosts.
    #[serde(default)]
    pub per_host: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn parse(text: &str) -> crate::Result<Config> {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("a")).expect("project dir");
        Config::parse(text, &dir.path().join("config.json"), |_| None)
    }

    #[test]
    fn defaults_are_text_and_no_host_label() {
        let config = parse(r#"{"projects": ["a"]}"#).expect("valid");
        assert_eq!(config.startup.log_format, LogFormat::Text);
        assert!(!config.startup.metrics.per_host);
    }

    #[test]
    fn json_and_per_host_are_read() {
        let config =
            parse(r#"{"projects": ["a"], "log_format": "json", "metrics": {"per_host": true}}"#)
                .expect("valid");
        assert_eq!(config.startup.log_format, LogFormat::Json);
        assert!(config.startup.metrics.per_host);
    }

    #[test]
    fn access_log_is_stdout_off_or_a_file_beside_config_json() {
        assert_eq!(
            parse(r#"{"projects": ["a"]}"#)
                .expect("valid")
                .startup
                .access_log,
            AccessLogTarget::Stdout
        );
        let off = parse(r#"{"projects": ["a"], "access_log": "off"}"#).expect("valid");
        assert_eq!(off.startup.access_log, AccessLogTarget::Off);
        let file = parse(r#"{"projects": ["a"], "access_log": "logs/access.log"}"#).expect("valid");
        let AccessLogTarget::File(path) = &file.startup.access_log else {
            panic!("a file: {:?}", file.startup.access_log);
        };
        assert!(path.is_absolute(), "{}", path.display());
        assert!(path.ends_with("logs/access.log"), "{}", path.display());
        let err = parse(r#"{"projects": ["a"], "access_log": ""}"#)
            .expect_err("empty")
            .to_string();
        assert!(err.contains("access_log: must not be empty"), "{err}");
    }

    #[test]
    fn unknown_values_are_refused_with_the_field() {
        let err = parse(r#"{"projects": ["a"], "log_format": "xml"}"#)
            .expect_err("xml is no format")
            .to_string();
        assert!(err.contains("log_format"), "{err}");
        let err = parse(r#"{"projects": ["a"], "metrics": {"per_hots": true}}"#)
            .expect_err("typo")
            .to_string();
        assert!(err.contains("per_hots"), "{err}");
    }
}
