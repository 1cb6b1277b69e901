//! What a reload refused and what it applied but wants known: typed
//! values wrapping the other crates' own errors. `Display` is the text
//! the log, `/routes` and `POST /reload` print.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use elsinore_config::{ConfigError, RestartNeeded};
use elsinore_routes::{Conflict, ScanError, SkippedFolder, HOSTS_DIR};
use elsinore_supervisor::SupervisorError;

/// Part of an edit a reload refused; the previous state of that part
/// keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// config.json itself: nothing of the edit applies.
    #[error("{0}\n(config.json refused; everything keeps serving as before)")]
    Config(ConfigError),
    /// A project's `project.toml` (or `handlers_dir`).
    #[error("{error}\n{}", kept_or_not(project, *kept, "handlers"))]
    Manifest {
        /// The project.
        project: String,
        /// Why it was refused.
        error: ConfigError,
        /// Whether the project serves on with its previous manifest (else
        /// it is not added).
        kept: bool,
    },
    /// A project's `hosts/`.
    #[error("{error}\n{}", kept_or_not(project, *kept, "hosts"))]
    Hosts {
        /// The project.
        project: String,
        /// Why it was refused.
        error: ScanError,
        /// Whether the project serves on with its previous hosts.
        kept: bool,
    },
    /// A handler could not even be started.
    #[error("project {project}: {error}")]
    Start {
        /// The project, which keeps its previous handlers.
        project: String,
        /// The supervisor's refusal.
        error: SupervisorError,
    },
    /// A replacement handler crashed or was not ready in time.
    #[error("project {project}: new handler {handler} did not start: {why}; keeping its previous handlers")]
    NotReady {
        /// The project, which keeps its previous handlers.
        project: String,
        /// The handler.
        handler: String,
        /// What happened to it.
        why: NotReady,
    },
    /// A project name or key that cannot be sent as a header
    /// (config.json validation already refuses them).
    #[error("project {project}: name or key is not valid header text")]
    HeaderText {
        /// The project, left out of the table.
        project: String,
    },
    /// A refused certificate (the text `elsinore-tls` wrote); the last
    /// good one of that host keeps serving, or the host has no HTTPS.
    #[error("{0}")]
    Certificate(String),
}

impl ReloadError {
    /// A refused certificate: at startup it leaves a host without HTTPS
    /// instead of stopping everything.
    pub fn is_certificate(&self) -> bool {
        matches!(self, Self::Certificate(_))
    }
}

fn kept_or_not(project: &str, kept: bool, what: &str) -> String {
    if kept {
        format!("(project {project}: keeping its previous {what})")
    } else {
        format!("(project {project} not added)")
    }
}

/// Why what is declared could not be read at all, for `check`, `routes`
/// and startup: config.json, or every project that is broken (one run
/// shows everything to fix).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// config.json itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Projects' `project.toml` or `hosts/`, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Projects(Vec<ProjectError>),
}

/// One project's files that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// Its `project.toml` (or `handlers_dir`).
    #[error(transparent)]
    Manifest(ConfigError),
    /// Its `hosts/`.
    #[error(transparent)]
    Hosts(ScanError),
}

/// Why a replacement handler is given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// It crashed, or stopped, with the supervisor's last error (or the
    /// state it ended in).
    Failed(String),
    /// Still not ready after its `start_timeout`.
    Timeout(Duration),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(why) => f.write_str(why),
            Self::Timeout(limit) => write!(f, "not ready within {limit:?} (start_timeout)"),
        }
    }
}

/// Applied, but worth knowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A startup setting edited: applied after a restart.
    RestartNeeded(RestartNeeded),
    /// A folder under `hosts/` that is no host name.
    SkippedHostFolder {
        /// The project folder.
        project_dir: PathBuf,
        /// The folder and why.
        folder: SkippedFolder,
    },
    /// A file of a `handlers_dir` that serves nothing.
    SkippedHandlerFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A `handlers_dir` that exists but holds no handler: nothing answers
    /// `/api/<Name>`. Usually a framework whose handlers are compiled into
    /// its own server (Hamlet today), which is one `[[handler]]` instead.
    EmptyHandlersDir {
        /// The project.
        project: String,
        /// The folder, as written in `project.toml`.
        dir: PathBuf,
    },
    /// A `command` whose program is not there.
    ProgramNotFound {
        /// The project.
        project: String,
        /// The handler.
        handler: String,
        /// `argv[0]`.
        program: String,
        /// Where a relative program is looked for.
        project_dir: PathBuf,
    },
    /// A host declared by two projects; the one that holds it keeps it.
    Conflict(Conflict),
    /// A host folder named like `preview_host`, which Elsinore answers.
    PreviewShadows {
        /// The preview host.
        host: String,
        /// The project whose folder is not used.
        project: String,
    },
    /// `default_project` names a project that is not serving.
    DefaultProjectNotServing {
        /// Its name.
        project: String,
    },
    /// A certificate loaded but worth a look (the text `elsinore-tls`
    /// wrote).
    Certificate(String),
    /// A secret or shared file config.json leaves exposed (the text
    /// `Config::exposure_warnings` wrote).
    Exposure(String),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RestartNeeded(restart) => restart.fmt(f),
            Self::SkippedHostFolder {
                project_dir,
                folder,
            } => write!(
                f,
                "skipped {}/{HOSTS_DIR}/{}: {}",
                project_dir.display(),
                folder.name,
                folder.reason
            ),
            Self::SkippedHandlerFile { path, reason } => {
                write!(f, "skipped {}: {reason}", path.display())
            }
            Self::EmptyHandlersDir { project, dir } => write!(
                f,
                "project {project}: handlers_dir {} holds no handler (executables named <Name>Handler or <Name>), so nothing answers /api/<Name>; an app whose handlers are compiled into its own server (a current Hamlet checkout's .generated/) is one [[handler]] running that server, e.g. command = [\"node\", \"server/server.js\"] (docs/hosting-hamlet.md)",
                dir.display()
            ),
            Self::ProgramNotFound {
                project,
                handler,
                program,
                project_dir,
            } => write!(
                f,
                "handler {project}/{handler}: program {program:?} not found (relative to {} or on PATH); it will fail to start",
                project_dir.display()
            ),
            Self::Conflict(c) => write!(
                f,
                "host {} is declared by both {} and {}; {} keeps it",
                c.host, c.kept_by, c.refused_for, c.kept_by
            ),
            Self::PreviewShadows { host, project } => write!(
                f,
                "host {host} is the preview_host: project {project}'s folder for it is not used"
            ),
            Self::DefaultProjectNotServing { project } => write!(
                f,
                "default_project {project} is not serving (see the errors above): unknown hosts get 404"
            ),
            Self::Certificate(line) | Self::Exposure(line) => f.write_str(line),
        }
    }
}

/// As their text: the operator API's JSON lists strings.
macro_rules! serialize_as_text {
    ($($ty:ty),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}
serialize_as_text!(ReloadError, Warning);
