//! The host owners the state database recorded, as the first plan after
//! a start consults them: a compact table looked up by [`DeclaredName`]
//! without allocating.
//!
//! A restart with a million hosts reads a million (name, project) rows.
//! They were kept as a map of `String` to `String` (two allocations per
//! host, and a SipHash) and every host of the scan was looked up there
//! through a freshly built `String`: a second allocation per lookup, two
//! lookups per host (the owner decision, then the owner record's diff).
//! Here each row keeps only its name's own buffer (no copy) and a small
//! index into the few project names.

use std::collections::HashMap;

use elsinore_routes::DeclaredName;
use foldhash::fast::RandomState;

/// Names to the index of their project in [`RecordedOwners::projects`],
/// hashed with foldhash: the keys come from our own state database, not
/// from clients.
type Names = HashMap<Box<str>, u32, RandomState>;

/// Declared name → project, as recorded (see the module docs).
#[derive(Debug, Default)]
pub struct RecordedOwners {
    /// Every project that owns a recorded name: a handful, each once.
    projects: Vec<Box<str>>,
    /// Exact names.
    exact: Names,
    /// Wildcards, by their suffix (`*.wild.test` is `wild.test` here), so
    /// a lookup by [`DeclaredName`] needs no `*.` put back.
    wildcard: Names,
}

impl RecordedOwners {
    /// The rows `OwnerRecords::load` read: (name as declared, `*.suffix`
    /// for wildcards; project). A name recorded twice keeps its last row
    /// (the database's primary key makes that impossible).
    pub fn from_rows(rows: Vec<(String, String)>) -> Self {
        let mut owners = Self {
            projects: Vec::new(),
            exact: Names::with_capacity_and_hasher(rows.len(), RandomState::default()),
            wildcard: Names::default(),
        };
        for (name, project) in rows {
            let index = owners.project_index(&project);
            match name.strip_prefix("*.") {
                Some(suffix) => {
                    owners.wildcard.insert(suffix.into(), index);
                }
                // The row's own buffer becomes the key: no copy.
                None => {
                    owners.exact.insert(name.into_boxed_str(), index);
                }
            }
        }
        owners
    }

    /// The index of `project` in `projects`, added when new. Rows come
    /// grouped by project more often than not: the last one is tried
    /// first, and the list is a handful of names long anyway.
    fn project_index(&mut self, project: &str) -> u32 {
        if let Some(last) = self.projects.len().checked_sub(1) {
            if &*self.projects[last] == project {
                return last as u32;
            }
        }
        match self.projects.iter().position(|p| &**p == project) {
            Some(index) => index as u32,
            None => {
                self.projects.push(project.into());
                (self.projects.len() - 1) as u32
            }
        }
    }

    /// The project recorded for `name`.
    pub fn get(&self, name: DeclaredName<'_>) -> Option<&str> {
        let names = match name.wildcard {
            false => &self.exact,
            true => &self.wildcard,
        };
        // Most lookups at a first start find nothing: skip the hash.
        if names.is_empty() {
            return None;
        }
        names
            .get(name.name)
            .map(|&index| &*self.projects[index as usize])
    }

    /// Every recorded name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = DeclaredName<'_>> {
        let exact = self.exact.keys().map(|name| DeclaredName {
            wildcard: false,
            name,
        });
        let wildcard = self.wildcard.keys().map(|name| DeclaredName {
            wildcard: true,
            name,
        });
        exact.chain(wildcard)
    }

    /// How many names are recorded.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether nothing is recorded (a first start, or after the first
    /// plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(name: &str) -> DeclaredName<'_> {
        DeclaredName {
            wildcard: false,
            name,
        }
    }

    fn wildcard(suffix: &str) -> DeclaredName<'_> {
        DeclaredName {
            wildcard: true,
            name: suffix,
        }
    }

    fn rows(rows: &[(&str, &str)]) -> RecordedOwners {
        RecordedOwners::from_rows(
            rows.iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
        )
    }

    #[test]
    fn each_name_finds_its_own_project() {
        let owners = rows(&[
            ("a.test", "alpha"),
            ("b.test", "beta"),
            ("c.test", "alpha"),
            ("*.wild.test", "beta"),
        ]);
        assert_eq!(owners.get(exact("a.test")), Some("alpha"));
        assert_eq!(owners.get(exact("b.test")), Some("beta"));
        assert_eq!(owners.get(exact("c.test")), Some("alpha"));
        assert_eq!(owners.get(wildcard("wild.test")), Some("beta"));
        assert_eq!(owners.len(), 4);
        // Each project is kept once.
        assert_eq!(owners.projects.len(), 2);
    }

    #[test]
    fn a_wildcard_and_the_exact_name_of_its_suffix_are_two_names() {
        let owners = rows(&[("*.wild.test", "beta")]);
        assert_eq!(owners.get(exact("wild.test")), None);
        assert_eq!(owners.get(wildcard("wild.test")), Some("beta"));
        let owners = rows(&[("wild.test", "alpha")]);
        assert_eq!(owners.get(wildcard("wild.test")), None);
        assert_eq!(owners.get(exact("wild.test")), Some("alpha"));
    }

    #[test]
    fn names_lists_every_recorded_name_as_declared() {
        let owners = rows(&[("a.test", "alpha"), ("*.wild.test", "beta")]);
        let mut names: Vec<String> = owners.names().map(|n| n.to_string()).collect();
        names.sort();
        assert_eq!(names, ["*.wild.test", "a.test"]);
    }

    #[test]
    fn nothing_recorded_finds_nothing() {
        let owners = RecordedOwners::default();
        assert!(owners.is_empty());
        assert_eq!(owners.get(exact("a.test")), None);
        assert_eq!(owners.get(wildcard("a.test")), None);
        assert_eq!(owners.names().count(), 0);
    }
}
