//! `elsinore upgrade`: ask the running server to hand its sockets to a new
//! binary (the same as SIGUSR2), wait for the outcome, and say it. Exits
//! non-zero when the new process did not take over: the old one is still
//! serving then, and the reason is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::upgrade_files::{Outcome, UpgradeFiles};

/// Longer than the server's own wait for its successor (300 s), so the
/// server always answers first.
const WAIT: Duration = Duration::from_secs(320);
const POLL: Duration = Duration::from_millis(100);

pub fn run(config: &Path, binary: Option<PathBuf>) -> anyhow::Result<()> {
    let config = state_database_of(config)?;
    let files = UpgradeFiles::for_state_database(&config);
    let pid = files.read_pid().with_context(|| {
        format!(
            "no running server found ({}); is `elsinore serve` running with this config.json?",
            files.pid_file().display()
        )
    })?;
    // The recorded process, if it still runs: a pid reused by another
    // process since is never signalled.
    let Some(pid) = pid else {
        bail!(
            "the server recorded in {} is not running",
            files.pid_file().display()
        );
    };
    let server = Pid::from_raw(pid);
    if let Some(binary) = &binary {
        let binary = std::path::absolute(binary)
            .with_context(|| format!("--binary {}", binary.display()))?;
        if !is_executable(&binary) {
            bail!("--binary {}: not an executable file", binary.display());
        }
        files.request_binary(&binary)?;
    }
    files.clear_result()?;
    kill(server, Signal::SIGUSR2).with_context(|| format!("cannot signal pid {pid}"))?;
    eprintln!("asked pid {pid} to upgrade; waiting for the new process to be ready");
    let deadline = Instant::now() + WAIT;
    loop {
        match files.read_result() {
            Some(Outcome::Ok(new_pid)) => {
                println!("upgraded: pid {new_pid} serves, pid {pid} is draining");
                return Ok(());
            }
            Some(Outcome::Failed(why)) => {
                bail!("upgrade failed, pid {pid} still serving: {why}")
            }
            None if Instant::now() > deadline => bail!(
                "no answer from pid {pid} within {}s ({} not written)",
                WAIT.as_secs(),
                files.result_file().display()
            ),
            None => std::thread::sleep(POLL),
        }
    }
}

/// Where the running server keeps its state (its run folder is beside
/// it). config.json is read as `serve` reads it, but the operator running
/// this need not hold the projects' keys: `key_env` variables are not
/// looked up, and `user` is accepted as if root.
fn state_database_of(config: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let file = std::path::absolute(config)?;
    let placeholder = |name: &str| Some(format!("not-read-by-upgrade-{name}-0123456789"));
    let config = elsinore_config::Config::parse_as(&text, &file, placeholder, true)?;
    Ok(config.startup.state_database)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
