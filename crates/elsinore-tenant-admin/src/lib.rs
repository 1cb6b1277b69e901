//! The tenant admin API: what a project's key holder may change through
//! Elsinore on the project's own hosts, at `/admin/api/_keys…` (per-host
//! admin keys: create, list, rotate, revoke) and `/admin/api/_hosts…`
//! (the project's `hosts/<name>/` folders: list, create, remove).
//!
//! Each project's `admin_api` picks the shapes: Elsinore's own
//! (`"elsinore"`, the default) or the Hamlet framework's (`"hamlet"`,
//! `hamlet.rs`); the calls, checks and statuses are the same. A
//! `"handler"` project's requests never reach this crate.
//!
//! It owns: the endpoints and their checks ([`endpoint`]), who may call
//! them (the owning project's key; 401/403, failures counted by the
//! proxy's throttle), the key database work (on `spawn_blocking`, through
//! `elsinore_store::keys`) and refilling the in-memory key ring, host
//! folder creation and removal (`host_folders.rs`), its CORS policy
//! (top-level `cors_origins`, as the one `CorsPolicy` type of `elsinore-routes`), and
//! asking the control plane for a rescan ([`rescan`]).
//!
//! It is reached only through the proxy's reserved-path hook
//! ([`elsinore_proxy::ReservedPaths`]): the proxy decides that a path is
//! reserved and for which project and host (never the preview host or a
//! `default_project` host), and hands over the request with its context.
//!
//! It must not: write its own error bodies (every refusal is an
//! [`elsinore_proxy::ProxyError`], the one JSON error writer), block a
//! request thread (SQLite and folders go to `spawn_blocking`), or reload
//! the live state or start handlers itself (that is the control plane's,
//! on the main runtime; see [`rescan`]).

mod api;
mod cors;
mod endpoint;
mod hamlet;
mod host_folders;
pub mod rescan;

pub use api::{TenantAdminApi, LIVE_WAIT};
pub use endpoint::MAX_BODY;
pub use rescan::{rescan_channel, RescanBatch, RescanQueue, RescanRequests};
