//! The hostname → value table: exact names, then the longest wildcard.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use foldhash::fast::RandomState;

use elsinore_config::HostPattern;

/// Names to values, hashed with foldhash (seeded per map): every request
/// hashes its host once, and SipHash, std's default, costs several times
/// more. Its flood resistance is not needed here: the keys are the hosts
/// operators declare, so a client can only look names up, never add
/// colliding ones. Keys are the names' shared text
/// ([`elsinore_config::Hostname::shared`]): the table holds no copy.
type Names<V> = HashMap<Arc<str>, V, RandomState>;

/// About this many names per shard: changing one name copies its shard
/// (a few hundred entries) rather than the whole table. 400, not 512: a
/// hash map of 512 buckets holds at most 448 entries, so shards of about
/// 400 fill their buckets to about 78 %, where 512 a shard made most of
/// them grow to 1,024 buckets, half empty (the shard count need not be a
/// power of two).
const NAMES_PER_SHARD: usize = 400;
/// A million names make 2,500 shards; more would only cost memory.
const MAX_SHARDS: usize = 16_384;

/// Exact names split into shards by hash, each behind an `Arc`: a clone
/// of the table shares every shard, and [`HostTable::insert`] or
/// [`HostTable::remove_name`] copies only the one shard it changes. What
/// lets a reload that adds one host to a million-host table cost
/// microseconds, not a copy of the million.
#[derive(Debug)]
struct Sharded<V> {
    shards: Box<[Arc<Names<V>>]>,
    /// Picks the shard of a name; the same for every clone.
    pick: RandomState,
}

impl<V> Clone for Sharded<V> {
    fn clone(&self) -> Self {
        Self {
            shards: self.shards.clone(),
            pick: self.pick,
        }
    }
}

impl<V> Sharded<V> {
    /// Empty, sized for about `len` names.
    fn with_len(len: usize) -> Self {
        let count = (len / NAMES_PER_SHARD).clamp(1, MAX_SHARDS);
        let each = len / count;
        Self {
            shards: (0..count)
                .map(|_| {
                    Arc::new(Names::with_capacity_and_hasher(
                        each,
                        RandomState::default(),
                    ))
                })
                .collect(),
            pick: RandomState::default(),
        }
    }

    #[inline]
    fn shard(&self, name: &str) -> usize {
        // Multiply-shift: any shard count, from the hash's high bits.
        let hash = self.pick.hash_one(name) as u128;
        ((hash * self.shards.len() as u128) >> 64) as usize
    }

    /// The same names (and shards) with every value converted by `f`;
    /// `None` leaves a name out.
    fn filter_map<U>(&self, mut f: impl FnMut(&Arc<str>, &V) -> Option<U>) -> Sharded<U> {
        Sharded {
            shards: self
                .shards
                .iter()
                .map(|shard| {
                    let mut out =
                        Names::with_capacity_and_hasher(shard.len(), RandomState::default());
                    out.extend(
                        shard
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), f(k, v)?))),
                    );
                    Arc::new(out)
                })
                .collect(),
            pick: self.pick,
        }
    }

    #[inline]
    fn get(&self, name: &str) -> Option<&V> {
        self.shards[self.shard(name)].get(name)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

impl<V> Sharded<V> {
    /// Inserts into a table being built: its shards are held by nothing
    /// else, so no shard is copied.
    fn insert_new(&mut self, name: Arc<str>, value: V) {
        let i = self.shard(&name);
        if let Some(shard) = Arc::get_mut(&mut self.shards[i]) {
            shard.insert(name, value);
        }
    }
}

impl<V: Clone> Sharded<V> {
    /// The same names (and shards) with every value converted by `f`,
    /// consuming: a shard nothing else holds is not copied first.
    fn into_map<U>(self, mut f: impl FnMut(V) -> U) -> Sharded<U> {
        Sharded {
            shards: self
                .shards
                .into_vec()
                .into_iter()
                .map(|shard| {
                    let shard = Arc::unwrap_or_clone(shard);
                    let mut out =
                        Names::with_capacity_and_hasher(shard.len(), RandomState::default());
                    out.extend(shard.into_iter().map(|(k, v)| (k, f(v))));
                    Arc::new(out)
                })
                .collect(),
            pick: self.pick,
        }
    }

    fn insert(&mut self, name: Arc<str>, value: V) -> Option<V> {
        let i = self.shard(&name);
        Arc::make_mut(&mut self.shards[i]).insert(name, value)
    }

    fn remove(&mut self, name: &str) -> Option<V> {
        let i = self.shard(name);
        if !self.shards[i].contains_key(name) {
            return None;
        }
        Arc::make_mut(&mut self.shards[i]).remove(name)
    }
}

/// Immutable lookup from a normalised hostname to a value (a project).
/// Cloning it is cheap (shards are shared); see [`Sharded`].
#[derive(Debug)]
pub struct HostTable<T> {
    exact: Sharded<T>,
    /// Keyed by the suffix after `*.`. Few, and never changed alone.
    wildcard: Arc<Names<T>>,
}

impl<T> Clone for HostTable<T> {
    fn clone(&self) -> Self {
        Self {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
        }
    }
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: Sharded::with_len(0),
            wildcard: Arc::default(),
        }
    }
}

impl<T: Clone> HostTable<T> {
    /// Declares the exact name `name` with `value`, copying only the
    /// shard it lands in; returns the value it replaced. Wildcards are
    /// not changed one by one (a reload that touches one rebuilds).
    pub fn insert_exact(&mut self, name: &str, value: T) -> Option<T> {
        self.exact.insert(name.into(), value)
    }

    /// [`insert_exact`](Self::insert_exact) keyed by `name`'s shared text
    /// (no copy of the name).
    pub fn insert_exact_shared(&mut self, name: Arc<str>, value: T) -> Option<T> {
        self.exact.insert(name, value)
    }

    /// The same table with every value converted by `f`, consuming it:
    /// the names and shards are kept (no name is hashed into a shard
    /// again).
    pub fn into_map<U>(self, f: impl FnMut(T) -> U) -> HostTable<U> {
        let mut f = f;
        HostTable {
            exact: self.exact.into_map(&mut f),
            wildcard: Arc::new(
                Arc::unwrap_or_clone(self.wildcard)
                    .into_iter()
                    .map(|(k, v)| (k, f(v)))
                    .collect(),
            ),
        }
    }

    /// Takes the exact name `name` out, copying only its shard.
    pub fn remove_exact(&mut self, name: &str) -> Option<T> {
        self.exact.remove(name)
    }

    /// Takes `name` (as [`get`](Self::get) finds it) out of the table.
    pub(crate) fn remove(&mut self, name: DeclaredName<'_>) -> Option<T> {
        match name.wildcard {
            false => self.exact.remove(name.name),
            true => Arc::make_mut(&mut self.wildcard).remove(name.name),
        }
    }
}

impl<T> HostTable<T> {
    /// Exact name first; then wildcards from the longest suffix to the
    /// shortest, so `*.eu.example.com` beats `*.example.com`. Costs one hash
    /// lookup per label at most, whatever the table's size.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        if let Some(value) = self.exact.get(host) {
            return Some(value);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        // A wildcard needs at least one label in front of its suffix.
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(value) = self.wildcard.get(suffix) {
                return Some(value);
            }
            rest = suffix;
        }
        None
    }

    /// The nearest wildcard strictly above `name` (an exact hostname, or
    /// a wildcard's suffix): its suffix and value. What would serve the
    /// name if its own entry were gone.
    pub fn covering_wildcard(&self, name: &str) -> Option<(&str, &T)> {
        // Asked for every name of a table at each full reload: without
        // wildcards, a million names are not cut at each dot for nothing.
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some((key, value)) = self.wildcard.get_key_value(suffix) {
                return Some((key, value));
            }
            rest = suffix;
        }
        None
    }

    /// The same table with every value converted by `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> HostTable<U> {
        self.filter_map_keyed(|_, _, value| Some(f(value)))
    }

    /// The same table with every value converted by `f`, which is also
    /// given the name as declared (`*.suffix` for wildcards).
    pub fn map_named<U>(&self, mut f: impl FnMut(&str, &T) -> U) -> HostTable<U> {
        self.filter_map_named(|name, value| Some(f(name, value)))
    }

    /// As [`map_named`](Self::map_named), leaving out the names for which
    /// `f` gives `None`.
    pub fn filter_map_named<U>(&self, mut f: impl FnMut(&str, &T) -> Option<U>) -> HostTable<U> {
        self.filter_map_keyed(|name, wildcard, value| match wildcard {
            false => f(name, value),
            true => f(&format!("*.{name}"), value),
        })
    }

    /// As [`filter_map_named`](Self::filter_map_named), given the key's
    /// shared text (the name, or a wildcard's suffix) and whether it is a
    /// wildcard: what lets a value hold the name without a copy. The
    /// exact names keep their shards.
    pub fn filter_map_keyed<U>(
        &self,
        mut f: impl FnMut(&Arc<str>, bool, &T) -> Option<U>,
    ) -> HostTable<U> {
        HostTable {
            exact: self.exact.filter_map(|k, v| f(k, false, v)),
            wildcard: Arc::new(
                self.wildcard
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), f(k, true, v)?)))
                    .collect(),
            ),
        }
    }

    /// Number of declared names (exact and wildcard).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no host is declared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value declared for exactly `name` (no wildcard matching: a
    /// wildcard is found by its own `*.suffix` name).
    pub fn get(&self, name: DeclaredName<'_>) -> Option<&T> {
        match name.wildcard {
            false => self.exact.get(name.name),
            true => self.wildcard.get(name.name),
        }
    }

    /// The value declared for `pattern`, as [`get`](Self::get).
    pub fn get_pattern(&self, pattern: &HostPattern) -> Option<&T> {
        self.get(DeclaredName::of(pattern))
    }

    /// Every entry in no particular order, without allocating.
    pub fn iter(&self) -> impl Iterator<Item = (DeclaredName<'_>, &T)> {
        let exact = self.exact.iter().map(|(name, value)| {
            let name = DeclaredName {
                wildcard: false,
                name,
            };
            (name, value)
        });
        let wildcard = self.wildcard.iter().map(|(name, value)| {
            let name = DeclaredName {
                wildcard: true,
                name,
            };
            (name, value)
        });
        exact.chain(wildcard)
    }

    /// Every entry, wildcards written `*.suffix`, sorted by name.
    pub fn entries(&self) -> Vec<(String, &T)> {
        let mut entries: Vec<(String, &T)> = self
            .exact
            .iter()
            .map(|(name, value)| (name.to_string(), value))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(suffix, value)| (format!("*.{suffix}"), value)),
            )
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }
}

/// A name as a project declares it: exact, or a wildcard given by its
/// suffix. Displays as the folder is named (`*.suffix` for wildcards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeclaredName<'a> {
    pub wildcard: bool,
    /// The hostname, or the suffix after `*.`.
    pub name: &'a str,
}

impl<'a> DeclaredName<'a> {
    /// The name `pattern` declares.
    pub fn of(pattern: &'a HostPattern) -> Self {
        match pattern {
            HostPattern::Exact(name) => Self {
                wildcard: false,
                name: name.as_str(),
            },
            HostPattern::Wildcard(suffix) => Self {
                wildcard: true,
                name: suffix.as_str(),
            },
        }
    }
}

impl std::fmt::Display for DeclaredName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(self.name)
    }
}

/// A hostname declared by more than one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The name as declared (`*.example.com` for wildcards).
    pub host: String,
    /// The project that keeps it.
    pub kept_by: String,
    /// The project whose declaration is ignored.
    pub refused_for: String,
}

/// Builds a [`HostTable`]; the first project to declare a name keeps it.
#[derive(Debug)]
pub struct HostTableBuilder<T> {
    /// Each value with the index of its project in `projects`: no string
    /// per host for the owner. Already in the finished table's shards,
    /// keyed by the names' shared text: finishing hashes no name again.
    exact: Sharded<(T, usize)>,
    wildcard: Names<(T, usize)>,
    projects: Vec<String>,
    conflicts: Vec<Conflict>,
}

impl<T> Default for HostTableBuilder<T> {
    fn default() -> Self {
        Self::with_len(0)
    }
}

impl<T> HostTableBuilder<T> {
    /// Starts an empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts an empty table for about `len` names (its shards are sized
    /// for them; more only makes bigger shards).
    pub fn with_len(len: usize) -> Self {
        Self {
            exact: Sharded::with_len(len),
            wildcard: Names::default(),
            projects: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    /// Declares `pattern` for `project`. Returns `false` (and records a
    /// conflict) when another project already holds it.
    pub fn insert(&mut self, project: &str, pattern: &HostPattern, value: T) -> bool {
        // Projects are few and inserted in runs: the last one is the usual hit.
        let owner = match self.projects.iter().rposition(|p| p == project) {
            Some(index) => index,
            None => {
                self.projects.push(project.to_owned());
                self.projects.len() - 1
            }
        };
        let key = pattern.key();
        let kept = match pattern {
            HostPattern::Exact(_) => self.exact.get(key),
            HostPattern::Wildcard(_) => self.wildcard.get(key.as_ref()),
        };
        if let Some((_, kept_by)) = kept {
            // The same project listing a name twice (e.g. two folders
            // differing only in case) is not a cross-project conflict.
            if *kept_by != owner {
                self.conflicts.push(Conflict {
                    host: pattern.to_string(),
                    kept_by: self.projects[*kept_by].clone(),
                    refused_for: project.to_owned(),
                });
            }
            return false;
        }
        match pattern {
            HostPattern::Exact(_) => self.exact.insert_new(key.clone(), (value, owner)),
            HostPattern::Wildcard(_) => {
                self.wildcard.insert(key.clone(), (value, owner));
            }
        }
        true
    }
}

impl<T: Clone> HostTableBuilder<T> {
    /// The finished table and the conflicts found while building it.
    pub fn finish(self) -> (HostTable<T>, Vec<Conflict>) {
        let table = HostTable {
            exact: self.exact.into_map(|(value, _)| value),
            wildcard: Arc::new(
                self.wildcard
                    .into_iter()
                    .map(|(name, (value, _))| (name, value))
                    .collect(),
            ),
        };
        (table, self.conflicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> HostPattern {
        HostPattern::parse(text).expect("valid pattern")
    }

    fn table(entries: &[(&str, &str)]) -> (HostTable<String>, Vec<Conflict>) {
        let mut builder = HostTableBuilder::new();
        for (project, host) in entries {
            builder.insert(project, &pattern(host), (*project).to_owned());
        }
        builder.finish()
    }

    #[test]
    fn declared_names_are_found_as_declared_not_by_matching() {
        let (table, _) = table(&[("wild", "*.example.com"), ("blog", "blog.example.com")]);
        assert_eq!(
            table
                .get_pattern(&pattern("*.example.com"))
                .map(String::as_str),
            Some("wild")
        );
        assert_eq!(
            table
                .get_pattern(&pattern("blog.example.com"))
                .map(String::as_str),
            Some("blog")
        );
        // Served by the wildcard, but not declared.
        assert_eq!(table.get_pattern(&pattern("shop.example.com")), None);
        let mut names: Vec<String> = table.iter().map(|(name, _)| name.to_string()).collect();
        names.sort();
        assert_eq!(names, ["*.example.com", "blog.example.com"]);
    }

    #[test]
    fn a_conflict_names_the_project_that_keeps_the_host() {
        let (table, conflicts) = table(&[
            ("first", "a.test"),
            ("second", "b.test"),
            ("second", "a.test"),
            ("first", "a.test"),
        ]);
        assert_eq!(table.lookup("a.test").map(String::as_str), Some("first"));
        assert_eq!(
            conflicts,
            [Conflict {
                host: "a.test".into(),
                kept_by: "first".into(),
                refused_for: "second".into(),
            }]
        );
    }

    #[test]
    fn exact_beats_wildcard_and_longest_suffix_wins() {
        let (table, conflicts) = table(&[
            ("wild", "*.example.com"),
            ("eu", "*.eu.example.com"),
            ("blog", "blog.eu.example.com"),
        ]);
        assert!(conflicts.is_empty());
        let owner = |host: &str| table.lookup(host).map(String::as_str);
        assert_eq!(owner("blog.eu.example.com"), Some("blog"));
        assert_eq!(owner("news.eu.example.com"), Some("eu"));
        assert_eq!(owner("a.b.eu.example.com"), Some("eu"));
        assert_eq!(owner("shop.example.com"), Some("wild"));
        assert_eq!(owner("eu.example.com"), Some("wild"));
        assert_eq!(owner("example.com"), None);
        assert_eq!(owner("other.org"), None);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn first_project_keeps_a_conflicting_name() {
        let (table, conflicts) = table(&[
            ("horatio", "blog.localhost"),
            ("othello", "blog.localhost"),
            ("othello", "*.localhost"),
            ("horatio", "*.localhost"),
        ]);
        assert_eq!(
            table.lookup("blog.localhost").map(String::as_str),
            Some("horatio")
        );
        assert_eq!(
            table.lookup("x.localhost").map(String::as_str),
            Some("othello")
        );
        assert_eq!(
            conflicts,
            [
                Conflict {
                    host: "blog.localhost".into(),
                    kept_by: "horatio".into(),
                    refused_for: "othello".into()
                },
                Conflict {
                    host: "*.localhost".into(),
                    kept_by: "othello".into(),
                    refused_for: "horatio".into()
                },
            ]
        );
    }

    #[test]
    fn map_keeps_every_name() {
        let (table, _) = table(&[("p", "a.localhost"), ("q", "*.b.localhost")]);
        let lengths = table.map(String::len);
        assert_eq!(lengths.lookup("a.localhost"), Some(&1));
        assert_eq!(lengths.lookup("x.b.localhost"), Some(&1));
        assert_eq!(lengths.len(), 2);
    }

    #[test]
    fn entries_are_sorted_and_show_wildcards() {
        let (table, _) = table(&[("p", "b.localhost"), ("p", "*.a.localhost")]);
        let names: Vec<String> = table.entries().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["*.a.localhost", "b.localhost"]);
    }
}
