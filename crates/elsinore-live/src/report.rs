//! What one reload did, for the log, `/routes` and `POST /reload`.

use std::time::{Duration, SystemTime};

use crate::change::Change;
use crate::error::{ReloadError, Warning};

/// What one reload did.
#[derive(Debug)]
pub struct ReloadReport {
    /// When it finished.
    pub at: SystemTime,
    /// What asked for it (`startup`, `file change`, `SIGHUP`, `POST /reload`).
    pub trigger: String,
    /// How long it took, including waiting for replacement handlers.
    pub took: Duration,
    /// Whether a new table was swapped in.
    pub swapped: bool,
    /// One per change (`+ host a.test → alpha`).
    pub changes: Vec<Change>,
    /// What was refused; the previous state of that part keeps serving.
    pub errors: Vec<ReloadError>,
    /// Things applied but worth knowing (skipped folders, conflicts,
    /// settings that need a restart).
    pub warnings: Vec<Warning>,
}

impl ReloadReport {
    /// An empty report of a reload asked for by `trigger`.
    pub fn new(trigger: &str) -> Self {
        Self {
            at: SystemTime::now(),
            trigger: trigger.to_owned(),
            took: Duration::ZERO,
            swapped: false,
            changes: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// No part of the edit was refused.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Whether `other` refused the same things, by their text (a broken
    /// file read again gives equal, not identical, errors).
    pub fn same_errors(&self, other: &Self) -> bool {
        self.errors.len() == other.errors.len()
            && self
                .errors
                .iter()
                .zip(&other.errors)
                .all(|(a, b)| a.to_string() == b.to_string())
    }

    /// Logs it; a `repeated` refusal (same errors as the last reload,
    /// nothing applied) is logged at debug level only, so a broken file
    /// does not flood the log each time something else changes.
    pub fn log(&self, repeated: bool) {
        let trigger = &self.trigger;
        if repeated {
            let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
            tracing::debug!(
                target: crate::LOG_TARGET,
                %trigger, ?errors, "reload: still refused for the same reasons");
            return;
        }
        for change in &self.changes {
            tracing::info!(
                target: crate::LOG_TARGET,
                %trigger, "{change}");
        }
        for warning in &self.warnings {
            tracing::warn!(
                target: crate::LOG_TARGET,
                %trigger, "{warning}");
        }
        for error in &self.errors {
            tracing::error!(
                target: crate::LOG_TARGET,
                %trigger, "reload refused part of the change: {error}");
        }
        if self.changes.is_empty() {
            tracing::debug!(
                target: crate::LOG_TARGET,
                %trigger, took = ?self.took, "reload: nothing changed");
        } else {
            tracing::info!(
                target: crate::LOG_TARGET,
                %trigger,
                took = ?self.took,
                changes = self.changes.len(),
                errors = self.errors.len(),
                "reload applied"
            );
        }
    }
}
