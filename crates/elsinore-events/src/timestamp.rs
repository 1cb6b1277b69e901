//! How a `deleted_at` / `expires_at` value becomes a point in time.
//!
//! The rule, applied to each value on its own (one column may mix formats):
//!
//! - `NULL` is live: never deleted, never counted.
//! - A number (INTEGER or REAL), or text made only of digits, is epoch
//!   **seconds** when below 100 000 000 000 (1e11) and epoch
//!   **milliseconds** otherwise. 1e11 seconds is the year 5138 and 1e11
//!   milliseconds is 1973-03-03, so both readings of a real timestamp agree.
//! - Text starting `YYYY-MM-DD` is parsed by SQLite's own `unixepoch()`:
//!   `2024-05-01`, `2024-05-01 12:00:00`, `2024-05-01T12:00:00.250Z`,
//!   `2024-05-01T14:00:00+02:00`. Without a zone it is UTC.
//! - The result must fall between 1973-03-03 (1e11 ms) and the year 5138
//!   (1e14 ms). Anything else is **unreadable**: left alone and counted.
//!   That covers `0` or `1` used as flags, negative numbers, Julian day
//!   numbers, microseconds, BLOBs, empty text and text SQLite cannot parse.
//!
//! The rule runs inside SQLite ([`epoch_ms_sql`]) so that a batch is one
//! statement, not a round trip per row.
//!
//! On PostgreSQL a column has one type, and the rule is chosen by it
//! ([`epoch_ms_pg_sql`]): `timestamp with time zone` is its instant;
//! `timestamp without time zone` and `date` are read as UTC (as zone-less
//! text is on SQLite); `smallint`, `integer`, `bigint`, `numeric`, `real`
//! and `double precision` follow the number rule above. The same window
//! applies (`-infinity`, `infinity`, 1970 and flags are unreadable). Other
//! types (text among them: PostgreSQL before 16 cannot test whether text
//! is a date without failing the whole statement) are not read: the table
//! is skipped for that event, with the reason in the report.

/// Lowest readable point in time, in epoch milliseconds (1973-03-03).
pub const MIN_MS: i64 = 100_000_000_000;
/// Readable points in time are below this, in epoch milliseconds (year 5138).
pub const MAX_MS: i64 = 100_000_000_000_000;
/// Numbers below this are seconds; from it on, milliseconds.
pub const SECONDS_BELOW: i64 = 100_000_000_000;

/// An SQL expression giving `column`'s value in epoch milliseconds, or
/// `NULL` when the value is `NULL` or unreadable. `column` must already be
/// a quoted identifier.
pub fn epoch_ms_sql(column: &str) -> String {
    let c = column;
    let number =
        |n: &str| format!("(CASE WHEN {n} < {SECONDS_BELOW} THEN {n} * 1000 ELSE {n} END)");
    let window =
        |ms: String| format!("(CASE WHEN {ms} >= {MIN_MS} AND {ms} < {MAX_MS} THEN {ms} END)");
    format!(
        "(CASE \
            WHEN typeof({c}) IN ('integer', 'real') THEN {num} \
            WHEN typeof({c}) = 'text' AND {c} <> '' AND {c} NOT GLOB '*[^0-9]*' THEN {digits} \
            WHEN typeof({c}) = 'text' AND {c} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' THEN {date} \
         END)",
        num = window(number(c)),
        digits = window(number(&format!("CAST({c} AS INTEGER)"))),
        date = window(format!("(unixepoch({c}, 'subsec') * 1000)")),
    )
}

/// A PostgreSQL expression giving `column`'s value in epoch milliseconds
/// (`numeric`), or `NULL` when the value is `NULL` or unreadable; `None`
/// when values of `data_type` (as `format_type` spells it) are not read at
/// all. `column` must already be a quoted identifier. The session's
/// `TimeZone` must be UTC (the events' connection sets it).
pub fn epoch_ms_pg_sql(column: &str, data_type: &str) -> Option<String> {
    let c = column;
    let window =
        |ms: String| format!("(CASE WHEN {ms} >= {MIN_MS} AND {ms} < {MAX_MS} THEN {ms} END)");
    match data_type {
        "timestamp with time zone" | "timestamp without time zone" | "date" => {
            Some(window(format!("(extract(epoch FROM {c}) * 1000)")))
        }
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => {
            // numeric: no overflow multiplying, whatever the value.
            let n = format!("({c})::numeric");
            Some(window(format!(
                "(CASE WHEN {n} < {SECONDS_BELOW} THEN {n} * 1000 ELSE {n} END)"
            )))
        }
        _ => None,
    }
}

/// A condition every value [`epoch_ms_pg_sql`] reads as before the cutoff
/// also meets, written so that an index on `column` can serve it: `cutoff`
/// is the SQL of the cutoff in epoch milliseconds (`$2::bigint`). Only a
/// pre-filter: the exact rule is applied as well. A number of seconds is
/// always below a cutoff in milliseconds, so `column < cutoff` holds for
/// both readings of a number.
pub fn before_pg_sql(column: &str, data_type: &str, cutoff: &str) -> Option<String> {
    let instant = format!("to_timestamp({cutoff} / 1000.0)");
    match data_type {
        "timestamp with time zone" => Some(format!("{column} < {instant}")),
        "timestamp without time zone" => Some(format!("{column} < ({instant} AT TIME ZONE 'UTC')")),
        "date" => Some(format!(
            "{column} < (({instant} AT TIME ZONE 'UTC')::date + 1)"
        )),
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => {
            Some(format!("{column} < {cutoff}"))
        }
        _ => None,
    }
}

/// `name` as an SQL identifier, safe whatever it holds.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value;

    fn read(value: Value) -> Option<f64> {
        let conn = rusqlite::Connection::open_in_memory().expect("memory db");
        conn.execute_batch("CREATE TABLE t (v)").expect("table");
        conn.execute("INSERT INTO t VALUES (?1)", [value])
            .expect("insert");
        conn.query_row(
            &format!("SELECT {} FROM t", epoch_ms_sql(&quote_ident("v"))),
            [],
            |row| row.get(0),
        )
        .expect("select")
    }

    #[test]
    fn numbers_are_seconds_or_milliseconds_by_size() {
        let may_2024_ms = 1_714_564_800_000_i64; // 2024-05-01T12:00:00Z
        assert_eq!(read(Value::Integer(may_2024_ms)), Some(may_2024_ms as f64));
        assert_eq!(
            read(Value::Integer(may_2024_ms / 1000)),
            Some(may_2024_ms as f64)
        );
        assert_eq!(
            read(Value::Real(1_714_564_800.5)),
            Some(1_714_564_800_500.0)
        );
        assert_eq!(
            read(Value::Text("1714564800".into())),
            Some(may_2024_ms as f64)
        );
        assert_eq!(
            read(Value::Text("1714564800000".into())),
            Some(may_2024_ms as f64)
        );
        // Both edges of the window.
        assert_eq!(read(Value::Integer(100_000_000)), Some(MIN_MS as f64));
        assert_eq!(read(Value::Integer(MIN_MS)), Some(MIN_MS as f64));
        assert_eq!(read(Value::Integer(MAX_MS - 1)), Some((MAX_MS - 1) as f64));
    }

    #[test]
    fn date_text_is_read_by_sqlite() {
        let may_2024_ms = 1_714_564_800_000_f64;
        for text in [
            "2024-05-01 12:00:00",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.000Z",
            "2024-05-01T14:00:00+02:00",
        ] {
            assert_eq!(read(Value::Text(text.into())), Some(may_2024_ms), "{text}");
        }
        assert_eq!(
            read(Value::Text("2024-05-01".into())),
            Some(1_714_521_600_000.0)
        );
        assert_eq!(
            read(Value::Text("2024-05-01T12:00:00.250Z".into())),
            Some(may_2024_ms + 250.0)
        );
    }

    #[test]
    fn null_and_nonsense_read_as_null() {
        for value in [
            Value::Null,
            Value::Integer(0),
            Value::Integer(1),
            Value::Integer(-1_714_564_800),
            Value::Real(2_460_432.0),              // a Julian day number
            Value::Integer(1_714_564_800_000_000), // microseconds
            Value::Integer(i64::MAX),
            Value::Text(String::new()),
            Value::Text("yesterday".into()),
            Value::Text("2024-13-45 99:99".into()),
            Value::Text("1714564800.5".into()),
            Value::Text("99999999999999999999999".into()),
            Value::Text(" 1714564800".into()),
            Value::Blob(vec![1, 2, 3]),
        ] {
            assert_eq!(read(value.clone()), None, "{value:?}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("we\"ird name"), "\"we\"\"ird name\"");
    }
}
