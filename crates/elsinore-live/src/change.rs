//! What a reload changed, one value per line of the log, `/routes` and
//! `POST /reload`.

use std::fmt;
use std::path::PathBuf;

/// One change a reload applied (or started). `Display` is the line the
/// log and the operator API print (`+ host a.test → alpha`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A project gone from config.json.
    ProjectRemoved {
        /// Its name.
        project: String,
    },
    /// A project new in config.json, with its handlers' names.
    ProjectAdded {
        /// Its name.
        project: String,
        /// Its handlers, in manifest order.
        handlers: Vec<String>,
    },
    /// A project whose folder is now another one.
    ProjectMoved {
        /// Its name.
        project: String,
        /// The new folder.
        path: PathBuf,
    },
    /// A project whose key changed (the key is never printed).
    KeyChanged {
        /// Its name.
        project: String,
    },
    /// A project setting that changes how requests reach its handlers
    /// (`admin_api`, `forward_host`), live from the next request.
    SettingChanged {
        /// The project.
        project: String,
        /// The config.json key.
        setting: &'static str,
        /// The value before.
        from: &'static str,
        /// The value now.
        to: &'static str,
    },
    /// A handler new in a project's manifest, serving now.
    HandlerAdded {
        /// The project.
        project: String,
        /// The handler.
        handler: String,
    },
    /// A handler whose spec changed, its replacement serving now.
    HandlerReplaced {
        /// The project.
        project: String,
        /// The handler.
        handler: String,
    },
    /// A handler gone from a project's manifest.
    HandlerRemoved {
        /// The project.
        project: String,
        /// The handler.
        handler: String,
    },
    /// A new handler still starting; the project switches once it is
    /// ready.
    HandlerStarting {
        /// The project.
        project: String,
        /// The handler.
        handler: String,
        /// Whether a handler of that name serves meanwhile (else it is
        /// an addition).
        replacing: bool,
    },
    /// A host no project declares any more.
    HostRemoved {
        /// The host as declared.
        host: String,
        /// The project that served it.
        was: String,
    },
    /// A host that another project serves now.
    HostMoved {
        /// The host as declared.
        host: String,
        /// The project that served it.
        from: String,
        /// The project that serves it now.
        to: String,
    },
    /// A host newly served.
    HostAdded {
        /// The host as declared.
        host: String,
        /// Its project.
        project: String,
    },
    /// A certificate added, replaced or removed (the line
    /// `elsinore-tls` wrote).
    Certificate(String),
    /// Host changes beyond the first [`MAX_LISTED_HOSTS`], counted, not
    /// listed: a first start with a million hosts would otherwise keep a
    /// million lines in the last reload's report.
    MoreHosts {
        /// How many were left out.
        count: usize,
    },
}

/// Host changes listed one by one in a report, at most.
pub(crate) const MAX_LISTED_HOSTS: usize = 1_000;

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProjectRemoved { project } => write!(f, "- project {project}"),
            Self::ProjectAdded { project, handlers } => {
                write!(f, "+ project {project} (handlers: {})", handlers.join(", "))
            }
            Self::ProjectMoved { project, path } => {
                write!(f, "~ project {project}: moved to {}", path.display())
            }
            Self::KeyChanged { project } => write!(f, "~ project {project}: key changed"),
            Self::SettingChanged {
                project,
                setting,
                from,
                to,
            } => write!(f, "~ project {project}: {setting} {from} → {to}"),
            Self::HandlerAdded { project, handler } => {
                write!(f, "~ project {project}: + handler {handler}")
            }
            Self::HandlerReplaced { project, handler } => {
                write!(f, "~ project {project}: handler {handler} replaced")
            }
            Self::HandlerRemoved { project, handler } => {
                write!(f, "~ project {project}: - handler {handler}")
            }
            Self::HandlerStarting {
                project,
                handler,
                replacing,
            } => {
                // A new generated binary is an addition, not a
                // replacement: say which, so the log is not read as
                // something old still serving.
                let until = if *replacing {
                    "the previous one serves until it is ready"
                } else {
                    "it is added once it is ready"
                };
                write!(
                    f,
                    "~ project {project}: handler {handler} starting; {until}"
                )
            }
            Self::HostRemoved { host, was } => write!(f, "- host {host} (was {was})"),
            Self::HostMoved { host, from, to } => write!(f, "~ host {host}: {from} → {to}"),
            Self::HostAdded { host, project } => write!(f, "+ host {host} → {project}"),
            Self::Certificate(line) => f.write_str(line),
            Self::MoreHosts { count } => write!(f, "… and {count} more host changes"),
        }
    }
}

/// As its line: the operator API's JSON lists strings.
impl serde::Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
