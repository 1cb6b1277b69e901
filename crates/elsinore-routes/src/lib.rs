//! Pure routing data: which project owns a hostname, which handler of a
//! project serves a path, and the one normal form of a request path every
//! path match uses.
//!
//! [`scan_hosts`] reads a project's `hosts/` folder; [`HostTableBuilder`]
//! combines projects in `config.json` order into an immutable [`HostTable`],
//! recording every [`Conflict`] (a name declared twice keeps its first
//! owner), and [`decide_owners`] is the policy over time (a host stays with
//! the project that served it); [`PrefixRouter`] picks a handler by longest path prefix;
//! [`normalize_path`] gives the path every match (and the handler) sees,
//! and [`same_host_location`] the only path-only `Location` form. Nothing
//! here spawns, listens or swaps: the caller owns the live snapshot.

mod owners;
mod path;
mod prefix;
mod scan;
mod table;

pub use owners::decide_owners;
pub use path::{normalize_path, same_host_location};
pub use prefix::PrefixRouter;
pub use scan::{scan_hosts, HostScan, ScanError, SkippedFolder, HOSTS_DIR};
pub use table::{Conflict, DeclaredName, HostTable, HostTableBuilder};
