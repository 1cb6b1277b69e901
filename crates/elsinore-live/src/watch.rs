//! The folders a reload watches: what, if changed, changes what is
//! served.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use elsinore_config::MANIFEST_FILE;
use elsinore_routes::HOSTS_DIR;
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::{CertOwner, CertSource};
use elsinore_watch::Target;

use crate::plan::Applied;

/// config.json's folder (only config.json matters there), each project's
/// folder (project.toml and hosts/), each project's hosts/, and each
/// `handlers_dir` with the folders leading to it.
pub(crate) fn config_targets(
    config_path: &Path,
    projects: &[Applied<Arc<HandlerHandle>>],
) -> Vec<Target> {
    let mut targets = Vec::with_capacity(1 + 2 * projects.len());
    if let (Some(dir), Some(name)) = (config_path.parent(), config_path.file_name()) {
        targets.push(Target::only(dir, [name.to_owned()]));
    }
    for project in projects {
        let dir = &project.declared.config.path;
        targets.push(Target::only(dir, [MANIFEST_FILE, HOSTS_DIR]));
        targets.push(Target::all(dir.join(HOSTS_DIR)));
        if let Some(handlers_dir) = &project.declared.manifest.handlers_dir {
            targets.extend(handlers_dir_targets(dir, handlers_dir));
        }
    }
    targets
}

/// The generated handlers' folder (every entry matters: each file is a
/// handler) and, for each folder between the project and it, the one entry
/// leading there: code generators delete and recreate the whole tree
/// (`rm -rf server/.hamlet-gen`), and the folder may not exist yet.
fn handlers_dir_targets(project_dir: &Path, handlers_dir: &Path) -> Vec<Target> {
    let mut targets = Vec::new();
    let mut parent = project_dir.to_path_buf();
    for part in handlers_dir.iter() {
        targets.push(Target::only(parent.clone(), [part.to_owned()]));
        parent.push(part);
    }
    targets.push(Target::all(parent));
    targets
}

/// Each host's `public/` that exists: only the folder itself matters here
/// (deleted or replaced, the host's site changes); the files inside are
/// the static-file tree watcher's. A host folder that gains a `public/`
/// is seen by the sweep of `hosts/` ([`swept`]), not by a watch of its own.
pub(crate) fn public_targets<'a>(roots: impl IntoIterator<Item = &'a PathBuf>) -> Vec<Target> {
    roots
        .into_iter()
        .map(|root| Target::only(root.clone(), std::iter::empty::<OsString>()))
        .collect()
}

/// Folders to watch so that an added, replaced or removed certificate is
/// noticed: each `tls/` folder that exists (every entry), and the default
/// certificate's files. Host folders without `tls/` cost no watch: one
/// that gains a `tls/` is seen by the sweep of `hosts/` ([`swept`]).
pub(crate) fn cert_targets(tls_dirs: &[PathBuf], sources: &[CertSource]) -> Vec<Target> {
    let mut targets: Vec<Target> = tls_dirs.iter().cloned().map(Target::all).collect();
    for source in sources {
        if source.owner == CertOwner::Default {
            for file in [&source.cert_path, &source.key_path] {
                if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
                    targets.push(Target::only(dir, [name.to_owned()]));
                }
            }
        }
    }
    targets
}

/// Each project's `hosts/`: the folders whose entries the watcher sweeps
/// for changes made inside a host folder (a `tls/` or `public/` added).
pub(crate) fn swept(projects: &[Applied<Arc<HandlerHandle>>]) -> Vec<PathBuf> {
    projects
        .iter()
        .map(|project| project.declared.config.path.join(HOSTS_DIR))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handlers_dir_is_watched_with_every_folder_leading_to_it() {
        let targets = handlers_dir_targets(
            Path::new("/p/macbeth"),
            Path::new("server/.hamlet-gen/handlers"),
        );
        assert_eq!(
            targets,
            [
                Target::only("/p/macbeth", ["server"]),
                Target::only("/p/macbeth/server", [".hamlet-gen"]),
                Target::only("/p/macbeth/server/.hamlet-gen", ["handlers"]),
                Target::all("/p/macbeth/server/.hamlet-gen/handlers"),
            ]
        );
    }
}
