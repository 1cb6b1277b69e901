//! Pure routing data: which project owns a hostname, and which handler of a
//! project serves a path.
//!
//! [`scan_hosts`] reads a project's `hosts/` folder; [`HostTableBuilder`]
//! combines projects in `config.json` order into an immutable [`HostTable`],
//! recording every [`Conflict`] (a name declared twice keeps its first
//! owner); [`PrefixRouter`] picks a handler by longest path prefix. Nothing
//! here spawns, listens or swaps: the caller owns the live snapshot.

mod prefix;
mod scan;
mod table;

pub use prefix::PrefixRouter;
pub use scan::{scan_hosts, HostScan, ScanError, SkippedFolder, HOSTS_DIR};
pub use table::{Conflict, DeclaredName, HostTable, HostTableBuilder};
