//! `config.json`: what the operator writes, and the validated [`Config`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::acme::{validate_acme, RawAcme};
use crate::admin_api::AdminApiMode;
use crate::error::{ConfigError, Problem};
use crate::events::{validate_events, RawEvents};
use crate::handover::{check_env_name, ForwardHost, HandlerKeyEnv};
use crate::host_owners::HostOwners;
use crate::hostname::Hostname;
use crate::idle::IdleStop;
use crate::limits::{
    max_body, validate_limits, validate_timeouts, RawLimits, RawSize, RawTimeouts,
};
use crate::observability::{AccessLogTarget, LogFormat, MetricsConfig};
use crate::operator_access::{validate_operator_access, OperatorAccess};
use crate::parse_duration;
use crate::postgres_url::PostgresUrl;
use crate::rate_limits::{validate_rate_limits, RateLimits, RawRateLimits};
use crate::run_as::{resolve_group, resolve_run_as, running_as_root, DatabaseGroup, RunAs};
use crate::startup::Startup;
use crate::static_files::{validate_static_files, RawStaticFiles};
use crate::tracing_config::{validate_tracing, RawTracing};
use crate::trust::{parse_trusted_proxies, parse_upgrade_protocols, TrustedProxies};

/// Where the public listener binds when `listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATABASE: &str = "data/elsinore.db";
const DEFAULT_STATE_DATABASE: &str = "data/elsinore-state.db";
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
const MAX_PROJECT_NAME_LEN: usize = 64;

/// The validated configuration. Paths are absolute.
///
/// Split in two: [`Startup`], read once when the server starts (an edit
/// waits for a restart), and every other field, which a reload applies.
/// `startup::tests::every_config_field_is_classified` lists each field
/// without `..`, so a new one cannot be left unclassified.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `config.json` this came from.
    pub file: PathBuf,
    /// Settings read once at startup; see [`Startup`].
    pub startup: Startup,
    /// `admin_hosts` and `admin_token_env`: who the operator listener
    /// answers.
    pub operator_access: OperatorAccess,
    /// Projects in `config.json` order (which decides host conflicts).
    pub projects: Vec<ProjectConfig>,
    /// The certificate for handshakes no host folder answers
    /// (`tls.default_cert` / `tls.default_key`).
    pub tls_default: Option<DefaultCert>,
    /// Plain-HTTP requests for a host with a certificate are redirected
    /// to HTTPS.
    pub redirect_http: bool,
    /// `default_project`: the project that answers hosts no project
    /// declares (instead of the JSON 404). Names one of `projects`.
    pub default_project: Option<String>,
    /// `host_owners`: which project owns a host name, decided by the
    /// operator over what the state database recorded.
    pub host_owners: HostOwners,
    /// `preview_host`: the host on which `/projects/<name>/…` reaches
    /// project `<name>` with the prefix stripped (previews before DNS).
    pub preview_host: Option<Hostname>,
    /// `trusted_proxies`: peers whose `X-Forwarded-For` chain is kept;
    /// from any other peer it is replaced by the peer's address.
    pub trusted_proxies: TrustedProxies,
    /// `upgrade_protocols`: the `Upgrade` tokens tunnelled to handlers,
    /// lower case (`["websocket"]` by default).
    pub upgrade_protocols: Vec<String>,
    /// `underscores_in_headers`: client headers whose name contains `_`
    /// reach handlers (dropped by default, like nginx).
    pub underscores_in_headers: bool,
    /// `idle_stop`: the default of every handler whose `project.toml`
    /// entry has none (`"off"` when absent).
    pub idle_stop: IdleStop,
}

/// `tls.default_cert` and `tls.default_key`, absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultCert {
    /// The PEM certificate chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// `watch` in config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchSettings {
    /// Which mechanism notices changes.
    pub mode: WatchMode,
    /// How often polling looks, when polling.
    pub poll_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            mode: WatchMode::Auto,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// `watch.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// File notifications (inotify), falling back to polling when they
    /// cannot be set up.
    Auto,
    /// Always poll (network filesystems, where notifications never come).
    Poll,
}

/// One entry of `projects`.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// Unique name (`X-Elsinore-Project`).
    pub name: String,
    /// The project folder, canonical.
    pub path: PathBuf,
    /// The project key, if configured.
    pub key: Option<ProjectKey>,
    /// The environment variable the key came from, so that it can be kept
    /// out of every handler's environment.
    pub key_env: Option<String>,
    /// The project's own largest request body (`max_body`); `None` means
    /// `limits.max_body`.
    pub max_body: Option<u64>,
    /// Browser origins allowed to call the project's handlers
    /// (`cors_origins`); empty means Elsinore leaves CORS to the handlers.
    pub cors_origins: Vec<String>,
    /// `cors_credentials`: allowed origins may send cookies and
    /// credentials (`Access-Control-Allow-Credentials: true`).
    pub cors_credentials: bool,
    /// `public_url`: the address users reach the project at, passed to its
    /// handlers as `ELSINORE_PUBLIC_URL`. Without a trailing slash.
    pub public_url: Option<String>,
    /// `user` (and `group`): the account its handlers run as, looked up
    /// when the file was validated. `None`: Elsinore's own.
    pub run_as: Option<RunAs>,
    /// `admin_api`: who answers the admin API on the project's hosts.
    pub admin_api: AdminApiMode,
    /// `forward_host`: the `Host` its handlers receive.
    pub forward_host: ForwardHost,
    /// `handler_key_env`: the variable its handlers get its key in.
    pub handler_key_env: Option<HandlerKeyEnv>,
    /// Its request rate limits: its own `rate_limits`, scope by scope over
    /// the global `rate_limits`.
    pub rate_limits: RateLimits,
}

/// A project key. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProjectKey(String);

/// The shortest project key accepted: 16 characters.
const MIN_KEY_LEN: usize = 16;

impl ProjectKey {
    /// The secret itself; callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProjectKey(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    admin_hosts: Option<Vec<String>>,
    admin_token_env: Option<String>,
    database: Option<String>,
    database_group: Option<String>,
    state_database: Option<String>,
    shutdown_grace: Option<String>,
    idle_stop: Option<String>,
    watch: Option<RawWatch>,
    projects: Vec<RawProject>,
    cors_origins: Option<Vec<String>>,
    events: Option<RawEvents>,
    tls_listen: Option<String>,
    tls: Option<RawTls>,
    redirect_http: Option<bool>,
    acme: Option<RawAcme>,
    log_format: Option<LogFormat>,
    access_log: Option<String>,
    metrics: Option<MetricsConfig>,
    limits: Option<RawLimits>,
    timeouts: Option<RawTimeouts>,
    static_files: Option<RawStaticFiles>,
    default_project: Option<String>,
    host_owners: Option<BTreeMap<String, String>>,
    preview_host: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    upgrade_protocols: Option<Vec<String>>,
    underscores_in_headers: Option<bool>,
    rate_limits: Option<RawRateLimits>,
    tracing: Option<RawTracing>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    default_cert: Option<String>,
    default_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    mode: Option<String>,
    poll_interval: Option<String>,
}

/// A project entry: either `"path"` or `{"path": …, …}`.
enum RawProject {
    Path(String),
    // Boxed: the object is ten times the size of a path.
    Object(Box<RawProjectObject>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProjectObject {
    path: String,
    name: Option<String>,
    key: Option<String>,
    key_env: Option<String>,
    max_body: Option<RawSize>,
    cors_origins: Option<Vec<String>>,
    cors_credentials: Option<bool>,
    public_url: Option<String>,
    user: Option<String>,
    group: Option<String>,
    admin_api: Option<AdminApiMode>,
    forward_host: Option<ForwardHost>,
    handler_key_env: Option<String>,
    rate_limits: Option<RawRateLimits>,
}

// Hand-written instead of `#[serde(untagged)]`: untagged enums swallow the
// inner error ("did not match any variant"), and operators need to be told
// which field of the object is wrong.
impl<'de> Deserialize<'de> for RawProject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProjectVisitor;
        impl<'de> Visitor<'de> for ProjectVisitor {
            type Value = RawProject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a project folder path or an object with \"path\"")
            }
            fn visit_str<E: de::Error>(self, path: &str) -> Result<RawProject, E> {
                Ok(RawProject::Path(path.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawProject, A::Error> {
                RawProjectObject::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|object| RawProject::Object(Box::new(object)))
            }
        }
        deserializer.deserialize_any(ProjectVisitor)
    }
}

impl Config {
    /// Reads and validates `config.json`, taking `key_env` values from the
    /// process environment.
    pub fn load(file: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            path: file.to_owned(),
            source,
        })?;
        let file = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
        Self::parse(&text, &file, |name| std::env::var(name).ok())
    }

    /// Validates `text` as the content of `file`; relative paths resolve
    /// against `file`'s folder, `env` answers `key_env` lookups.
    pub fn parse(
        text: &str,
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> crate::Result<Self> {
        Self::parse_as(text, file, env, running_as_root())
    }

    /// Like [`Config::parse`], for a process that is root (`is_root`) or
    /// not: projects' `user` needs root.
    pub fn parse_as(
        text: &str,
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
        is_root: bool,
    ) -> crate::Result<Self> {
        let raw = parse_json(text).map_err(|problem| ConfigError::invalid(file, vec![problem]))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut problems = Vec::new();

        let listen = parse_addr(
            raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            "listen",
            &mut problems,
        );
        let admin_listen = raw
            .admin_listen
            .as_deref()
            .and_then(|addr| parse_admin_addr(addr, &mut problems));
        let operator_access = validate_operator_access(
            raw.admin_hosts,
            raw.admin_token_env,
            raw.admin_listen.is_some(),
            &env,
            &mut problems,
        );
        let (database, database_url) = database_location(
            raw.database.as_deref(),
            "database",
            DEFAULT_DATABASE,
            base,
            &mut problems,
        );
        let database_group =
            raw.database_group
                .as_deref()
                .and_then(|name| match resolve_group(name) {
                    Ok(group) => Some(group),
                    Err(why) => {
                        problems.push(Problem::field("database_group", why));
                        None
                    }
                });
        let accounts = Accounts {
            is_root,
            database_group: database_group.as_ref(),
        };
        let access_log = AccessLogTarget::parse(raw.access_log.as_deref(), base)
            .map_err(|problem| problems.push(problem))
            .ok();
        let (state_database, state_database_url) = validate_state_database(
            raw.state_database.as_deref(),
            database.as_deref(),
            database_url.as_ref(),
            base,
            &mut problems,
        );
        let shutdown_grace = match raw.shutdown_grace.as_deref().map(parse_duration) {
            None => DEFAULT_SHUTDOWN_GRACE,
            Some(Ok(grace)) => grace,
            Some(Err(err)) => {
                problems.push(Problem::field("shutdown_grace", err.to_string()));
                DEFAULT_SHUTDOWN_GRACE
            }
        };

        let idle_stop = match raw.idle_stop.as_deref().map(IdleStop::parse) {
            None => IdleStop::Off,
            Some(Ok(idle_stop)) => idle_stop,
            Some(Err(why)) => {
                problems.push(Problem::field("idle_stop", why));
                IdleStop::Off
            }
        };
        let watch = raw
            .watch
            .map(|watch| validate_watch(watch, &mut problems))
            .unwrap_or_default();
        let cors_origins =
            crate::origin::parse_origins(raw.cors_origins, "cors_origins", &mut problems);
        let events = validate_events(raw.events, &mut problems);
        let tracing = validate_tracing(raw.tracing, &mut problems);
        let limits = validate_limits(raw.limits, &mut problems);
        let timeouts = validate_timeouts(raw.timeouts, &mut problems);
        let static_files = validate_static_files(raw.static_files, &mut problems);
        let rate_limits = validate_rate_limits(raw.rate_limits, "rate_limits", &mut problems);

        let tls_listen = raw
            .tls_listen
            .as_deref()
            .and_then(|addr| parse_addr(addr, "tls_listen", &mut problems));
        let tls_default = raw
            .tls
            .and_then(|tls| validate_tls(tls, base, &mut problems));
        let redirect_http = raw.redirect_http.unwrap_or(false);
        let acme = validate_acme(raw.acme, base, raw.tls_listen.is_some(), &mut problems);
        if raw.tls_listen.is_none() {
            if redirect_http {
                problems.push(Problem::field(
                    "redirect_http",
                    "needs tls_listen: there is no HTTPS listener to redirect to",
                ));
            }
            if tls_default.is_some() {
                problems.push(Problem::field(
                    "tls",
                    "needs tls_listen: certificates are only used by the HTTPS listener",
                ));
            }
        }

        let mut projects = Vec::with_capacity(raw.projects.len());
        let mut first_index_of: HashMap<String, usize> = HashMap::new();
        // Project key → the first entry using it, as a field name.
        let mut key_used_by: HashMap<String, String> = HashMap::new();
        for (index, raw_project) in raw.projects.into_iter().enumerate() {
            let Some(mut project) =
                validate_project(raw_project, index, base, &env, &accounts, &mut problems)
            else {
                continue;
            };
            project.rate_limits = rate_limits.overridden_by(&project.rate_limits);
            if let Some(first) = first_index_of.get(&project.name) {
                problems.push(Problem::field(
                    format!("projects[{index}].name"),
                    format!(
                        "duplicate project name {:?} (already used by projects[{first}]); set \"name\" to tell them apart",
                        project.name
                    ),
                ));
                continue;
            }
            first_index_of.insert(project.name.clone(), index);
            if let Some(key) = &project.key {
                let source = if project.key_env.is_some() {
                    "key_env"
                } else {
                    "key"
                };
                let field = format!("projects[{index}].{source}");
                if let Some(first) = key_used_by.get(key.expose()) {
                    // A shared key would open both projects; the key itself
                    // is never printed.
                    problems.push(Problem::field(
                        field,
                        format!(
                            "the same project key as {first}; each project needs its own (make one with: openssl rand -hex 24)"
                        ),
                    ));
                } else {
                    key_used_by.insert(key.expose().to_owned(), field);
                }
            }
            projects.push(project);
        }
        let default_project = raw
            .default_project
            .filter(|name| check_default_project(name, &projects, &first_index_of, &mut problems));
        let host_owners = HostOwners::validate(
            raw.host_owners,
            |name| first_index_of.contains_key(name),
            &mut problems,
        );
        let preview_host = raw
            .preview_host
            .and_then(|host| match Hostname::parse(&host) {
                Ok(host) => Some(host),
                Err(err) => {
                    problems.push(Problem::field(
                        "preview_host",
                        format!("{err}; expected a host name such as \"preview.localhost\""),
                    ));
                    None
                }
            });

        let trusted_proxies = parse_trusted_proxies(raw.trusted_proxies, &mut problems);
        let upgrade_protocols = parse_upgrade_protocols(raw.upgrade_protocols, &mut problems);

        match (
            problems.is_empty(),
            listen,
            database,
            state_database,
            access_log,
        ) {
            (true, Some(listen), Some(database), Some(state_database), Some(access_log)) => {
                Ok(Self {
                    file: file.to_owned(),
                    startup: Startup {
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
                        log_format: raw.log_format.unwrap_or_default(),
                        access_log,
                        metrics: raw.metrics.unwrap_or_default(),
                        limits,
                        timeouts,
                        static_files,
                        acme,
                        tracing,
                    },
                    operator_access,
                    projects,
                    tls_default,
                    redirect_http,
                    default_project,
                    host_owners,
                    preview_host,
                    trusted_proxies,
                    upgrade_protocols,
                    underscores_in_headers: raw.underscores_in_headers.unwrap_or(false),
                    idle_stop,
                })
            }
            _ => Err(ConfigError::invalid(file, problems)),
        }
    }

    /// Names of every `key_env` variable, which handlers must not inherit.
    pub fn key_env_names(&self) -> impl Iterator<Item = &str> {
        self.projects.iter().filter_map(|p| p.key_env.as_deref())
    }

    /// Every variable holding a secret of Elsinore's (`key_env`s and
    /// `admin_token_env`): handlers must not inherit them.
    pub fn secret_env_names(&self) -> impl Iterator<Item = &str> {
        self.key_env_names()
            .chain(self.operator_access.token_env.as_deref())
    }
}

/// JSON syntax and shape errors, with line, column and field path.
fn parse_json(text: &str) -> Result<RawConfig, Problem> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        json_problem(&inner, if field == "." { String::new() } else { field })
    })?;
    deserializer
        .end()
        .map_err(|err| json_problem(&err, String::new()))?;
    Ok(raw)
}

fn json_problem(err: &serde_json::Error, field: String) -> Problem {
    // serde_json appends " at line L column C" to its messages; we print the
    // position in front, compiler style, so strip it from the message.
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = err.to_string();
    let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
    let is_syntax = matches!(
        err.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    );
    Problem {
        position: (err.line() > 0).then_some((err.line(), err.column())),
        field: if is_syntax { String::new() } else { field },
        message,
    }
}

fn parse_addr(text: &str, field: &str, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(Problem::field(
                field,
                format!("{text:?} is not an address: expected IP:port, e.g. \"127.0.0.1:8080\""),
            ));
            None
        }
    }
}

/// `database` or `state_database`: a SQLite path (relative to config.json's
/// folder) or a PostgreSQL URL. With a URL the path is still the default
/// one, unopened: see [`Startup::database_url`].
fn database_location(
    raw: Option<&str>,
    field: &'static str,
    default: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<PathBuf>, Option<PostgresUrl>) {
    match raw.unwrap_or(default) {
        "" => {
            problems.push(Problem::field(field, "must not be empty"));
            (None, None)
        }
        url if PostgresUrl::looks_like_url(url) => match PostgresUrl::parse(url) {
            Ok(url) => (Some(base.join(default)), Some(url)),
            Err(why) => {
                problems.push(Problem::field(field, why));
                (None, None)
            }
        },
        path => (Some(base.join(path)), None),
    }
}

/// `state_database`: Elsinore's own SQLite file or PostgreSQL database
/// (host keys, audit log, event runs). It must not be the shared
/// `database`, which every handler can write: that is the whole point of a
/// second file.
fn validate_state_database(
    raw: Option<&str>,
    database: Option<&Path>,
    database_url: Option<&PostgresUrl>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> (Option<PathBuf>, Option<PostgresUrl>) {
    let (path, url) = database_location(
        raw,
        "state_database",
        DEFAULT_STATE_DATABASE,
        base,
        problems,
    );
    let same = match (&url, database_url) {
        (Some(state), Some(shared)) => state == shared,
        (None, None) => path.is_some() && database == path.as_deref(),
        _ => false,
    };
    if same {
        problems.push(Problem::field(
            "state_database",
            "must not be the shared `database`: handlers get that database, and Elsinore's host keys must stay out of their reach",
        ));
        return (None, None);
    }
    (path, url)
}

/// `admin_listen` also accepts a bare port (`"9090"`), bound on loopback:
/// the operator listener has no authentication of its own.
fn parse_admin_addr(text: &str, problems: &mut Vec<Problem>) -> Option<SocketAddr> {
    match text.trim_start_matches(':').parse::<u16>() {
        Ok(port) => Some(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => parse_addr(text, "admin_listen", problems),
    }
}

fn validate_watch(raw: RawWatch, problems: &mut Vec<Problem>) -> WatchSettings {
    let mut watch = WatchSettings::default();
    match raw.mode.as_deref() {
        None | Some("auto") => {}
        Some("poll") => watch.mode = WatchMode::Poll,
        Some(other) => problems.push(Problem::field(
            "watch.mode",
            format!("{other:?} is not a watch mode: expected \"auto\" or \"poll\""),
        )),
    }
    match raw.poll_interval.as_deref().map(parse_duration) {
        None => {}
        Some(Ok(interval)) if interval >= Duration::from_millis(10) => {
            watch.poll_interval = interval;
        }
        Some(Ok(_)) => problems.push(Problem::field(
            "watch.poll_interval",
            "must be at least 10ms",
        )),
        Some(Err(err)) => problems.push(Problem::field("watch.poll_interval", err.to_string())),
    }
    watch
}

/// `tls`: the default certificate's two files, both or neither.
fn validate_tls(raw: RawTls, base: &Path, problems: &mut Vec<Problem>) -> Option<DefaultCert> {
    match (raw.default_cert.as_deref(), raw.default_key.as_deref()) {
        (None, None) => None,
        (Some(""), _) | (_, Some("")) => {
            problems.push(Problem::field(
                "tls",
                "default_cert and default_key must not be empty",
            ));
            None
        }
        (Some(cert), Some(key)) => Some(DefaultCert {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (Some(_), None) => {
            problems.push(Problem::field(
                "tls.default_key",
                "missing: tls.default_cert needs its key",
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(Problem::field(
                "tls.default_cert",
                "missing: tls.default_key needs its certificate",
            ));
            None
        }
    }
}

/// What `user` and `group` are checked against.
struct Accounts<'a> {
    /// Only root can run handlers as another user.
    is_root: bool,
    /// Added to every `user`'s groups.
    database_group: Option<&'a DatabaseGroup>,
}

fn validate_project(
    raw: RawProject,
    index: usize,
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
    accounts: &Accounts<'_>,
    problems: &mut Vec<Problem>,
) -> Option<ProjectConfig> {
    let here = format!("projects[{index}]");
    let object = match raw {
        RawProject::Path(path) => RawProjectObject {
            path,
            name: None,
            key: None,
            key_env: None,
            max_body: None,
            cors_origins: None,
            cors_credentials: None,
            public_url: None,
            user: None,
            group: None,
            admin_api: None,
            forward_host: None,
            handler_key_env: None,
            rate_limits: None,
        },
        RawProject::Object(object) => *object,
    };
    let before = problems.len();

    let path = base.join(&object.path);
    let path = match std::fs::canonicalize(&path) {
        Ok(path) if path.is_dir() => Some(path),
        Ok(path) => {
            problems.push(Problem::field(
                format!("{here}.path"),
                format!("{} is not a folder", path.display()),
            ));
            None
        }
        Err(err) => {
            problems.push(Problem::field(
                format!("{here}.path"),
                format!("project folder {} not found ({err})", path.display()),
            ));
            None
        }
    };

    let name = match (&object.name, &path) {
        (Some(name), _) => Some((name.clone(), format!("{here}.name"))),
        (None, Some(path)) => path
            .file_name()
            .map(|n| (n.to_string_lossy().into_owned(), format!("{here}.path"))),
        (None, None) => None,
    };
    let name = name.and_then(|(name, field)| match check_project_name(&name) {
        Ok(()) => Some(name),
        Err(why) => {
            problems.push(Problem::field(
                field,
                format!("project name {name:?} {why}; set \"name\" explicitly"),
            ));
            None
        }
    });

    let key_configured = object.key.is_some() || object.key_env.is_some();
    let key = match (object.key, &object.key_env) {
        (Some(_), Some(_)) => {
            problems.push(Problem::field(
                here.clone(),
                "set either \"key\" or \"key_env\", not both",
            ));
            None
        }
        (Some(key), None) => check_key(key, &format!("{here}.key"), problems),
        (None, Some(var)) => match env(var) {
            Some(key) => check_key(key, &format!("{here}.key_env"), problems),
            None => {
                problems.push(Problem::field(
                    format!("{here}.key_env"),
                    format!("environment variable {var} is not set"),
                ));
                None
            }
        },
        (None, None) => None,
    };

    let max_body = object
        .max_body
        .as_ref()
        .and_then(|size| max_body(size, &format!("{here}.max_body"), problems));

    let cors_origins = crate::origin::parse_origins(
        object.cors_origins,
        &format!("{here}.cors_origins"),
        problems,
    );
    let cors_credentials = object.cors_credentials.unwrap_or(false);
    if cors_credentials && cors_origins.iter().any(|o| o == "*") {
        // Browsers refuse credentials with a wildcard, and echoing any
        // origin with credentials would hand every site the user's session.
        problems.push(Problem::field(
            format!("{here}.cors_credentials"),
            "cannot be true with \"*\" in cors_origins: list the origins that may send credentials",
        ));
    }
    let run_as = validate_run_as(
        object.user.as_deref(),
        object.group.as_deref(),
        &here,
        path.as_deref(),
        accounts,
        problems,
    );
    let public_url = object
        .public_url
        .and_then(|url| match check_public_url(&url) {
            Ok(url) => Some(url),
            Err(why) => {
                problems.push(Problem::field(format!("{here}.public_url"), why));
                None
            }
        });

    let rate_limits =
        validate_rate_limits(object.rate_limits, &format!("{here}.rate_limits"), problems);
    let handler_key_env = object.handler_key_env.and_then(|name| {
        let field = format!("{here}.handler_key_env");
        if let Err(why) = check_env_name(&name) {
            problems.push(Problem::field(field, why));
            return None;
        }
        match &key {
            Some(key) => Some(HandlerKeyEnv {
                name,
                key: key.clone(),
            }),
            // Refused before `key` is: a short key is reported on its own.
            None if !key_configured => {
                problems.push(Problem::field(
                    field,
                    "the project has no key to hand over: set \"key\" or \"key_env\" too",
                ));
                None
            }
            None => None,
        }
    });

    if problems.len() > before {
        return None;
    }
    Some(ProjectConfig {
        name: name?,
        path: path?,
        key,
        key_env: object.key_env,
        max_body,
        cors_origins,
        cors_credentials,
        public_url,
        run_as,
        admin_api: object.admin_api.unwrap_or_default(),
        forward_host: object.forward_host.unwrap_or_default(),
        handler_key_env,
        rate_limits,
    })
}

/// `user` and `group`: known accounts, set only when Elsinore is root, and
/// able to reach the project folder (else its handlers would crash-loop).
fn validate_run_as(
    user: Option<&str>,
    group: Option<&str>,
    here: &str,
    project_dir: Option<&Path>,
    accounts: &Accounts<'_>,
    problems: &mut Vec<Problem>,
) -> Option<RunAs> {
    let Some(user) = user else {
        if group.is_some() {
            problems.push(Problem::field(
                format!("{here}.group"),
                "needs \"user\": the group is the primary group of the user the handlers run as",
            ));
        }
        return None;
    };
    if !accounts.is_root {
        problems.push(Problem::field(
            format!("{here}.user"),
            format!(
                "handlers can run as {user:?} only when Elsinore runs as root (it runs as uid {}); remove \"user\" or start Elsinore as root",
                nix::unistd::geteuid()
            ),
        ));
        return None;
    }
    let run_as = match resolve_run_as(user, group, accounts.database_group) {
        Ok(run_as) => run_as,
        Err((field, why)) => {
            problems.push(Problem::field(format!("{here}.{field}"), why));
            return None;
        }
    };
    if let Some(dir) = project_dir {
        if let Err(why) = run_as.can_reach(dir) {
            problems.push(Problem::field(format!("{here}.user"), why));
            return None;
        }
    }
    Some(run_as)
}

/// `default_project` must name a project of this same file.
fn check_default_project(
    name: &str,
    projects: &[ProjectConfig],
    known: &HashMap<String, usize>,
    problems: &mut Vec<Problem>,
) -> bool {
    if known.contains_key(name) {
        return true;
    }
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    problems.push(Problem::field(
        "default_project",
        format!(
            "no project is named {name:?}; projects are named {}",
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        ),
    ));
    false
}

/// `public_url`: an absolute http(s) URL with a host, passed on as written
/// minus a trailing slash (so handlers can append paths).
fn check_public_url(text: &str) -> Result<String, String> {
    let expected =
        "expected an absolute http:// or https:// URL, e.g. \"https://shop.example.com\"";
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL: {expected}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|host| !host.is_empty());
    if !scheme_ok || !host_ok {
        return Err(format!("{text:?}: {expected}"));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?}: a public URL has no query; {expected}"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Project names travel in headers and, later, URL paths.
fn check_project_name(name: &str) -> Result<(), &'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_PROJECT_NAME_LEN {
        Err("must be 1 to 64 characters")
    } else if !name.chars().all(ok_char) || name.starts_with('.') {
        Err("may only hold letters, digits, '-', '_' and '.' (not first)")
    } else {
        Ok(())
    }
}

/// Keys travel in `X-Elsinore-Project-Key`, so they must be valid header
/// text; and they open the project's admin API and `projectAdmin`, so they
/// must be long enough not to be guessed (the throttle only slows guesses).
fn check_key(key: String, field: &str, problems: &mut Vec<Problem>) -> Option<ProjectKey> {
    if key.is_empty() {
        problems.push(Problem::field(field, "the project key is empty"));
        None
    } else if key.len() < MIN_KEY_LEN {
        problems.push(Problem::field(
            field,
            format!(
                "the project key is too short ({} characters, at least {MIN_KEY_LEN} needed); make one with: openssl rand -hex 24",
                key.len()
            ),
        ));
        None
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(Problem::field(
            field,
            "the project key may only hold printable ASCII without spaces",
        ));
        None
    } else {
        Some(ProjectKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(projects: &[&str]) -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            for p in projects {
                std::fs::create_dir_all(dir.path().join(p)).expect("project dir");
            }
            Self { dir }
        }
        fn parse(&self, text: &str) -> crate::Result<Config> {
            self.parse_env(text, |_| None)
        }
        fn parse_env(
            &self,
            text: &str,
            env: impl Fn(&str) -> Option<String>,
        ) -> crate::Result<Config> {
            Config::parse(text, &self.dir.path().join("config.json"), env)
        }
        fn error(&self, text: &str) -> String {
            match self.parse(text) {
                Ok(_) => panic!("config should be refused:\n{text}"),
                Err(err) => {
                    // Paths in messages are the temp dir's; tests compare the rest.
                    let dir = self.dir.path().display().to_string();
                    err.to_string().replace(&dir, "DIR")
                }
            }
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let fx = Fixture::new(&["projects/horatio"]);
        let config = fx
            .parse(r#"{"projects": ["projects/horatio"]}"#)
            .expect("valid");
        assert_eq!(config.startup.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(
            config.startup.database,
            fx.dir.path().join("data/elsinore.db")
        );
        assert_eq!(
            config.startup.state_database,
            fx.dir.path().join("data/elsinore-state.db")
        );
        assert_eq!(config.startup.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.idle_stop, IdleStop::Off);
        assert_eq!(config.projects[0].name, "horatio");
        assert!(config.projects[0].path.is_absolute());
        assert!(config.startup.admin_listen.is_none());
    }

    #[test]
    fn databases_accept_postgres_urls() {
        let fx = Fixture::new(&["a"]);
        let config = fx
            .parse(
                r#"{"database": "postgres://app:pw@127.0.0.1:5432/tenants",
                    "state_database": "postgresql://elsinore@db/state", "projects": ["a"]}"#,
            )
            .expect("valid");
        let shared = config.startup.database_url.as_ref().expect("shared url");
        assert_eq!(shared.expose(), "postgres://app:pw@127.0.0.1:5432/tenants");
        let state = config
            .startup
            .state_database_url
            .as_ref()
            .expect("state url");
        assert_eq!(state.to_string(), "postgresql://elsinore@db/state");
        // The local data folder stays where it was.
        assert_eq!(
            config.startup.state_database,
            fx.dir.path().join("data/elsinore-state.db")
        );
        let err = fx.error(r#"{"database": "postgres://u:pw@h:x/d", "projects": ["a"]}"#);
        assert!(
            err.contains("database: postgres://u:***@h:x/d: port"),
            "{err}"
        );
        let err = fx.error(
            r#"{"database": "postgres://h/d", "state_database": "postgres://h/d", "projects": ["a"]}"#,
        );
        assert!(
            err.contains("state_database: must not be the shared"),
            "{err}"
        );
    }

    #[test]
    fn state_database_is_its_own_file() {
        let fx = Fixture::new(&["a"]);
        let config = fx
            .parse(r#"{"state_database": "/var/lib/elsinore/state.db", "projects": ["a"]}"#)
            .expect("valid");
        assert_eq!(
            config.startup.state_database,
            Path::new("/var/lib/elsinore/state.db")
        );
        let err =
            fx.error(r#"{"database": "db/x.db", "state_database": "db/x.db", "projects": ["a"]}"#);
        assert!(
            err.contains("state_database: must not be the shared `database`"),
            "{err}"
        );
        let err = fx.error(r#"{"state_database": "", "projects": ["a"]}"#);
        assert!(err.contains("state_database: must not be empty"), "{err}");
    }

    #[test]
    fn tls_settings() {
        let fx = Fixture::new(&["a"]);
        let config = fx
            .parse(
                r#"{"tls_listen": "0.0.0.0:8443", "redirect_http": true,
                    "tls": {"default_cert": "certs/default.pem", "default_key": "/etc/k.pem"},
                    "projects": ["a"]}"#,
            )
            .expect("valid");
        assert_eq!(
            config.startup.tls_listen,
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        assert!(config.redirect_http);
        assert_eq!(
            config.tls_default,
            Some(DefaultCert {
                cert: fx.dir.path().join("certs/default.pem"),
                key: PathBuf::from("/etc/k.pem"),
            })
        );
        let plain = fx.parse(r#"{"projects": ["a"]}"#).expect("valid");
        assert_eq!(
            (plain.startup.tls_listen, plain.redirect_http),
            (None, false)
        );
        assert!(plain.tls_default.is_none());

        let err =
            fx.error(r#"{"tls_listen": "x", "tls": {"default_cert": "c.pem"}, "projects": ["a"]}"#);
        assert!(err.contains("tls_listen: \"x\" is not an address"), "{err}");
        assert!(err.contains("tls.default_key: missing"), "{err}");
        let err = fx.error(r#"{"redirect_http": true, "projects": ["a"]}"#);
        assert!(err.contains("redirect_http: needs tls_listen"), "{err}");
        let err =
            fx.error(r#"{"tls": {"default_cert": "c", "default_key": "k"}, "projects": ["a"]}"#);
        assert!(err.contains("tls: needs tls_listen"), "{err}");
        let err =
            fx.error(r#"{"tls_listen": "127.0.0.1:0", "tls": {"cert": "c"}, "projects": ["a"]}"#);
        assert!(err.contains("tls.cert: unknown field `cert`"), "{err}");
    }

    #[test]
    fn watch_settings_and_bare_admin_port() {
        let fx = Fixture::new(&["a"]);
        let config = fx
            .parse(
                r#"{"admin_listen": "9000", "watch": {"mode": "poll", "poll_interval": "200ms"},
                    "projects": ["a"]}"#,
            )
            .expect("valid");
        assert_eq!(
            config.startup.admin_listen,
            Some("127.0.0.1:9000".parse().expect("addr"))
        );
        assert_eq!(config.startup.watch.mode, WatchMode::Poll);
        assert_eq!(
            config.startup.watch.poll_interval,
            Duration::from_millis(200)
        );
        assert_eq!(
            fx.parse(r#"{"projects": ["a"]}"#)
                .expect("valid")
                .startup
                .watch,
            WatchSettings::default()
        );
        let err = fx.error(r#"{"watch": {"mode": "inotify"}, "projects": ["a"]}"#);
        assert!(
            err.contains("watch.mode: \"inotify\" is not a watch mode"),
            "{err}"
        );
        let err = fx.error(r#"{"watch": {"every": "1s"}, "projects": ["a"]}"#);
        assert!(err.contains("unknown field `every`"), "{err}");
    }

    #[test]
    fn project_objects_with_name_and_keys() {
        let fx = Fixture::new(&["a", "b"]);
        let config = fx
            .parse_env(
                r#"{"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:9000",
                    "projects": [{"path": "a", "name": "alpha", "key": "first-secret-key"},
                                 {"path": "b", "key_env": "B_KEY"}]}"#,
                |name| (name == "B_KEY").then(|| "second-secret-key".to_owned()),
            )
            .expect("valid");
        assert_eq!(config.projects[0].name, "alpha");
        assert_eq!(
            config.projects[0].key.as_ref().map(ProjectKey::expose),
            Some("first-secret-key")
        );
        assert_eq!(config.projects[1].name, "b");
        assert_eq!(
            config.projects[1].key.as_ref().map(ProjectKey::expose),
            Some("second-secret-key")
        );
        assert_eq!(config.key_env_names().collect::<Vec<_>>(), ["B_KEY"]);
        assert!(
            !format!("{config:?}").contains("first-secret-key"),
            "Debug must not print keys"
        );
    }

    #[test]
    fn forward_host_and_handler_key_env() {
        let fx = Fixture::new(&["a", "b"]);
        let config = fx
            .parse_env(
                r#"{"projects": [{"path": "a", "forward_host": "tenant", "key_env": "A_KEY",
                                  "handler_key_env": "HAMLET_PROJECT_KEY"},
                                 "b"]}"#,
                |name| (name == "A_KEY").then(|| "first-secret-key".to_owned()),
            )
            .expect("valid");
        assert_eq!(config.projects[0].forward_host, ForwardHost::Tenant);
        assert_eq!(config.projects[1].forward_host, ForwardHost::Original);
        let handed = config.projects[0].handler_key_env.as_ref().expect("set");
        assert_eq!(
            (handed.name.as_str(), handed.key.expose()),
            ("HAMLET_PROJECT_KEY", "first-secret-key")
        );
        assert!(config.projects[1].handler_key_env.is_none());

        let err = fx.error(
            r#"{"projects": [{"path": "a", "handler_key_env": "HAMLET_PROJECT_KEY"},
                             {"path": "b", "key": "second-secret-key", "handler_key_env": "1X"}]}"#,
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "DIR/config.json: projects[0].handler_key_env: the project has no key to hand over: set \"key\" or \"key_env\" too",
                "DIR/config.json: projects[1].handler_key_env: \"1X\" is not an environment variable name: letters, digits and '_', not starting with a digit (e.g. \"HAMLET_PROJECT_KEY\")",
            ]
        );
        let err = fx.error(r#"{"projects": [{"path": "a", "forward_host": "Tenant"}]}"#);
        assert!(
            err.contains("projects[0].forward_host: unknown variant `Tenant`, expected `original` or `tenant`"),
            "{err}"
        );
    }

    #[test]
    fn short_and_shared_project_keys_are_refused() {
        let fx = Fixture::new(&["a", "b", "c"]);
        let err = fx.error(r#"{"projects": [{"path": "a", "key": "k"}]}"#);
        assert_eq!(
            err,
            "DIR/config.json: projects[0].key: the project key is too short (1 characters, at least 16 needed); make one with: openssl rand -hex 24"
        );
        let shared = "shared-secret-key-0123";
        let err = fx
            .parse_env(
                r#"{"projects": [{"path": "a", "key": "shared-secret-key-0123"},
                                 {"path": "b", "key": "another-secret-key-456"},
                                 {"path": "c", "key_env": "C_KEY"}]}"#,
                |_| Some(shared.to_owned()),
            )
            .expect_err("a shared key")
            .to_string();
        assert!(
            err.ends_with("config.json: projects[2].key_env: the same project key as projects[0].key; each project needs its own (make one with: openssl rand -hex 24)"),
            "{err}"
        );
        assert!(!err.contains(shared), "the key is never printed: {err}");
        let err = fx.parse_env(
            r#"{"projects": [{"path": "a", "key_env": "A_KEY"}]}"#,
            |_| Some("0123456789abcde".to_owned()),
        );
        assert!(err
            .expect_err("15 characters")
            .to_string()
            .contains("projects[0].key_env: the project key is too short (15 characters"),);
    }

    #[test]
    fn cors_origins_are_validated() {
        let fx = Fixture::new(&["a"]);
        let config = fx.parse(r#"{"projects": ["a"]}"#).expect("valid");
        assert!(
            config.startup.cors_origins.is_empty(),
            "no origin by default"
        );
        let config = fx
            .parse(r#"{"projects": ["a"], "cors_origins": ["https://Admin.example.com", "chrome-extension://abc"]}"#)
            .expect("valid");
        assert_eq!(
            config.startup.cors_origins,
            ["https://admin.example.com", "chrome-extension://abc"]
        );
        let err = fx.error(
            r#"{"projects": ["a"], "cors_origins": ["https://ok.example", "https://x.example/"]}"#,
        );
        assert!(
            err.starts_with(
                "DIR/config.json: cors_origins[1]: \"https://x.example/\" is not an origin"
            ),
            "{err}"
        );
    }

    #[test]
    fn project_users_need_root_known_accounts_and_a_reachable_folder() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new(&["a"]);
        let parse_as = |text: &str, is_root: bool| {
            Config::parse_as(text, &fx.dir.path().join("config.json"), |_| None, is_root)
        };
        let with_user = r#"{"database_group": "users",
            "projects": [{"path": "a", "user": "nobody"}]}"#;
        let err = parse_as(with_user, false)
            .expect_err("not root")
            .to_string();
        assert!(
            err.ends_with("config.json: projects[0].user: handlers can run as \"nobody\" only when Elsinore runs as root (it runs as uid 0); remove \"user\" or start Elsinore as root")
                || err.contains("projects[0].user: handlers can run as \"nobody\" only when Elsinore runs as root"),
            "{err}"
        );
        std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let err = parse_as(with_user, true)
            .expect_err("closed folder")
            .to_string();
        assert!(
            err.contains("projects[0].user: user nobody cannot pass through"),
            "{err}"
        );
        std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let config = parse_as(with_user, true).expect("valid as root");
        let run_as = config.projects[0].run_as.as_ref().expect("run_as");
        assert_eq!(
            (run_as.uid, run_as.home.as_path()),
            (65534, Path::new("/nonexistent"))
        );
        let users = config.startup.database_group.as_ref().expect("group");
        assert!(run_as.groups.contains(&users.gid), "{run_as:?}");

        let err = parse_as(
            r#"{"database_group": "no-such-group-x",
                "projects": [{"path": "a", "user": "no-such-user-x", "group": "users"},
                             {"path": "a", "name": "b", "group": "users"}]}"#,
            true,
        )
        .expect_err("unknown names")
        .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines[0].contains("database_group: no group named \"no-such-group-x\""),
            "{err}"
        );
        assert!(
            lines[1].contains("projects[0].user: no user named \"no-such-user-x\""),
            "{err}"
        );
        assert!(
            lines[2].contains("projects[1].group: needs \"user\""),
            "{err}"
        );
    }

    #[test]
    fn admin_api_mode_is_read_and_an_unknown_one_names_line_and_field() {
        let fx = Fixture::new(&["a", "b"]);
        let config = fx
            .parse(r#"{"projects": ["a", {"path": "b", "admin_api": "hamlet"}]}"#)
            .expect("valid");
        assert_eq!(config.projects[0].admin_api, AdminApiMode::Elsinore);
        assert_eq!(config.projects[1].admin_api, AdminApiMode::Hamlet);
        let err = fx.error(
            r#"{"projects": [
  {"path": "a", "admin_api": "hamlett"}]}"#,
        );
        assert!(
            err.starts_with("DIR/config.json:2:38: projects[0].admin_api: unknown variant `hamlett`, expected one of `elsinore`, `hamlet`, `handler`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let fx = Fixture::new(&["a"]);
        assert_eq!(
            fx.error("{\n  \"projects\": [\"a\",]\n}"),
            "DIR/config.json:2:20: trailing comma"
        );
    }

    #[test]
    fn shape_errors_name_the_field() {
        let fx = Fixture::new(&["a"]);
        let err = fx.error(r#"{"projects": [{"path": "a", "key_envv": "X"}]}"#);
        assert!(
            err.starts_with("DIR/config.json:1:38: projects[0].key_envv: unknown field `key_envv`"),
            "{err}"
        );
        let err = fx.error(r#"{"projects": ["a"], "listn": "x"}"#);
        assert!(err.contains(": listn: unknown field `listn`"), "{err}");
        let err = fx.error(r#"{"projects": [42]}"#);
        assert!(
            err.contains(": projects[0]: invalid type: integer `42`"),
            "{err}"
        );
        let err = fx.error(r#"{"listen": "127.0.0.1:1"}"#);
        assert!(err.contains("missing field `projects`"), "{err}");
    }

    #[test]
    fn events_key_is_parsed_and_checked_in_place() {
        let fx = Fixture::new(&["a"]);
        let config = fx
            .parse(r#"{"projects": ["a"], "events": {"interval": "off", "batch": 7}}"#)
            .expect("valid");
        assert_eq!(config.startup.events.interval, None);
        assert_eq!(config.startup.events.batch, 7);
        let err = fx.error(
            r#"{"projects": ["a"],
  "events": {"tables": {"t": {"retension": "7d"}}}}"#,
        );
        assert!(
            err.starts_with("DIR/config.json:2:41: events.tables.t.retension: unknown field `retension`, expected one of `retention`, `soft_delete`, `session_expiry`"),
            "{err}"
        );
        let err = fx.error(r#"{"projects": ["a"], "events": {"batch": -1}}"#);
        assert!(
            err.contains(": events.batch: invalid value: integer `-1`"),
            "{err}"
        );
        let err = fx.error(r#"{"projects": ["a"], "events": {"interval": "10"}}"#);
        assert!(
            err.contains("DIR/config.json: events.interval: invalid duration \"10\""),
            "{err}"
        );
    }

    #[test]
    fn validation_errors_are_all_reported_with_fields() {
        let fx = Fixture::new(&["a", "other/a"]);
        let err = fx.error(
            r#"{"listen": "localhost:80", "shutdown_grace": "30", "idle_stop": "never",
                "projects": ["a", "other/a", "missing",
                             {"path": "a", "name": "x", "key": "k", "key_env": "K"},
                             {"path": "a", "name": "y", "key_env": "UNSET_VAR"},
                             {"path": "a", "name": "bad name"},
                             {"path": "a", "name": "z", "key": "has a space in the key"}]}"#,
        );
        let expected = [
            "DIR/config.json: listen: \"localhost:80\" is not an address: expected IP:port, e.g. \"127.0.0.1:8080\"",
            "DIR/config.json: shutdown_grace: invalid duration \"30\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\")",
            "DIR/config.json: idle_stop: invalid duration \"never\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\"), or \"off\"",
            "DIR/config.json: projects[1].name: duplicate project name \"a\" (already used by projects[0]); set \"name\" to tell them apart",
            "DIR/config.json: projects[2].path: project folder DIR/missing not found (No such file or directory (os error 2))",
            "DIR/config.json: projects[3]: set either \"key\" or \"key_env\", not both",
            "DIR/config.json: projects[4].key_env: environment variable UNSET_VAR is not set",
            "DIR/config.json: projects[5].name: project name \"bad name\" may only hold letters, digits, '-', '_' and '.' (not first); set \"name\" explicitly",
            "DIR/config.json: projects[6].key: the project key may only hold printable ASCII without spaces",
        ];
        assert_eq!(err.lines().collect::<Vec<_>>(), expected);
    }
}
