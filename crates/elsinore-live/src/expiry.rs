//! The daily certificate expiry check over the live table's certificates.

use std::time::{Duration, SystemTime};

use crate::live::Live;

const ONE_DAY: Duration = Duration::from_secs(86_400);

/// The target these warnings had when this was the binary's `tls` module,
/// so `RUST_LOG=elsinore::tls=…` still selects them.
const EXPIRY_LOG_TARGET: &str = "elsinore::tls";

impl Live {
    /// Logs every served certificate that expires within
    /// [`elsinore_tls::EXPIRY_WARNING_DAYS`] once a day, on the current
    /// runtime. (Loading a certificate warns at once, at startup and on
    /// every reload, so the first look is a day from now.)
    pub fn spawn_expiry_warnings(&self) {
        let table = self.table();
        tokio::spawn(async move {
            let mut every_day =
                tokio::time::interval_at(tokio::time::Instant::now() + ONE_DAY, ONE_DAY);
            loop {
                every_day.tick().await;
                let certs = table.load().certs.clone();
                for warning in certs.expiry_warnings(SystemTime::now()) {
                    tracing::warn!(target: EXPIRY_LOG_TARGET, "{warning}");
                }
            }
        });
    }
}
