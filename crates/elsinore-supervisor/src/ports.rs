//! Free loopback ports for handlers.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;

/// Ports handed out by this process, so two handlers never get the same
/// one even when the kernel offers a recently released port twice.
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Asks the kernel for a free port on 127.0.0.1 and releases it for the
/// handler to bind. Another process could take it in between; that shows up
/// as a handler failing to bind and being restarted with backoff on the same
/// port. Returns the address and the same as a URI authority.
pub(crate) fn reserve_port() -> std::io::Result<(SocketAddr, Authority)> {
    for _ in 0..64 {
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let mut reserved = RESERVED.lock().unwrap_or_else(PoisonError::into_inner);
        if reserved
            .get_or_insert_with(HashSet::new)
            .insert(addr.port())
        {
            let authority = Authority::try_from(addr.to_string()).map_err(std::io::Error::other)?;
            return Ok((addr, authority));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "kernel kept offering ports already given to other handlers",
    ))
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
}
