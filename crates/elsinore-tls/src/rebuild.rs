//! Building the next snapshot from the files, keeping what is still good.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use elsinore_config::HostPattern;

use crate::cert::Stamp;
use crate::store::{CertOwner, CertSlot, CertStore};
use crate::{key_mode_warning, LoadedCert, CERT_FILE, EXPIRY_WARNING_DAYS, KEY_FILE, TLS_DIR};

/// Where one owner's certificate files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// Whose certificate it is.
    pub owner: CertOwner,
    /// The PEM chain.
    pub cert_path: PathBuf,
    /// The PEM key.
    pub key_path: PathBuf,
    /// A host folder without `tls/` (or with an empty one) simply has no
    /// certificate; the configured default must exist.
    optional: bool,
}

impl CertSource {
    /// `<host_dir>/tls/cert.pem` and `key.pem` for the host folder of
    /// `pattern`.
    pub fn host(pattern: HostPattern, host_dir: &Path) -> Self {
        let tls = host_dir.join(TLS_DIR);
        Self {
            owner: CertOwner::Host(pattern),
            cert_path: tls.join(CERT_FILE),
            key_path: tls.join(KEY_FILE),
            optional: true,
        }
    }

    /// The configured default certificate.
    pub fn default_cert(cert_path: PathBuf, key_path: PathBuf) -> Self {
        Self {
            owner: CertOwner::Default,
            cert_path,
            key_path,
            optional: false,
        }
    }

    /// The `tls/` folder of a host source that has one (one `stat`: most
    /// host folders have none, and then their files are not looked for).
    fn tls_dir(&self) -> Option<&Path> {
        let dir = self.cert_path.parent()?;
        (self.optional && dir.is_dir()).then_some(dir)
    }
}

/// A new snapshot and what changed compared with the previous one.
#[derive(Debug)]
pub struct Rebuilt {
    /// The snapshot to swap in.
    pub store: CertStore,
    /// One line per certificate added, replaced or removed.
    pub changes: Vec<String>,
    /// Files refused: the previous certificate of that owner (if any)
    /// keeps serving. Repeated on every rebuild until fixed.
    pub errors: Vec<String>,
    /// Certificates loaded but worth a look (key readable by others, names
    /// that do not cover the host, already expired).
    pub warnings: Vec<String>,
    /// The host sources' `tls/` folders that exist (with or without
    /// files): the folders worth a watch.
    pub tls_dirs: Vec<PathBuf>,
}

impl CertStore {
    /// Reads `sources` and builds the next snapshot. Files unchanged
    /// since this snapshot read them are not read again. A source whose
    /// files are refused keeps this snapshot's certificate for it (the
    /// last good one); an owner no longer in `sources` loses its
    /// certificate.
    pub fn rebuild(&self, sources: &[CertSource], now: SystemTime) -> Rebuilt {
        let mut out = Rebuilt {
            store: CertStore::default(),
            changes: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            tls_dirs: Vec::new(),
        };
        let mut slots = BTreeMap::new();
        for source in sources {
            if let Some(slot) = self.read_source(source, now, &mut out) {
                slots.insert(source.owner.clone(), slot);
            }
        }
        for (owner, slot) in self.slots() {
            if slot.cert.is_some() && !slots.contains_key(owner) {
                out.changes.push(format!("- certificate {owner}"));
            }
        }
        out.store = CertStore::from_slots(slots);
        out
    }

    /// One source's slot in the next snapshot (`None`: nothing to load).
    fn read_source(
        &self,
        source: &CertSource,
        now: SystemTime,
        out: &mut Rebuilt,
    ) -> Option<CertSlot> {
        let previous = self.slot(&source.owner);
        if source.optional {
            // Most host folders have no `tls/`: one `stat` says so.
            out.tls_dirs.push(source.tls_dir()?.to_path_buf());
            if !source.cert_path.exists() && !source.key_path.exists() {
                return None;
            }
        }
        let stamp = Stamp::of(&source.cert_path, &source.key_path);
        let unchanged = |cert: &LoadedCert| {
            cert.stamp == stamp
                && cert.cert_path == source.cert_path
                && cert.key_path == source.key_path
        };
        match previous {
            Some(slot) if slot.refused.is_none() && slot.cert.as_deref().is_some_and(unchanged) => {
                return Some(slot.clone());
            }
            Some(slot)
                if slot.refused_stamp.as_ref() == Some(&stamp)
                    && slot.cert_path == source.cert_path
                    && slot.key_path == source.key_path =>
            {
                out.errors.extend(slot.refused.clone());
                return Some(slot.clone());
            }
            _ => {}
        }
        let last_good = previous.and_then(|slot| slot.cert.clone());
        let slot = match LoadedCert::load(&source.cert_path, &source.key_path) {
            Ok(cert) => {
                out.changes.push(change_line(
                    if last_good.is_some() { "~" } else { "+" },
                    &source.owner,
                    &cert,
                ));
                out.warnings
                    .extend(load_warnings(&source.owner, &cert, now));
                CertSlot {
                    cert_path: source.cert_path.clone(),
                    key_path: source.key_path.clone(),
                    cert: Some(Arc::new(cert)),
                    refused: None,
                    refused_stamp: None,
                }
            }
            Err(err) => {
                let keeping = match &last_good {
                    Some(cert) => format!(
                        "keeping the previous certificate for {} (expires {})",
                        source.owner,
                        date(cert.not_after)
                    ),
                    None => format!("{} has no certificate until this is fixed", source.owner),
                };
                let message = format!("certificate {}: {err}; {keeping}", source.owner);
                out.errors.push(message.clone());
                CertSlot {
                    cert_path: source.cert_path.clone(),
                    key_path: source.key_path.clone(),
                    cert: last_good,
                    refused: Some(message),
                    refused_stamp: Some(stamp),
                }
            }
        };
        Some(slot)
    }

    /// As [`rebuild`](Self::rebuild) for `changed` sources only (a host
    /// folder added or changed) and the owners in `removed`: every other
    /// slot is kept as it is, without a look at its files. What an
    /// incremental reload costs, whatever the number of hosts.
    pub fn rebuild_some(
        &self,
        changed: &[CertSource],
        removed: &[CertOwner],
        now: SystemTime,
    ) -> Rebuilt {
        let mut out = Rebuilt {
            store: CertStore::default(),
            changes: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            tls_dirs: Vec::new(),
        };
        let mut slots = self.slots.clone();
        for owner in removed.iter().chain(changed.iter().map(|s| &s.owner)) {
            slots.remove(owner);
        }
        for source in changed {
            if let Some(slot) = self.read_source(source, now, &mut out) {
                slots.insert(source.owner.clone(), slot);
            }
        }
        for (owner, slot) in self.slots() {
            if slot.cert.is_some() && !slots.contains_key(owner) {
                out.changes.push(format!("- certificate {owner}"));
            }
        }
        let mut store = CertStore::from_slots(slots);
        store.own_wildcards = self.own_wildcards.clone();
        out.store = store;
        out
    }
}

fn change_line(sign: &str, owner: &CertOwner, cert: &LoadedCert) -> String {
    let verb = if sign == "~" { " replaced" } else { "" };
    format!(
        "{sign} certificate {owner}{verb} (names: {}; expires {})",
        names(cert),
        date(cert.not_after)
    )
}

fn load_warnings(owner: &CertOwner, cert: &LoadedCert, now: SystemTime) -> Vec<String> {
    let mut warnings = Vec::new();
    warnings.extend(key_mode_warning(&cert.key_path));
    let covered = match owner {
        CertOwner::Default => true,
        CertOwner::Host(HostPattern::Exact(name)) => cert.covers(name.as_str()),
        CertOwner::Host(pattern @ HostPattern::Wildcard(_)) => {
            cert.names.contains(&pattern.to_string())
        }
    };
    if !covered {
        warnings.push(format!(
            "{}: does not cover {owner} (its names: {}); clients will refuse it",
            cert.cert_path.display(),
            names(cert)
        ));
    }
    warnings.extend(expiry_warning(owner, cert, now));
    warnings
}

impl CertStore {
    /// One warning per certificate served that expires within
    /// [`EXPIRY_WARNING_DAYS`] of `now` (or has expired), in owner order:
    /// what the daily check logs for the live table.
    pub fn expiry_warnings(&self, now: SystemTime) -> Vec<String> {
        self.slots()
            .filter_map(|(owner, slot)| expiry_warning(owner, slot.cert.as_ref()?, now))
            .collect()
    }
}

/// A warning when `cert` expires within [`EXPIRY_WARNING_DAYS`] of `now`
/// (or has expired); `None` when it has longer.
pub fn expiry_warning(owner: &CertOwner, cert: &LoadedCert, now: SystemTime) -> Option<String> {
    let when = match cert.days_left(now) {
        days if days >= EXPIRY_WARNING_DAYS => return None,
        days if days < 0 => format!("expired {} days ago", -days),
        0 => "expires today".to_owned(),
        1 => "expires in 1 day".to_owned(),
        days => format!("expires in {days} days"),
    };
    Some(format!(
        "certificate for {owner} {when} ({}, {}); replace it",
        humantime::format_rfc3339_seconds(cert.not_after),
        cert.cert_path.display()
    ))
}

fn names(cert: &LoadedCert) -> String {
    if cert.names.is_empty() {
        "none".to_owned()
    } else {
        cert.names.join(", ")
    }
}

/// `2027-01-31`: certificates expire on a day, not a nanosecond.
pub(crate) fn date(time: SystemTime) -> String {
    let mut text = humantime::format_rfc3339_seconds(time).to_string();
    text.truncate(10);
    text
}
