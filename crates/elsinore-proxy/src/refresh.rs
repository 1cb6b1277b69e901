//! The hook through which the admin API asks for the route table to be
//! rebuilt after it created or removed a host folder.

use std::fmt;

/// Something that rebuilds the live [`RouteTable`](crate::RouteTable) from
/// disk. The admin API calls [`request_rescan`](Self::request_rescan) after
/// changing a `hosts/` folder, then watches the table (bounded) until the
/// change is live. A file watcher that notices the change by itself makes
/// the call merely a hint.
pub trait TableRefresh: Send + Sync + fmt::Debug {
    /// Asks for a rescan soon. Must return at once: never block or await.
    fn request_rescan(&self);
}
