//! Static files from a host folder's `public/`.
//!
//! A GET or HEAD whose path names a file in `hosts/<host>/public/` is
//! answered from it: content type from the extension, `ETag` and
//! `Last-Modified` with `304` on revalidation, one `Range` per request
//! (`206`, `416`), `index.html` for a folder path (`/docs` is redirected to
//! `/docs/`). Every other request, and every path that names no file, is
//! the handler's.
//!
//! Paths never leave `public/`: they are put in the normal form every
//! path match of Elsinore uses (`elsinore_config::normalize_path`: dot
//! segments resolved, never above the root), decoded once, and what a
//! second decoding would turn into `..` or a separator is refused
//! ([`path`]); the real path of every file (symbolic links resolved) must
//! be inside the real folder ([`lookup`]). Dotfiles other than
//! `.well-known/` are not served. The folder redirect's `Location` is built
//! from the normal path and always starts with exactly one `/`.
//!
//! Files are read on demand, on tokio's blocking pool, and kept in one
//! bounded cache shared by all sites (small files with their content,
//! larger ones as metadata and streamed from disk, missing paths as
//! misses). The caller reports changes with [`StaticFiles::invalidate`]
//! (the binary wires the file watcher to it); a cached answer older than
//! `recheck_after` (ten seconds by default) is also checked again, as a
//! safety net.
//!
//! This crate knows nothing of hosts, projects or the proxy: it is given
//! a folder and a request's method, URI and headers.

mod body;
mod file;
mod lookup;
mod path;
mod respond;
mod site;

pub use body::FileBody;
pub use file::StaticFile;
pub use lookup::INDEX_FILE;
pub use site::{CacheSettings, Outcome, Site, StaticBody, StaticFiles};

/// The folder of a host folder that holds its static files.
pub const PUBLIC_DIR: &str = "public";
