//! Who owns a host declared by more than one project: the routing policy
//! a reload applies before it builds the table.

use elsinore_config::HostPattern;

use crate::host_table::{Conflict, DeclaredName, HostTable, HostTableBuilder};
use crate::scan::HostScan;

/// Host → index into `projects` (each a project name with its host scan,
/// in config.json order), and every name refused to a project as one
/// [`Conflict`]. Who gets a name, in order:
///
/// 1. `decided`: the project config.json's `host_owners` names, when it
///    declares the name;
/// 2. `previous`: the project that holds it now or, at start, the owner
///    recorded in the state database, so a conflict never moves a tenant
///    and neither does a reorder of `projects`;
/// 3. the first project in config.json order.
///
/// Then a name under another project's wildcard (`shop.wild.test` in
/// alpha while beta serves `*.wild.test`) is the wildcard's when the
/// wildcard was held first (`previous` gives it and not the name): a
/// folder made later cannot carve a name out of someone else's wildcard.
/// When neither was held before (a first start), the exact folder keeps
/// the name as it always did; either way the other claim is a conflict,
/// unless `decided` settles it.
pub fn decide_owners<'a, 'b>(
    projects: &[(&str, &HostScan)],
    previous: impl Fn(&HostPattern) -> Option<&'a str>,
    decided: impl Fn(&HostPattern) -> Option<&'b str>,
) -> (HostTable<usize>, Vec<Conflict>) {
    let total = projects.iter().map(|(_, scan)| scan.hosts.len()).sum();
    let mut builder = HostTableBuilder::with_len(total);
    for (index, (name, scan)) in projects.iter().enumerate() {
        for host in &scan.hosts {
            if decided(host) == Some(*name) {
                builder.insert(name, host, index);
            }
        }
    }
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
    let (mut table, mut conflicts) = builder.finish();
    refuse_covered(&mut table, &mut conflicts, projects, previous, decided);
    // A name inserted by an earlier pass is refused once per later pass.
    let mut seen = Vec::with_capacity(conflicts.len());
    conflicts.retain(|c| {
        let new = !seen.contains(c);
        if new {
            seen.push(c.clone());
        }
        new
    });
    (table, conflicts)
}

/// The wildcard rule of [`decide_owners`]: each name whose nearest
/// covering wildcard belongs to another project. Wildcards first, shortest
/// suffix first, so a wildcard refused here no longer covers anything.
fn refuse_covered<'a, 'b>(
    table: &mut HostTable<usize>,
    conflicts: &mut Vec<Conflict>,
    projects: &[(&str, &HostScan)],
    previous: impl Fn(&HostPattern) -> Option<&'a str>,
    decided: impl Fn(&HostPattern) -> Option<&'b str>,
) {
    let mut names: Vec<(bool, String)> = table
        .iter()
        .filter(|(name, &owner)| {
            table
                .covering_wildcard(name.name)
                .is_some_and(|(_, &wild)| wild != owner)
        })
        .map(|(name, _)| (!name.wildcard, name.name.to_owned()))
        .collect();
    names.sort_by_key(|(exact, name)| (*exact, name.len()));
    for (exact, name) in names {
        let declared = DeclaredName {
            wildcard: !exact,
            name: &name,
        };
        let (Some(&owner), Some((suffix, &wild))) =
            (table.get(declared), table.covering_wildcard(&name))
        else {
            continue;
        };
        if owner == wild {
            continue;
        }
        let (Ok(pattern), Ok(wildcard)) = (
            HostPattern::parse(&declared.to_string()),
            HostPattern::parse(&format!("*.{suffix}")),
        ) else {
            continue;
        };
        let (owner_name, wild_name) = (projects[owner].0, projects[wild].0);
        let conflict = |kept_by: &str, refused_for: &str| Conflict {
            host: declared.to_string(),
            kept_by: kept_by.to_owned(),
            refused_for: refused_for.to_owned(),
        };
        match decided(&pattern) {
            Some(p) if p == owner_name => continue,
            Some(p) if p == wild_name => {
                table.remove(declared);
                conflicts.push(conflict(wild_name, owner_name));
                continue;
            }
            _ => {}
        }
        let name_held = previous(&pattern) == Some(owner_name);
        let wildcard_held = previous(&wildcard) == Some(wild_name);
        if wildcard_held && !name_held {
            table.remove(declared);
            conflicts.push(conflict(wild_name, owner_name));
        } else {
            conflicts.push(conflict(owner_name, wild_name));
        }
    }
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
            ..HostScan::default()
        }
    }

    fn owner(owners: &HostTable<usize>, host: &str) -> Option<usize> {
        owners.lookup(host).copied()
    }

    #[test]
    fn the_first_project_in_config_order_wins_a_new_name() {
        let (a, b) = (scan(&["shared.test", "a.test"]), scan(&["shared.test"]));
        let (owners, conflicts) = decide_owners(&[("a", &a), ("b", &b)], |_| None, |_| None);
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
        let (owners, conflicts) = decide_owners(
            &[("a", &a), ("b", &b)],
            |host| (host.to_string() == "shared.test").then_some("b"),
            |_| None,
        );
        assert_eq!(owner(&owners, "shared.test"), Some(1));
        assert_eq!(conflicts[0].kept_by, "b");
        assert_eq!(conflicts[0].refused_for, "a");
    }

    #[test]
    fn a_previous_owner_that_no_longer_declares_the_name_loses_it() {
        let (a, b) = (scan(&["shared.test"]), scan(&[]));
        let (owners, conflicts) = decide_owners(&[("a", &a), ("b", &b)], |_| Some("b"), |_| None);
        assert_eq!(owner(&owners, "shared.test"), Some(0));
        assert!(conflicts.is_empty());
    }

    #[test]
    fn a_name_made_under_a_wildcard_held_by_another_project_is_refused() {
        let (alpha, beta) = (scan(&["shop.wild.test"]), scan(&["*.wild.test"]));
        let (owners, conflicts) = decide_owners(
            &[("alpha", &alpha), ("beta", &beta)],
            |host| (host.to_string() == "*.wild.test").then_some("beta"),
            |_| None,
        );
        assert_eq!(owner(&owners, "shop.wild.test"), Some(1));
        assert_eq!(
            conflicts,
            [Conflict {
                host: "shop.wild.test".to_owned(),
                kept_by: "beta".to_owned(),
                refused_for: "alpha".to_owned(),
            }]
        );
    }

    #[test]
    fn a_name_held_before_the_wildcard_came_stays() {
        let (alpha, beta) = (scan(&["shop.wild.test"]), scan(&["*.wild.test"]));
        let (owners, conflicts) = decide_owners(
            &[("alpha", &alpha), ("beta", &beta)],
            |host| match host.to_string().as_str() {
                "shop.wild.test" => Some("alpha"),
                _ => None,
            },
            |_| None,
        );
        assert_eq!(owner(&owners, "shop.wild.test"), Some(0));
        assert_eq!(owner(&owners, "other.wild.test"), Some(1));
        assert_eq!(conflicts[0].kept_by, "alpha");
        assert_eq!(conflicts[0].refused_for, "beta");
    }

    #[test]
    fn host_owners_decides_over_what_was_held() {
        let (alpha, beta) = (
            scan(&["shop.wild.test", "b.test"]),
            scan(&["*.wild.test", "b.test"]),
        );
        let held = |host: &HostPattern| match host.to_string().as_str() {
            "*.wild.test" | "b.test" => Some("beta"),
            _ => None,
        };
        let decided = |host: &HostPattern| {
            matches!(host.to_string().as_str(), "shop.wild.test" | "b.test").then_some("alpha")
        };
        let (owners, conflicts) =
            decide_owners(&[("alpha", &alpha), ("beta", &beta)], held, decided);
        assert_eq!(owner(&owners, "shop.wild.test"), Some(0));
        assert_eq!(owner(&owners, "b.test"), Some(0));
        assert_eq!(
            conflicts,
            [Conflict {
                host: "b.test".to_owned(),
                kept_by: "alpha".to_owned(),
                refused_for: "beta".to_owned(),
            }]
        );
    }
}
