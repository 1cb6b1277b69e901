//! What the files declare: config.json and, for each project, its
//! manifest and host folders. Startup, `check` and `routes` read them
//! with [`Declared::load`] (every error, or nothing); a reload reads them
//! again with [`Declared::reread`], falling back per project to what is
//! applied.

use std::path::{Path, PathBuf};

use elsinore_config::{Config, HandlerKind, Manifest, ProjectConfig, SkippedFile};
use elsinore_routes::{decide_owners, scan_hosts, Conflict, HostScan, HostTable};

use crate::error::{LoadError, ProjectError, ReloadError, Warning};
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
    /// Reads config.json and every project; reports every error found, not
    /// only the first, so one `check` run shows everything to fix.
    pub fn load(config_path: &Path) -> Result<Self, LoadError> {
        let config = Config::load(config_path)?;
        let mut errors = Vec::new();
        let mut projects = Vec::with_capacity(config.projects.len());
        for project in &config.projects {
            let manifest = Manifest::load(&project.path)
                .map(|m| m.with_public_url(project.public_url.as_deref()))
                .map(|m| m.with_run_as(project.run_as.as_ref()))
                .map(|m| m.with_handler_key_env(project.handler_key_env.as_ref()))
                .map(|m| m.with_idle_stop(config.idle_stop))
                .map_err(ProjectError::Manifest);
            let scan = scan_hosts(&project.path).map_err(ProjectError::Hosts);
            match (manifest, scan) {
                (Ok(manifest), Ok(scan)) => projects.push(DeclaredProject {
                    config: project.clone(),
                    manifest,
                    scan,
                }),
                (manifest, scan) => {
                    errors.extend(manifest.err());
                    errors.extend(scan.err());
                }
            }
        }
        if !errors.is_empty() {
            return Err(LoadError::Projects(errors));
        }
        Ok(Self { config, projects })
    }

    /// Host → index into `projects`: `host_owners`, then the first
    /// declaration (what `check` and `routes` show without the state
    /// database's record).
    pub fn host_owners(&self) -> (HostTable<usize>, Vec<Conflict>) {
        let declared: Vec<(&str, &HostScan)> = self
            .projects
            .iter()
            .map(|p| (p.config.name.as_str(), &p.scan))
            .collect();
        decide_owners(
            &declared,
            |_| None,
            |host| self.config.host_owners.get(host),
        )
    }

    /// Skipped folders and handler files, and programs not found (host
    /// conflicts are the caller's: `check` and a reload word them
    /// differently).
    pub fn warnings(&self) -> Vec<Warning> {
        let mut warnings: Vec<Warning> = self
            .projects
            .iter()
            .flat_map(|project| {
                project
                    .scan
                    .skipped
                    .iter()
                    .map(|skipped| Warning::SkippedHostFolder {
                        project_dir: project.config.path.clone(),
                        folder: skipped.clone(),
                    })
            })
            .collect();
        warnings.extend(
            self.config
                .exposure_warnings()
                .into_iter()
                .map(Warning::Exposure),
        );
        for project in &self.projects {
            warnings.extend(
                project.manifest.skipped.iter().map(|skipped| {
                    skipped_handler(&project.config.path, &project.manifest, skipped)
                }),
            );
        }
        for project in &self.projects {
            let manifest = &project.manifest;
            if let Some(dir) = &manifest.handlers_dir {
                // A folder not there yet is normal (codegen has not run);
                // one that is there and empty is a layout mismatch.
                if project.config.path.join(dir).is_dir() && manifest.generated().next().is_none() {
                    warnings.push(Warning::EmptyHandlersDir {
                        project: project.config.name.clone(),
                        dir: dir.clone(),
                    });
                }
            }
            for handler in &project.manifest.handlers {
                if let HandlerKind::Command { argv } = &handler.kind {
                    if !program_exists(&argv[0], &project.config.path) {
                        warnings.push(Warning::ProgramNotFound {
                            project: project.config.name.clone(),
                            handler: handler.name.clone(),
                            program: argv[0].clone(),
                            project_dir: project.config.path.clone(),
                        });
                    }
                }
            }
        }
        warnings
    }

    /// Reads config.json and every project again. A project whose files
    /// are broken keeps what `applied` has for it (or is not added); only
    /// folders and files skipped for the first time are warned about.
    pub fn reread<H>(config_path: &Path, applied: &[Applied<H>]) -> Reread {
        Self::reread_changed(config_path, applied, None)
    }

    /// [`reread`](Self::reread), but listing the `hosts/` of only the
    /// projects whose folder is in `changed` (with `None`, every project);
    /// any other project still declared at the same name and folder keeps
    /// its host scan as applied.
    pub fn reread_changed<H>(
        config_path: &Path,
        applied: &[Applied<H>],
        changed: Option<&[PathBuf]>,
    ) -> Reread {
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
                .map(|m| m.with_run_as(project.run_as.as_ref()))
                .map(|m| m.with_handler_key_env(project.handler_key_env.as_ref()))
                .map(|m| m.with_idle_stop(config.idle_stop));
            // A project none of whose folders changed keeps its host scan
            // as applied: re-listing its hosts (a million, maybe) would
            // find the same. Its project.toml is read again (one file, and
            // its handlers also depend on the config entry).
            let unchanged = changed.is_some_and(|changed| !changed.contains(&project.path));
            let scan = match previous {
                Some(previous) if unchanged => Ok(previous.declared.scan.clone()),
                _ => scan_hosts(&project.path),
            };
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

/// Whether `program` would be found when spawned from `project_dir`: a
/// path is checked as is (relative to the project), a bare name on `PATH`.
fn program_exists(program: &str, project_dir: &Path) -> bool {
    if program.contains('/') {
        return project_dir.join(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("folder");
        }
        std::fs::write(path, text).expect("write");
    }

    fn hosts_of(reread: &Reread, project: &str) -> Vec<String> {
        let declared = reread.declared.as_ref().expect("config.json read");
        let project = declared
            .projects
            .iter()
            .find(|p| p.config.name == project)
            .expect("project");
        project.scan.hosts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn only_changed_projects_have_their_hosts_listed_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.json");
        write(&config, r#"{"projects": ["a", "b"]}"#);
        for (project, host) in [("a", "a1.test"), ("b", "b1.test")] {
            write(
                &dir.path().join(project).join("project.toml"),
                "[[handler]]\nname = \"web\"\ncommand = [\"true\"]\n",
            );
            std::fs::create_dir_all(dir.path().join(project).join("hosts").join(host))
                .expect("host");
        }
        let declared = Declared::load(&config).expect("valid");
        let applied: Vec<Applied<()>> = declared
            .projects
            .into_iter()
            .map(|declared| Applied {
                declared,
                handlers: Vec::new(),
            })
            .collect();
        let a = applied[0].declared.config.path.clone();
        std::fs::create_dir_all(a.join("hosts/a2.test")).expect("host");
        std::fs::remove_dir(applied[1].declared.config.path.join("hosts/b1.test")).expect("remove");

        // Only a's folders changed: a is listed again, b keeps its scan.
        let some = Declared::reread_changed(&config, &applied, Some(std::slice::from_ref(&a)));
        assert_eq!(hosts_of(&some, "a"), ["a1.test", "a2.test"]);
        assert_eq!(hosts_of(&some, "b"), ["b1.test"]);
        // A full reread sees everything.
        let all = Declared::reread(&config, &applied);
        assert_eq!(hosts_of(&all, "b"), Vec::<String>::new());
    }
}
