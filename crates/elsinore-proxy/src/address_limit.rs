//! `limits.max_connections_per_ip`: open client connections counted per
//! client address, so one address cannot hold every `max_connections` slot
//! (by trickling headers, or keeping idle keep-alives) while others get
//! 503.
//!
//! Counted per IPv4 address, and per IPv6 /64: one IPv6 host commonly has a
//! whole /64 to pick source addresses from. Trusted proxies are not
//! counted (every client behind them shares their address).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per address of one listener (every accept loop of it
/// shares one).
#[derive(Debug)]
pub(crate) struct AddressLimit {
    limit: usize,
    // A plain mutex: taken twice per connection (accept and close), never
    // per request, never across an await.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under its address's limit; given back on drop.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    limits: Arc<AddressLimit>,
    key: IpAddr,
}

impl AddressLimit {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The limit, for the refusal's message.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more connection from `ip`, or `None` when `limit`
    /// are open.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = key_of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            limits: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            // Only addresses with open connections are kept: the table is
            // bounded by `max_connections`.
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What `ip` is counted as: IPv4 (also when seen IPv4-mapped), or its
/// IPv6 /64.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn each_address_has_its_own_limit() {
        let limits = AddressLimit::new(2);
        let a1 = limits.enter(ip("192.0.2.1")).expect("first");
        let _a2 = limits.enter(ip("192.0.2.1")).expect("second");
        assert!(limits.enter(ip("192.0.2.1")).is_none(), "third refused");
        assert!(
            limits.enter(ip("::ffff:192.0.2.1")).is_none(),
            "IPv4-mapped is the same address"
        );
        let _b = limits.enter(ip("192.0.2.2")).expect("another address");
        drop(a1);
        let _a3 = limits
            .enter(ip("192.0.2.1"))
            .expect("a place was given back");
    }

    #[test]
    fn ipv6_counts_per_64_and_the_table_forgets_closed_addresses() {
        let limits = AddressLimit::new(1);
        let one = limits.enter(ip("2001:db8::1")).expect("first");
        assert!(limits.enter(ip("2001:db8::ffff")).is_none(), "same /64");
        let other = limits.enter(ip("2001:db8:0:1::1")).expect("another /64");
        assert_eq!(limits.tracked(), 2);
        drop((one, other));
        assert_eq!(limits.tracked(), 0);
    }
}
