//! `elsinore events run` and `elsinore events list`: the framework events
//! offline, against the database config.json names.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use elsinore_config::{format_duration, Config};
use elsinore_events::{RunRecord, RunReport, Settings, Trigger};

/// `elsinore events <verb>`.
#[derive(Debug, Subcommand)]
pub enum EventsVerb {
    /// Run SoftDeleteCleanup and SessionExpiry now on the configured
    /// database and print what each table lost.
    Run {
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
        /// Print the report as JSON (the `POST /events/run` body).
        #[arg(long)]
        json: bool,
    },
    /// Print the most recent runs from the run log.
    List {
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
        /// How many runs.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print the runs as JSON (the `runs` of `GET /events`).
        #[arg(long)]
        json: bool,
    },
}

pub fn run(verb: EventsVerb) -> anyhow::Result<()> {
    match verb {
        EventsVerb::Run { config, json } => {
            let config = load(&config)?;
            let report = elsinore_events::run_once(
                &crate::tenant_api::databases(&config),
                &Settings::new(config.startup.events.clone())
                    .with_shared_url(config.startup.database_url.clone()),
                Trigger::Cli,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render_report(&shared_database(&config), &report));
            }
        }
        EventsVerb::List {
            config,
            limit,
            json,
        } => {
            let config = load(&config)?;
            let runs =
                elsinore_events::recent_runs_in(&crate::tenant_api::databases(&config), limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else {
                print!("{}", render_runs(&runs));
            }
        }
    }
    Ok(())
}

/// config.json, for its `database` and `events` only.
fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    // Project keys are not needed here, and a `key_env` variable that only
    // the server's environment holds must not stop an offline run.
    Ok(Config::parse(&text, &file, |_| {
        Some("unused-by-events".to_owned())
    })?)
}

/// The shared database as the report names it: its path, or its URL
/// without the password.
fn shared_database(config: &Config) -> String {
    match &config.startup.database_url {
        Some(url) => url.redacted(),
        None => config.startup.database.display().to_string(),
    }
}

fn render_report(database: &str, report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "database: {database}");
    if let Some(why) = &report.not_run {
        let _ = writeln!(out, "not run: {why}");
        return out;
    }
    if report.tables.is_empty() {
        out.push_str("no table has a deleted_at or expires_at column\n");
    } else {
        let width = report
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(0)
            .max("table".len());
        let _ = writeln!(
            out,
            "{:<17}  {:<width$}  {:<17}  {:>7}  {:>10}  {:>7}",
            "event", "table", "retention", "deleted", "unreadable", "blocked"
        );
        for t in &report.tables {
            let retention = match (t.retention_ms, t.retention_from) {
                (Some(ms), Some(from)) => format!(
                    "{} ({})",
                    format_duration(Duration::from_millis(ms)),
                    from.as_str()
                ),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<17}  {:<width$}  {:<17}  {:>7}  {:>10}  {:>7}",
                t.event.as_str(),
                t.table,
                retention,
                t.deleted,
                t.unreadable,
                t.blocked
            );
        }
    }
    for t in report.tables.iter().filter(|t| t.error.is_some()) {
        let _ = writeln!(
            out,
            "error: {} {}: {}",
            t.event.as_str(),
            t.table,
            t.error.as_deref().unwrap_or_default()
        );
    }
    for s in &report.skipped {
        let _ = writeln!(
            out,
            "skipped: {} {}: {}",
            s.event.as_str(),
            s.table,
            s.reason
        );
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(error) = &report.log_error {
        let _ = writeln!(out, "warning: {error}");
    }
    let run = report
        .run_id
        .map_or_else(|| "not logged".to_owned(), |id| format!("run {id}"));
    let _ = writeln!(
        out,
        "total: {} deleted, {} unreadable, {} blocked, {} errors ({run}, {} ms)",
        report.deleted,
        report.unreadable,
        report.blocked,
        report.errors,
        report.finished_at - report.started_at
    );
    out
}

fn render_runs(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs recorded\n");
    }
    for run in runs {
        let _ = writeln!(
            out,
            "run {} ({}) {} {} ms: {} deleted, {} unreadable, {} blocked, {} errors",
            run.run_id,
            run.trigger,
            utc(run.started_at),
            run.finished_at - run.started_at,
            run.deleted,
            run.unreadable,
            run.blocked,
            run.errors
        );
        for t in &run.tables {
            let _ = write!(
                out,
                "  {:<17}  {}: {} deleted, {} unreadable, {} blocked",
                t.event, t.table, t.deleted, t.unreadable, t.blocked
            );
            if let Some(error) = &t.error {
                let _ = write!(out, ", error: {error}");
            }
            out.push('\n');
        }
    }
    out
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_714_564_800_000), "2024-05-01 12:00:00 UTC");
        assert_eq!(utc(951_868_799_000), "2000-02-29 23:59:59 UTC");
    }
}
