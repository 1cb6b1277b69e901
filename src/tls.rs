//! TLS wiring of the binary: the daily expiry warning, certificates in
//! `/routes`, and the `certificates` part of `check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use elsinore_config::{Config, DefaultCert, HostPattern};
use elsinore_routes::RouteTable;
use elsinore_tls::{CertSource, CertStore};
use serde_json::{json, Value};

const ONE_DAY: Duration = Duration::from_secs(86_400);

/// Logs every certificate that expires within
/// [`elsinore_tls::EXPIRY_WARNING_DAYS`] once a day. (Loading a
/// certificate warns at once, at startup and on every reload, so the
/// first look is a day from now.)
pub fn spawn_expiry_warnings(table: Arc<ArcSwap<RouteTable>>) {
    tokio::spawn(async move {
        let mut every_day =
            tokio::time::interval_at(tokio::time::Instant::now() + ONE_DAY, ONE_DAY);
        loop {
            every_day.tick().await;
            let certs = table.load().certs.clone();
            for warning in expiry_warnings(&certs, SystemTime::now()) {
                tracing::warn!("{warning}");
            }
        }
    });
}

/// One line per certificate expiring soon (or already expired).
pub fn expiry_warnings(certs: &CertStore, now: SystemTime) -> Vec<String> {
    certs
        .slots()
        .filter_map(|(owner, slot)| elsinore_tls::expiry_warning(owner, slot.cert.as_ref()?, now))
        .collect()
}

/// The `certificates` section of `/routes`: per host folder (and
/// `(default)`), what is served and whether newer files were refused.
pub fn certificates_json(certs: &CertStore, now: SystemTime) -> Value {
    let entries: serde_json::Map<String, Value> = certs
        .slots()
        .map(|(owner, slot)| {
            let cert = slot.cert.as_ref();
            (
                owner.to_string(),
                json!({
                    "names": cert.map_or(&[][..], |c| &c.names[..]),
                    "not_after": cert.map(|c| rfc3339(c.not_after)),
                    "days_left": cert.map(|c| c.days_left(now)),
                    "cert": path(&slot.cert_path),
                    "key": path(&slot.key_path),
                    "serving": cert.is_some(),
                    "error": slot.refused,
                }),
            )
        })
        .collect();
    Value::Object(entries)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The `certificates` part of `elsinore check`: each certificate the
/// HTTPS listener would load, and a warning for each that it would
/// refuse or that needs attention. Empty without `tls_listen`.
pub fn check_report(
    config: &Config,
    hosts: &[(HostPattern, PathBuf)],
    now: SystemTime,
) -> (Vec<String>, Vec<String>) {
    if config.startup.tls_listen.is_none() {
        return (Vec::new(), Vec::new());
    }
    let mut sources: Vec<CertSource> = hosts
        .iter()
        .map(|(host, host_dir)| CertSource::host(host.clone(), host_dir))
        .collect();
    if let Some(DefaultCert { cert, key }) = &config.tls_default {
        sources.push(CertSource::default_cert(cert.clone(), key.clone()));
    }
    let rebuilt = CertStore::default().rebuild(&sources, now);
    let lines = rebuilt
        .store
        .slots()
        .filter_map(|(owner, slot)| {
            let cert = slot.cert.as_ref()?;
            Some(format!(
                "{owner}: {} (expires {}, {} days left)",
                cert.names.join(", "),
                rfc3339(cert.not_after),
                cert.days_left(now)
            ))
        })
        .collect();
    let mut warnings = rebuilt.errors;
    warnings.extend(rebuilt.warnings);
    (lines, warnings)
}
