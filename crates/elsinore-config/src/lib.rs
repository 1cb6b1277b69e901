//! Elsinore's inputs, parsed and validated: `config.json` (the operator's file)
//! and `project.toml` (each project's handler manifest, plus the generated
//! handlers of its `handlers_dir`), and the hostname and duration types
//! every other crate shares, with the normal forms of what a request
//! names: its host ([`normalize_request_host`]) and its path
//! ([`normalize_path`], the one form every path match uses). They live
//! here, at the bottom of the graph, because the proxy, the route table
//! and static files must all agree on them.
//!
//! Raw serde types (`deny_unknown_fields`) are turned into validated runtime
//! types in one step; every error names the file and either the line and
//! column (syntax) or the field (`projects[1].key_env`). This crate reads
//! files (and the user and group databases, for `user` and
//! `database_group`) but never writes, spawns or listens.

mod acme;
mod admin_api;
mod config;
mod duration;
mod error;
mod events;
mod exposure;
mod generated;
mod handover;
mod host_owners;
mod hostname;
mod idle;
mod limits;
mod manifest;
mod observability;
mod operator_access;
mod origin;
mod postgres_url;
mod rate_limits;
mod redact;
mod request_path;
mod run_as;
mod startup;
mod static_files;
mod tracing_config;
mod trust;

pub use acme::{AcmeChallenge, AcmeConfig, DEFAULT_ACME_RATE, DEFAULT_ACME_STORAGE};
pub use admin_api::AdminApiMode;
pub use config::{
    Config, DefaultCert, ProjectConfig, ProjectKey, WatchMode, WatchSettings, DEFAULT_LISTEN,
};
pub use duration::{format_duration, parse_duration, DurationError};
pub use error::{ConfigError, Problem};
pub use events::{
    is_reserved_table, EventsConfig, TableEvents, DEFAULT_EVENTS_BATCH, DEFAULT_EVENTS_INTERVAL,
    DEFAULT_EVENTS_RETENTION, RESERVED_TABLE_PREFIXES,
};
pub use generated::{
    scan_handlers_dir, FileFingerprint, GeneratedFrom, GeneratedScan, SkippedFile,
    GENERATED_ROUTE_PREFIX, HANDLER_SUFFIX,
};
pub use handover::{ForwardHost, HandlerKeyEnv};
pub use host_owners::HostOwners;
pub use hostname::{normalize_request_host, HostError, HostPattern, Hostname};
pub use idle::{IdleStop, StartPolicy};
pub use limits::{
    format_size, parse_size, Limits, SizeError, Timeouts, DEFAULT_HANDLER_CONNECT_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BODY, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_HEADER_BYTES,
};
pub use manifest::{
    HandlerKind, HandlerSpec, Manifest, DEFAULT_MAX_CONCURRENT, DEFAULT_QUEUE,
    DEFAULT_QUEUE_TIMEOUT, MANIFEST_FILE, PUBLIC_URL_ENV, RESERVED_ENV,
};
pub use observability::{AccessLogTarget, LogFormat, MetricsConfig};
pub use operator_access::{AdminToken, OperatorAccess, MIN_ADMIN_TOKEN_LEN};
pub use origin::parse_origin;
pub use postgres_url::PostgresUrl;
pub use rate_limits::{Rate, RateLimits, RateScope};
pub use redact::{redact_secrets, REDACTED};
pub use request_path::{normalize_path, same_host_location};
pub use run_as::{running_as_root, DatabaseGroup, RunAs};
pub use startup::{RestartNeeded, Startup};
pub use static_files::{
    StaticFilesConfig, DEFAULT_STATIC_CACHE_FILE_MAX, DEFAULT_STATIC_CACHE_SIZE,
    DEFAULT_STATIC_RECHECK_AFTER,
};
pub use tracing_config::{
    TracingConfig, DEFAULT_TRACING_EXPORT_INTERVAL, DEFAULT_TRACING_EXPORT_TIMEOUT,
    OTLP_TRACES_PATH,
};
pub use trust::{TrustedProxies, DEFAULT_UPGRADE_PROTOCOLS};

/// Result type of this crate.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
