//! When to order: renewal times, the backoff after failures and the
//! `rate` of new orders.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use elsinore_tls::LoadedCert;

/// The window `acme.rate` counts orders in.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// The first retry after a failure; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// Retries never wait longer than this.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// When `cert` is renewed: `renew_before` its `notAfter`, by default a
/// third of its lifetime before; never before half its lifetime has
/// passed, so a `renew_before` longer than the CA's lifetimes cannot make
/// every new certificate due at once (an order loop).
pub(crate) fn renew_at(cert: &LoadedCert, renew_before: Option<Duration>) -> SystemTime {
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .unwrap_or_default();
    let before = renew_before.unwrap_or(lifetime / 3);
    let wanted = cert
        .not_after
        .checked_sub(before)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    wanted.max(cert.not_before + lifetime / 2)
}

/// The wait after the `failures`-th failure in a row: 1 min, 2, 4, … up
/// to 6 h, so a name the CA refuses never becomes a loop.
pub(crate) fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// At most `per_minute` orders in any 60 seconds, across all names.
#[derive(Debug)]
pub(crate) struct OrderRate {
    per_minute: usize,
    recent: VecDeque<Instant>,
}

impl OrderRate {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute as usize,
            recent: VecDeque::new(),
        }
    }

    /// Counts one order at `now` if the window allows it.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn the_rate_counts_a_sliding_minute() {
        let mut rate = OrderRate::new(2);
        let start = Instant::now();
        assert!(rate.try_take(start));
        assert!(rate.try_take(start));
        assert!(!rate.try_take(start + Duration::from_secs(59)));
        assert!(rate.try_take(start + Duration::from_secs(60)));
    }
}
