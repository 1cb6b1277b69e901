//! Secrets and shared files a valid config.json still leaves exposed:
//! warnings for `check` and `serve`, never errors (the operator may have
//! reasons, and an existing setup must keep starting).

use std::os::unix::fs::PermissionsExt;

use crate::config::Config;

impl Config {
    /// What this configuration leaves readable or unreachable that the
    /// operator should fix, one sentence each:
    ///
    /// - an inline `key` in a config.json that group or others can read
    ///   (a handler running as another user could read every project's
    ///   key from it; its path is in Elsinore's command line);
    /// - a `database` URL with a password in a config.json that group or
    ///   others can read;
    /// - a `user` without `database_group` (that user cannot open the
    ///   shared database, which is Elsinore's own, mode 0600).
    pub fn exposure_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let inline_keys: Vec<String> = self
            .projects
            .iter()
            .enumerate()
            .filter(|(_, p)| p.key.is_some() && p.key_env.is_none())
            .map(|(i, _)| format!("projects[{i}].key"))
            .collect();
        if !inline_keys.is_empty() {
            if let Ok(meta) = std::fs::metadata(&self.file) {
                let mode = meta.permissions().mode();
                if mode & 0o044 != 0 {
                    out.push(format!(
                        "{} holds project keys ({}) and is readable by {} (mode {:o}): run chmod 600 {} or move the keys to key_env",
                        self.file.display(),
                        inline_keys.join(", "),
                        if mode & 0o004 != 0 { "every user" } else { "its group" },
                        mode & 0o777,
                        self.file.display(),
                    ));
                }
            }
        }
        if let Some(url) = &self.startup.database_url {
            // Handlers get the URL anyway; other local users must not.
            let has_password = url.expose() != url.redacted();
            let mode = std::fs::metadata(&self.file).map_or(0, |m| m.permissions().mode());
            if has_password && mode & 0o044 != 0 {
                out.push(format!(
                    "{} holds the shared database's password (database: {url}) and is readable by {} (mode {:o}): run chmod 600 {}",
                    self.file.display(),
                    if mode & 0o004 != 0 { "every user" } else { "its group" },
                    mode & 0o777,
                    self.file.display(),
                ));
            }
        }
        // A PostgreSQL shared database has no file mode: its own roles say
        // who may connect.
        if self.startup.database_group.is_none() && self.startup.database_url.is_none() {
            for (i, project) in self.projects.iter().enumerate() {
                if let Some(run_as) = &project.run_as {
                    if run_as.uid != nix::unistd::geteuid().as_raw() {
                        out.push(format!(
                            "projects[{i}].user {:?}: without \"database_group\" the shared database {} is Elsinore's only (mode 0600), so project {}'s handlers cannot open ELSINORE_DB",
                            run_as.user,
                            self.startup.database.display(),
                            project.name,
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn warnings(dir: &Path, mode: u32, text: &str) -> Vec<String> {
        std::fs::create_dir_all(dir.join("a")).expect("project dir");
        let file = dir.join("config.json");
        std::fs::write(&file, text).expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        Config::load(&file).expect("valid").exposure_warnings()
    }

    #[test]
    fn inline_keys_in_a_readable_file_are_warned_about() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inline = r#"{"projects": [{"path": "a", "key": "0123456789abcdef0123"}]}"#;
        let warned = warnings(dir.path(), 0o644, inline);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("holds project keys (projects[0].key) and is readable by every user (mode 644): run chmod 600"),
            "{warned:?}"
        );
        let warned = warnings(dir.path(), 0o640, inline);
        assert!(warned[0].contains("readable by its group"), "{warned:?}");
        assert!(warnings(dir.path(), 0o600, inline).is_empty());
        let no_key = r#"{"projects": ["a"]}"#;
        assert!(warnings(dir.path(), 0o644, no_key).is_empty());
    }

    #[test]
    fn a_database_password_in_a_readable_file_is_warned_about() {
        let dir = tempfile::tempdir().expect("temp dir");
        let with_password = r#"{"database": "postgres://app:s3cret@db:5432/t", "projects": ["a"]}"#;
        let warned = warnings(dir.path(), 0o644, with_password);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("holds the shared database's password (database: postgres://app:***@db:5432/t) and is readable by every user (mode 644): run chmod 600"),
            "{warned:?}"
        );
        assert!(!warned[0].contains("s3cret"), "{warned:?}");
        assert!(warnings(dir.path(), 0o600, with_password).is_empty());
        let without = r#"{"database": "postgres://app@db:5432/t", "projects": ["a"]}"#;
        assert!(warnings(dir.path(), 0o644, without).is_empty());
    }
}
