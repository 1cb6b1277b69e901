//! Throttling of failed key checks per client address, in a small,
//! bounded, in-memory table. One per proxy, shared by the admin API (401s)
//! and proxied requests presenting a project or host key that opens
//! nothing, so guesses count in one window whichever path they take.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed key checks allowed from one address within [`WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window that starts with an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond it the oldest window is forgotten.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// Counts failures per address; once an address has [`MAX_FAILURES`] in
/// its window, every request from it is refused until the window ends.
#[derive(Debug, Default)]
pub struct Throttle {
    // A plain mutex: held for a map lookup, never across an await.
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// `Err(seconds)` while `ip` must wait.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(&ip) {
            Some(f) if f.count >= MAX_FAILURES => {
                let left = (f.since + WINDOW).saturating_duration_since(now);
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs_f64().ceil() as u64)
                }
            }
            _ => Ok(()),
        }
    }

    /// Records one failed key check from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if !failures.contains_key(&ip) && failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| now.saturating_duration_since(f.since) < WINDOW);
            if failures.len() >= MAX_TRACKED {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, f)| f.since)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.saturating_duration_since(entry.since) >= WINDOW {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let throttle = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.record_failure(ip, start);
        }
        assert_eq!(throttle.check(ip, start), Ok(()));
        throttle.record_failure(ip, start);
        assert_eq!(throttle.check(ip, start), Err(60));
        assert_eq!(
            throttle.check(ip, start + Duration::from_millis(59_500)),
            Err(1)
        );
        assert_eq!(throttle.check(other, start), Ok(()), "per address");
        let later = start + WINDOW;
        assert_eq!(throttle.check(ip, later), Ok(()));
        throttle.record_failure(ip, later);
        assert_eq!(throttle.check(ip, later), Ok(()), "a new window");
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            throttle.record_failure(IpAddr::from(i.to_be_bytes()), now);
        }
        assert_eq!(throttle.tracked(), MAX_TRACKED);
    }
}
