//! `project.toml`: the handlers a project declares, and where its generated
//! handlers are (`handlers_dir`, listed by `generated.rs`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Uri};
use serde::Deserialize;

use crate::error::{ConfigError, Problem};
use crate::generated::{scan_handlers_dir, GeneratedFrom, GeneratedScan, SkippedFile};
use crate::handover::HandlerKeyEnv;
use crate::idle::{IdleStop, StartPolicy};
use crate::parse_duration;
use crate::run_as::RunAs;

/// The manifest's file name inside a project folder.
pub const MANIFEST_FILE: &str = "project.toml";

/// Variables Elsinore sets for every handler; a manifest may not override them.
pub const RESERVED_ENV: [&str; 5] = [
    "PORT",
    "ELSINORE_SOCKET",
    "ELSINORE_DB",
    "ELSINORE_PROJECT",
    PUBLIC_URL_ENV,
];

/// Where a handler finds its project's `public_url`.
pub const PUBLIC_URL_ENV: &str = "ELSINORE_PUBLIC_URL";

pub(crate) const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests forwarded to one handler at once when `max_concurrent` is
/// absent. Each holds one connection from Elsinore to the handler (as does
/// an open WebSocket), so this also bounds the connections a flood of
/// clients can make Elsinore open to a handler.
pub const DEFAULT_MAX_CONCURRENT: usize = 256;
/// Requests that may wait for a busy handler when `queue` is absent.
pub const DEFAULT_QUEUE: usize = 100;
/// How long a queued request waits for a busy handler before 503.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated `project.toml`, with the handlers its `handlers_dir` holds
/// when it was read by [`Manifest::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The `[[handler]]` tables in file order, then the generated handlers
    /// sorted by name.
    pub handlers: Vec<HandlerSpec>,
    /// `handlers_dir`, relative to the project folder, without `.`
    /// components; never empty, absolute or leaving the project.
    pub handlers_dir: Option<PathBuf>,
    /// Files in `handlers_dir` that look like handlers but serve nothing
    /// (not executable, bad name, beaten by a `[[handler]]`), sorted by name.
    pub skipped: Vec<SkippedFile>,
}

/// One handler: a `[[handler]]` table, or an executable in `handlers_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    /// Unique within the project.
    pub name: String,
    /// How to reach it.
    pub kind: HandlerKind,
    /// Path prefixes it serves; the longest matching prefix wins.
    pub routes: Vec<String>,
    /// Readiness path probed with `GET`; `None` means "TCP connect works".
    pub ready: Option<String>,
    /// Extra environment for the process.
    pub env: BTreeMap<String, String>,
    /// How long a request waits for a starting handler before 503.
    pub start_timeout: Duration,
    /// How long the handler has to send response headers before 504.
    pub response_timeout: Duration,
    /// Requests the handler is given at once; `None` means
    /// [`DEFAULT_MAX_CONCURRENT`].
    pub max_concurrent: Option<usize>,
    /// Requests that may wait when `max_concurrent` are running; one more
    /// gets 503 at once.
    pub queue: usize,
    /// How long a queued request waits before 503.
    pub queue_timeout: Duration,
    /// `reuse_after_body`: the handler promises to read every request
    /// body to its end, so its connection may carry the next request after
    /// one with a body (POST, PUT, PATCH). Bodies on GET, HEAD, OPTIONS,
    /// DELETE and TRACE never reuse it.
    pub reuse_after_body: bool,
    /// `socket = true`: the handler listens on a Unix socket Elsinore
    /// names in `ELSINORE_SOCKET` (in a folder only the project's user can
    /// enter) instead of a loopback port (`PORT`) every local process can
    /// reach. Only for `command` handlers.
    pub socket: bool,
    /// `idle_stop`: how long without a request in flight before the
    /// handler is stopped and marked sleeping. `None` when `project.toml`
    /// does not say; [`Manifest::with_idle_stop`] then fills in
    /// config.json's `idle_stop`. See [`HandlerSpec::idle_after`].
    pub idle_stop: Option<IdleStop>,
    /// `start`: with the project (`always`) or by its first request
    /// (`on_demand`).
    pub start: StartPolicy,
    /// `listen_fd = true`: Elsinore binds the handler's loopback port
    /// itself and passes the listening socket as file descriptor 3
    /// (`LISTEN_FDS=1`), so connections queue in the kernel while the
    /// handler starts and requests need not wait for its readiness probe.
    /// Only for `command` handlers on a port (not `socket = true`).
    pub listen_fd: bool,
    /// For a handler found in `handlers_dir`: its file as read. Part of the
    /// spec, so a replaced file is a changed handler (restarted blue/green)
    /// and an unchanged one keeps running.
    pub generated: Option<GeneratedFrom>,
    /// The project's `user` in config.json (set by
    /// [`Manifest::with_run_as`]). Part of the spec, so a changed user
    /// restarts the handlers.
    pub run_as: Option<RunAs>,
    /// The project's `handler_key_env` in config.json (set by
    /// [`Manifest::with_handler_key_env`]): its key, handed over in that
    /// variable. Part of the spec, so a changed key or name restarts the
    /// handlers.
    pub key_env: Option<HandlerKeyEnv>,
}

impl HandlerSpec {
    /// How long the handler may go without a request in flight before it
    /// sleeps; `None` when it never does (`"off"`, the default, or a `url`
    /// handler).
    pub fn idle_after(&self) -> Option<Duration> {
        self.idle_stop.and_then(IdleStop::after)
    }
}

/// A process Elsinore starts, or a server somebody else runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerKind {
    /// `command = [...]`: supervised by Elsinore, run in the project folder.
    Command {
        /// argv; never empty.
        argv: Vec<String>,
    },
    /// `url = "http://host:port"`: external, not supervised.
    Url {
        /// `host:port` to connect to.
        authority: Authority,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    handlers_dir: Option<String>,
    #[serde(default)]
    handler: Vec<RawHandler>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: String,
    command: Option<Vec<String>>,
    url: Option<String>,
    routes: Option<Vec<String>>,
    ready: Option<String>,
    env: Option<BTreeMap<String, String>>,
    start_timeout: Option<String>,
    response_timeout: Option<String>,
    max_concurrent: Option<u64>,
    queue: Option<u64>,
    queue_timeout: Option<String>,
    reuse_after_body: Option<bool>,
    socket: Option<bool>,
    idle_stop: Option<String>,
    start: Option<String>,
    listen_fd: Option<bool>,
}

impl Manifest {
    /// Gives every handler the project's `public_url` as
    /// `ELSINORE_PUBLIC_URL`. Part of the handler's settings, so changing
    /// the URL replaces the handlers (blue/green) like any other change.
    #[must_use]
    pub fn with_public_url(mut self, public_url: Option<&str>) -> Self {
        if let Some(url) = public_url {
            for handler in &mut self.handlers {
                handler
                    .env
                    .insert(PUBLIC_URL_ENV.to_owned(), url.to_owned());
            }
        }
        self
    }

    /// Runs every handler as `run_as` (the project's `user` in
    /// config.json).
    pub fn with_run_as(mut self, run_as: Option<&RunAs>) -> Self {
        for handler in &mut self.handlers {
            handler.run_as = run_as.cloned();
        }
        self
    }

    /// Hands every handler the project key under `key_env`'s name (the
    /// project's `handler_key_env` in config.json).
    pub fn with_handler_key_env(mut self, key_env: Option<&HandlerKeyEnv>) -> Self {
        for handler in &mut self.handlers {
            handler.key_env = key_env.cloned();
        }
        self
    }

    /// Gives every handler whose `project.toml` entry has no `idle_stop`
    /// the default (config.json's top-level `idle_stop`). Part of the
    /// spec, so changing the default replaces the handlers it reaches.
    #[must_use]
    pub fn with_idle_stop(mut self, default: IdleStop) -> Self {
        for handler in &mut self.handlers {
            handler.idle_stop.get_or_insert(default);
        }
        self
    }

    /// Reads `<project>/project.toml` and, when it names a `handlers_dir`,
    /// the handlers in that folder. A missing folder holds none; one that
    /// cannot be listed is an error (the caller keeps what it had).
    pub fn load(project_dir: &Path) -> crate::Result<Self> {
        let file = project_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        let mut manifest = Self::parse(&text, &file)?;
        if let Some(dir) = manifest.handlers_dir.as_ref().map(|d| project_dir.join(d)) {
            let scan = scan_handlers_dir(&dir).map_err(|source| ConfigError::HandlersDir {
                manifest: file.clone(),
                dir,
                source,
            })?;
            manifest.add_generated(scan);
        }
        Ok(manifest)
    }

    /// The handlers declared in `[[handler]]` tables.
    pub fn declared(&self) -> impl Iterator<Item = &HandlerSpec> {
        self.handlers.iter().filter(|h| h.generated.is_none())
    }

    /// The handlers found in `handlers_dir`.
    pub fn generated(&self) -> impl Iterator<Item = &HandlerSpec> {
        self.handlers.iter().filter(|h| h.generated.is_some())
    }

    /// Appends the generated handlers. A `[[handler]]` with the same name,
    /// or serving the same route, wins: the manifest is the operator's
    /// deliberate choice, the folder is whatever a build left there.
    pub fn add_generated(&mut self, scan: GeneratedScan) {
        self.skipped.extend(scan.skipped);
        let declared: Vec<(String, Vec<String>)> = self
            .declared()
            .map(|h| (h.name.clone(), h.routes.clone()))
            .collect();
        for spec in scan.handlers {
            let file_name = spec
                .generated
                .as_ref()
                .and_then(|g| g.file.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| spec.name.clone());
            let same_route = |route: &String| {
                spec.routes
                    .iter()
                    .any(|r| r.trim_end_matches('/') == route.trim_end_matches('/'))
            };
            let clash = declared.iter().find_map(|(name, routes)| {
                if *name == spec.name {
                    Some(format!(
                        "handler {name:?} is declared in {MANIFEST_FILE}, which wins"
                    ))
                } else {
                    routes.iter().find(|r| same_route(r)).map(|route| {
                        format!(
                            "route {route:?} is served by handler {name:?} declared in {MANIFEST_FILE}, which wins"
                        )
                    })
                }
            });
            match clash {
                Some(reason) => self.skipped.push(SkippedFile {
                    name: file_name,
                    reason,
                }),
                None => self.handlers.push(spec),
            }
        }
        self.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Validates `text` as the content of `file`.
    pub fn parse(text: &str, file: &Path) -> crate::Result<Self> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| {
            let position = err.span().map(|span| line_column(text, span.start));
            let problem = Problem {
                position,
                field: String::new(),
                message: err.message().trim_end().to_owned(),
            };
            ConfigError::invalid(file, vec![problem])
        })?;

        let mut problems = Vec::new();
        let handlers_dir = raw
            .handlers_dir
            .as_deref()
            .and_then(|dir| match validate_handlers_dir(dir) {
                Ok(dir) => Some(dir),
                Err(why) => {
                    problems.push(Problem::field("handlers_dir", format!("{dir:?}: {why}")));
                    None
                }
            });
        if raw.handler.is_empty() && raw.handlers_dir.is_none() {
            problems.push(Problem::field(
                "handler",
                "no [[handler]] declared: a project needs at least one handler, or a handlers_dir of generated ones (handlers_dir = \"server/.hamlet-gen/handlers\")",
            ));
        }
        let mut names = HashSet::new();
        let mut prefixes: BTreeMap<String, String> = BTreeMap::new();
        let mut handlers = Vec::with_capacity(raw.handler.len());
        for (index, raw) in raw.handler.into_iter().enumerate() {
            let here = format!("handler[{index}]");
            if !names.insert(raw.name.clone()) {
                problems.push(Problem::field(
                    format!("{here}.name"),
                    format!("duplicate handler name {:?}", raw.name),
                ));
            }
            if let Some(spec) = validate_handler(raw, &here, &mut problems) {
                for route in &spec.routes {
                    if let Some(owner) = prefixes.insert(route.clone(), spec.name.clone()) {
                        problems.push(Problem::field(
                            format!("{here}.routes"),
                            format!("route {route:?} is already served by handler {owner:?}"),
                        ));
                    }
                }
                handlers.push(spec);
            }
        }
        if problems.is_empty() {
            Ok(Self {
                handlers,
                handlers_dir,
                skipped: Vec::new(),
            })
        } else {
            Err(ConfigError::invalid(file, problems))
        }
    }
}

/// 1 to 64 letters, digits, `-` or `_`: safe in logs, metric labels,
/// `project/name` error texts and (for generated handlers) URL paths.
pub(crate) fn is_valid_handler_name(name: &str) -> bool {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    !name.is_empty() && name.len() <= 64 && name.chars().all(name_ok)
}

/// `handlers_dir` must name a folder inside the project: the project owns
/// what runs from it, and watching stays within the project's folders.
/// Checked by its words only; a symlink on the way may point anywhere, as
/// symlinked handlers may.
fn validate_handlers_dir(dir: &str) -> Result<PathBuf, &'static str> {
    if dir.contains('\0') {
        return Err("must not contain NUL");
    }
    let path = Path::new(dir);
    if path.is_absolute() {
        return Err("must be relative to the project folder, e.g. \"server/.hamlet-gen/handlers\"");
    }
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("must stay inside the project folder (no '..')"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to the project folder")
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("must name a folder inside the project, e.g. \"server/.hamlet-gen/handlers\"");
    }
    Ok(clean)
}

fn validate_handler(
    raw: RawHandler,
    here: &str,
    problems: &mut Vec<Problem>,
) -> Option<HandlerSpec> {
    let before = problems.len();
    if !is_valid_handler_name(&raw.name) {
        problems.push(Problem::field(
            format!("{here}.name"),
            format!(
                "handler name {:?} must be 1 to 64 letters, digits, '-' or '_'",
                raw.name
            ),
        ));
    }

    let kind = match (raw.command, raw.url) {
        (Some(_), Some(_)) => {
            problems.push(Problem::field(
                here,
                "set either \"command\" or \"url\", not both",
            ));
            None
        }
        (None, None) => {
            problems.push(Problem::field(
                here,
                "set \"command\" (a process Elsinore runs) or \"url\" (a server already running)",
            ));
            None
        }
        (Some(argv), None) => {
            if argv.first().is_none_or(|program| program.is_empty()) {
                problems.push(Problem::field(
                    format!("{here}.command"),
                    "must name a program, e.g. [\"python3\", \"server/app.py\"]",
                ));
                None
            } else {
                Some(HandlerKind::Command { argv })
            }
        }
        (None, Some(url)) => match parse_handler_url(&url) {
            Ok(authority) => Some(HandlerKind::Url { authority }),
            Err(why) => {
                problems.push(Problem::field(
                    format!("{here}.url"),
                    format!("{url:?}: {why}"),
                ));
                None
            }
        },
    };

    let routes = raw.routes.unwrap_or_else(|| vec!["/".to_owned()]);
    if routes.is_empty() {
        problems.push(Problem::field(
            format!("{here}.routes"),
            "is empty: omit it to serve \"/\", or list path prefixes",
        ));
    }
    for (i, route) in routes.iter().enumerate() {
        if !route.starts_with('/') {
            problems.push(Problem::field(
                format!("{here}.routes[{i}]"),
                format!("{route:?} must start with '/'"),
            ));
        }
    }
    if let Some(ready) = &raw.ready {
        if !ready.starts_with('/')
            || ready
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            problems.push(Problem::field(
                format!("{here}.ready"),
                format!("{ready:?} must be a path starting with '/'"),
            ));
        }
    }

    let is_url = matches!(kind, Some(HandlerKind::Url { .. }));
    if raw.ready.is_some() && is_url {
        problems.push(Problem::field(
            format!("{here}.ready"),
            "only applies to handlers started with \"command\" (url handlers are not probed)",
        ));
    }
    let socket = raw.socket.unwrap_or(false);
    if socket && is_url {
        problems.push(Problem::field(
            format!("{here}.socket"),
            "only applies to handlers started with \"command\" (Elsinore does not choose where a url handler listens)",
        ));
    }
    let (idle_stop, start, listen_fd) = validate_sleep(
        (
            raw.idle_stop.as_deref(),
            raw.start.as_deref(),
            raw.listen_fd,
        ),
        here,
        is_url,
        socket,
        problems,
    );
    let env = raw.env.unwrap_or_default();
    if !env.is_empty() && is_url {
        problems.push(Problem::field(
            format!("{here}.env"),
            "only applies to handlers started with \"command\"",
        ));
    }
    for (key, value) in &env {
        if RESERVED_ENV.contains(&key.as_str()) {
            problems.push(Problem::field(
                format!("{here}.env.{key}"),
                "is set by Elsinore and cannot be overridden",
            ));
        } else if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            problems.push(Problem::field(
                format!("{here}.env.{key}"),
                "is not a valid environment variable",
            ));
        }
    }

    let mut duration =
        |value: Option<&str>, key: &str, default: Duration| match value.map(parse_duration) {
            None => default,
            Some(Ok(Duration::ZERO)) => {
                problems.push(Problem::field(
                    format!("{here}.{key}"),
                    "must be more than 0",
                ));
                default
            }
            Some(Ok(timeout)) => timeout,
            Some(Err(err)) => {
                problems.push(Problem::field(format!("{here}.{key}"), err.to_string()));
                default
            }
        };
    let start_timeout = duration(
        raw.start_timeout.as_deref(),
        "start_timeout",
        DEFAULT_START_TIMEOUT,
    );
    let response_timeout = duration(
        raw.response_timeout.as_deref(),
        "response_timeout",
        DEFAULT_RESPONSE_TIMEOUT,
    );
    let queue_timeout = duration(
        raw.queue_timeout.as_deref(),
        "queue_timeout",
        DEFAULT_QUEUE_TIMEOUT,
    );
    let max_concurrent = match raw.max_concurrent {
        Some(0) => {
            problems.push(Problem::field(
                format!("{here}.max_concurrent"),
                "must be at least 1 (leave it out for the default of 256)",
            ));
            None
        }
        other => other.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let queue = raw
        .queue
        .map_or(DEFAULT_QUEUE, |n| usize::try_from(n).unwrap_or(usize::MAX));

    if problems.len() > before {
        return None;
    }
    Some(HandlerSpec {
        name: raw.name,
        kind: kind?,
        routes,
        ready: raw.ready,
        env,
        start_timeout,
        response_timeout,
        max_concurrent,
        queue,
        queue_timeout,
        reuse_after_body: raw.reuse_after_body.unwrap_or(false),
        socket,
        idle_stop,
        start,
        listen_fd,
        generated: None,
        run_as: None,
        key_env: None,
    })
}

/// `idle_stop`, `start` and `listen_fd`: only for `command` handlers
/// (Elsinore neither stops nor starts a `url` handler), and `listen_fd`
/// only on a loopback port (a `socket = true` handler binds its own path).
fn validate_sleep(
    (raw_idle_stop, raw_start, raw_listen_fd): (Option<&str>, Option<&str>, Option<bool>),
    here: &str,
    is_url: bool,
    socket: bool,
    problems: &mut Vec<Problem>,
) -> (Option<IdleStop>, StartPolicy, bool) {
    let not_for_url = |key: &str, problems: &mut Vec<Problem>| {
        problems.push(Problem::field(
            format!("{here}.{key}"),
            "only applies to handlers started with \"command\" (Elsinore does not start or stop a url handler)",
        ));
    };
    let idle_stop = raw_idle_stop.and_then(|text| match IdleStop::parse(text) {
        Ok(idle_stop) => Some(idle_stop),
        Err(why) => {
            problems.push(Problem::field(format!("{here}.idle_stop"), why));
            None
        }
    });
    if raw_idle_stop.is_some() && is_url {
        not_for_url("idle_stop", problems);
    }
    let start = match raw_start.map(StartPolicy::parse) {
        None => StartPolicy::Always,
        Some(Ok(start)) => start,
        Some(Err(why)) => {
            problems.push(Problem::field(format!("{here}.start"), why));
            StartPolicy::Always
        }
    };
    if raw_start.is_some() && is_url {
        not_for_url("start", problems);
    }
    let listen_fd = raw_listen_fd.unwrap_or(false);
    if listen_fd && is_url {
        not_for_url("listen_fd", problems);
    } else if listen_fd && socket {
        problems.push(Problem::field(
            format!("{here}.listen_fd"),
            "cannot be combined with socket = true: a passed socket is a loopback port Elsinore binds",
        ));
    }
    (idle_stop, start, listen_fd)
}

/// Only plain `http://host:port` (optionally with `/`): handlers are local
/// HTTP/1.1 servers, and a path here would be silently ignored.
fn parse_handler_url(url: &str) -> Result<Authority, &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a URL")?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported");
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err("must not have a path or query (routes decide paths)");
    }
    let authority = uri.authority().ok_or("missing host")?.clone();
    if authority.as_str().contains('@') {
        return Err("must not hold credentials");
    }
    if authority.port_u16().is_none() {
        // An explicit port avoids surprises; hyper would assume 80.
        return format!("{}:80", authority.host())
            .parse()
            .map_err(|_| "invalid host");
    }
    Ok(authority)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("p/project.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_manifest() {
        let manifest = parse(
            r#"
            [[handler]]
            name = "api"
            command = ["python3", "server/app.py"]
            routes = ["/api/"]
            ready = "/health"
            env = { LOG_LEVEL = "info" }
            start_timeout = "30s"
            response_timeout = "2m"

            [[handler]]
            name = "legacy"
            url = "http://127.0.0.1:3000"
            "#,
        )
        .expect("valid");
        let api = &manifest.handlers[0];
        assert_eq!(api.routes, ["/api/"]);
        assert_eq!(api.ready.as_deref(), Some("/health"));
        assert_eq!(api.env.get("LOG_LEVEL").map(String::as_str), Some("info"));
        assert_eq!(api.start_timeout, Duration::from_secs(30));
        assert_eq!(api.response_timeout, Duration::from_secs(120));
        let legacy = &manifest.handlers[1];
        assert_eq!(legacy.routes, ["/"]);
        assert_eq!(legacy.start_timeout, DEFAULT_START_TIMEOUT);
        assert_eq!(legacy.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert!(
            matches!(&legacy.kind, HandlerKind::Url { authority } if authority == "127.0.0.1:3000")
        );
    }

    #[test]
    fn toml_syntax_error_has_line_and_column() {
        let err = parse("[[handler]]\nname = \"api\"\ncommand = [\"x\"\n").expect_err("invalid");
        assert!(err.starts_with("p/project.toml:3:"), "{err}");
        let err = parse("[[handler]]\nname = \"api\"\ncmd = [\"x\"]\n").expect_err("invalid");
        assert!(
            err.starts_with("p/project.toml:3:1: unknown field `cmd`"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let err = parse(
            r#"
            [[handler]]
            name = "a"
            command = ["x"]
            url = "http://127.0.0.1:1"
            [[handler]]
            name = "b"
            [[handler]]
            name = "c"
            command = []
            [[handler]]
            name = "d"
            url = "https://example.com"
            env = { X = "1" }
            [[handler]]
            name = "d2"
            url = "http://127.0.0.1:1"
            routes = ["/d2/"]
            ready = "/health"
            [[handler]]
            name = "e"
            command = ["x"]
            routes = ["api"]
            ready = "health"
            env = { PORT = "1" }
            start_timeout = "soon"
            [[handler]]
            name = "e"
            command = ["x"]
            routes = ["/"]
            [[handler]]
            name = "f g"
            command = ["x"]
            [[handler]]
            name = "g"
            command = ["x"]
            routes = ["/"]
            "#,
        )
        .expect_err("invalid");
        let expected = [
            "p/project.toml: handler[0]: set either \"command\" or \"url\", not both",
            "p/project.toml: handler[1]: set \"command\" (a process Elsinore runs) or \"url\" (a server already running)",
            "p/project.toml: handler[2].command: must name a program, e.g. [\"python3\", \"server/app.py\"]",
            "p/project.toml: handler[3].url: \"https://example.com\": only http:// URLs are supported",
            "p/project.toml: handler[4].ready: only applies to handlers started with \"command\" (url handlers are not probed)",
            "p/project.toml: handler[5].routes[0]: \"api\" must start with '/'",
            "p/project.toml: handler[5].ready: \"health\" must be a path starting with '/'",
            "p/project.toml: handler[5].env.PORT: is set by Elsinore and cannot be overridden",
            "p/project.toml: handler[5].start_timeout: invalid duration \"soon\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\")",
            "p/project.toml: handler[6].name: duplicate handler name \"e\"",
            "p/project.toml: handler[7].name: handler name \"f g\" must be 1 to 64 letters, digits, '-' or '_'",
            "p/project.toml: handler[8].routes: route \"/\" is already served by handler \"e\"",
        ];
        assert_eq!(err.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn sleep_settings_are_read_and_checked() {
        let manifest = parse(
            r#"
            [[handler]]
            name = "web"
            command = ["x"]
            idle_stop = "10m"
            start = "on_demand"
            listen_fd = true
            [[handler]]
            name = "api"
            command = ["x"]
            routes = ["/api/"]
            "#,
        )
        .expect("valid");
        let web = &manifest.handlers[0];
        assert_eq!(
            web.idle_stop,
            Some(IdleStop::After(Duration::from_secs(600)))
        );
        assert_eq!(web.start, StartPolicy::OnDemand);
        assert!(web.listen_fd);
        let api = &manifest.handlers[1];
        assert_eq!(
            (api.idle_stop, api.start, api.listen_fd),
            (None, StartPolicy::Always, false)
        );
        // config.json's default reaches only handlers that say nothing.
        let manifest = manifest.with_idle_stop(IdleStop::After(Duration::from_secs(60)));
        assert_eq!(
            manifest.handlers[0].idle_after(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            manifest.handlers[1].idle_after(),
            Some(Duration::from_secs(60))
        );

        let err = parse(
            r#"
            [[handler]]
            name = "a"
            command = ["x"]
            idle_stop = "soon"
            start = "lazy"
            listen_fd = true
            socket = true
            [[handler]]
            name = "b"
            url = "http://127.0.0.1:1"
            idle_stop = "0s"
            start = "on_demand"
            "#,
        )
        .expect_err("invalid");
        let expected = [
            "p/project.toml: handler[0].idle_stop: invalid duration \"soon\": expected a whole number followed by ms, s, m, h or d (e.g. \"10s\"), or \"off\"",
            "p/project.toml: handler[0].start: \"lazy\" is not a start policy: expected \"always\" or \"on_demand\"",
            "p/project.toml: handler[0].listen_fd: cannot be combined with socket = true: a passed socket is a loopback port Elsinore binds",
            "p/project.toml: handler[1].idle_stop: must be more than 0, or \"off\"",
            "p/project.toml: handler[1].idle_stop: only applies to handlers started with \"command\" (Elsinore does not start or stop a url handler)",
            "p/project.toml: handler[1].start: only applies to handlers started with \"command\" (Elsinore does not start or stop a url handler)",
        ];
        assert_eq!(err.lines().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn empty_manifest_is_refused() {
        let err = parse("").expect_err("invalid");
        assert_eq!(
            err,
            "p/project.toml: handler: no [[handler]] declared: a project needs at least one handler, or a handlers_dir of generated ones (handlers_dir = \"server/.hamlet-gen/handlers\")"
        );
    }

    #[test]
    fn handlers_dir_alone_is_a_valid_manifest() {
        let manifest = parse("handlers_dir = \"./server/.hamlet-gen/handlers/\"\n").expect("valid");
        assert!(manifest.handlers.is_empty());
        assert_eq!(
            manifest.handlers_dir.as_deref(),
            Some(Path::new("server/.hamlet-gen/handlers"))
        );
    }

    #[test]
    fn handlers_dir_must_stay_inside_the_project() {
        let cases = [
            ("/etc", "\"/etc\": must be relative to the project folder, e.g. \"server/.hamlet-gen/handlers\""),
            ("../other/handlers", "\"../other/handlers\": must stay inside the project folder (no '..')"),
            ("server/../../x", "\"server/../../x\": must stay inside the project folder (no '..')"),
            ("", "\"\": must name a folder inside the project, e.g. \"server/.hamlet-gen/handlers\""),
            (".", "\".\": must name a folder inside the project, e.g. \"server/.hamlet-gen/handlers\""),
        ];
        for (dir, why) in cases {
            let err = parse(&format!("handlers_dir = {dir:?}\n")).expect_err(dir);
            // Only the field error: a refused handlers_dir still counts as
            // set, so "no [[handler]]" is not piled on top.
            assert_eq!(err, format!("p/project.toml: handlers_dir: {why}"), "{dir}");
        }
    }

    fn generated(dir: &Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn load_appends_generated_handlers_and_declared_ones_win() {
        let project = tempfile::tempdir().expect("temp dir");
        let dir = project.path().join("gen");
        std::fs::create_dir(&dir).expect("mkdir");
        for name in ["GetFeedHandler", "GetPostsHandler", "SubmitItemHandler"] {
            generated(&dir, name);
        }
        std::fs::write(
            project.path().join(MANIFEST_FILE),
            r#"
            handlers_dir = "gen"
            [[handler]]
            name = "GetFeed"
            command = ["python3", "feed.py"]
            routes = ["/feed/"]
            [[handler]]
            name = "posts"
            command = ["python3", "posts.py"]
            routes = ["/api/GetPosts/"]
            [[handler]]
            name = "web"
            command = ["python3", "web.py"]
            routes = ["/", "/api/"]
            "#,
        )
        .expect("write");
        let manifest = Manifest::load(project.path()).expect("valid");
        let names: Vec<&str> = manifest.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["GetFeed", "posts", "web", "SubmitItem"]);
        assert_eq!(manifest.declared().count(), 3);
        let generated: Vec<&HandlerSpec> = manifest.generated().collect();
        assert_eq!(generated.len(), 1);
        assert_eq!(generated[0].routes, ["/api/SubmitItem"]);
        let skipped: Vec<(&str, &str)> = manifest
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    "GetFeedHandler",
                    "handler \"GetFeed\" is declared in project.toml, which wins"
                ),
                (
                    "GetPostsHandler",
                    "route \"/api/GetPosts/\" is served by handler \"posts\" declared in project.toml, which wins"
                ),
            ]
        );
    }

    #[test]
    fn load_without_the_folder_has_no_generated_handlers() {
        let project = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            project.path().join(MANIFEST_FILE),
            "handlers_dir = \"server/.hamlet-gen/handlers\"\n",
        )
        .expect("write");
        let manifest = Manifest::load(project.path()).expect("valid");
        assert!(manifest.handlers.is_empty());
    }

    #[test]
    fn load_refuses_a_handlers_dir_that_cannot_be_listed() {
        let project = tempfile::tempdir().expect("temp dir");
        // A file where the folder should be: it exists, it cannot be listed.
        std::fs::write(project.path().join("gen"), "").expect("write");
        std::fs::write(
            project.path().join(MANIFEST_FILE),
            "handlers_dir = \"gen\"\n",
        )
        .expect("write");
        let err = Manifest::load(project.path())
            .expect_err("not a folder")
            .to_string();
        let expected = format!(
            "{}: handlers_dir: {}: cannot read: ",
            project.path().join(MANIFEST_FILE).display(),
            project.path().join("gen").display()
        );
        assert!(err.starts_with(&expected), "{err}");
    }

    #[test]
    fn url_without_port_gets_port_80() {
        assert_eq!(
            parse_handler_url("http://backend").map(|a| a.to_string()),
            Ok("backend:80".to_owned())
        );
        assert!(parse_handler_url("http://127.0.0.1:3000/api").is_err());
        assert!(parse_handler_url("http://user:pw@127.0.0.1:3000").is_err());
    }
}
