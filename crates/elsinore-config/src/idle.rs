//! When a handler sleeps and when it starts: `idle_stop` (per handler in
//! `project.toml`, with a default in `config.json`) and `start`.

use std::fmt;
use std::time::Duration;

use crate::parse_duration;

/// `idle_stop`: how long a handler may go without a request in flight (or
/// an open upgraded connection or stream) before it is stopped and marked
/// sleeping; the next request starts it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleStop {
    /// `"off"`: the handler runs until it is stopped on purpose.
    #[default]
    Off,
    /// A duration such as `"10m"`.
    After(Duration),
}

impl IdleStop {
    /// `"off"` or a duration (`"300ms"`, `"10m"`); zero is refused (a
    /// handler would be stopped between two requests of one page).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(Self::Off);
        }
        match parse_duration(text) {
            Ok(Duration::ZERO) => Err("must be more than 0, or \"off\"".to_owned()),
            Ok(after) => Ok(Self::After(after)),
            Err(err) => Err(format!("{err}, or \"off\"")),
        }
    }

    /// The idle time after which the handler sleeps, if it ever does.
    pub fn after(self) -> Option<Duration> {
        match self {
            Self::Off => None,
            Self::After(after) => Some(after),
        }
    }
}

impl fmt::Display for IdleStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::After(after) => f.write_str(&crate::format_duration(*after)),
        }
    }
}

/// `start`: whether a handler is started with its project or by its first
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartPolicy {
    /// `"always"`: started when its project is (at start-up, on a reload
    /// that adds it).
    #[default]
    Always,
    /// `"on_demand"`: begins asleep; the first request for it starts it.
    OnDemand,
}

impl StartPolicy {
    /// `"always"` or `"on_demand"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "always" => Ok(Self::Always),
            "on_demand" => Ok(Self::OnDemand),
            other => Err(format!(
                "{other:?} is not a start policy: expected \"always\" or \"on_demand\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stop_parses_off_and_durations() {
        assert_eq!(IdleStop::parse("off"), Ok(IdleStop::Off));
        assert_eq!(
            IdleStop::parse("10m"),
            Ok(IdleStop::After(Duration::from_secs(600)))
        );
        assert_eq!(
            IdleStop::parse("300ms").map(IdleStop::after),
            Ok(Some(Duration::from_millis(300)))
        );
        assert_eq!(
            IdleStop::parse("0s"),
            Err("must be more than 0, or \"off\"".to_owned())
        );
        assert!(IdleStop::parse("never")
            .expect_err("invalid")
            .ends_with(", or \"off\""));
        assert_eq!(IdleStop::After(Duration::from_secs(600)).to_string(), "10m");
    }

    #[test]
    fn start_policy_names_the_choices() {
        assert_eq!(StartPolicy::parse("on_demand"), Ok(StartPolicy::OnDemand));
        assert_eq!(StartPolicy::parse("always"), Ok(StartPolicy::Always));
        assert_eq!(
            StartPolicy::parse("lazy"),
            Err("\"lazy\" is not a start policy: expected \"always\" or \"on_demand\"".to_owned())
        );
    }
}
