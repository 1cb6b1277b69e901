//! Who owns a host declared by more than one project: the routing policy
//! a reload applies before it builds the table.

use elsinore_config::HostPattern;

use crate::host_table::{Conflict, HostTable, HostTableBuilder};
use crate::scan::HostScan;

/// Host → index into `projects` (each a project name with its host scan,
/// in config.json order). A host keeps the project that held it before
/// (`previous`: the project name the live table gives a declared name),
/// so a conflict never moves a tenant; among newcomers, the first project
/// in config.json order wins. Every name refused to a project is one
/// [`Conflict`].
pub fn decide_owners<'a>(
    projects: &[(&str, &HostScan)],
    previous: impl Fn(&HostPattern) -> Option<&'a str>,
) -> (HostTable<usize>, Vec<Conflict>) {
    let mut builder = HostTableBuilder::new();
    for (index, (name, scan)) in projects.iter().enumerate() {
        for host in &scan.hosts {
            if previous(host) == Some(*name) {
                builder.insert(name, host, index);
            }
        }
    }
    for (index, (name, scan)) in projects.iter().enumerate() {
        for host in &scan.hosts {
            // Re-inserting a host for its own project is not a conflict.
            builder.insert(name, host, index);
        }
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(hosts: &[&str]) -> HostScan {
        let hosts: Vec<HostPattern> = hosts
            .iter()
            .map(|h| HostPattern::parse(h).expect("valid host"))
            .collect();
        HostScan {
            folders: hosts.iter().map(|h| (h.clone(), h.to_string())).collect(),
            hosts,
            skipped: Vec::new(),
        }
    }

    fn owner(owners: &HostTable<usize>, host: &str) -> Option<usize> {
        owners.lookup(host).copied()
    }

    #[test]
    fn the_first_project_in_config_order_wins_a_new_name() {
        let (a, b) = (scan(&["shared.test", "a.test"]), scan(&["shared.test"]));
        let (owners, conflicts) = decide_owners(&[("a", &a), ("b", &b)], |_| None);
        assert_eq!(owner(&owners, "shared.test"), Some(0));
        assert_eq!(owner(&owners, "a.test"), Some(0));
        assert_eq!(
            conflicts,
            [Conflict {
                host: "shared.test".to_owned(),
                kept_by: "a".to_owned(),
                refused_for: "b".to_owned(),
            }]
        );
    }

    #[test]
    fn a_host_stays_with_the_project_that_served_it() {
        // `b` served shared.test before `a` (listed first) declared it too.
        let (a, b) = (scan(&["shared.test"]), scan(&["shared.test"]));
        let (owners, conflicts) = decide_owners(&[("a", &a), ("b", &b)], |host| {
            (host.to_string() == "shared.test").then_some("b")
        });
        assert_eq!(owner(&owners, "shared.test"), Some(1));
        assert_eq!(conflicts[0].kept_by, "b");
        assert_eq!(conflicts[0].refused_for, "a");
    }

    #[test]
    fn a_previous_owner_that_no_longer_declares_the_name_loses_it() {
        let (a, b) = (scan(&["shared.test"]), scan(&[]));
        let (owners, conflicts) = decide_owners(&[("a", &a), ("b", &b)], |_| Some("b"));
        assert_eq!(owner(&owners, "shared.test"), Some(0));
        assert!(conflicts.is_empty());
    }
}
