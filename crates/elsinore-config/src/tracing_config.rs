//! The `tracing` key of `config.json`: how many new traces are sampled and
//! where their spans are exported (OTLP over HTTP). Restart-only: the
//! exporter and its task are set up once at startup.

use std::time::Duration;

use serde::Deserialize;

use crate::error::Problem;
use crate::parse_duration;

/// Time between exports of a partial batch when `tracing.export_interval`
/// is absent.
pub const DEFAULT_TRACING_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for the collector per export when `tracing.export_timeout`
/// is absent.
pub const DEFAULT_TRACING_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The path OTLP/HTTP collectors take traces on.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

/// The validated `tracing` settings. Without the key: ids propagated,
/// nothing sampled, nothing exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Share of new traces (no sampled `traceparent` from the client)
    /// whose spans are recorded: 0.0 to 1.0.
    pub sample_ratio: f64,
    /// The collector's traces URL (`otlp_endpoint` + `/v1/traces`);
    /// without it no span is built.
    pub otlp_traces_url: Option<String>,
    /// `service.instance.id`; `None` means hostname and pid.
    pub service_instance: Option<String>,
    /// Time between exports of a partial batch.
    pub export_interval: Duration,
    /// Longest wait for the collector per export.
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            sample_ratio: 0.0,
            otlp_traces_url: None,
            service_instance: None,
            export_interval: DEFAULT_TRACING_EXPORT_INTERVAL,
            export_timeout: DEFAULT_TRACING_EXPORT_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    sample_ratio: Option<f64>,
    otlp_endpoint: Option<String>,
    service_instance: Option<String>,
    export_interval: Option<String>,
    export_timeout: Option<String>,
}

/// Validates `tracing`, pushing every problem found; absent means
/// defaults.
pub(crate) fn validate_tracing(
    raw: Option<RawTracing>,
    problems: &mut Vec<Problem>,
) -> TracingConfig {
    let Some(raw) = raw else {
        return TracingConfig::default();
    };
    let sample_ratio = match raw.sample_ratio {
        None => 0.0,
        Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
        Some(_) => {
            problems.push(Problem::field(
                "tracing.sample_ratio",
                "must be between 0 and 1 (0.01 samples one new trace in a hundred)",
            ));
            0.0
        }
    };
    let otlp_traces_url = raw.otlp_endpoint.and_then(|text| match traces_url(&text) {
        Ok(url) => Some(url),
        Err(why) => {
            problems.push(Problem::field("tracing.otlp_endpoint", why));
            None
        }
    });
    let service_instance = match raw.service_instance {
        Some(name) if name.trim().is_empty() || name.chars().any(char::is_control) => {
            problems.push(Problem::field(
                "tracing.service_instance",
                "must be a non-empty name without control characters",
            ));
            None
        }
        other => other,
    };
    let mut duration = |text: Option<String>, field: &str, default: Duration| match text {
        None => default,
        Some(text) => match parse_duration(&text) {
            Ok(value) if !value.is_zero() => value,
            Ok(_) => {
                problems.push(Problem::field(field, "must be more than 0"));
                default
            }
            Err(err) => {
                problems.push(Problem::field(field, err.to_string()));
                default
            }
        },
    };
    TracingConfig {
        sample_ratio,
        otlp_traces_url,
        service_instance,
        export_interval: duration(
            raw.export_interval,
            "tracing.export_interval",
            DEFAULT_TRACING_EXPORT_INTERVAL,
        ),
        export_timeout: duration(
            raw.export_timeout,
            "tracing.export_timeout",
            DEFAULT_TRACING_EXPORT_TIMEOUT,
        ),
    }
}

/// The traces URL of a collector given as `http://host:port` (the path
/// `/v1/traces` added) or as the full URL ending in `/v1/traces`.
fn traces_url(text: &str) -> Result<String, String> {
    let example = "expected the collector's OTLP/HTTP address, such as \"http://127.0.0.1:4318\"";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL; {example}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{text:?}: https is not supported (Elsinore exports without TLS); send to a collector on this machine or a private network over http, {example}"
            ))
        }
        _ => return Err(format!("{text:?} has no http:// scheme; {example}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host; {example}"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} has a query; {example}"));
    }
    let base = text.trim_end_matches('/');
    if uri.path().trim_end_matches('/').ends_with(OTLP_TRACES_PATH) {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}{OTLP_TRACES_PATH}"))
    }
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
    fn absent_means_propagation_only() {
        let config = parse(r#"{"projects": ["a"]}"#).expect("valid");
        assert_eq!(config.startup.tracing, TracingConfig::default());
        assert_eq!(config.startup.tracing.otlp_traces_url, None);
    }

    #[test]
    fn values_are_read_and_the_traces_path_added() {
        let config = parse(
            r#"{"projects": ["a"], "tracing": {"sample_ratio": 0.25, "otlp_endpoint": "http://127.0.0.1:4318",
                "service_instance": "edge-1", "export_interval": "100ms", "export_timeout": "2s"}}"#,
        )
        .expect("valid");
        let tracing = &config.startup.tracing;
        assert_eq!(tracing.sample_ratio, 0.25);
        assert_eq!(
            tracing.otlp_traces_url.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(tracing.service_instance.as_deref(), Some("edge-1"));
        assert_eq!(tracing.export_interval, Duration::from_millis(100));
        assert_eq!(tracing.export_timeout, Duration::from_secs(2));
        assert_eq!(
            traces_url("http://collector:4318/v1/traces/").as_deref(),
            Ok("http://collector:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://collector:4318/otel/").as_deref(),
            Ok("http://collector:4318/otel/v1/traces")
        );
    }

    #[test]
    fn problems_name_the_field() {
        let cases = [
            (
                r#"{"sample_ratio": 1.5}"#,
                "tracing.sample_ratio: must be between 0 and 1",
            ),
            (
                r#"{"sample_ratio": -0.1}"#,
                "tracing.sample_ratio: must be between 0 and 1",
            ),
            (
                r#"{"otlp_endpoint": "localhost:4318"}"#,
                "tracing.otlp_endpoint: \"localhost:4318\" has no http:// scheme",
            ),
            (
                r#"{"otlp_endpoint": "https://c:4318"}"#,
                "tracing.otlp_endpoint: \"https://c:4318\": https is not supported",
            ),
            (
                r#"{"otlp_endpoint": "not a url"}"#,
                "tracing.otlp_endpoint: \"not a url\" is not a URL",
            ),
            (
                r#"{"export_interval": "0s"}"#,
                "tracing.export_interval: must be more than 0",
            ),
            (
                r#"{"export_timeout": "5"}"#,
                "tracing.export_timeout: invalid duration",
            ),
            (
                r#"{"service_instance": " "}"#,
                "tracing.service_instance: must be a non-empty name",
            ),
            (
                r#"{"sample_rate": 1}"#,
                "tracing.sample_rate: unknown field",
            ),
        ];
        for (block, want) in cases {
            let text = format!(r#"{{"projects": ["a"], "tracing": {block}}}"#);
            let err = parse(&text).expect_err(block).to_string();
            assert!(err.contains(want), "{block}: {err}");
        }
    }
}
