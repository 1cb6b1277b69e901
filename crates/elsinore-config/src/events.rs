//! The `events` key of `config.json`: when the framework events run, how
//! long soft-deleted rows are kept, how many rows one delete transaction
//! takes, and per-table overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::Problem;
use crate::parse_duration;

/// How often the events run when `events.interval` is absent.
pub const DEFAULT_EVENTS_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// How long soft-deleted rows are kept when nothing else says.
pub const DEFAULT_EVENTS_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Rows per delete transaction when `events.batch` is absent.
pub const DEFAULT_EVENTS_BATCH: u32 = 500;

/// Table-name prefixes that belong to Elsinore (or SQLite) and that events
/// never touch, compared case-insensitively as SQLite compares names.
pub const RESERVED_TABLE_PREFIXES: &[&str] = &["elsinore_", "host_secret", "sqlite_"];

/// Whether `table` is one of Elsinore's (or SQLite's) own tables.
pub fn is_reserved_table(table: &str) -> bool {
    RESERVED_TABLE_PREFIXES.iter().any(|prefix| {
        table
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    })
}

/// The validated `events` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Time between scheduled runs; `None` when `"interval": "off"` (runs
    /// then happen only when asked for).
    pub interval: Option<Duration>,
    /// Default retention of soft-deleted rows.
    pub retention: Duration,
    /// Rows deleted per transaction (at least 1).
    pub batch: u32,
    /// Per-table overrides, keyed by table name as written in config.json.
    pub tables: BTreeMap<String, TableEvents>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            interval: Some(DEFAULT_EVENTS_INTERVAL),
            retention: DEFAULT_EVENTS_RETENTION,
            batch: DEFAULT_EVENTS_BATCH,
            tables: BTreeMap::new(),
        }
    }
}

impl EventsConfig {
    /// The override for `table`, matched case-insensitively (SQLite table
    /// names are).
    pub fn table(&self, table: &str) -> Option<&TableEvents> {
        self.tables
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(table))
            .map(|(_, events)| events)
    }
}

/// `events.tables.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEvents {
    /// Retention for this table; beats the schema annotation and the default.
    pub retention: Option<Duration>,
    /// `false` opts the table out of `SoftDeleteCleanup`.
    pub soft_delete: bool,
    /// `false` opts the table out of `SessionExpiry`.
    pub session_expiry: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvents {
    interval: Option<String>,
    retention: Option<String>,
    batch: Option<u32>,
    #[serde(default)]
    tables: BTreeMap<String, RawTableEvents>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTableEvents {
    retention: Option<String>,
    soft_delete: Option<bool>,
    session_expiry: Option<bool>,
}

/// Validates `events`, pushing every problem found; absent means defaults.
pub(crate) fn validate_events(raw: Option<RawEvents>, problems: &mut Vec<Problem>) -> EventsConfig {
    let Some(raw) = raw else {
        return EventsConfig::default();
    };
    let interval = match raw.interval.as_deref() {
        None => Some(DEFAULT_EVENTS_INTERVAL),
        Some("off") => None,
        Some(text) => {
            positive_duration(text, "events.interval", problems).or(Some(DEFAULT_EVENTS_INTERVAL))
        }
    };
    let retention = raw
        .retention
        .as_deref()
        .and_then(|text| positive_duration(text, "events.retention", problems))
        .unwrap_or(DEFAULT_EVENTS_RETENTION);
    let batch = match raw.batch {
        None => DEFAULT_EVENTS_BATCH,
        Some(0) => {
            problems.push(Problem::field("events.batch", "must be at least 1"));
            DEFAULT_EVENTS_BATCH
        }
        Some(batch) => batch,
    };

    let mut tables = BTreeMap::new();
    for (name, table) in raw.tables {
        let here = format!("events.tables.{name}");
        if let Some(why) = table_name_problem(&name) {
            problems.push(Problem::field(here.clone(), why));
        }
        if let Some(first) = tables
            .keys()
            .find(|seen: &&String| seen.eq_ignore_ascii_case(&name))
        {
            problems.push(Problem::field(
                here.clone(),
                format!("names the same table as \"{first}\" (SQLite table names ignore case)"),
            ));
        }
        let soft_delete = table.soft_delete.unwrap_or(true);
        let retention = table
            .retention
            .as_deref()
            .and_then(|text| positive_duration(text, &format!("{here}.retention"), problems));
        if table.retention.is_some() && !soft_delete {
            problems.push(Problem::field(
                format!("{here}.retention"),
                "has no effect with \"soft_delete\": false; remove one of them",
            ));
        }
        tables.insert(
            name,
            TableEvents {
                retention,
                soft_delete,
                session_expiry: table.session_expiry.unwrap_or(true),
            },
        );
    }
    EventsConfig {
        interval,
        retention,
        batch,
        tables,
    }
}

fn positive_duration(text: &str, field: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() => {
            problems.push(Problem::field(field, "must be more than 0"));
            None
        }
        Ok(duration) => Some(duration),
        Err(err) => {
            problems.push(Problem::field(field, err.to_string()));
            None
        }
    }
}

fn table_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a table name cannot be empty".to_owned())
    } else if name.chars().any(char::is_control) {
        Some("a table name cannot hold control characters".to_owned())
    } else if is_reserved_table(name) {
        Some(format!(
            "\"{name}\" is one of Elsinore's own tables (elsinore_*, host_secret*, sqlite_*), which events never touch"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> (EventsConfig, Vec<String>) {
        let raw: Option<RawEvents> = serde_json::from_str(json).expect("shape");
        let mut problems = Vec::new();
        let config = validate_events(raw, &mut problems);
        let problems = problems
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        (config, problems)
    }

    #[test]
    fn absent_means_defaults() {
        let (config, problems) = parse("null");
        assert!(problems.is_empty());
        assert_eq!(config, EventsConfig::default());
        assert_eq!(config.interval, Some(Duration::from_secs(600)));
        assert_eq!(config.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(config.batch, 500);
    }

    #[test]
    fn the_issue_example_parses() {
        let (config, problems) = parse(
            r#"{ "interval": "10m", "retention": "30d", "batch": 500,
                 "tables": { "item_comment": { "retention": "7d" },
                             "audit_log": { "soft_delete": false },
                             "invites": { "session_expiry": false } } }"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let comment = config.table("Item_Comment").expect("case-insensitive");
        assert_eq!(comment.retention, Some(Duration::from_secs(7 * 86_400)));
        assert!(comment.soft_delete && comment.session_expiry);
        let audit = config.table("audit_log").expect("audit");
        assert!(!audit.soft_delete && audit.session_expiry && audit.retention.is_none());
        assert!(!config.table("invites").expect("invites").session_expiry);
        assert!(config.table("other").is_none());
    }

    #[test]
    fn off_disables_the_schedule() {
        let (config, problems) = parse(r#"{"interval": "off"}"#);
        assert!(problems.is_empty());
        assert_eq!(config.interval, None);
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let (_, problems) = parse(
            r#"{ "interval": "0s", "retention": "30", "batch": 0,
                 "tables": { "": {}, "elsinore_event_runs": {}, "Host_Secrets": {},
                             "a": {"retention": "0d"}, "A": {},
                             "b": {"retention": "1d", "soft_delete": false} } }"#,
        );
        assert_eq!(
            problems,
            [
                "events.interval: must be more than 0",
                "events.retention: invalid duration \"30\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\")",
                "events.batch: must be at least 1",
                "events.tables.: a table name cannot be empty",
                "events.tables.Host_Secrets: \"Host_Secrets\" is one of Elsinore's own tables (elsinore_*, host_secret*, sqlite_*), which events never touch",
                "events.tables.a: names the same table as \"A\" (SQLite table names ignore case)",
                "events.tables.a.retention: must be more than 0",
                "events.tables.b.retention: has no effect with \"soft_delete\": false; remove one of them",
                "events.tables.elsinore_event_runs: \"elsinore_event_runs\" is one of Elsinore's own tables (elsinore_*, host_secret*, sqlite_*), which events never touch",
            ]
        );
    }

    #[test]
    fn reserved_tables() {
        for name in [
            "elsinore_event_runs",
            "ELSINORE_x",
            "host_secrets",
            "sqlite_sequence",
        ] {
            assert!(is_reserved_table(name), "{name}");
        }
        for name in ["sessions", "elsinore", "host", "my_elsinore_x", "é"] {
            assert!(!is_reserved_table(name), "{name}");
        }
    }
}
