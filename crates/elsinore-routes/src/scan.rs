//! Reading a project's `hosts/` folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use elsinore_config::HostPattern;

/// The folder inside a project whose sub-folders declare its hosts.
pub const HOSTS_DIR: &str = "hosts";

/// Why `hosts/` could not be read (a missing folder is not an error).
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read: {source}", path.display())]
pub struct ScanError {
    /// The folder.
    pub path: PathBuf,
    /// The operating system's reason.
    #[source]
    pub source: std::io::Error,
}

/// A folder under `hosts/` that declares nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFolder {
    /// The folder's name.
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What a project's `hosts/` declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostScan {
    /// Valid names, sorted.
    pub hosts: Vec<HostPattern>,
    /// Entries that are not valid host folders, with the reason.
    pub skipped: Vec<SkippedFolder>,
    /// The folder name of a host as written on disk, for the hosts whose
    /// folder is not spelled as the name (`Blog.Example.com` declares
    /// `blog.example.com`) and for wildcards: the folder of every other
    /// host is its name, so a million plain hosts keep no string here
    /// (ask [`HostScan::folder`]). Hashed: a reload looks up every host
    /// in it.
    pub folders: HashMap<HostPattern, String>,
    /// Two folders spell one name (`Blog.Test` and `blog.test`): which
    /// one declares it depends on both, so a change to either is read
    /// with the whole folder rather than alone.
    pub spellings_differ: bool,
}

impl HostScan {
    /// The folder under `hosts/` that declares `host`, if it declares it.
    pub fn folder(&self, host: &HostPattern) -> Option<&str> {
        if let Some(folder) = self.folders.get(host) {
            return Some(folder);
        }
        // Spelled as the name: the name, if declared.
        let at = self.hosts.binary_search(host).ok()?;
        match &self.hosts[at] {
            HostPattern::Exact(name) => Some(name.as_str()),
            HostPattern::Wildcard(_) => None,
        }
    }

    /// Whether `host`'s folder needs its spelling kept: a wildcard, or a
    /// name written otherwise on disk.
    fn spelled_otherwise(host: &HostPattern, folder: &str) -> bool {
        match host {
            HostPattern::Exact(name) => name.as_str() != folder,
            HostPattern::Wildcard(_) => true,
        }
    }

    /// Adds `host`, declared by `folder`, keeping `hosts` sorted (a
    /// binary search and one move of the list's tail).
    pub fn insert(&mut self, host: HostPattern, folder: String) {
        if Self::spelled_otherwise(&host, &folder) {
            self.folders.insert(host.clone(), folder);
        } else {
            self.folders.remove(&host);
        }
        if let Err(at) = self.hosts.binary_search(&host) {
            self.hosts.insert(at, host);
        }
    }

    /// Removes `host`.
    pub fn remove(&mut self, host: &HostPattern) {
        if let Ok(at) = self.hosts.binary_search(host) {
            self.hosts.remove(at);
        }
        self.folders.remove(host);
    }
}

/// Lists `<project>/hosts/*/`. A project without `hosts/` declares no host
/// (it may gain one later); plain files in `hosts/` are ignored silently,
/// folders that are not hostnames are reported as skipped.
pub fn scan_hosts(project_dir: &Path) -> Result<HostScan, ScanError> {
    let dir = project_dir.join(HOSTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(HostScan::default()),
        Err(source) => return Err(ScanError { path: dir, source }),
    };
    let mut scan = HostScan::default();
    // Plain folders (spelled as their name) only as names: no folder
    // string, no hash map; sorted once at the end. A million of them
    // were a million map inserts with SipHash before.
    let mut spelled_otherwise: Vec<(HostPattern, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ScanError {
            path: dir.clone(),
            source,
        })?;
        // The entry's type comes with the listing (no `stat` per folder,
        // which is most of a 10,000-host scan); only a symlink is
        // followed, as a symlinked host folder is a host.
        let is_dir = match entry.file_type() {
            Ok(kind) if kind.is_symlink() => {
                std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir())
            }
            Ok(kind) => kind.is_dir(),
            Err(_) => false,
        };
        if !is_dir {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            scan.skipped.push(SkippedFolder {
                name: name.to_string_lossy().into_owned(),
                reason: "name is not UTF-8".into(),
            });
            continue;
        };
        match HostPattern::parse(name) {
            Ok(pattern) => {
                if HostScan::spelled_otherwise(&pattern, name) {
                    spelled_otherwise.push((pattern.clone(), name.to_owned()));
                }
                scan.hosts.push(pattern);
            }
            Err(err) => scan.skipped.push(SkippedFolder {
                name: name.to_owned(),
                reason: err.to_string(),
            }),
        }
    }
    scan.hosts.sort_unstable();
    let listed = scan.hosts.len();
    scan.hosts.dedup();
    scan.hosts.shrink_to_fit();
    // Two spellings of one name: the first in sorted order wins, so the
    // choice does not depend on directory order. A name's own spelling
    // (lower case) sorts after every other spelling of it (upper-case
    // letters sort first), so it only wins alone.
    scan.spellings_differ = scan.hosts.len() != listed;
    spelled_otherwise.sort_unstable();
    for (host, folder) in spelled_otherwise {
        scan.folders.entry(host).or_insert(folder);
    }
    scan.skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_valid_folders_and_reports_the_rest() {
        let project = tempfile::tempdir().expect("temp dir");
        let hosts = project.path().join(HOSTS_DIR);
        for name in [
            "blog.localhost",
            "*.example.com",
            "Shop.Localhost",
            "not a host",
            "bad:80",
        ] {
            std::fs::create_dir_all(hosts.join(name)).expect("mkdir");
        }
        std::fs::write(hosts.join("README.md"), "notes").expect("file");
        let scan = scan_hosts(project.path()).expect("scan");
        let names: Vec<String> = scan.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["blog.localhost", "shop.localhost", "*.example.com"]);
        let skipped: Vec<&str> = scan.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["bad:80", "not a host"]);
    }

    #[test]
    fn a_symlink_to_a_folder_is_a_host_and_one_to_a_file_is_not() {
        let project = tempfile::tempdir().expect("temp dir");
        let hosts = project.path().join(HOSTS_DIR);
        let elsewhere = project.path().join("shared-site");
        std::fs::create_dir_all(&hosts).expect("mkdir");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::fs::write(project.path().join("notes.txt"), "x").expect("file");
        std::os::unix::fs::symlink(&elsewhere, hosts.join("linked.localhost")).expect("link");
        std::os::unix::fs::symlink(
            project.path().join("notes.txt"),
            hosts.join("file.localhost"),
        )
        .expect("link");
        std::os::unix::fs::symlink(
            project.path().join("gone"),
            hosts.join("dangling.localhost"),
        )
        .expect("link");
        let scan = scan_hosts(project.path()).expect("scan");
        let names: Vec<String> = scan.hosts.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["linked.localhost"]);
    }

    #[test]
    fn only_folders_spelled_otherwise_keep_their_spelling() {
        let project = tempfile::tempdir().expect("temp dir");
        let hosts = project.path().join(HOSTS_DIR);
        for name in ["plain.test", "Caps.Test", "*.wild.test"] {
            std::fs::create_dir_all(hosts.join(name)).expect("mkdir");
        }
        let mut scan = scan_hosts(project.path()).expect("scan");
        let pattern = |text: &str| HostPattern::parse(text).expect("host");
        // A plain host costs no string of its own.
        assert_eq!(scan.folders.len(), 2);
        assert_eq!(scan.folder(&pattern("plain.test")), Some("plain.test"));
        assert_eq!(scan.folder(&pattern("caps.test")), Some("Caps.Test"));
        assert_eq!(scan.folder(&pattern("*.wild.test")), Some("*.wild.test"));
        assert_eq!(scan.folder(&pattern("other.test")), None);
        scan.insert(pattern("new.test"), "new.test".into());
        scan.insert(pattern("more.test"), "More.Test".into());
        assert_eq!(scan.folders.len(), 3);
        assert_eq!(scan.folder(&pattern("new.test")), Some("new.test"));
        assert_eq!(scan.folder(&pattern("more.test")), Some("More.Test"));
        scan.remove(&pattern("more.test"));
        assert_eq!(scan.folder(&pattern("more.test")), None);
        assert!(scan.hosts.windows(2).all(|w| w[0] < w[1]), "sorted");
    }

    #[test]
    fn missing_hosts_folder_declares_nothing() {
        let project = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            scan_hosts(project.path()).expect("scan"),
            HostScan::default()
        );
    }
}
