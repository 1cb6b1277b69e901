//! Creating and removing `<project>/hosts/<hostname>/` for the admin API.
//! Blocking file-system work: run it on `spawn_blocking`.
//!
//! Names are validated [`Hostname`]s (letters, digits, `-`, `_` in
//! non-empty dot-separated labels), so a path built from one never leaves
//! the `hosts/` folder; existing folders are found by reading `hosts/`, so
//! `Blog.Example.com/` counts as `blog.example.com`.

use std::io;
use std::path::{Path, PathBuf};

use elsinore_config::{HostPattern, Hostname};
use elsinore_routes::HOSTS_DIR;

/// At most this many entries of a non-empty folder are named in a 409.
const MAX_LISTED: usize = 20;

/// What [`create`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// The folder was made.
    New,
    /// It already existed (perhaps not yet live).
    Existing,
}

/// Why [`remove`] removed nothing.
#[derive(Debug)]
pub(crate) enum RemoveError {
    /// The project has no such host folder.
    NotFound,
    /// The folder holds files or folders (named, at most [`MAX_LISTED`]).
    NotEmpty(Vec<String>),
    /// `hosts/<name>` is a symbolic link, not a folder of its own.
    Symlink,
    /// The file system refused.
    Io(io::Error),
}

/// Creates `hosts/<name>/` in `project_dir` (and `hosts/` if needed).
pub(crate) fn create(project_dir: &Path, name: &Hostname) -> io::Result<Created> {
    let hosts = project_dir.join(HOSTS_DIR);
    if find(&hosts, name)?.is_some() {
        return Ok(Created::Existing);
    }
    std::fs::create_dir_all(&hosts)?;
    match std::fs::create_dir(hosts.join(name.as_str())) {
        Ok(()) => Ok(Created::New),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Existing),
        Err(err) => Err(err),
    }
}

/// Removes the project's folder for `name` if it is empty.
pub(crate) fn remove(project_dir: &Path, name: &Hostname) -> Result<(), RemoveError> {
    let hosts = project_dir.join(HOSTS_DIR);
    let folder = find(&hosts, name)
        .map_err(RemoveError::Io)?
        .ok_or(RemoveError::NotFound)?;
    let meta = std::fs::symlink_metadata(&folder).map_err(RemoveError::Io)?;
    if meta.file_type().is_symlink() {
        return Err(RemoveError::Symlink);
    }
    let entries = list(&folder).map_err(RemoveError::Io)?;
    if !entries.is_empty() {
        return Err(RemoveError::NotEmpty(entries));
    }
    match std::fs::remove_dir(&folder) {
        Ok(()) => Ok(()),
        // Something was put there since we looked: it stays.
        Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => Err(RemoveError::NotEmpty(
            list(&folder).map_err(RemoveError::Io)?,
        )),
        Err(err) => Err(RemoveError::Io(err)),
    }
}

/// The entry of `hosts` that declares exactly `name`, in any letter case.
fn find(hosts: &Path, name: &Hostname) -> io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(hosts) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        let declares = entry.file_name().to_str().is_some_and(
            |folder| matches!(HostPattern::parse(folder), Ok(HostPattern::Exact(n)) if n == *name),
        );
        if declares {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Sorted names in `folder`, at most [`MAX_LISTED`] then a count of the rest.
fn list(folder: &Path) -> io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(folder)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    if names.len() > MAX_LISTED {
        let more = names.len() - MAX_LISTED;
        names.truncate(MAX_LISTED);
        names.push(format!("… and {more} more"));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Hostname {
        Hostname::parse(text).expect("hostname")
    }

    #[test]
    fn create_then_remove_an_empty_folder() {
        let project = tempfile::tempdir().expect("temp dir");
        let host = name("new.localhost");
        assert_eq!(create(project.path(), &host).expect("create"), Created::New);
        assert!(project.path().join("hosts/new.localhost").is_dir());
        assert_eq!(
            create(project.path(), &host).expect("again"),
            Created::Existing
        );
        remove(project.path(), &host).expect("remove");
        assert!(!project.path().join("hosts/new.localhost").exists());
        assert!(matches!(
            remove(project.path(), &host),
            Err(RemoveError::NotFound)
        ));
    }

    #[test]
    fn existing_folders_match_in_any_case() {
        let project = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(project.path().join("hosts/Blog.Localhost")).expect("mkdir");
        assert_eq!(
            create(project.path(), &name("blog.localhost")).expect("create"),
            Created::Existing
        );
        remove(project.path(), &name("blog.localhost")).expect("remove");
        assert!(!project.path().join("hosts/Blog.Localhost").exists());
    }

    #[test]
    fn a_folder_with_content_stays() {
        let project = tempfile::tempdir().expect("temp dir");
        let folder = project.path().join("hosts/blog.localhost");
        std::fs::create_dir_all(folder.join("public")).expect("mkdir");
        std::fs::write(folder.join("index.html"), "hi").expect("file");
        match remove(project.path(), &name("blog.localhost")) {
            Err(RemoveError::NotEmpty(entries)) => assert_eq!(entries, ["index.html", "public"]),
            other => panic!("expected NotEmpty, got {other:?}"),
        }
        assert!(folder.join("index.html").exists());
    }

    #[test]
    fn long_listings_are_cut() {
        let folder = tempfile::tempdir().expect("temp dir");
        for i in 0..25 {
            std::fs::write(folder.path().join(format!("f{i:02}")), "").expect("file");
        }
        let names = list(folder.path()).expect("list");
        assert_eq!(names.len(), MAX_LISTED + 1);
        assert_eq!(names[MAX_LISTED], "… and 5 more");
    }

    #[test]
    fn a_symlinked_host_folder_is_not_removed() {
        let project = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(project.path().join("hosts")).expect("mkdir");
        std::os::unix::fs::symlink(
            elsewhere.path(),
            project.path().join("hosts/link.localhost"),
        )
        .expect("symlink");
        assert!(matches!(
            remove(project.path(), &name("link.localhost")),
            Err(RemoveError::Symlink)
        ));
        assert!(elsewhere.path().exists());
    }
}
