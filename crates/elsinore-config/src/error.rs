//! Errors that tell the operator exactly where the problem is.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `line:column` when known (syntax and type errors).
    pub position: Option<(usize, usize)>,
    /// The field path, e.g. `projects[1].key_env`; empty for the whole file.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            position: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why `config.json` or a `project.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A manifest's `handlers_dir` exists but cannot be listed.
    #[error("{}: handlers_dir: {}: cannot read: {source}", manifest.display(), dir.display())]
    HandlersDir {
        /// The `project.toml` naming it.
        manifest: PathBuf,
        /// The folder, absolute.
        dir: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is wrong; every problem found is listed.
    #[error("{}", Invalid { path, problems })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// At least one problem.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    pub(crate) fn invalid(path: impl Into<PathBuf>, problems: Vec<Problem>) -> Self {
        Self::Invalid {
            path: path.into(),
            problems,
        }
    }
}

/// Renders `file:line:column: field: message`, one line per problem.
struct Invalid<'a> {
    path: &'a PathBuf,
    problems: &'a [Problem],
}

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some((line, column)) = problem.position {
                write!(f, ":{line}:{column}")?;
            }
            if !problem.field.is_empty() {
                write!(f, ": {}", problem.field)?;
            }
            write!(f, ": {}", problem.message)?;
        }
        Ok(())
    }
}
