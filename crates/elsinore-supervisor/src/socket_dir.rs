//! Private folders for handler sockets (`socket = true`).
//!
//! `<run folder>/<project>/<handler>-<pid>-<n>.sock`, where the run folder is
//! Elsinore's (`run/` next to the state database, mode 0711: anyone may
//! pass through to a folder whose name they know, nobody may list or add
//! one), and each project's folder is mode 0700, owned by the project's
//! `user` when it has one. Only that user (and root) can connect to a
//! socket inside: the kernel checks search permission on the folder for
//! `connect(2)` on a Unix socket, which a loopback port never had.
//!
//! `n` is a generation, new for every handler start (not every restart):
//! during a blue/green replacement the new process listens on its own path
//! while the old one still serves on its own.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use elsinore_config::RunAs;

/// Mode of the run folder: pass through only.
const RUN_MODE: u32 = 0o711;
/// Mode of a project's folder: its owner only.
const PROJECT_MODE: u32 = 0o700;
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Generations handed out by this process.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Creates (or fixes the owner and mode of) `project`'s folder under
/// `run_dir` and returns a fresh socket path inside for `handler`, with no
/// file at it yet.
pub(crate) fn socket_path(
    run_dir: &Path,
    project: &str,
    handler: &str,
    run_as: Option<&RunAs>,
) -> io::Result<PathBuf> {
    let run_dir = std::path::absolute(run_dir)?;
    make_private_dir(&run_dir, RUN_MODE, None)?;
    let folder = run_dir.join(project);
    make_private_dir(&folder, PROJECT_MODE, run_as)?;
    if let Some(run_as) = run_as {
        // The handler must get through every folder above too.
        run_as
            .can_reach(&folder)
            .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))?;
    }
    // The pid keeps paths apart across processes: during a binary upgrade
    // the new server's counter starts at 1 again while the old server's
    // handlers still listen on their paths.
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let path = folder.join(format!("{handler}-{pid}-{generation}.sock"));
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket allows; move state_database to a shorter folder",
                path.display()
            ),
        ));
    }
    remove_stale(&path);
    Ok(path)
}

/// Removes whatever is at `path` (a socket left by a crashed handler or an
/// earlier Elsinore), so the handler's bind does not fail with
/// `EADDRINUSE`. A missing file is the usual case.
pub(crate) fn remove_stale(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "cannot remove old handler socket");
        }
    }
}

/// `dir` as a real folder (not a symlink) with `mode`, owned by `owner`
/// (else by Elsinore's user), created if missing.
fn make_private_dir(dir: &Path, mode: u32, owner: Option<&RunAs>) -> io::Result<()> {
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("cannot create {}: {err}", dir.display()),
            ))
        }
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a folder; remove it so Elsinore can create its socket folder there",
            dir.display()
        )));
    }
    let (uid, gid) = match owner {
        Some(run_as) => (run_as.uid, run_as.gid),
        None => (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
    };
    if meta.uid() != uid || meta.gid() != gid {
        // The project's user changed, or it is new: the folder follows.
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot give {} to uid {uid}: {err}", dir.display()),
            )
        })?;
    }
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_private_and_paths_fresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join("run");
        let first = socket_path(&run, "alpha", "web", None).expect("path");
        let second = socket_path(&run, "alpha", "web", None).expect("path");
        assert_ne!(first, second, "each start gets its own generation");
        assert_eq!(first.parent(), Some(run.join("alpha").as_path()));
        let mode = |p: &Path| fs::metadata(p).expect("meta").mode() & 0o7777;
        assert_eq!(mode(&run), RUN_MODE);
        assert_eq!(mode(&run.join("alpha")), PROJECT_MODE);
    }

    #[test]
    fn a_too_long_path_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = dir.path().join("r".repeat(120));
        let err = socket_path(&run, "alpha", "web", None).expect_err("too long");
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
