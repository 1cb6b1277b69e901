//! Where Elsinore reaches a handler: a loopback port or a Unix socket.

use std::fmt;
use std::path::{Path, PathBuf};

use http::uri::Authority;

/// The address the proxy connects to. Built once per handler start; the
/// request path only borrows it, so a TCP handler costs what it did when
/// this was a bare [`Authority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerAddress {
    /// `host:port`: a `command` handler on its `PORT`, or a `url` handler.
    Tcp(Authority),
    /// `socket = true`: the path in the handler's `ELSINORE_SOCKET`.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// The user the handler runs as: whoever answers on the path must
        /// be it. The folder belongs to that user, who could put a symlink
        /// to another project's socket there, which Elsinore (root) would
        /// otherwise follow.
        uid: u32,
    },
}

impl HandlerAddress {
    /// The Unix socket's path, for a `socket = true` handler.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix { path, .. } => Some(path),
            Self::Tcp(_) => None,
        }
    }
}

/// `127.0.0.1:4100`, or `unix:/path/to/web-1.sock` (as in `/routes`).
impl fmt::Display for HandlerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(authority) => f.write_str(authority.as_str()),
            Self::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}
