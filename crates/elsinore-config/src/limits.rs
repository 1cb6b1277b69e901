//! The `limits` and `timeouts` keys of `config.json`, and byte sizes
//! (`"10MB"`, `"512KB"`, `1048576`) as written in config files.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::Problem;
use crate::parse_duration;

/// `limits.max_header_bytes` when absent: 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// The smallest `limits.max_header_bytes` accepted (hyper's smallest read
/// buffer).
pub const MIN_MAX_HEADER_BYTES: u64 = 8 * 1024;
/// `limits.max_body` when absent: 10 MiB.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// `limits.max_connections` when absent.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// `limits.max_connections_per_ip` when absent: a browser opens 6 to 10
/// connections per host, a NAT of a few hundred users some hundreds.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// `timeouts.header_read` when absent.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `timeouts.idle` when absent.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `timeouts.handler_connect` when absent.
pub const DEFAULT_HANDLER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The validated `limits` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head (request line and headers) accepted; larger
    /// ones get 431.
    pub max_header_bytes: u64,
    /// The default largest request body, for projects without their own
    /// `max_body`; larger ones get 413.
    pub max_body: u64,
    /// Open client connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Open client connections from one client address at most; more
    /// from that address are answered 503 and closed, others are served.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body: DEFAULT_MAX_BODY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

/// The validated `timeouts` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a client has to send a complete request head (slowloris).
    pub header_read: Duration,
    /// How long a connection with no request in progress is kept open.
    pub idle: Duration,
    /// How long connecting to a handler may take before 502.
    pub handler_connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            handler_connect: DEFAULT_HANDLER_CONNECT_TIMEOUT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    max_header_bytes: Option<RawSize>,
    max_body: Option<RawSize>,
    max_connections: Option<u64>,
    max_connections_per_ip: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    header_read: Option<String>,
    idle: Option<String>,
    handler_connect: Option<String>,
}

/// A size as written: a JSON number of bytes or a string like `"10MB"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"10MB\"")
            }
            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(bytes))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(text.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl RawSize {
    /// The size in bytes, or a problem at `field`.
    pub(crate) fn bytes(&self, field: &str, problems: &mut Vec<Problem>) -> Option<u64> {
        match self {
            Self::Bytes(bytes) => Some(*bytes),
            Self::Text(text) => match parse_size(text) {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    problems.push(Problem::field(field, err.to_string()));
                    None
                }
            },
        }
    }
}

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: expected bytes as a number, or a whole number followed by B, KB, MB or GB (e.g. \"10MB\")")]
pub struct SizeError {
    input: String,
}

/// Parses `<digits>[unit]` with unit `B`, `KB`, `MB` or `GB` (any case;
/// 1 KB = 1024 bytes). A bare number is bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: input.to_owned(),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| err())?;
    let multiplier: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" | "KIB" => 1024,
        "MB" | "M" | "MIB" => 1024 * 1024,
        "GB" | "G" | "GIB" => 1024 * 1024 * 1024,
        _ => return Err(err()),
    };
    value.checked_mul(multiplier).ok_or_else(err)
}

/// The inverse of [`parse_size`]: the largest unit that is exact
/// (`10MB`, `1536KB`, `100B`).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Validates `limits`; absent means defaults.
pub(crate) fn validate_limits(raw: Option<RawLimits>, problems: &mut Vec<Problem>) -> Limits {
    let mut limits = Limits::default();
    let Some(raw) = raw else {
        return limits;
    };
    if let Some(size) = &raw.max_header_bytes {
        match size.bytes("limits.max_header_bytes", problems) {
            Some(bytes) if bytes < MIN_MAX_HEADER_BYTES => problems.push(Problem::field(
                "limits.max_header_bytes",
                format!("must be at least {MIN_MAX_HEADER_BYTES} bytes (8KB)"),
            )),
            Some(bytes) if bytes > u64::from(u32::MAX) => problems.push(Problem::field(
                "limits.max_header_bytes",
                "must be less than 4GB",
            )),
            Some(bytes) => limits.max_header_bytes = bytes,
            None => {}
        }
    }
    if let Some(size) = &raw.max_body {
        if let Some(bytes) = max_body(size, "limits.max_body", problems) {
            limits.max_body = bytes;
        }
    }
    match raw.max_connections {
        None => {}
        Some(0) => problems.push(Problem::field(
            "limits.max_connections",
            "must be at least 1",
        )),
        Some(n) => limits.max_connections = usize::try_from(n).unwrap_or(usize::MAX),
    }
    match raw.max_connections_per_ip {
        None => {}
        Some(0) => problems.push(Problem::field(
            "limits.max_connections_per_ip",
            "must be at least 1",
        )),
        Some(n) => limits.max_connections_per_ip = usize::try_from(n).unwrap_or(usize::MAX),
    }
    limits
}

/// A `max_body` (global or per project): at least 1 byte.
pub(crate) fn max_body(size: &RawSize, field: &str, problems: &mut Vec<Problem>) -> Option<u64> {
    match size.bytes(field, problems)? {
        0 => {
            problems.push(Problem::field(field, "must be at least 1 byte"));
            None
        }
        bytes => Some(bytes),
    }
}

/// Validates `timeouts`; absent means defaults.
pub(crate) fn validate_timeouts(raw: Option<RawTimeouts>, problems: &mut Vec<Problem>) -> Timeouts {
    let mut timeouts = Timeouts::default();
    let Some(raw) = raw else {
        return timeouts;
    };
    let mut positive = |text: Option<&str>, field: &str, slot: &mut Duration| {
        let Some(text) = text else { return };
        match parse_duration(text) {
            Ok(Duration::ZERO) => problems.push(Problem::field(field, "must be more than 0")),
            Ok(duration) => *slot = duration,
            Err(err) => problems.push(Problem::field(field, err.to_string())),
        }
    };
    positive(
        raw.header_read.as_deref(),
        "timeouts.header_read",
        &mut timeouts.header_read,
    );
    positive(raw.idle.as_deref(), "timeouts.idle", &mut timeouts.idle);
    positive(
        raw.handler_connect.as_deref(),
        "timeouts.handler_connect",
        &mut timeouts.handler_connect,
    );
    timeouts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("512KB"), Ok(512 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_size("1gb"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 "), Ok(2));
        for text in ["10MB", "1536KB", "100B", "1GB"] {
            assert_eq!(format_size(parse_size(text).expect("valid")), text);
        }
    }

    #[test]
    fn refuses_malformed_sizes() {
        for bad in [
            "",
            "MB",
            "1.5MB",
            "-1",
            "10 MB",
            "10TB",
            "99999999999999999999GB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn limits_validate_with_field_paths() {
        let raw: RawLimits = serde_json::from_str(
            r#"{"max_header_bytes": "1KB", "max_body": "lots", "max_connections": 0}"#,
        )
        .expect("shape");
        let mut problems = Vec::new();
        validate_limits(Some(raw), &mut problems);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "limits.max_header_bytes",
                "limits.max_body",
                "limits.max_connections"
            ]
        );
    }

    #[test]
    fn timeouts_default_and_parse() {
        let mut problems = Vec::new();
        assert_eq!(validate_timeouts(None, &mut problems), Timeouts::default());
        let raw: RawTimeouts =
            serde_json::from_str(r#"{"header_read": "2s", "idle": "0s", "handler_connect": "x"}"#)
                .expect("shape");
        let timeouts = validate_timeouts(Some(raw), &mut problems);
        assert_eq!(timeouts.header_read, Duration::from_secs(2));
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["timeouts.idle", "timeouts.handler_connect"]);
    }
}
