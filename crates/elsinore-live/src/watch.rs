//! The folders a reload watches: what, if changed, changes what is
//! served.

use std::path::Path;
use std::sync::Arc;

use elsinore_config::MANIFEST_FILE;
use elsinore_routes::HOSTS_DIR;
use elsinore_static::PUBLIC_DIR;
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::{CertOwner, CertSource, TLS_DIR};
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

/// Each host folder, where only a `public` entry matters: a `public/`
/// added or removed changes what the host serves.
pub(crate) fn public_targets(projects: &[Applied<Arc<HandlerHandle>>]) -> Vec<Target> {
    projects
        .iter()
        .flat_map(|project| {
            let hosts_dir = project.declared.config.path.join(HOSTS_DIR);
            let scan = &project.declared.scan;
            scan.hosts
                .iter()
                .filter_map(move |host| scan.folder(host).map(|folder| hosts_dir.join(folder)))
        })
        .map(|dir| Target::only(dir, [PUBLIC_DIR]))
        .collect()
}

/// Folders to watch so that an added, replaced or removed certificate is
/// noticed: each host folder (only its `tls` entry matters), each
/// `tls/` folder (every entry), and the default certificate's files.
/// Two inotify watches per host.
pub(crate) fn cert_targets(sources: &[CertSource]) -> Vec<Target> {
    let mut targets = Vec::with_capacity(2 * sources.len());
    for source in sources {
        match source.owner {
            CertOwner::Host(_) => {
                if let Some(tls_dir) = source.cert_path.parent() {
                    if let Some(host_dir) = tls_dir.parent() {
                        targets.push(Target::only(host_dir, [TLS_DIR]));
                    }
                    targets.push(Target::all(tls_dir));
                }
            }
            CertOwner::Default => {
                for file in [&source.cert_path, &source.key_path] {
                    if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
                        targets.push(Target::only(dir, [name.to_owned()]));
                    }
                }
            }
        }
    }
    targets
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
