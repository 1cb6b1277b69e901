//! The hostname → value table: exact names, then the longest wildcard.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use elsinore_config::HostPattern;

/// Immutable lookup from a normalised hostname to a value (a project).
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: HashMap<Box<str>, T>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<Box<str>, T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
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

    /// The same table with every value converted by `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> HostTable<U> {
        HostTable {
            exact: self.exact.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
            wildcard: self
                .wildcard
                .iter()
                .map(|(k, v)| (k.clone(), f(v)))
                .collect(),
        }
    }

    /// The same table with every value converted by `f`, which is also
    /// given the name as declared (`*.suffix` for wildcards).
    pub fn map_named<U>(&self, mut f: impl FnMut(&str, &T) -> U) -> HostTable<U> {
        HostTable {
            exact: self
                .exact
                .iter()
                .map(|(k, v)| (k.clone(), f(k, v)))
                .collect(),
            wildcard: self
                .wildcard
                .iter()
                .map(|(k, v)| (k.clone(), f(&format!("*.{k}"), v)))
                .collect(),
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
    table: HostTable<T>,
    owners: HashMap<Box<str>, String>,
    conflicts: Vec<Conflict>,
}

impl<T> Default for HostTableBuilder<T> {
    fn default() -> Self {
        Self {
            table: HostTable::default(),
            owners: HashMap::new(),
            conflicts: Vec::new(),
        }
    }
}

impl<T> HostTableBuilder<T> {
    /// Starts an empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `pattern` for `project`. Returns `false` (and records a
    /// conflict) when another project already holds it.
    pub fn insert(&mut self, project: &str, pattern: &HostPattern, value: T) -> bool {
        let (map, key) = match pattern {
            HostPattern::Exact(name) => (&mut self.table.exact, name.as_str()),
            HostPattern::Wildcard(suffix) => (&mut self.table.wildcard, suffix.as_str()),
        };
        match map.entry(key.into()) {
            Entry::Vacant(slot) => {
                slot.insert(value);
                self.owners
                    .insert(pattern.to_string().into(), project.to_owned());
                true
            }
            Entry::Occupied(_) => {
                let display = pattern.to_string();
                let kept_by = self
                    .owners
                    .get(display.as_str())
                    .cloned()
                    .unwrap_or_default();
                // The same project listing a name twice (e.g. two folders
                // differing only in case) is not a cross-project conflict.
                if kept_by != project {
                    self.conflicts.push(Conflict {
                        host: display,
                        kept_by,
                        refused_for: project.to_owned(),
                    });
                }
                false
            }
        }
    }

    /// The finished table and the conflicts found while building it.
    pub fn finish(self) -> (HostTable<T>, Vec<Conflict>) {
        (self.table, self.conflicts)
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
