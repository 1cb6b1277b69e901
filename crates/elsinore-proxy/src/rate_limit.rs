//! `rate_limits`: token buckets per client address, per host and per
//! project, checked once a request's project is known.
//!
//! Hand-written rather than `governor`: the limits change on every reload
//! (the rate is read from the route table at each check, so a bucket
//! follows its new rate at once), the 429 needs the seconds to wait and
//! the `RateLimit` headers need the tokens left, and the tables must be
//! bounded with idle buckets evicted; a bucket is two numbers under a
//! short `Mutex` (one per scope, never held across an await).

use std::borrow::Borrow;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use elsinore_config::{Rate, RateLimits, RateScope};

/// Buckets kept per scope at most (client addresses for `per_ip`; hosts,
/// which wildcard folders make unbounded, for `per_host`). When a table
/// is full, buckets that have refilled (idle clients) are dropped, at most
/// once a second; if none have, an arbitrary one is.
pub const MAX_BUCKETS: usize = 100_000;

/// How often a full table is swept for idle buckets at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate it was last checked with, so a sweep can tell it is full.
    per_second: f64,
    burst: f64,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: now,
            per_second: rate.per_second(),
            burst: f64::from(rate.burst),
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        self.per_second = rate.per_second();
        self.burst = f64::from(rate.burst);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.burst
    }

    /// Takes one token: the whole tokens left, or the seconds until one is
    /// back.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<Quota, u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(Quota {
                rate,
                remaining: self.tokens as u32,
                reset: seconds_up((self.burst - self.tokens) / self.per_second),
            })
        } else {
            Err(seconds_up((1.0 - self.tokens) / self.per_second).max(1))
        }
    }
}

fn seconds_up(seconds: f64) -> u64 {
    seconds.max(0.0).ceil() as u64
}

/// One scope's buckets, bounded by [`MAX_BUCKETS`].
#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            last_sweep: None,
            cap,
        }
    }

    fn take<Q>(
        &mut self,
        key: &Q,
        owned: impl FnOnce() -> K,
        rate: Rate,
        now: Instant,
    ) -> Result<Quota, u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(bucket) = self.map.get_mut(key) {
            return bucket.take(rate, now);
        }
        if self.map.len() >= self.cap {
            self.make_room(now);
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(rate, now);
        self.map.insert(owned(), bucket);
        taken
    }

    fn make_room(&mut self, now: Instant) {
        let due = self
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY);
        if due {
            self.last_sweep = Some(now);
            // A full bucket is one the client could not tell from a new one.
            self.map.retain(|_, bucket| !bucket.is_full(now));
        }
        while self.map.len() >= self.cap {
            // Only reached when more than `cap` are busy at once (a spread
            // attack): the evicted client starts again with a full bucket.
            let Some(key) = self.map.keys().next().cloned() else {
                break;
            };
            self.map.remove(&key);
        }
    }
}

/// What a request may still do in one scope after it was let through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quota {
    /// The scope's limit.
    pub(crate) rate: Rate,
    /// Whole requests left now.
    pub(crate) remaining: u32,
    /// Seconds until the bucket is full again.
    pub(crate) reset: u64,
}

/// A request refused by one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) scope: RateScope,
    pub(crate) rate: Rate,
    /// Seconds until a request would be let through, at least 1.
    pub(crate) retry_after: u64,
}

/// The tightest scope a request passed, for its `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Passed {
    pub(crate) scope: RateScope,
    pub(crate) quota: Quota,
}

/// Every project's buckets; one per proxy.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Keyed by (address or IPv6 /64, project): a project's own `per_ip`
    /// does not count another project's requests.
    per_ip: Mutex<Buckets<(IpAddr, u64)>>,
    per_host: Mutex<Buckets<String>>,
    per_project: Mutex<Buckets<String>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_cap(MAX_BUCKETS)
    }
}

impl RateLimiter {
    fn with_cap(cap: usize) -> Self {
        Self {
            per_ip: Mutex::new(Buckets::new(cap)),
            per_host: Mutex::new(Buckets::new(cap)),
            per_project: Mutex::new(Buckets::new(cap)),
        }
    }

    /// Takes a token in each scope `limits` sets, narrowest first; the
    /// first scope without one refuses (and the wider ones are not
    /// charged). `Ok(None)` when nothing is limited.
    pub(crate) fn check(
        &self,
        limits: &RateLimits,
        project: &str,
        host: &str,
        client: IpAddr,
        now: Instant,
    ) -> Result<Option<Passed>, Limited> {
        let mut tightest: Option<Passed> = None;
        for scope in RateScope::ALL {
            let Some(rate) = limits.get(scope) else {
                continue;
            };
            let taken = match scope {
                RateScope::PerIp => {
                    let key = (address_key(client), project_id(project));
                    lock(&self.per_ip).take(&key, || key, rate, now)
                }
                RateScope::PerHost => {
                    lock(&self.per_host).take(host, || host.to_owned(), rate, now)
                }
                RateScope::PerProject => {
                    lock(&self.per_project).take(project, || project.to_owned(), rate, now)
                }
            };
            match taken {
                Ok(quota) => {
                    if tightest.is_none_or(|t| quota.remaining < t.quota.remaining) {
                        tightest = Some(Passed { scope, quota });
                    }
                }
                Err(retry_after) => {
                    return Err(Limited {
                        scope,
                        rate,
                        retry_after,
                    })
                }
            }
        }
        Ok(tightest)
    }

    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        lock(&self.per_ip).map.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves a bucket valid, so a poisoned lock is usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What `ip` is counted as: IPv4 (also when seen IPv4-mapped), or its
/// IPv6 /64 (one host picks its addresses from a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

/// A fixed hash of the project name, so the per-address key needs no
/// allocation per request; a collision (2^-64) would only share buckets.
fn project_id(project: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    project.hash(&mut hasher);
    hasher.finish()
}

/// `RateLimit` for the scope a request is closest to exhausting:
/// `"per_ip";r=3;t=1`.
pub(crate) fn remaining_header(scope: &str, remaining: u32, reset: u64) -> String {
    format!("\"{scope}\";r={remaining};t={reset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(count: u32, burst: u32) -> Rate {
        Rate {
            count,
            window: Duration::from_secs(1),
            burst,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn a_burst_passes_then_the_next_waits_for_a_token() {
        let limiter = RateLimiter::default();
        let limits = RateLimits {
            per_ip: Some(per_second(1, 3)),
            ..RateLimits::default()
        };
        let now = Instant::now();
        let client = ip("192.0.2.1");
        for left in [2, 1, 0] {
            let passed = limiter
                .check(&limits, "p", "a.test", client, now)
                .expect("within the burst")
                .expect("limited scope");
            assert_eq!(passed.quota.remaining, left);
        }
        let limited = limiter
            .check(&limits, "p", "a.test", client, now)
            .expect_err("over the burst");
        assert_eq!(limited.scope, RateScope::PerIp);
        assert_eq!(limited.retry_after, 1);
        // Another address, and the same address on another project, have
        // their own buckets.
        assert!(limiter
            .check(&limits, "p", "a.test", ip("192.0.2.2"), now)
            .is_ok());
        assert!(limiter.check(&limits, "q", "a.test", client, now).is_ok());
        // One token back after a second.
        let later = now + Duration::from_secs(1);
        assert!(limiter.check(&limits, "p", "a.test", client, later).is_ok());
        assert!(limiter
            .check(&limits, "p", "a.test", client, later)
            .is_err());
    }

    #[test]
    fn a_per_minute_rate_asks_to_wait_the_seconds_to_a_token() {
        let limiter = RateLimiter::default();
        let limits = RateLimits {
            per_host: Some(Rate {
                count: 6,
                window: Duration::from_secs(60),
                burst: 1,
            }),
            ..RateLimits::default()
        };
        let now = Instant::now();
        assert!(limiter
            .check(&limits, "p", "a.test", ip("192.0.2.1"), now)
            .is_ok());
        let limited = limiter
            .check(&limits, "p", "a.test", ip("192.0.2.9"), now)
            .expect_err("one host's bucket");
        assert_eq!(
            (limited.scope, limited.retry_after),
            (RateScope::PerHost, 10)
        );
        assert!(limiter
            .check(&limits, "p", "b.test", ip("192.0.2.1"), now)
            .is_ok());
    }

    #[test]
    fn the_address_table_is_bounded_and_forgets_idle_clients() {
        let limiter = RateLimiter::with_cap(4);
        let limits = RateLimits {
            per_ip: Some(per_second(1, 2)),
            ..RateLimits::default()
        };
        let now = Instant::now();
        for n in 0..20u8 {
            let _ = limiter.check(&limits, "p", "a.test", IpAddr::from([192, 0, 2, n]), now);
            assert!(limiter.tracked_addresses() <= 4);
        }
        // Two seconds later every bucket has refilled: all are swept.
        let later = now + Duration::from_secs(2);
        let _ = limiter.check(&limits, "p", "a.test", ip("198.51.100.1"), later);
        assert_eq!(limiter.tracked_addresses(), 1);
    }

    #[test]
    fn headers_follow_the_draft() {
        let limits = RateLimits {
            per_ip: Some(per_second(10, 20)),
            per_project: Some(Rate {
                count: 600,
                window: Duration::from_secs(60),
                burst: 600,
            }),
            ..RateLimits::default()
        };
        assert_eq!(
            limits.policy(),
            "\"per_ip\";q=10;w=1, \"per_project\";q=600;w=60"
        );
        assert_eq!(remaining_header("per_ip", 0, 1), "\"per_ip\";r=0;t=1");
    }
}
