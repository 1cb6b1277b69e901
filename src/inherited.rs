//! Listening sockets a starting server did not bind itself: passed by
//! systemd socket activation (`LISTEN_FDS`, matched to `listen`,
//! `tls_listen` and `admin_listen` by the address each is bound to), or
//! handed over by the server an upgrade replaces ([`UPGRADE_FDS_ENV`],
//! which names each descriptor's role, so port 0 works too).
//!
//! Every adopted descriptor is marked close-on-exec again: handlers must
//! never inherit a public listening socket.

use std::io::PipeWriter;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

use anyhow::{bail, Context as _};
use elsinore_config::Config;

/// `listen=5,6;tls_listen=7,8;admin_listen=9;ready=10`: the descriptors
/// an upgrading server hands to its successor, by role.
pub const UPGRADE_FDS_ENV: &str = "ELSINORE_INHERITED_FDS";
/// The successor's generation number (the first server is 1).
pub const GENERATION_ENV: &str = "ELSINORE_GENERATION";

/// What a starting server was given.
#[derive(Debug, Default)]
pub struct Inherited {
    pub listen: Option<Vec<TcpListener>>,
    pub tls_listen: Option<Vec<TcpListener>>,
    pub admin_listen: Option<TcpListener>,
    /// Set when started by an upgrade: written to once ready to serve.
    pub ready: Option<PipeWriter>,
    /// 1, or one more than the server this one replaces.
    pub generation: u64,
}

impl Inherited {
    /// Reads (and removes) the variables. Call before any other thread
    /// starts: it edits the environment.
    pub fn from_env(config: &Config) -> anyhow::Result<Self> {
        let generation = match std::env::var(GENERATION_ENV) {
            Ok(value) => value
                .parse()
                .with_context(|| format!("{GENERATION_ENV}={value:?} is not a number"))?,
            Err(_) => 1,
        };
        std::env::remove_var(GENERATION_ENV);
        let mut inherited = if let Ok(fds) = std::env::var(UPGRADE_FDS_ENV) {
            std::env::remove_var(UPGRADE_FDS_ENV);
            Self::from_upgrade(&fds)?
        } else {
            // Unsets LISTEN_PID/LISTEN_FDS and marks the fds close-on-exec.
            let fds = sd_notify::listen_fds().context("LISTEN_FDS (socket activation)")?;
            Self::from_systemd(fds, config)?
        };
        inherited.generation = generation;
        Ok(inherited)
    }

    fn from_upgrade(fds: &str) -> anyhow::Result<Self> {
        let mut inherited = Self::default();
        for part in fds.split(';').filter(|p| !p.is_empty()) {
            let (role, numbers) = part
                .split_once('=')
                .with_context(|| format!("{UPGRADE_FDS_ENV}: {part:?} is not ROLE=FD,…"))?;
            let numbers: Vec<RawFd> = numbers
                .split(',')
                .map(|n| {
                    n.parse()
                        .with_context(|| format!("{UPGRADE_FDS_ENV}: {n:?}"))
                })
                .collect::<anyhow::Result<_>>()?;
            match role {
                "listen" => inherited.listen = Some(adopt_listeners(&numbers)?),
                "tls_listen" => inherited.tls_listen = Some(adopt_listeners(&numbers)?),
                "admin_listen" => {
                    inherited.admin_listen = adopt_listeners(&numbers)?.into_iter().next();
                }
                "ready" => {
                    let fd = numbers.first().context("ready= names no descriptor")?;
                    let fd = adopt(*fd)?;
                    inherited.ready = Some(PipeWriter::from(fd));
                }
                other => bail!("{UPGRADE_FDS_ENV}: unknown role {other:?}"),
            }
        }
        Ok(inherited)
    }

    fn from_systemd(fds: impl Iterator<Item = RawFd>, config: &Config) -> anyhow::Result<Self> {
        let startup = &config.startup;
        let mut inherited = Self::default();
        for fd in fds {
            let socket = adopt_listener(fd)?;
            let addr = socket.local_addr()?;
            if addr == startup.listen {
                inherited.listen.get_or_insert_with(Vec::new).push(socket);
            } else if Some(addr) == startup.tls_listen {
                inherited
                    .tls_listen
                    .get_or_insert_with(Vec::new)
                    .push(socket);
            } else if Some(addr) == startup.admin_listen && inherited.admin_listen.is_none() {
                inherited.admin_listen = Some(socket);
            } else {
                bail!(
                    "systemd passed a socket on {addr} (fd {fd}), which is not `listen` ({}), `tls_listen` ({}) or `admin_listen` ({}) in {}; make the .socket unit's ListenStream= match them",
                    startup.listen,
                    show(startup.tls_listen),
                    show(startup.admin_listen),
                    config.file.display(),
                );
            }
        }
        Ok(inherited)
    }
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "not set".to_owned(), |a| a.to_string())
}

fn adopt_listeners(fds: &[RawFd]) -> anyhow::Result<Vec<TcpListener>> {
    fds.iter().map(|fd| adopt_listener(*fd)).collect()
}

/// `fd` as a listening TCP socket, close-on-exec.
fn adopt_listener(fd: RawFd) -> anyhow::Result<TcpListener> {
    let socket = socket2::Socket::from(adopt(fd)?);
    let listening = socket.is_listener().unwrap_or(false);
    let addr = socket.local_addr().ok().and_then(|a| a.as_socket());
    match addr {
        Some(_) if listening => Ok(socket.into()),
        _ => bail!("inherited descriptor {fd} is not a listening TCP socket"),
    }
}

/// Takes ownership of descriptor `fd`, passed by the parent process,
/// after checking it is open; marks it close-on-exec.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> anyhow::Result<OwnedFd> {
    if fd < 3 {
        bail!("inherited descriptor {fd} is stdin, stdout or stderr");
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; -1 means it is
    // not open, and nothing is taken.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
        bail!("inherited descriptor {fd} is not open");
    }
    // SAFETY: the descriptor is open, was handed to this process by its
    // parent for this purpose (LISTEN_FDS or UPGRADE_FDS_ENV), and is
    // adopted once: each number appears once, and the variable naming it
    // is removed before anything else could read it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let socket = socket2::SockRef::from(&owned);
    socket
        .set_cloexec(true)
        .with_context(|| format!("cannot mark descriptor {fd} close-on-exec"))?;
    Ok(owned)
}
