//! Ports for servers that must be told theirs in advance (Pebble, its
//! DNS, PostgreSQL, the ACME front doors whose ports the CA must know).
//!
//! Chosen below the kernel's ephemeral range (32768-60999 by default):
//! a port from a `:0` bind is in that range, and between releasing it and
//! the server binding it, any outgoing connection of a test running
//! beside it could take it as its local port (seen: "Address already in
//! use" for an Elsinore listener in tests/acme.rs). Below the range only
//! another test's choice can collide, and a port is checked free first.

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

const LOW: u32 = 20_000;
const HIGH: u32 = 32_000;

/// A pseudo-random port in [LOW, HIGH): time, pid and a counter mixed, so
/// test binaries started together pick differently.
fn candidate() -> u16 {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut x = nanos
        ^ std::process::id().rotate_left(16)
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
    // xorshift: spreads neighbouring seeds over the range.
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    (LOW + x % (HIGH - LOW)) as u16
}

/// Whether `port` has not been handed out before in this test binary,
/// marking it handed out. A port is only free until its server binds it:
/// two tests running side by side could otherwise be given the same one
/// before either binds (seen: "Address already in use" for an Elsinore
/// listener in tests/acme.rs, inside one binary).
fn first_time(port: u16) -> bool {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    GIVEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(port)
}

/// A TCP port on 127.0.0.1 free now, outside the ephemeral range, never
/// given to another test of this binary.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = candidate();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && first_time(port) {
            return port;
        }
    }
    panic!("no free loopback TCP port between {LOW} and {HIGH}");
}

/// A UDP port on 127.0.0.1 free now, outside the ephemeral range, never
/// given to another test of this binary.
pub fn free_udp_port() -> u16 {
    for _ in 0..1000 {
        let port = candidate();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && first_time(port) {
            return port;
        }
    }
    panic!("no free loopback UDP port between {LOW} and {HIGH}");
}
