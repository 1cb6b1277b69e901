//! Reading the host keys `elsinore keys import` brings in: Hamlet's
//! `hamlet_host_keys` as psql's `\copy … CSV HEADER` writes it, or as a
//! JSON array of the same objects. Only reads: the file is never copied.
//!
//! Both forms have the columns `target_host`, `key`, `label`, `created_at`
//! and `revoked_at`, in any order (others, such as `id`, are ignored);
//! `label`, `created_at` and `revoked_at` may be empty (CSV) or `null`
//! (JSON).

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};

/// One key as the file has it, before any check of who owns its host.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Where in the file: `line 4` (CSV) or `entry 3` (JSON, from 1).
    pub at: String,
    /// `target_host`, as written.
    pub host: String,
    /// The key in plain text.
    pub key: String,
    /// `label`; `""` for NULL.
    pub label: String,
    /// `created_at`, epoch ms; `None` when NULL.
    pub created_at: Option<i64>,
    /// `revoked_at`, epoch ms; `None` when NULL.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("at", &self.at)
            .field("host", &self.host)
            .field("label", &self.label)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Reads every row of `file`, or says which line (or entry) is wrong.
/// JSON when the first non-blank character is `[`, CSV otherwise.
pub fn read_rows(file: &Path) -> anyhow::Result<Vec<KeyRow>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let rows = if text.trim_start().starts_with('[') {
        parse_json(&text)
    } else {
        parse_csv(&text)
    };
    rows.map_err(|err| anyhow!("{}: {err}", file.display()))
}

/// The columns a row needs, by header name.
struct Columns {
    host: usize,
    key: usize,
    label: Option<usize>,
    created_at: Option<usize>,
    revoked_at: Option<usize>,
}

fn parse_csv(text: &str) -> anyhow::Result<Vec<KeyRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|err| anyhow!("line 1: {err}"))?
        .clone();
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let required = |name: &str| {
        find(name).ok_or_else(|| {
            anyhow!(
                "line 1: no column {name:?} in the header line ({}); expected target_host, key, label, created_at, revoked_at",
                headers.iter().collect::<Vec<_>>().join(",")
            )
        })
    };
    let columns = Columns {
        host: required("target_host")?,
        key: required("key")?,
        label: find("label"),
        created_at: find("created_at"),
        revoked_at: find("revoked_at"),
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        // The csv crate's own message names the line (and the field count).
        let record = record.map_err(|err| anyhow!("{err}"))?;
        let line = record.position().map_or(0, csv::Position::line);
        let at = format!("line {line}");
        let field = |index: Option<usize>| index.and_then(|i| record.get(i)).unwrap_or("");
        let row = row(
            &at,
            field(Some(columns.host)),
            field(Some(columns.key)),
            field(columns.label),
            field(columns.created_at),
            field(columns.revoked_at),
        )
        .map_err(|why| anyhow!("{at}: {why}"))?;
        rows.push(row);
    }
    Ok(rows)
}

/// One object of the JSON form; unknown fields (`id`) are ignored.
#[derive(serde::Deserialize)]
struct JsonRow {
    target_host: Option<String>,
    key: Option<String>,
    label: Option<String>,
    created_at: Option<String>,
    revoked_at: Option<String>,
}

fn parse_json(text: &str) -> anyhow::Result<Vec<KeyRow>> {
    let objects: Vec<JsonRow> = serde_json::from_str(text).map_err(|err| {
        // serde_json ends its message with the position; put it first.
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let message = err.to_string();
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
        anyhow!("line {}: {message}", err.line())
    })?;
    objects
        .into_iter()
        .enumerate()
        .map(|(index, object)| {
            let at = format!("entry {}", index + 1);
            row(
                &at,
                object.target_host.as_deref().unwrap_or(""),
                object.key.as_deref().unwrap_or(""),
                object.label.as_deref().unwrap_or(""),
                object.created_at.as_deref().unwrap_or(""),
                object.revoked_at.as_deref().unwrap_or(""),
            )
            .map_err(|why| anyhow!("{at} of the array: {why}"))
        })
        .collect()
}

fn row(
    at: &str,
    host: &str,
    key: &str,
    label: &str,
    created_at: &str,
    revoked_at: &str,
) -> anyhow::Result<KeyRow> {
    if host.is_empty() {
        bail!("target_host is empty");
    }
    if key.is_empty() {
        bail!("key is empty");
    }
    let time = |name: &str, text: &str| -> anyhow::Result<Option<i64>> {
        if text.is_empty() {
            return Ok(None);
        }
        parse_timestamp(text).map(Some).ok_or_else(|| {
            anyhow!("{name} {text:?} is not a timestamp such as \"2026-01-05 10:20:30.123+00\"")
        })
    };
    Ok(KeyRow {
        at: at.to_owned(),
        host: host.to_owned(),
        key: key.to_owned(),
        label: label.to_owned(),
        created_at: time("created_at", created_at)?,
        revoked_at: time("revoked_at", revoked_at)?,
    })
}

/// Epoch milliseconds of a PostgreSQL or ISO 8601 timestamp:
/// `YYYY-MM-DD[ T]HH:MM:SS[.fraction][zone]`, the zone `Z`, `+HH`,
/// `+HH:MM` or `+HHMM` (either sign); without a zone (a `timestamp`
/// column) it is UTC, which is what `NOW()` stores on a server in UTC.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b' ' | b'T')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        let kept = &fraction[..digits.min(3)];
        millis = kept.parse::<i64>().ok()? * 10_i64.pow(3 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "" | "Z" | "z" => 0,
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &zone[1..];
            let (hours, minutes) = match zone.len() {
                2 => (zone, "00"),
                4 => (&zone[..2], &zone[2..]),
                5 if zone.as_bytes()[2] == b':' => (&zone[..2], &zone[3..]),
                _ => return None,
            };
            let parse = |s: &str| {
                s.parse::<i64>()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
            };
            let (hours, minutes) = (parse(hours)?, parse(minutes)?);
            if hours > 15 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_postgres_and_javascript_write_them() {
        // 2026-01-05T10:20:30.123Z
        let at = 1_767_608_430_123;
        for text in [
            "2026-01-05 10:20:30.123+00",
            "2026-01-05 10:20:30.123456",
            "2026-01-05T10:20:30.123Z",
            "2026-01-05 12:20:30.123+02",
            "2026-01-05 15:50:30.123+05:30",
            "2026-01-05 05:20:30.1234-0500",
        ] {
            assert_eq!(parse_timestamp(text), Some(at), "{text}");
        }
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("2024-02-29 00:00:00.5"),
            Some(1_709_164_800_500)
        );
        for bad in [
            "",
            "2026-01-05",
            "2026-13-05 10:20:30",
            "2025-02-29 10:20:30",
            "2026-01-05 10:20:30.",
            "2026-01-05 10:20:30 UTC",
            "2026-01-05 10:20:30+1",
            "yesterday at noon!!",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_by_header_name_with_nulls_and_quotes() {
        let text = "label,key,target_host,created_at,revoked_at,id\n\
                    \"editor, \"\"Kim\"\"\",0f8fad5b-d9cb-469f-a165-70867728950e,blog.localhost,2026-01-05 10:20:30.123+00,,1\n\
                    ,7c9e6679-7425-40de-944b-e07fc1f90ae7,Blog.Localhost,2026-01-05 10:20:30+00,2026-01-06 00:00:00+00,2\n";
        let rows = parse_csv(text).expect("valid");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].label, "editor, \"Kim\"");
        assert_eq!(rows[0].host, "blog.localhost");
        assert_eq!(
            (rows[0].created_at, rows[0].revoked_at),
            (Some(1_767_608_430_123), None)
        );
        assert_eq!(rows[1].at, "line 3");
        assert_eq!(rows[1].label, "");
        assert_eq!(rows[1].revoked_at, Some(1_767_657_600_000));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv("target_host,label\nblog.localhost,x\n").expect_err("no key");
        assert!(
            err.to_string().starts_with("line 1: no column \"key\""),
            "{err}"
        );
        let err = parse_csv("target_host,key,created_at\na,b,c\nblog.localhost,k,nope\n")
            .expect_err("bad time");
        assert_eq!(
            err.to_string(),
            "line 2: created_at \"c\" is not a timestamp such as \"2026-01-05 10:20:30.123+00\""
        );
        let err = parse_csv("target_host,key\nblog.localhost,k,extra\n").expect_err("fields");
        assert!(err.to_string().contains("line: 2"), "{err}");
    }

    #[test]
    fn json_array_of_the_same_fields() {
        let rows = parse_json(
            r#"[{"id": "x", "target_host": "blog.localhost", "key": "0f8fad5b-d9cb-469f-a165-70867728950e",
                 "label": null, "created_at": "2026-01-05T10:20:30.123Z", "revoked_at": null}]"#,
        )
        .expect("valid");
        assert_eq!(rows[0].label, "");
        assert_eq!(rows[0].created_at, Some(1_767_608_430_123));
        let err = parse_json("[{\"target_host\": \"a\"}]").expect_err("no key");
        assert_eq!(err.to_string(), "entry 1 of the array: key is empty");
        let err = parse_json("[\n  {\"key\": 3}\n]").expect_err("type");
        assert!(err.to_string().starts_with("line 2: invalid type"), "{err}");
    }
}
