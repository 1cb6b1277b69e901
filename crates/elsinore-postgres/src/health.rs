//! Whether this front door reaches its PostgreSQL state database, as last
//! seen by a thread that follows it: the key ring's refresh
//! (`elsinore-store`) and ACME's certificate refresh (`elsinore-acme`)
//! each keep one.
//!
//! Read by `/readyz`, `/routes` and the status page: a front door that
//! lost the state database keeps serving with what it holds, and says so
//! there.

use std::sync::Mutex;
use std::time::SystemTime;

/// Reachability of the state database, shared between the refresh thread
/// (which writes it) and the operator endpoints (which read it).
#[derive(Debug, Default)]
pub struct StateHealth {
    unreachable: Mutex<Option<Unreachable>>,
}

#[derive(Debug, Clone)]
struct Unreachable {
    since: SystemTime,
    reason: String,
}

impl StateHealth {
    /// Reachable, as far as anyone knows yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The database answered; returns whether it had been unreachable.
    pub fn reachable(&self) -> bool {
        self.lock().take().is_some()
    }

    /// The database did not answer; the first failure's time is kept.
    pub fn unreachable(&self, reason: &str) {
        let mut state = self.lock();
        match state.as_mut() {
            Some(known) => known.reason = reason.to_owned(),
            None => {
                *state = Some(Unreachable {
                    since: SystemTime::now(),
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// `None` while reachable, else since when (and the last reason).
    pub fn unreachable_since(&self) -> Option<(SystemTime, String)> {
        self.lock().as_ref().map(|u| (u.since, u.reason.clone()))
    }

    /// What `/readyz` and the status page show: `reachable`, or
    /// `unreachable since <RFC 3339>: <reason>`.
    pub fn describe(&self) -> String {
        match self.unreachable_since() {
            None => "reachable".to_owned(),
            Some((since, reason)) => {
                format!("unreachable since {}: {reason}", humantime_rfc3339(since))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Unreachable>> {
        // Plain data: a panic while holding it leaves a valid value.
        self.unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `2026-12-03T18:20:00Z`, without pulling in a date crate.
fn humantime_rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_failure_time_and_clears() {
        let health = StateHealth::new();
        assert_eq!(health.describe(), "reachable");
        health.unreachable("connection refused");
        let (first, _) = health.unreachable_since().expect("unreachable");
        health.unreachable("still refused");
        let (again, reason) = health.unreachable_since().expect("unreachable");
        assert_eq!(first, again);
        assert_eq!(reason, "still refused");
        assert!(health.describe().starts_with("unreachable since 20"));
        assert!(health.reachable());
        assert!(!health.reachable());
    }

    #[test]
    fn formats_utc() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_322_000);
        assert_eq!(humantime_rfc3339(at), "2026-12-03T18:20:00Z");
    }
}
