//! `projects[i].user` / `.group` and `database_group`: OS accounts looked
//! up once, when config.json is validated.
//!
//! The supervisor switches to these ids in the forked child, where only
//! async-signal-safe calls are allowed: no name lookups (`getpwnam` reads
//! files and allocates). So every name is turned into numbers here, and a
//! reload looks them up again.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, User};

/// The account a project's handlers run as (`user`, optional `group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name, as written.
    pub user: String,
    /// Its numeric id.
    pub uid: u32,
    /// The primary group: `group` when set, else the user's own.
    pub gid: u32,
    /// Supplementary groups: the user's (from the group database), plus
    /// `database_group` so that every project's handlers can open the
    /// shared database. Includes `gid`.
    pub groups: Vec<u32>,
    /// The user's home folder (`HOME` of its handlers).
    pub home: PathBuf,
}

/// `database_group`: the group that owns the shared database files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseGroup {
    /// The name, as written.
    pub name: String,
    /// Its numeric id.
    pub gid: u32,
}

/// Whether this process may switch to other users (effective uid 0).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Looks up `group` by name (or a number); the error is the message for
/// the field.
pub(crate) fn resolve_group(name: &str) -> Result<DatabaseGroup, String> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(DatabaseGroup {
            name: name.to_owned(),
            gid: group.gid.as_raw(),
        }),
        Ok(None) => Err(format!(
            "no group named {name:?} on this machine (see /etc/group; create one with: groupadd {name})"
        )),
        Err(err) => Err(format!("cannot look up group {name:?}: {err}")),
    }
}

/// Looks up `user` (and `group`), with its supplementary groups and
/// `database_group` added. The error is the message for the field.
pub(crate) fn resolve_run_as(
    user: &str,
    group: Option<&str>,
    database_group: Option<&DatabaseGroup>,
) -> Result<RunAs, (&'static str, String)> {
    let found = match User::from_name(user) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Err((
                "user",
                format!("no user named {user:?} on this machine (see /etc/passwd)"),
            ))
        }
        Err(err) => return Err(("user", format!("cannot look up user {user:?}: {err}"))),
    };
    let gid = match group {
        Some(group) => resolve_group(group).map_err(|why| ("group", why))?.gid,
        None => found.gid.as_raw(),
    };
    let name = CString::new(user).map_err(|_| ("user", "contains a NUL byte".to_owned()))?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
        .map_err(|err| ("user", format!("cannot list the groups of {user:?}: {err}")))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    if let Some(db) = database_group {
        groups.push(db.gid);
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(RunAs {
        user: user.to_owned(),
        uid: found.uid.as_raw(),
        gid,
        groups,
        home: found.dir,
    })
}

impl RunAs {
    /// Checks that this account can enter `dir` and every folder above it
    /// (search permission), and read `dir`, by the mode bits and owners
    /// (ACLs are not consulted). The error names the first folder that
    /// stops it, with its mode and owner.
    pub fn can_reach(&self, dir: &Path) -> Result<(), String> {
        if self.uid == 0 {
            return Ok(());
        }
        let mut folders: Vec<&Path> = dir.ancestors().collect();
        folders.reverse();
        for folder in folders {
            let meta = std::fs::metadata(folder)
                .map_err(|err| format!("cannot inspect {}: {err}", folder.display()))?;
            // The folder itself must also be listable; its parents only
            // need to be passed through.
            let needed = if folder == dir { 0o5 } else { 0o1 };
            let class = if meta.uid() == self.uid {
                6
            } else if self.groups.contains(&meta.gid()) || meta.gid() == self.gid {
                3
            } else {
                0
            };
            let bits = (meta.mode() >> class) & 0o7;
            if bits & needed != needed {
                return Err(format!(
                    "user {} cannot {} {} (mode {:o}, owner uid {} gid {}); let it in, e.g. chmod o+x on each folder above and o+rx on the project folder, or chgrp the folder to one of the user's groups",
                    self.user,
                    if needed == 0o1 { "pass through" } else { "read" },
                    folder.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_debian_accounts() {
        let db = resolve_group("users").expect("group users");
        let nobody = resolve_run_as("nobody", None, Some(&db)).expect("nobody");
        assert_eq!(nobody.uid, 65534);
        assert!(nobody.groups.contains(&db.gid), "{nobody:?}");
        assert!(nobody.groups.contains(&nobody.gid), "{nobody:?}");
        let daemon = resolve_run_as("daemon", Some("users"), None).expect("daemon");
        assert_eq!((daemon.uid, daemon.gid), (1, db.gid));
        let (field, why) = resolve_run_as("no-such-user-x", None, None).expect_err("unknown");
        assert_eq!(field, "user");
        assert!(why.contains("no user named \"no-such-user-x\""), "{why}");
        let (field, why) = resolve_run_as("nobody", Some("no-such-group-x"), None).expect_err("x");
        assert_eq!(field, "group");
        assert!(why.contains("no group named"), "{why}");
    }

    #[test]
    fn reachability_names_the_folder_that_stops_the_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let project = dir.path().join("p");
        std::fs::create_dir(&project).expect("mkdir");
        let nobody = resolve_run_as("nobody", None, None).expect("nobody");
        let closed = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(dir.path(), closed).expect("chmod");
        let why = nobody.can_reach(&project).expect_err("0700 parent");
        assert!(
            why.contains(&format!("cannot pass through {}", dir.path().display())),
            "{why}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("chmod");
        std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Every folder above the temp dir (/tmp, /) is open on Debian.
        nobody.can_reach(&project).expect("open folders");
    }
}
