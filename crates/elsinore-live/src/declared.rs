//! What the files declare: config.json and, for each project, its
//! manifest and host folders. A reload reads them again with
//! [`Declared::reread`], falling back per project to what is applied.

use std::path::Path;

use elsinore_config::{Config, Manifest, ProjectConfig, SkippedFile};
use elsinore_routes::{scan_hosts, HostScan};

use crate::error::{ReloadError, Warning};
use crate::plan::Applied;

/// One project with everything read from its folder.
#[derive(Debug, Clone)]
pub struct DeclaredProject {
    /// Its entry in config.json.
    pub config: ProjectConfig,
    /// Its handlers (`project.toml` and `handlers_dir`).
    pub manifest: Manifest,
    /// Its `hosts/`.
    pub scan: HostScan,
}

/// config.json and every project it lists.
#[derive(Debug, Clone)]
pub struct Declared {
    /// config.json.
    pub config: Config,
    /// Its projects, in config.json order.
    pub projects: Vec<DeclaredProject>,
}

/// What [`Declared::reread`] found besides the declaration.
#[derive(Debug, Default)]
pub struct Reread {
    /// The declaration, `None` when config.json itself is refused.
    pub declared: Option<Declared>,
    /// What was refused (each project keeps what it had).
    pub errors: Vec<ReloadError>,
    /// Newly skipped folders and files.
    pub warnings: Vec<Warning>,
}

impl Declared {
    /// Reads config.json and every project again. A project whose files
    /// are broken keeps what `applied` has for it (or is not added); only
    /// folders and files skipped for the first time are warned about.
    pub fn reread<H>(config_path: &Path, applied: &[Applied<H>]) -> Reread {
        let mut out = Reread::default();
        let config = match Config::load(config_path) {
            Ok(config) => config,
            Err(err) => {
                out.errors.push(ReloadError::Config(err));
                return out;
            }
        };
        let mut projects = Vec::with_capacity(config.projects.len());
        for project in &config.projects {
            let previous = applied.iter().find(|a| {
                a.declared.config.name == project.name && a.declared.config.path == project.path
            });
            let manifest = Manifest::load(&project.path)
                .map(|m| m.with_public_url(project.public_url.as_deref()))
                .map(|m| m.with_run_as(project.run_as.as_ref()));
            let scan = scan_hosts(&project.path);
            let kept = previous.is_some();
            let manifest = match manifest {
                Ok(manifest) => manifest,
                Err(error) => {
                    out.errors.push(ReloadError::Manifest {
                        project: project.name.clone(),
                        error,
                        kept,
                    });
                    match previous {
                        Some(previous) => previous.declared.manifest.clone(),
                        None => continue,
                    }
                }
            };
            let scan = match scan {
                Ok(scan) => scan,
                Err(error) => {
                    out.errors.push(ReloadError::Hosts {
                        project: project.name.clone(),
                        error,
                        kept,
                    });
                    match previous {
                        Some(previous) => previous.declared.scan.clone(),
                        None => continue,
                    }
                }
            };
            // Only newly skipped files and folders: the others were
            // reported before.
            for skipped in &manifest.skipped {
                let known = previous.is_some_and(|p| p.declared.manifest.skipped.contains(skipped));
                if !known {
                    out.warnings
                        .push(skipped_handler(&project.path, &manifest, skipped));
                }
            }
            for skipped in &scan.skipped {
                let known = previous.is_some_and(|p| p.declared.scan.skipped.contains(skipped));
                if !known {
                    out.warnings.push(Warning::SkippedHostFolder {
                        project_dir: project.path.clone(),
                        folder: skipped.clone(),
                    });
                }
            }
            projects.push(DeclaredProject {
                config: project.clone(),
                manifest,
                scan,
            });
        }
        out.declared = Some(Self { config, projects });
        out
    }
}

/// `skipped <handlers_dir>/<file>: <reason>`, for `check` and the reload
/// log alike.
pub fn skipped_handler(project_dir: &Path, manifest: &Manifest, skipped: &SkippedFile) -> Warning {
    let dir = manifest
        .handlers_dir
        .as_deref()
        .map_or_else(|| project_dir.to_path_buf(), |dir| project_dir.join(dir));
    Warning::SkippedHandlerFile {
        path: dir.join(&skipped.name),
        reason: skipped.reason.clone(),
    }
}
