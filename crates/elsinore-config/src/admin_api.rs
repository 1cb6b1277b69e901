//! `admin_api` in a project entry: who answers `/admin/api/_keys` and
//! `/admin/api/_hosts` on the project's hosts, and in which shape.

use serde::Deserialize;

/// A project's `admin_api` mode. Per project and live on reload: it only
/// changes how requests to the two reserved prefixes are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminApiMode {
    /// Elsinore answers with its own JSON shapes (the default).
    #[default]
    Elsinore,
    /// Elsinore answers with the Hamlet framework's JSON shapes (bare
    /// arrays, ISO 8601 times), so Hamlet's admin UI works unchanged.
    Hamlet,
    /// Elsinore does not answer: the paths reach the project's handler
    /// like any other request (a framework that keeps its own keys).
    Handler,
}

impl AdminApiMode {
    /// `"elsinore"`, `"hamlet"` or `"handler"`, as written in config.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elsinore => "elsinore",
            Self::Hamlet => "hamlet",
            Self::Handler => "handler",
        }
    }

    /// Whether Elsinore answers the admin API itself in this mode.
    pub fn answered_by_elsinore(self) -> bool {
        !matches!(self, Self::Handler)
    }
}
