//! A real PostgreSQL for tests: Debian's server binaries (`apt-get install
//! postgresql`; `.ci/run` does it), a throwaway cluster in a temp folder,
//! listening on a free loopback port with `trust` authentication, stopped
//! (fast shutdown) and deleted when the value is dropped.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as
//! root (CI) the cluster runs as the `postgres` user through `runuser`.
//! Whatever cannot be had (no server binaries, no `postgres` user) makes
//! [`Postgres::start`] return `None` after printing why: the caller skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

/// How long a cluster may take to initialise and accept connections.
const START_WAIT: Duration = Duration::from_secs(60);

/// A running throwaway PostgreSQL cluster.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    _dir: tempfile::TempDir,
    stopped: bool,
}

impl Postgres {
    /// Starts a cluster, or prints why it cannot and returns `None`.
    pub fn start() -> Option<Self> {
        let Some(bin) = server_binaries() else {
            eprintln!(
                "skipping: PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin \
                 (apt-get install postgresql; .ci/run does it)"
            );
            return None;
        };
        let run_as = running_as_root().then_some("postgres");
        if run_as.is_some() && !user_exists("postgres") {
            eprintln!(
                "skipping: running as root and there is no `postgres` user to run the server"
            );
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let data = dir.path().join("data");
        if let Some(user) = run_as {
            // The cluster's own user must own the folders it writes.
            let status = Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("skipping: cannot hand {} to {user}", dir.path().display());
                return None;
            }
        }
        let mut pg = Postgres {
            bin,
            data,
            port: free_port(),
            run_as,
            _dir: dir,
            stopped: true,
        };
        let initdb = pg
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data)
            .stdout(Stdio::null())
            .output();
        match initdb {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "skipping: initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            Err(err) => {
                eprintln!("skipping: cannot run initdb: {err}");
                return None;
            }
        }
        if let Err(why) = pg.pg_ctl_start() {
            eprintln!("skipping: PostgreSQL did not start: {why}");
            return None;
        }
        pg.stopped = false;
        pg.wait_ready();
        Some(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of another database on this cluster (see [`Self::create_database`]).
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL through the server's Unix socket (libpq's `?host=<folder>`).
    pub fn socket_url(&self) -> String {
        format!(
            "postgresql:///postgres?host={}&port={}&user=postgres",
            self.data.display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url_for(name)
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output
    /// (`a|b` per row), panicking with psql's message on error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", database, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: open sessions are ended), keeping
    /// its data for [`Self::restart`].
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.stopped = true;
    }

    /// Starts the stopped server again on the same port with the same data.
    pub fn restart(&mut self) {
        assert!(self.stopped, "restart of a running server");
        if let Err(why) = self.pg_ctl_start() {
            panic!("PostgreSQL did not restart: {why}");
        }
        self.stopped = false;
        self.wait_ready();
    }

    /// `pg_ctl start` on this cluster's port and data, loopback only;
    /// `Err` is pg_ctl's complaint and the server's log.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.data.join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.data.display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run pg_ctl: {err}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} not ready within {START_WAIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A server binary, run as the cluster's user when the tests are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing of a test cluster needs to survive.
        if !self.stopped {
            let _ = self
                .command("pg_ctl")
                .args(["-w", "-m", "immediate", "-D"])
                .arg(&self.data)
                .arg("stop")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
