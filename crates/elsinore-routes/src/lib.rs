//! Routing: from the `hosts/` folders on disk to the live [`RouteTable`]
//! every request reads.
//!
//! Pure parts: [`scan_hosts`] reads a project's `hosts/` folder;
//! [`HostTableBuilder`] combines projects in `config.json` order into an
//! immutable [`HostTable`], recording every [`Conflict`] (a name declared
//! twice keeps its first owner), and [`decide_owners`] is the policy over
//! time (a host stays with the project that served it); [`PrefixRouter`]
//! picks a handler by longest path prefix.
//!
//! The snapshot: a [`RouteTable`] maps each host to a [`HostRoute`] (its
//! [`ProjectRoute`] and static [`Site`](elsinore_static::Site)) and holds
//! the HTTPS certificates ([`CertStore`](elsinore_tls::CertStore)) with
//! the hosts they belong to, the [`Preview`] host, `default_project`, and
//! the policies requests are judged by ([`ClientPolicy`], a project's
//! [`CorsPolicy`]). A reload (crate `elsinore-live`) builds it and swaps
//! it in behind one `ArcSwap`; the proxy loads it once per request.
//!
//! Where this crate sits: it depends on what a route *holds* (the
//! supervisor's handler handles, static sites, certificates, key hashes),
//! and nothing it holds depends on it. The crates below get plain data
//! instead: the request path's normal form is `elsinore_config`'s
//! (`normalize_path`, shared with static files), and `elsinore_tls`'s
//! `cert_sources` takes each host's folder name as spelled on disk rather
//! than a [`HostScan`]. Nothing here spawns, listens, answers a request or
//! swaps: the proxy turns what the table says into responses, and the
//! caller owns the live snapshot.

mod client_policy;
mod cors;
mod host_table;
mod owners;
mod prefix;
mod preview;
mod route_table;
mod scan;

pub use client_policy::ClientPolicy;
pub use cors::{AllowHeaders, CorsPolicy};
pub use host_table::{Conflict, DeclaredName, HostTable, HostTableBuilder};
pub use owners::decide_owners;
pub use prefix::PrefixRouter;
pub use preview::Preview;
pub use route_table::{HostRoute, ProjectRoute, RouteTable};
pub use scan::{scan_hosts, HostScan, ScanError, SkippedFolder, HOSTS_DIR};
