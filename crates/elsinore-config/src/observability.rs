//! `log_format` and `metrics` in config.json: how logs are written and
//! which labels the metrics carry.

use serde::Deserialize;

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
