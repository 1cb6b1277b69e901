//! `host_owners` in config.json: the operator's explicit answer to "which
//! project owns this host name", over what the state database recorded.

use std::collections::{BTreeMap, HashMap};

use crate::error::Problem;
use crate::hostname::HostPattern;

/// Host name or `*.` pattern → project name, validated: every pattern
/// parses and every project is one of `projects`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOwners {
    owners: HashMap<HostPattern, String>,
}

impl HostOwners {
    /// The project `host_owners` names for exactly `pattern` (a wildcard
    /// entry decides the wildcard folder, not the names under it).
    pub fn get(&self, pattern: &HostPattern) -> Option<&str> {
        self.owners.get(pattern).map(String::as_str)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&HostPattern, &str)> {
        self.owners.iter().map(|(p, o)| (p, o.as_str()))
    }

    /// Whether no entry is set.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Validates the raw map; a bad pattern or an unknown project is one
    /// problem naming `host_owners."<name>"`.
    pub(crate) fn validate(
        raw: Option<BTreeMap<String, String>>,
        is_project: impl Fn(&str) -> bool,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let mut owners = HashMap::new();
        for (name, project) in raw.unwrap_or_default() {
            let field = format!("host_owners.{name:?}");
            let pattern = match HostPattern::parse(&name) {
                Ok(pattern) => pattern,
                Err(err) => {
                    problems.push(Problem::field(
                        field,
                        format!("{err}; expected a host name such as \"shop.example.com\" or \"*.example.com\""),
                    ));
                    continue;
                }
            };
            if !is_project(&project) {
                problems.push(Problem::field(
                    field,
                    format!("no project is named {project:?}"),
                ));
                continue;
            }
            owners.insert(pattern, project);
        }
        Self { owners }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_projects_and_bad_names_are_problems_naming_the_entry() {
        let raw = BTreeMap::from([
            ("Shop.Wild.Test".to_owned(), "alpha".to_owned()),
            ("*.wild.test".to_owned(), "gamma".to_owned()),
            ("bad name".to_owned(), "alpha".to_owned()),
        ]);
        let mut problems = Vec::new();
        let owners = HostOwners::validate(Some(raw), |p| p == "alpha", &mut problems);
        let shop = HostPattern::parse("shop.wild.test").expect("pattern");
        assert_eq!(owners.get(&shop), Some("alpha"));
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("host_owners.\"*.wild.test\"") && t.contains("gamma")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("host_owners.\"bad name\"")),
            "{text:?}"
        );
    }
}
