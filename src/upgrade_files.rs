//! The files `elsinore upgrade` and the running server meet at, in the run
//! folder next to the state database (`data/run/` by default, mode 0711,
//! where handler sockets live too):
//!
//! - `elsinore.pid`: the serving process, written once it serves (by the
//!   successor too, once it took over);
//! - `upgrade.binary`: the binary to start instead of the server's own,
//!   written by `elsinore upgrade --binary` and read (and removed) by the
//!   server when the SIGUSR2 arrives;
//! - `upgrade.result`: what that upgrade came to, one line: `ok <pid>` or
//!   `failed: <why>`.
//!
//! Files rather than the operator API: `admin_listen` is optional, and the
//! operator who runs `elsinore upgrade` can signal the server anyway.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The run folder's mode when Elsinore makes it (as for handler sockets).
const RUN_MODE: u32 = 0o711;

#[derive(Debug, Clone)]
pub struct UpgradeFiles {
    run_dir: PathBuf,
}

/// What an upgrade came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The successor serves, with this pid.
    Ok(u32),
    /// The old server still serves; why the successor does not.
    Failed(String),
}

impl UpgradeFiles {
    /// The files of the server whose state database is `state_database`.
    pub fn for_state_database(state_database: &Path) -> Self {
        Self {
            run_dir: state_database.with_file_name("run"),
        }
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("elsinore.pid")
    }

    fn binary_file(&self) -> PathBuf {
        self.run_dir.join("upgrade.binary")
    }

    pub fn result_file(&self) -> PathBuf {
        self.run_dir.join("upgrade.result")
    }

    /// Records this process as the one serving: its pid and its start
    /// time, so that a pid the kernel has since given to another process
    /// is not taken for the server.
    pub fn write_pid(&self) -> io::Result<()> {
        let pid = std::process::id();
        let started = start_time(pid).unwrap_or_default();
        self.write(&self.pid_file(), &format!("{pid} {started}\n"))
    }

    /// The pid recorded by the serving process, if that process still
    /// runs (`Ok(None)`: it does not, or the pid is another process now).
    pub fn read_pid(&self) -> io::Result<Option<i32>> {
        let text = fs::read_to_string(self.pid_file())?;
        let mut fields = text.split_whitespace();
        let pid: Option<u32> = fields.next().and_then(|pid| pid.parse().ok());
        let started: Option<u64> = fields.next().and_then(|t| t.parse().ok());
        let (Some(pid), Some(started)) = (pid, started) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a pid", self.pid_file().display()),
            ));
        };
        Ok((start_time(pid) == Some(started))
            .then(|| i32::try_from(pid).ok())
            .flatten())
    }

    /// Asks the next upgrade to start `binary` instead of the server's own.
    pub fn request_binary(&self, binary: &Path) -> io::Result<()> {
        self.write(&self.binary_file(), &binary.display().to_string())
    }

    /// The binary `elsinore upgrade --binary` asked for, once.
    pub fn take_binary(&self) -> Option<PathBuf> {
        let path = self.binary_file();
        let text = fs::read_to_string(&path).ok()?;
        let _ = fs::remove_file(&path);
        Some(PathBuf::from(text.trim_end_matches('\n')))
    }

    /// Forgets the last upgrade's result (before asking for a new one).
    pub fn clear_result(&self) -> io::Result<()> {
        match fs::remove_file(self.result_file()) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    pub fn write_result(&self, outcome: &Outcome) -> io::Result<()> {
        let line = match outcome {
            Outcome::Ok(pid) => format!("ok {pid}\n"),
            Outcome::Failed(why) => format!("failed: {}\n", why.replace('\n', " ")),
        };
        self.write(&self.result_file(), &line)
    }

    /// The last upgrade's result, if one was written.
    pub fn read_result(&self) -> Option<Outcome> {
        let text = fs::read_to_string(self.result_file()).ok()?;
        let line = text.strip_suffix('\n')?;
        if let Some(pid) = line.strip_prefix("ok ") {
            return pid.parse().ok().map(Outcome::Ok);
        }
        line.strip_prefix("failed: ")
            .map(|why| Outcome::Failed(why.to_owned()))
    }

    /// Writes `path` whole (a temporary file renamed over it), so a reader
    /// never sees half a line; mode 0644: nothing secret.
    fn write(&self, path: &Path, text: &str) -> io::Result<()> {
        if !self.run_dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(RUN_MODE)
                .create(&self.run_dir)?;
        }
        let partial = path.with_extension("partial");
        {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&partial)?;
            io::Write::write_all(&mut file, text.as_bytes())?;
        }
        fs::rename(&partial, path)
    }
}

/// When process `pid` started (field 22 of `/proc/<pid>/stat`, clock
/// ticks since boot); `None` when it does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count after its `)`.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_binary_requests_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = UpgradeFiles::for_state_database(&dir.path().join("data/state.db"));
        assert_eq!(files.read_result(), None);
        files.write_result(&Outcome::Ok(42)).expect("write");
        assert_eq!(files.read_result(), Some(Outcome::Ok(42)));
        files
            .write_result(&Outcome::Failed("it\nexited".into()))
            .expect("write");
        assert_eq!(
            files.read_result(),
            Some(Outcome::Failed("it exited".into()))
        );
        files.clear_result().expect("clear");
        files.clear_result().expect("clearing twice is fine");
        assert_eq!(files.read_result(), None);

        assert_eq!(files.take_binary(), None);
        files
            .request_binary(Path::new("/opt/e/elsinore"))
            .expect("write");
        assert_eq!(files.take_binary(), Some(PathBuf::from("/opt/e/elsinore")));
        assert_eq!(files.take_binary(), None, "taken once");

        files.write_pid().expect("write");
        assert_eq!(
            files.read_pid().expect("read"),
            i32::try_from(std::process::id()).ok()
        );
        // A recorded pid whose process started at another time (the pid
        // reused) is not the server.
        let pid = std::process::id();
        std::fs::write(files.pid_file(), format!("{pid} 1\n")).expect("write");
        assert_eq!(files.read_pid().expect("read"), None);
    }
}
