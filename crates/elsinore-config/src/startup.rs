//! The settings of config.json read once at startup, and what an edit to
//! them means for a running server: nothing until a restart.
//!
//! Everything else in [`Config`](crate::Config) applies on the next
//! reload. A running server compares `running.startup` with the reloaded
//! file's: [`Startup::differences`] names each setting whose edit waits for
//! a restart. It destructures both values without `..`, so a setting added
//! here does not compile until it has its restart message.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::acme::AcmeConfig;
use crate::config::WatchSettings;
use crate::events::EventsConfig;
use crate::limits::{Limits, Timeouts};
use crate::observability::{AccessLogTarget, LogFormat, MetricsConfig};
use crate::postgres_url::PostgresUrl;
use crate::run_as::DatabaseGroup;
use crate::static_files::StaticFilesConfig;
use crate::tracing_config::TracingConfig;

/// Settings read once at startup: listeners, the database, shutdown,
/// watching, the admin API's CORS origins, the events schedule, logging,
/// metrics labels, limits, timeouts and the static-file cache. Changing
/// one needs a restart ("needs a restart" is `old != new`).
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    /// Public HTTP listener.
    pub listen: SocketAddr,
    /// Operator listener (used by the operator API).
    pub admin_listen: Option<SocketAddr>,
    /// The shared SQLite database (the projects' data; handlers get it as
    /// `ELSINORE_DB`).
    ///
    /// When `database_url` is set this is the default path and unused:
    /// nothing opens or creates it.
    pub database: PathBuf,
    /// `database` given as a `postgres://` URL: the shared database is
    /// PostgreSQL, and handlers get the URL as `ELSINORE_DB` and
    /// `DATABASE_URL`.
    pub database_url: Option<PostgresUrl>,
    /// `database_group`: the group owning the shared database files
    /// (mode 0660); without it they are 0600, Elsinore's own.
    pub database_group: Option<DatabaseGroup>,
    /// Elsinore's own SQLite file (`state_database`): host keys, the audit
    /// log, the events' run log. Never given to handlers.
    ///
    /// Its folder is Elsinore's local data folder (`run/`, handler
    /// sockets) even when `state_database_url` is set; then the file
    /// itself is unused.
    pub state_database: PathBuf,
    /// `state_database` given as a `postgres://` URL: keys, audit, event
    /// runs, host owners and ACME's account and certificates live in
    /// PostgreSQL, shared by every front door that names it
    /// (docs/scaling.md).
    pub state_database_url: Option<PostgresUrl>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How changes to config.json and project folders are noticed.
    pub watch: WatchSettings,
    /// Browser origins allowed to call the admin API (CORS); `"*"` only
    /// when written explicitly. Empty by default.
    pub cors_origins: Vec<String>,
    /// The framework events (`events`); defaults when absent.
    pub events: EventsConfig,
    /// Public HTTPS listener, if any.
    pub tls_listen: Option<SocketAddr>,
    /// `log_format`: text (default) or JSON log lines.
    pub log_format: LogFormat,
    /// `access_log`: where access-log lines go (stdout, off or a file;
    /// the file is reopened on SIGUSR1, its path changes on restart).
    pub access_log: AccessLogTarget,
    /// `metrics`: label options of `GET /metrics`.
    pub metrics: MetricsConfig,
    /// Request and connection limits (`limits`); defaults when absent.
    pub limits: Limits,
    /// Client and handler timeouts (`timeouts`); defaults when absent.
    pub timeouts: Timeouts,
    /// The cache of static files from host folders' `public/`
    /// (`static_files`); defaults when absent.
    pub static_files: StaticFilesConfig,
    /// Automatic certificates (`acme`), if configured: the account, the
    /// storage and the issuing task are set up once.
    pub acme: Option<AcmeConfig>,
    /// Trace sampling and export (`tracing`); propagation only when
    /// absent. The exporter is set up once.
    pub tracing: TracingConfig,
}

/// One startup setting edited in config.json: applied only after a
/// restart. Its `Display` is the warning logged and listed under
/// `pending_restart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartNeeded {
    /// A single value: `listen`, `tls_listen`, `database`, ...
    Value {
        /// The config.json key.
        field: &'static str,
        /// The value in the file now.
        now: String,
        /// The value still in use.
        running: String,
    },
    /// A section whose values are not repeated (`limits`, `timeouts`,
    /// `static_files`).
    Section {
        /// The config.json key.
        field: &'static str,
    },
    /// `events`: the schedule and retention.
    Events,
}

impl RestartNeeded {
    /// The config.json key that changed.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Value { field, .. } | Self::Section { field } => field,
            Self::Events => "events",
        }
    }
}

impl fmt::Display for RestartNeeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value {
                field,
                now,
                running,
            } => write!(
                f,
                "config.json `{field}` changed to {now}; it takes effect after a restart (still using {running})"
            ),
            Self::Section { field } => write!(
                f,
                "config.json `{field}` changed; it takes effect after a restart"
            ),
            Self::Events => f.write_str(
                "config.json `events` changed; the new schedule and retention take effect after a restart",
            ),
        }
    }
}

impl Startup {
    /// Each setting of `new` that differs from `self` (the running one),
    /// in a fixed order. Empty exactly when `self == new`.
    pub fn differences(&self, new: &Self) -> Vec<RestartNeeded> {
        // No `..`: a new startup setting must be given its message here.
        let Self {
            listen,
            admin_listen,
            database,
            database_url,
            database_group,
            state_database,
            state_database_url,
            shutdown_grace,
            watch,
            cors_origins,
            events,
            tls_listen,
            log_format,
            access_log,
            metrics,
            limits,
            timeouts,
            static_files,
            acme,
            tracing,
        } = self;
        let Self {
            listen: new_listen,
            admin_listen: new_admin_listen,
            database: new_database,
            database_url: new_database_url,
            database_group: new_database_group,
            state_database: new_state_database,
            state_database_url: new_state_database_url,
            shutdown_grace: new_shutdown_grace,
            watch: new_watch,
            cors_origins: new_cors_origins,
            events: new_events,
            tls_listen: new_tls_listen,
            log_format: new_log_format,
            access_log: new_access_log,
            metrics: new_metrics,
            limits: new_limits,
            timeouts: new_timeouts,
            static_files: new_static_files,
            acme: new_acme,
            tracing: new_tracing,
        } = new;
        let mut out = Vec::new();
        let mut value = |field: &'static str, changed: bool, now: String, running: String| {
            if changed {
                out.push(RestartNeeded::Value {
                    field,
                    now,
                    running,
                });
            }
        };
        let addr = |addr: &Option<SocketAddr>| {
            addr.map_or_else(|| "(none)".to_owned(), |addr| addr.to_string())
        };
        value(
            "listen",
            listen != new_listen,
            new_listen.to_string(),
            listen.to_string(),
        );
        value(
            "admin_listen",
            admin_listen != new_admin_listen,
            addr(new_admin_listen),
            addr(admin_listen),
        );
        // The path or the (redacted) URL, whichever config.json gave.
        let location = |path: &std::path::Path, url: &Option<PostgresUrl>| {
            url.as_ref()
                .map_or_else(|| path.display().to_string(), PostgresUrl::redacted)
        };
        value(
            "database",
            database != new_database || database_url != new_database_url,
            location(new_database, new_database_url),
            location(database, database_url),
        );
        let group = |group: &Option<DatabaseGroup>| {
            group
                .as_ref()
                .map_or_else(|| "(none)".to_owned(), |g| g.name.clone())
        };
        value(
            "database_group",
            database_group != new_database_group,
            group(new_database_group),
            group(database_group),
        );
        value(
            "state_database",
            state_database != new_state_database || state_database_url != new_state_database_url,
            location(new_state_database, new_state_database_url),
            location(state_database, state_database_url),
        );
        value(
            "shutdown_grace",
            shutdown_grace != new_shutdown_grace,
            format!("{new_shutdown_grace:?}"),
            format!("{shutdown_grace:?}"),
        );
        value(
            "watch",
            watch != new_watch,
            format!("{new_watch:?}"),
            format!("{watch:?}"),
        );
        value(
            "cors_origins",
            cors_origins != new_cors_origins,
            format!("{new_cors_origins:?}"),
            format!("{cors_origins:?}"),
        );
        value(
            "tls_listen",
            tls_listen != new_tls_listen,
            addr(new_tls_listen),
            addr(tls_listen),
        );
        value(
            "log_format",
            log_format != new_log_format,
            new_log_format.as_str().to_owned(),
            log_format.as_str().to_owned(),
        );
        value(
            "access_log",
            access_log != new_access_log,
            new_access_log.to_string(),
            access_log.to_string(),
        );
        value(
            "metrics",
            metrics != new_metrics,
            format!("per_host: {}", new_metrics.per_host),
            format!("per_host: {}", metrics.per_host),
        );
        for (field, changed) in [
            ("limits", limits != new_limits),
            ("timeouts", timeouts != new_timeouts),
            ("static_files", static_files != new_static_files),
            ("acme", acme != new_acme),
            ("tracing", tracing != new_tracing),
        ] {
            if changed {
                out.push(RestartNeeded::Section { field });
            }
        }
        if events != new_events {
            out.push(RestartNeeded::Events);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    /// Both files in one folder: `database` resolves against it.
    fn parse(dir: &Path, text: &str) -> Config {
        std::fs::create_dir_all(dir.join("a")).expect("project dir");
        Config::parse(text, &dir.join("config.json"), |_| None).expect("valid config")
    }

    fn messages(old: &str, new: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new) = (parse(dir.path(), old), parse(dir.path(), new));
        assert_eq!(
            old.startup == new.startup,
            old.startup.differences(&new.startup).is_empty(),
            "differences() must agree with PartialEq"
        );
        old.startup
            .differences(&new.startup)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_changed_listener_names_both_addresses() {
        assert_eq!(
            messages(
                r#"{"projects": ["a"]}"#,
                r#"{"projects": ["a"], "listen": "127.0.0.1:1", "tls_listen": "127.0.0.1:2"}"#
            ),
            [
                "config.json `listen` changed to 127.0.0.1:1; it takes effect after a restart (still using 127.0.0.1:8080)",
                "config.json `tls_listen` changed to 127.0.0.1:2; it takes effect after a restart (still using (none))",
            ]
        );
    }

    #[test]
    fn sections_and_events_have_their_own_words() {
        assert_eq!(
            messages(
                r#"{"projects": ["a"]}"#,
                r#"{"projects": ["a"], "limits": {"max_body": "1k"}, "events": {"interval": "1m"}, "metrics": {"per_host": true}}"#
            ),
            [
                "config.json `metrics` changed to per_host: true; it takes effect after a restart (still using per_host: false)",
                "config.json `limits` changed; it takes effect after a restart",
                "config.json `events` changed; the new schedule and retention take effect after a restart",
            ]
        );
    }

    #[test]
    fn a_changed_tracing_block_waits_for_a_restart() {
        assert_eq!(
            messages(
                r#"{"projects": ["a"]}"#,
                r#"{"projects": ["a"], "tracing": {"sample_ratio": 0.5, "otlp_endpoint": "http://127.0.0.1:4318"}}"#
            ),
            ["config.json `tracing` changed; it takes effect after a restart"]
        );
    }

    #[test]
    fn reloadable_settings_need_no_restart() {
        assert_eq!(
            messages(
                r#"{"projects": ["a"]}"#,
                r#"{"projects": ["a", {"path": "a", "name": "b"}], "underscores_in_headers": true,
                    "upgrade_protocols": [], "trusted_proxies": ["10.0.0.0/8"], "preview_host": "p.localhost"}"#
            ),
            Vec::<String>::new()
        );
    }

    /// Every field of `Config` is either a startup setting (in
    /// `Config::startup`) or applied by a reload. This destructuring has
    /// no `..`: a new field does not compile until it is listed here, and
    /// a startup one also needs its message in `Startup::differences`.
    #[test]
    fn every_config_field_is_classified() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = parse(dir.path(), r#"{"projects": ["a"]}"#);
        let Config {
            file,
            // Restart-only: compared as a whole on every reload.
            startup,
            // Applied by every reload:
            operator_access: _,
            projects: _,
            tls_default: _,
            redirect_http: _,
            default_project: _,
            host_owners: _,
            preview_host: _,
            trusted_proxies: _,
            upgrade_protocols: _,
            underscores_in_headers: _,
            idle_stop: _,
        } = config;
        assert!(file.ends_with(Path::new("config.json")));
        assert!(startup.differences(&startup.clone()).is_empty());
    }
}
