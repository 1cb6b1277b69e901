//! Free loopback ports for handlers, held until the handler is gone.
//!
//! A port is found by binding port 0 and, on Linux, stays bound by that
//! socket (a *placeholder*: `SO_REUSEADDR`, never listening) for as long
//! as its handler exists. The kernel then never hands the port to anyone
//! else: not to another program's (or another Elsinore's) bind of port 0,
//! not as the local port of an outgoing connection. Yet the handler, which
//! binds the port it was told with `SO_REUSEADDR` as servers do (Python's
//! http.server, Node, Go, Rust's std and tokio, ...), can bind it and
//! listen, again after every restart.
//!
//! Releasing the port between finding it and the handler binding it, as
//! before, left a window in which something else could take it: the
//! handler then failed to bind, and a readiness probe could be answered by
//! whatever else listened there, sending one project's requests to another
//! program.
//!
//! A handler that binds without `SO_REUSEADDR` cannot bind next to the
//! placeholder; when a handler exits before it ever became ready, the
//! supervisor drops the placeholder ([`stop_holding`]) and the next start
//! binds the port the old way.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;
use tokio::net::TcpSocket;

/// Ports handed out by this process, with the placeholder holding each (if
/// still held), so two handlers never get the same one even when the
/// kernel offers a released port twice.
static RESERVED: Mutex<Option<HashMap<u16, Option<TcpSocket>>>> = Mutex::new(None);

/// Finds a free port on 127.0.0.1 for a handler and holds it (see the
/// module). Returns the address and the same as a URI authority.
pub(crate) fn reserve_port() -> std::io::Result<(SocketAddr, Authority)> {
    for _ in 0..64 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = socket.local_addr()?;
        // Held only where the kernel's rules above hold: BSD kernels would
        // refuse the handler's bind next to it.
        let placeholder = cfg!(target_os = "linux").then_some(socket);
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        let reserved = reserved.get_or_insert_with(HashMap::new);
        if let Entry::Vacant(entry) = reserved.entry(addr.port()) {
            entry.insert(placeholder);
            let authority = Authority::try_from(addr.to_string()).map_err(std::io::Error::other)?;
            return Ok((addr, authority));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "kernel kept offering ports already given to other handlers",
    ))
}

/// Connections a passed socket (`listen_fd = true`) queues while its
/// handler sleeps or starts.
const PASSED_BACKLOG: u32 = 1024;

/// Binds and listens on a free port on 127.0.0.1 for a `listen_fd = true`
/// handler, whose processes get this very socket: it stays Elsinore's
/// (and the port reserved) for as long as the handler exists, across
/// restarts and sleeps, so connections made while no process runs wait
/// in its backlog instead of being refused. Left blocking: the handler
/// shares its file status flags.
pub(crate) fn reserve_listener() -> std::io::Result<(std::net::TcpListener, Authority)> {
    for _ in 0..64 {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let listener = socket.listen(PASSED_BACKLOG)?.into_std()?;
        listener.set_nonblocking(false)?;
        let addr = listener.local_addr()?;
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        let reserved = reserved.get_or_insert_with(HashMap::new);
        if let Entry::Vacant(entry) = reserved.entry(addr.port()) {
            // The listener itself holds the port: no placeholder.
            entry.insert(None);
            let authority = Authority::try_from(addr.to_string()).map_err(std::io::Error::other)?;
            return Ok((listener, authority));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "kernel kept offering ports already given to other handlers",
    ))
}

/// Listens on a sleeping handler's port until dropped. The placeholder
/// (not listening) keeps other programs' binds without `SO_REUSEADDR`
/// away; a listening socket also keeps away those with it, which
/// could otherwise listen there for as long as the handler sleeps and
/// answer its next wake. `None` (logged) when that fails: someone already
/// listens there, and the handler's start will say so.
pub(crate) fn hold_listening(addr: SocketAddr) -> Option<std::net::TcpListener> {
    let hold = || -> std::io::Result<std::net::TcpListener> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // Nothing should connect while the handler sleeps: the smallest
        // queue.
        socket.listen(1)?.into_std()
    };
    match hold() {
        Ok(listener) => Some(listener),
        Err(err) => {
            tracing::warn!(%addr, %err, "cannot hold a sleeping handler's port: another process may listen on it");
            None
        }
    }
}

/// Lets go of the port's placeholder but keeps the port reserved: for a
/// handler that exited before it ever listened, which may be one that
/// cannot bind next to it.
pub(crate) fn stop_holding(port: u16) {
    let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(placeholder) = reserved.as_mut().and_then(|set| set.get_mut(&port)) {
        *placeholder = None;
    }
}

/// Gives a port back when its handler is gone for good.
pub(crate) fn release_port(port: u16) {
    let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(set) = reserved.as_mut() {
        set.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ports_are_distinct_until_released() {
        let ports: Vec<u16> = (0..50)
            .map(|_| reserve_port().expect("port").0.port())
            .collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        for port in ports {
            release_port(port);
        }
    }

    /// A bind without SO_REUSEADDR does not get the port; what the
    /// handler does, bind with it (as std does) and listen, works, twice as
    /// after a restart.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_held_port_is_the_handlers_alone() {
        let (addr, _) = reserve_port().expect("port");
        // First, while no connection has left the port in TIME_WAIT (which
        // would refuse such a bind anyway).
        let other = TcpSocket::new_v4().expect("socket");
        other.set_reuseaddr(false).expect("no SO_REUSEADDR");
        assert!(
            other.bind(addr).is_err(),
            "a bind without SO_REUSEADDR took the held port"
        );
        for _ in 0..2 {
            let listener = std::net::TcpListener::bind(addr).expect("the handler binds its port");
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (served, _) = listener.accept().expect("accept");
            assert_eq!(served.peer_addr().ok(), client.local_addr().ok());
        }
        release_port(addr.port());

        // Without the placeholder (on a port no connection used, so none
        // is in TIME_WAIT) the port is free for anyone again.
        let (addr, _) = reserve_port().expect("port");
        stop_holding(addr.port());
        let other = TcpSocket::new_v4().expect("socket");
        other.set_reuseaddr(false).expect("no SO_REUSEADDR");
        other.bind(addr).expect("free once no longer held");
        release_port(addr.port());
    }
}
