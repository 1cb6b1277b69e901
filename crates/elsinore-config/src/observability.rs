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
