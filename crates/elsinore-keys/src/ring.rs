//! The key ring: every currently accepted host key, in memory, so that the
//! request path resolves `X-Hamlet-Host-Key` without touching SQLite.
//!
//! It is one immutable snapshot behind an `ArcSwap`, replaced whenever keys
//! change ([`KeyRing::replace`]). Who reads the keys from where is not its
//! business: the SQLite key store (`elsinore_store::keys`) fills it right
//! after a change made through Elsinore, and its watcher thread after
//! changes made by other processes (the `elsinore keys` CLI).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::secret::KeyHash;

/// A key that currently opens its host, as the ring needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKey {
    /// Row id.
    pub id: i64,
    /// The hostname.
    pub host: String,
    /// The project the key belongs to.
    pub project: String,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// `None` for a live key; the end of the grace period otherwise.
    pub valid_until: Option<i64>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Sorted by id; kept to tell whether a reload changed anything.
    keys: Vec<LiveKey>,
    /// Host → indexes into `keys`.
    by_host: HashMap<Box<str>, Vec<usize>>,
}

impl Snapshot {
    fn new(keys: Vec<LiveKey>) -> Self {
        let mut by_host: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            by_host
                .entry(key.host.as_str().into())
                .or_default()
                .push(index);
        }
        Self { keys, by_host }
    }
}

/// The accepted host keys, shared by the request path and whoever changes
/// keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    snapshot: ArcSwap<Snapshot>,
}

impl KeyRing {
    /// A ring accepting no key.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Installs `keys` (sorted by id) unless they equal the current set;
    /// returns whether the snapshot changed.
    pub fn replace(&self, keys: Vec<LiveKey>) -> bool {
        if self.snapshot.load().keys == keys {
            return false;
        }
        self.snapshot.store(Arc::new(Snapshot::new(keys)));
        true
    }

    /// Number of keys held (live and in grace).
    pub fn len(&self) -> usize {
        self.snapshot.load().keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `presented` is a key of exactly `host`, made for `project`
    /// (the host's current owner), and accepted at `now` (epoch ms).
    ///
    /// One SHA-256 of the presented key, then constant-time comparisons
    /// against every key of the host; no lock, no I/O.
    pub fn opens(&self, host: &str, project: &str, presented: &str, now: i64) -> bool {
        let snapshot = self.snapshot.load();
        let Some(indexes) = snapshot.by_host.get(host) else {
            return false;
        };
        let hash = KeyHash::of(presented);
        // Compare against every key of the host (no early exit), so timing
        // does not tell which key matched.
        let mut found = false;
        for key in indexes.iter().filter_map(|&i| snapshot.keys.get(i)) {
            let matches = key.hash.ct_eq(&hash)
                && key.project == project
                && key.valid_until.is_none_or(|until| now < until);
            found |= matches;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, host: &str, project: &str, secret: &str, valid_until: Option<i64>) -> LiveKey {
        LiveKey {
            id,
            host: host.into(),
            project: project.into(),
            hash: KeyHash::of(secret),
            valid_until,
        }
    }

    #[test]
    fn a_key_opens_exactly_its_host_for_its_project() {
        let ring = KeyRing::empty();
        assert!(ring.replace(vec![
            key(1, "blog.localhost", "horatio", "ehk_blog", None),
            key(2, "news.localhost", "horatio", "ehk_news", None),
        ]));
        let now = 1_000;
        assert!(ring.opens("blog.localhost", "horatio", "ehk_blog", now));
        assert!(
            !ring.opens("news.localhost", "horatio", "ehk_blog", now),
            "other host"
        );
        assert!(
            !ring.opens("blog.localhost", "othello", "ehk_blog", now),
            "other owner"
        );
        assert!(!ring.opens("blog.localhost", "horatio", "ehk_guess", now));
        assert!(ring.opens("news.localhost", "horatio", "ehk_news", now));

        assert!(ring.replace(vec![key(2, "news.localhost", "horatio", "ehk_news", None)]));
        assert!(!ring.opens("blog.localhost", "horatio", "ehk_blog", now));
        assert!(
            !ring.replace(vec![key(2, "news.localhost", "horatio", "ehk_news", None)]),
            "nothing changed"
        );
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn grace_ends_on_time_without_a_reload() {
        let ring = KeyRing::empty();
        let until = 5_000;
        ring.replace(vec![
            key(1, "blog.localhost", "horatio", "ehk_old", Some(until)),
            key(2, "blog.localhost", "horatio", "ehk_new", None),
        ]);
        assert!(ring.opens("blog.localhost", "horatio", "ehk_old", until - 1));
        assert!(!ring.opens("blog.localhost", "horatio", "ehk_old", until));
        assert!(ring.opens("blog.localhost", "horatio", "ehk_new", until + 1));
    }
}
