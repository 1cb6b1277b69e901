//! Logging setup: `tracing-subscriber` on stderr, filtered by `--log` or
//! `RUST_LOG` (default `info`), as text or JSON lines.
//!
//! `serve` picks the format from `--log-format`, else config.json's
//! `log_format`; the format applies to every line (startup, access log,
//! handler output, reloads), so it is set once, before anything logs.

use std::io::IsTerminal;
use std::path::Path;

use elsinore_config::LogFormat;

/// Without `--log` or `RUST_LOG`. notify logs at WARN when it unwatches a
/// folder that was just deleted, which is how every removed host folder
/// ends; that is not news.
const DEFAULT_FILTER: &str = "info,notify=error";

/// rustls logs at WARN what a client got wrong in its hello (an IP address
/// sent as SNI, which wrk and some HTTP libraries do): one line per
/// handshake, at the client's choice, costing more CPU than the handshake's
/// own key exchange and filling the disk on demand. The handshake goes on
/// (the name is ignored, as RFC 6066 asks), so there is nothing for the
/// operator to act on. Added to every filter that does not name rustls
/// itself; `--log rustls=warn` brings the lines back for debugging.
const QUIET_CLIENT_NOISE: &str = "rustls=error";

/// Installs the global subscriber. `filter` is a `RUST_LOG`-style
/// directive list; an invalid one is reported and the default used instead.
pub fn init(filter: Option<&str>, format: LogFormat) {
    let (filter, bad) = match filter {
        Some(directives) => match tracing_subscriber::EnvFilter::try_new(directives) {
            Ok(filter) => (filter, None),
            Err(err) => (
                tracing_subscriber::EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "--log {directives:?} is not a valid filter ({err}); using {DEFAULT_FILTER}"
                )),
            ),
        },
        None => (
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER)),
            None,
        ),
    };
    let names_rustls = filter.to_string().contains("rustls");
    let filter = if names_rustls {
        filter
    } else {
        match QUIET_CLIENT_NOISE.parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line with the event's fields at the top level,
        // so `jq 'select(.target == "elsinore::access")'` just works.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    if let Some(bad) = bad {
        tracing::warn!("{bad}");
    }
}

/// `log_format` from config.json, read before logging starts. Anything
/// unreadable gives text: `serve` validates the file properly right after
/// and reports its errors in that format.
pub fn configured_format(config: &Path) -> LogFormat {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|value| {
            value
                .get("log_format")
                .and_then(|v| serde_json::from_value::<LogFormat>(v.clone()).ok())
        })
        .unwrap_or_default()
}
