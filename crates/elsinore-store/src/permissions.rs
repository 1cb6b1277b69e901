//! Who may open the shared database files: Elsinore only (0600), or the
//! handlers of every project through `database_group` (root:group, 0660).
//!
//! SQLite creates `-wal` and `-shm` with the mode and owner of the main
//! file, so setting the main file right before the first connection, and
//! all three after it, is enough; the folder gets the group too (setgid,
//! so files a handler creates there keep it).

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Mode of the database files without `database_group`.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of the database files with `database_group`.
pub const GROUP_MODE: u32 = 0o660;

/// Creates a missing database file with [`PRIVATE_MODE`] before SQLite
/// does (it would use 0644).
pub(crate) fn create_private(path: &Path) -> Result<()> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(permission_error(
            path,
            "cannot create the database file",
            source,
        )),
    }
}

/// Sets the owner group and mode of the database at `path`, its `-wal`
/// and `-shm`: with `group` (a gid) group `group` and [`GROUP_MODE`], and
/// the folder group-writable with that group; without, [`PRIVATE_MODE`]
/// (an earlier Elsinore created them 0644). The owner is left as it is.
pub fn restrict_database_files(path: &Path, group: Option<u32>) -> Result<()> {
    let mode = if group.is_some() {
        GROUP_MODE
    } else {
        PRIVATE_MODE
    };
    for file in database_files(path) {
        let meta = match std::fs::metadata(&file) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(permission_error(&file, "cannot inspect", source)),
        };
        if let Some(gid) = group.filter(|&gid| meta.gid() != gid) {
            std::os::unix::fs::chown(&file, None, Some(gid)).map_err(|source| {
                permission_error(&file, "cannot change its group to database_group", source)
            })?;
        }
        if meta.mode() & 0o7777 != mode {
            std::fs::set_permissions(&file, Permissions::from_mode(mode))
                .map_err(|source| permission_error(&file, "cannot change its mode", source))?;
        }
    }
    if let (Some(gid), Some(dir)) = (group, path.parent()) {
        let meta = std::fs::metadata(dir)
            .map_err(|source| permission_error(dir, "cannot inspect", source))?;
        if meta.gid() != gid {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|source| {
                permission_error(
                    dir,
                    "cannot change the folder's group to database_group",
                    source,
                )
            })?;
        }
        // Handlers create `-wal`/`-shm` when they are missing: the group
        // needs to write the folder, and setgid keeps new files in it.
        let wanted = meta.mode() | 0o2070;
        if meta.mode() != wanted {
            std::fs::set_permissions(dir, Permissions::from_mode(wanted & 0o7777)).map_err(
                |source| permission_error(dir, "cannot change the folder's mode", source),
            )?;
        }
    }
    Ok(())
}

/// The database and the two files SQLite keeps beside it in WAL mode.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

fn permission_error(path: &Path, context: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Permissions {
        path: path.to_owned(),
        context,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn new_files_are_private_and_old_ones_are_tightened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db/e.db");
        // A write, so that SQLite creates the -wal and -shm files too (the
        // shared database gets no table from Elsinore itself).
        let conn = crate::Store::open(&path).expect("open").into_connection();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        for file in database_files(&path) {
            assert_eq!(mode(&file), PRIVATE_MODE, "{}", file.display());
        }
        drop(conn);
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        restrict_database_files(&path, None).expect("restrict");
        assert_eq!(mode(&path), PRIVATE_MODE);
    }

    #[test]
    fn a_group_gets_the_files_and_the_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db/e.db");
        let conn = crate::Store::open(&path).expect("open").into_connection();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        // A group this process is in, so the test also runs as non-root.
        let gid = nix::unistd::getegid().as_raw();
        restrict_database_files(&path, Some(gid)).expect("restrict");
        for file in database_files(&path) {
            let meta = std::fs::metadata(&file).expect("stat");
            assert_eq!(
                (meta.gid(), meta.mode() & 0o7777),
                (gid, GROUP_MODE),
                "{}",
                file.display()
            );
        }
        assert_eq!(mode(&dir.path().join("db")) & 0o2070, 0o2070);
    }
}
