//! One run of both events over the whole database: plan the (event, table)
//! jobs, drive them with passes that give way to busy writers, write the
//! run log, log one summary line. The same for SQLite and PostgreSQL: what
//! differs is behind [`Backend`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elsinore_config::{EventsConfig, TableEvents};
use elsinore_store::Databases;
use rusqlite::Connection;

use crate::backend::{Backend, Step, Table};
use crate::pg::{Pass, Pg};
use crate::report::{Event, RetentionSource, RunReport, Skipped, TableReport, Trigger};
use crate::runlog;
use crate::settings::Settings;
use crate::sqlite::Sqlite;
use crate::{Error, Result};

/// After this many tables in a row met `SQLITE_BUSY`, a pass stops trying
/// the rest: the database is locked, and each attempt costs a busy timeout.
const BUSY_STREAK_LIMIT: u32 = 2;

/// Something a run went through, for observers (tests) that must act at
/// that moment.
#[derive(Debug)]
pub(crate) enum Progress<'a> {
    /// A table met `SQLITE_BUSY` after waiting the busy timeout.
    Busy { event: Event, table: &'a str },
}

/// Runs `SoftDeleteCleanup` then `SessionExpiry` on every table of the
/// shared database, now, and records the run in the state database's run
/// log. Failures of single tables are in the report; `Err` only when the
/// shared database cannot be opened or listed.
pub fn run_once(databases: &Databases, settings: &Settings, trigger: Trigger) -> Result<RunReport> {
    run_with(
        databases,
        settings,
        trigger,
        &AtomicBool::new(false),
        &mut log_progress,
    )
}

/// The observer of runs nobody else watches: debug lines.
pub(crate) fn log_progress(progress: Progress<'_>) {
    match progress {
        Progress::Busy { event, table } => tracing::debug!(
            event = event.as_str(),
            table,
            "events: database busy; this table is retried later in the run"
        ),
    }
}

pub(crate) fn run_with(
    databases: &Databases,
    settings: &Settings,
    trigger: Trigger,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<RunReport> {
    let started_at = now_ms();
    let work = match &settings.shared_url {
        None => {
            let mut sqlite = Sqlite::open(&databases.shared, settings)?;
            execute(&mut sqlite, settings, started_at, cancel, observe)?
        }
        Some(url) => {
            let mut pg = Pg::connect(url, settings)?;
            // One front door at a time across the fleet: the others would
            // only compete for the same rows' locks.
            match pg.while_locked(|pg| execute(pg, settings, started_at, cancel, observe))? {
                Pass::Ran(work) => work?,
                Pass::HeldElsewhere(why) => Work {
                    not_run: Some(why),
                    ..Work::default()
                },
            }
        }
    };

    let tables = work.tables;
    let sum = |f: fn(&TableReport) -> u64| tables.iter().map(f).sum();
    let mut report = RunReport {
        run_id: None,
        trigger,
        started_at,
        finished_at: now_ms(),
        deleted: sum(|t| t.deleted),
        unreadable: sum(|t| t.unreadable),
        blocked: sum(|t| t.blocked),
        errors: sum(|t| u64::from(t.error.is_some())),
        tables,
        skipped: work.skipped,
        warnings: work.warnings,
        cancelled: work.cancelled,
        not_run: work.not_run,
        log_error: None,
    };
    if !report.tables.is_empty() {
        let logged = match &databases.state_url {
            Some(url) => runlog::write_pg(url, &report).map_err(|err| err.to_string()),
            None => open_run_log(databases, settings)
                .map_err(|err| err.to_string())
                .and_then(|mut log| {
                    runlog::write(&mut log, &report, settings.busy_passes)
                        .map_err(|err| err.to_string())
                }),
        };
        match logged {
            Ok(run_id) => report.run_id = Some(run_id),
            Err(err) => report.log_error = Some(format!("cannot write elsinore_event_runs: {err}")),
        }
    }
    log_summary(&report);
    Ok(report)
}

/// What a run did on the shared database, before it is logged.
#[derive(Debug, Default)]
struct Work {
    tables: Vec<TableReport>,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
    cancelled: bool,
    not_run: Option<String>,
}

/// Plans and drives both events on `backend`.
fn execute<B: Backend>(
    backend: &mut B,
    settings: &Settings,
    now: i64,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(Progress<'_>),
) -> Result<Work> {
    let tables = backend.tables()?;
    let mut plan = plan(&tables, settings, now);
    let cancelled = drive(backend, &mut plan.jobs, settings, cancel, observe);
    Ok(Work {
        tables: plan
            .jobs
            .into_iter()
            .filter(|job| job.started)
            .map(|job| job.report)
            .collect(),
        skipped: plan.skipped,
        warnings: plan.warnings,
        cancelled,
        not_run: None,
    })
}

/// Opens (creating and migrating if needed) the state database, where the
/// run log is: no handler can write or forge it there.
fn open_run_log(databases: &Databases, settings: &Settings) -> Result<Connection> {
    let conn = elsinore_store::StateStore::open(databases)?.into_connection();
    conn.busy_timeout(settings.busy_timeout)
        .map_err(|source| Error::Sqlite {
            path: databases.state.clone(),
            context: "cannot set the busy timeout",
            source,
        })?;
    Ok(conn)
}

/// The work and the running tally for one (event, table).
#[derive(Debug)]
struct Job<W> {
    report: TableReport,
    started: bool,
    work: W,
}

struct Plan<W> {
    jobs: Vec<Job<W>>,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
}

/// Which (event, table) pairs run, with which cutoff.
fn plan<T: Table>(tables: &[T], settings: &Settings, now: i64) -> Plan<T::Work> {
    let config = &settings.events;
    let mut plan = Plan {
        jobs: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    for event in [Event::SoftDeleteCleanup, Event::SessionExpiry] {
        for table in tables {
            let Some(column) = table.column(event.column()) else {
                continue;
            };
            let skip = |reason: String| Skipped {
                event,
                table: table.name().to_owned(),
                reason,
            };
            let overrides = overrides(config, table);
            let opted_out = overrides.is_some_and(|o| match event {
                Event::SoftDeleteCleanup => !o.soft_delete,
                Event::SessionExpiry => !o.session_expiry,
            });
            if opted_out {
                let key = match event {
                    Event::SoftDeleteCleanup => "soft_delete",
                    Event::SessionExpiry => "session_expiry",
                };
                plan.skipped.push(skip(format!(
                    "config.json events.tables.{}.{key} is false",
                    table.name()
                )));
                continue;
            }
            let (retention, source, cutoff) = match event {
                Event::SessionExpiry => (None, None, now),
                Event::SoftDeleteCleanup => {
                    let (retention, source) = retention(
                        table,
                        overrides.and_then(|o| o.retention),
                        settings,
                        &mut plan.warnings,
                    );
                    let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
                    let cutoff = now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                    (Some(ms), Some(source), cutoff)
                }
            };
            let work = match table.work(column, cutoff) {
                Ok(work) => work,
                Err(reason) => {
                    plan.skipped.push(skip(reason));
                    continue;
                }
            };
            plan.jobs.push(Job {
                report: TableReport {
                    event,
                    table: table.name().to_owned(),
                    column: column.to_owned(),
                    retention_ms: retention,
                    retention_from: source,
                    cutoff,
                    deleted: 0,
                    unreadable: 0,
                    blocked: 0,
                    batches: 0,
                    busy: 0,
                    started_at: 0,
                    finished_at: 0,
                    error: None,
                },
                started: false,
                work,
            });
        }
    }
    for name in config.tables.keys() {
        match tables.iter().find(|t| t.answers_to(name)) {
            None => plan.warnings.push(format!(
                "config.json events.tables.{name}: no table of that name in the database"
            )),
            Some(t) if t.column("deleted_at").is_none() && t.column("expires_at").is_none() => {
                plan.warnings.push(format!(
                    "config.json events.tables.{name}: the table has no deleted_at or expires_at column"
                ))
            }
            Some(_) => {}
        }
    }
    plan
}

/// `events.tables.<name>` for `table`: its full name first, then its short
/// one (a PostgreSQL table without its schema).
fn overrides<'a, T: Table>(config: &'a EventsConfig, table: &T) -> Option<&'a TableEvents> {
    config
        .table(table.name())
        .or_else(|| table.short_name().and_then(|short| config.table(short)))
}

/// config.json beats the table's annotation beats the global default.
fn retention<T: Table>(
    table: &T,
    configured: Option<Duration>,
    settings: &Settings,
    warnings: &mut Vec<String>,
) -> (Duration, RetentionSource) {
    if let Some(retention) = configured {
        return (retention, RetentionSource::Config);
    }
    match table.annotation() {
        Some(Ok(retention)) => (retention, RetentionSource::Annotation),
        Some(Err(why)) => {
            warnings.push(format!("{why}; using the default retention"));
            (settings.events.retention, RetentionSource::Default)
        }
        None => (settings.events.retention, RetentionSource::Default),
    }
}

/// Runs the jobs in passes; a job that meets `SQLITE_BUSY` waits for the
/// next pass. Returns whether the run was cancelled.
fn drive<B: Backend>(
    backend: &mut B,
    jobs: &mut [Job<B::Work>],
    settings: &Settings,
    cancel: &AtomicBool,
    observe: &mut dyn FnMut(Progress<'_>),
) -> bool {
    let batch = settings.events.batch.max(1);
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    for _pass in 0..settings.busy_passes.max(1) {
        let mut busy_streak = 0;
        let mut again = Vec::new();
        for index in pending {
            if cancel.load(Ordering::Relaxed) {
                stop_cancelled(jobs);
                return true;
            }
            let job = &mut jobs[index];
            if busy_streak >= BUSY_STREAK_LIMIT {
                again.push(index);
                continue;
            }
            if !job.started {
                job.started = true;
                job.report.started_at = now_ms();
            }
            let batches_before = job.report.batches;
            let outcome = loop {
                if cancel.load(Ordering::Relaxed) {
                    break Ok(None);
                }
                match backend.step(&mut job.work, &mut job.report, batch) {
                    Ok(Step::More) => continue,
                    Ok(step) => break Ok(Some(step)),
                    Err(err) => break Err(err),
                }
            };
            match outcome {
                Ok(None) => {
                    stop_cancelled(jobs);
                    return true;
                }
                Ok(Some(Step::Busy)) => {
                    job.report.busy += 1;
                    if job.report.batches > batches_before {
                        busy_streak = 0;
                    }
                    busy_streak += 1;
                    observe(Progress::Busy {
                        event: job.report.event,
                        table: &job.report.table,
                    });
                    again.push(index);
                }
                Ok(Some(_done)) => {
                    busy_streak = 0;
                    finish(backend, job, None);
                }
                Err(err) => {
                    busy_streak = 0;
                    finish(backend, job, Some(err));
                }
            }
        }
        pending = again;
        if pending.is_empty() {
            break;
        }
    }
    for index in pending {
        let job = &mut jobs[index];
        job.started = true;
        if job.report.started_at == 0 {
            job.report.started_at = now_ms();
        }
        let why = format!(
            "database busy: other writers held it through {} attempts ({:?} each); the rest waits for the next run",
            settings.busy_passes.max(1),
            settings.busy_timeout
        );
        finish(backend, job, Some(why));
    }
    false
}

fn finish<B: Backend>(backend: &mut B, job: &mut Job<B::Work>, error: Option<String>) {
    match backend.count_unreadable(&job.work) {
        Ok(n) => job.report.unreadable = n,
        Err(err) => {
            job.report
                .error
                .get_or_insert(format!("cannot count unreadable values: {err}"));
        }
    }
    if let Some(error) = error {
        job.report.error = Some(error);
    }
    job.report.finished_at = now_ms();
}

/// Jobs that had begun end with an error; the others are dropped.
fn stop_cancelled<W>(jobs: &mut [Job<W>]) {
    for job in jobs
        .iter_mut()
        .filter(|j| j.started && j.report.finished_at == 0)
    {
        job.report.error = Some("stopped: Elsinore is shutting down".to_owned());
        job.report.finished_at = now_ms();
    }
}

fn log_summary(report: &RunReport) {
    let detail: Vec<String> = report
        .tables
        .iter()
        .filter(|t| t.deleted > 0 || t.unreadable > 0 || t.blocked > 0 || t.error.is_some())
        .map(|t| {
            let mut line = format!("{} {}: deleted {}", t.event.as_str(), t.table, t.deleted);
            if t.unreadable > 0 {
                line.push_str(&format!(", unreadable {}", t.unreadable));
            }
            if t.blocked > 0 {
                line.push_str(&format!(", blocked {}", t.blocked));
            }
            if let Some(error) = &t.error {
                line.push_str(&format!(", error: {error}"));
            }
            line
        })
        .collect();
    if let Some(why) = &report.not_run {
        tracing::info!(
            trigger = report.trigger.as_str(),
            "events run skipped: {why}"
        );
        return;
    }
    for warning in &report.warnings {
        tracing::warn!("events: {warning}");
    }
    if let Some(error) = &report.log_error {
        tracing::warn!("events: {error}");
    }
    tracing::info!(
        trigger = report.trigger.as_str(),
        run_id = report.run_id,
        tables = report.tables.len(),
        deleted = report.deleted,
        unreadable = report.unreadable,
        blocked = report.blocked,
        errors = report.errors,
        cancelled = report.cancelled,
        elapsed_ms = report.finished_at - report.started_at,
        detail = %detail.join("; "),
        "events run finished"
    );
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
