//! The listening sockets of the request threads, one per thread: the
//! plain-HTTP listener's, and the HTTPS listener's (see
//! [`crate::serve_threads`]).
//!
//! Request threads used to share one socket (a descriptor copy each in its
//! own reactor). Every new connection then woke every thread, one won the
//! accept and the others got `EAGAIN`, and a burst of connections mostly
//! went to whichever thread woke first: under wrk at c=64 one thread
//! served most connections while the other idled, and at c=1 a new
//! connection waited about 30 µs longer than on one thread. With one
//! socket per thread in a Linux `SO_REUSEPORT` group (what nginx's
//! `reuseport` does), the kernel hands each connection to one socket by a
//! hash of its addresses: one wake-up, and an even spread.
//!
//! `SO_REUSEPORT` would also let another process of the same user join
//! the group and silently take a share of the connections (a second
//! Elsinore started by mistake). So the address is first claimed by a
//! plain bind, which fails with "address in use" if anything holds it,
//! and the group is only bound once that one is closed.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Backlog of each socket (what tokio's `TcpListener::bind` uses).
const BACKLOG: i32 = 1024;

/// Listening sockets on one address, one per request thread where the
/// system spreads connections over several (Linux), else one shared by
/// all of them.
#[derive(Debug)]
pub struct ThreadListeners {
    addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

impl ThreadListeners {
    /// Listens on `addr` (port 0 picks one) for `threads` request
    /// threads. Fails as a plain bind would if the address is taken.
    pub fn bind(addr: SocketAddr, threads: usize) -> io::Result<Self> {
        let claim = socket_for(addr)?;
        claim.bind(&addr.into())?;
        let addr = claim
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
        if threads <= 1 || !cfg!(target_os = "linux") {
            claim.listen(BACKLOG)?;
            claim.set_nonblocking(true)?;
            return Ok(Self {
                addr,
                sockets: vec![claim.into()],
            });
        }
        // The claim never listened, so no client can have queued on it.
        drop(claim);
        let sockets = (0..threads)
            .map(|_| group_member(addr))
            .collect::<io::Result<_>>()?;
        Ok(Self { addr, sockets })
    }

    /// Sockets already listening on one address, bound by someone else:
    /// systemd (socket activation) or the process an upgrade replaces
    /// (each of its per-thread sockets).
    pub fn from_sockets(sockets: Vec<std::net::TcpListener>) -> io::Result<Self> {
        let first = sockets
            .first()
            .ok_or_else(|| io::Error::other("no listening socket"))?;
        let addr = first.local_addr()?;
        for socket in &sockets {
            socket.set_nonblocking(true)?;
        }
        Ok(Self { addr, sockets })
    }

    /// Descriptor copies of every socket, for an upgrade to hand over:
    /// the same sockets, so connections queued on them are not lost.
    pub fn try_clone_sockets(&self) -> io::Result<Vec<std::net::TcpListener>> {
        self.sockets
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect()
    }

    /// The address listened on (with the port picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// One socket to accept on from the calling runtime, the others (if
    /// any) closed.
    pub fn into_listener(self) -> io::Result<tokio::net::TcpListener> {
        let socket = self
            .into_per_thread(1)?
            .pop()
            .ok_or_else(|| io::Error::other("no listening socket"))?;
        tokio::net::TcpListener::from_std(socket)
    }

    /// The socket for each of `threads` request threads, in order: its own
    /// where [`ThreadListeners::bind`] made one per thread, else a
    /// descriptor of the shared one.
    pub fn into_per_thread(self, threads: usize) -> io::Result<Vec<std::net::TcpListener>> {
        let mut sockets = self.sockets;
        while sockets.len() < threads {
            let copy = sockets[0].try_clone()?;
            sockets.push(copy);
        }
        // More sockets than threads would leave a share of the
        // connections queued where nobody accepts: close them.
        sockets.truncate(threads.max(1));
        Ok(sockets)
    }
}

fn socket_for(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std's and tokio's binds do on Unix: a restart must not wait for
    // the previous run's connections in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// One socket of the `SO_REUSEPORT` group on `addr`, listening.
fn group_member(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr)?;
    #[cfg(target_os = "linux")]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().expect("address")
    }

    #[test]
    fn an_address_in_use_is_refused_even_by_a_reuse_port_group() {
        let first = ThreadListeners::bind(loopback(), 2).expect("first bind");
        let err = ThreadListeners::bind(first.local_addr(), 2).expect_err("second bind");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let plain = std::net::TcpListener::bind(loopback()).expect("plain bind");
        let addr = plain.local_addr().expect("address");
        let err = ThreadListeners::bind(addr, 2).expect_err("bind over a plain listener");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn every_thread_gets_a_socket_that_accepts_on_the_one_address() {
        let listeners = ThreadListeners::bind(loopback(), 3).expect("bind");
        let addr = listeners.local_addr();
        assert_ne!(addr.port(), 0);
        let sockets = listeners.into_per_thread(3).expect("per thread");
        assert_eq!(sockets.len(), 3);
        for socket in &sockets {
            assert_eq!(socket.local_addr().expect("address"), addr);
        }
        // Connections land on one socket or another; each is accepted by
        // one of them.
        let mut clients: Vec<_> = (0..8)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut accepted = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accepted < clients.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "only {accepted} of {} connections were accepted",
                clients.len()
            );
            for socket in &sockets {
                while let Ok((mut stream, _)) = socket.accept() {
                    stream.set_nonblocking(false).expect("blocking");
                    stream.write_all(b"x").expect("write");
                    accepted += 1;
                }
            }
            std::thread::yield_now();
        }
        for client in &mut clients {
            let mut byte = [0u8; 1];
            client
                .read_exact(&mut byte)
                .expect("each client hears back");
        }
    }
}
