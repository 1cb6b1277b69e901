//! `rate_limits` in `config.json` (global defaults) and in a project entry
//! (its overrides): request rates per client address, per host and per
//! project, as token buckets `{ "rate": "<n>/s" | "<n>/m", "burst": <n> }`.

use std::time::Duration;

use serde::Deserialize;

use crate::error::Problem;

/// One limit: `count` requests per `window` on average, up to `burst` at
/// once (a token bucket holding `burst` tokens, refilled at
/// `count / window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per window.
    pub count: u32,
    /// One second (`/s`) or one minute (`/m`).
    pub window: Duration,
    /// Requests allowed at once after a quiet spell (the bucket's size).
    pub burst: u32,
}

impl Rate {
    /// Tokens the bucket gains per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.window.as_secs_f64()
    }
}

/// Which of a project's requests a limit counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateScope {
    /// One client address (an IPv4 address or an IPv6 /64), per project.
    PerIp,
    /// One host name (a tenant).
    PerHost,
    /// The whole project.
    PerProject,
}

impl RateScope {
    /// Every scope, in the order a request is checked against them: the
    /// narrowest first, so one client's flood is refused before it drains
    /// its host's or project's tokens.
    pub const ALL: [Self; 3] = [Self::PerIp, Self::PerHost, Self::PerProject];

    /// The config key, which is also the policy name in `RateLimit`
    /// headers, the metric label and the access log's `limited=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerIp => "per_ip",
            Self::PerHost => "per_host",
            Self::PerProject => "per_project",
        }
    }
}

/// The limits that apply to one project: its own where it sets them, else
/// the global `rate_limits`. `None`: not limited in that scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// `per_ip`.
    pub per_ip: Option<Rate>,
    /// `per_host`.
    pub per_host: Option<Rate>,
    /// `per_project`.
    pub per_project: Option<Rate>,
}

impl RateLimits {
    /// The limit of `scope`, if any.
    pub fn get(&self, scope: RateScope) -> Option<Rate> {
        match scope {
            RateScope::PerIp => self.per_ip,
            RateScope::PerHost => self.per_host,
            RateScope::PerProject => self.per_project,
        }
    }

    /// Whether no scope is limited (the common case: nothing to check).
    pub fn is_empty(&self) -> bool {
        self.per_ip.is_none() && self.per_host.is_none() && self.per_project.is_none()
    }

    /// The `RateLimit-Policy` header value (IETF httpapi ratelimit-headers
    /// draft) naming every scope set: `"per_ip";q=10;w=1, "per_host";q=600;w=60`
    /// (`q`: requests per window, `w`: the window in seconds).
    pub fn policy(&self) -> String {
        let mut out = String::new();
        for scope in RateScope::ALL {
            if let Some(rate) = self.get(scope) {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(&format!(
                    "\"{}\";q={};w={}",
                    scope.as_str(),
                    rate.count,
                    rate.window.as_secs()
                ));
            }
        }
        out
    }

    /// `own` scope by scope, falling back to `self` (the global defaults).
    pub fn overridden_by(&self, own: &Self) -> Self {
        Self {
            per_ip: own.per_ip.or(self.per_ip),
            per_host: own.per_host.or(self.per_host),
            per_project: own.per_project.or(self.per_project),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimits {
    per_ip: Option<RawRate>,
    per_host: Option<RawRate>,
    per_project: Option<RawRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    rate: String,
    burst: Option<u64>,
}

/// Validates `rate_limits` found at `field` (`rate_limits` or
/// `projects[i].rate_limits`).
pub(crate) fn validate_rate_limits(
    raw: Option<RawRateLimits>,
    field: &str,
    problems: &mut Vec<Problem>,
) -> RateLimits {
    let Some(raw) = raw else {
        return RateLimits::default();
    };
    let mut one = |raw: Option<RawRate>, scope: RateScope| {
        raw.and_then(|raw| validate_rate(raw, &format!("{field}.{}", scope.as_str()), problems))
    };
    RateLimits {
        per_ip: one(raw.per_ip, RateScope::PerIp),
        per_host: one(raw.per_host, RateScope::PerHost),
        per_project: one(raw.per_project, RateScope::PerProject),
    }
}

fn validate_rate(raw: RawRate, field: &str, problems: &mut Vec<Problem>) -> Option<Rate> {
    let parsed = parse_rate(&raw.rate);
    if parsed.is_none() {
        problems.push(Problem::field(
            format!("{field}.rate"),
            format!(
                "{:?} is not a rate: expected a whole number of requests per second or per minute, at least 1, such as \"10/s\" or \"600/m\"",
                raw.rate
            ),
        ));
    }
    let burst = match raw.burst {
        Some(0) => {
            problems.push(Problem::field(
                format!("{field}.burst"),
                "must be at least 1 (leave it out for one window's worth of requests)",
            ));
            None
        }
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        None => parsed.map(|(count, _)| count),
    };
    let (count, window) = parsed?;
    Some(Rate {
        count,
        window,
        burst: burst?,
    })
}

/// `"<n>/s"` or `"<n>/m"`, n at least 1.
fn parse_rate(text: &str) -> Option<(u32, Duration)> {
    let (count, unit) = text.trim().split_once('/')?;
    let window = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return None,
    };
    let count = count.trim();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match count.parse::<u32>() {
        Ok(0) | Err(_) => None,
        Ok(count) => Some((count, window)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawRateLimits {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn rates_per_second_and_minute_with_a_default_burst() {
        let mut problems = Vec::new();
        let limits = validate_rate_limits(
            Some(raw(
                r#"{"per_ip": {"rate": "10/s", "burst": 20}, "per_project": {"rate": "600/m"}}"#,
            )),
            "rate_limits",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            limits.per_ip,
            Some(Rate {
                count: 10,
                window: Duration::from_secs(1),
                burst: 20
            })
        );
        assert_eq!(limits.per_host, None);
        let project = limits.per_project.expect("per_project");
        assert_eq!(project.burst, 600, "one window's worth by default");
        assert!((project.per_second() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn bad_rates_and_bursts_name_their_field() {
        let mut problems = Vec::new();
        validate_rate_limits(
            Some(raw(
                r#"{"per_ip": {"rate": "10/h"}, "per_host": {"rate": "0/s"}, "per_project": {"rate": "5/s", "burst": 0}}"#,
            )),
            "projects[2].rate_limits",
            &mut problems,
        );
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "projects[2].rate_limits.per_ip.rate",
                "projects[2].rate_limits.per_host.rate",
                "projects[2].rate_limits.per_project.burst"
            ]
        );
    }

    #[test]
    fn a_project_overrides_scope_by_scope() {
        let rate = |count| Rate {
            count,
            window: Duration::from_secs(1),
            burst: count,
        };
        let global = RateLimits {
            per_ip: Some(rate(1)),
            per_host: Some(rate(2)),
            per_project: None,
        };
        let own = RateLimits {
            per_ip: Some(rate(5)),
            ..RateLimits::default()
        };
        assert_eq!(
            global.overridden_by(&own),
            RateLimits {
                per_ip: Some(rate(5)),
                per_host: Some(rate(2)),
                per_project: None,
            }
        );
    }
}
