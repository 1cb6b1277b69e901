//! The certificate snapshot: which certificate answers which SNI.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use elsinore_config::HostPattern;

use crate::cert::Stamp;
use crate::LoadedCert;

/// Who a certificate is for: a host folder, or the configured default.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertOwner {
    /// `tls.default_cert` / `tls.default_key` in config.json.
    Default,
    /// `hosts/<pattern>/tls/`.
    Host(HostPattern),
}

impl fmt::Display for CertOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("(default)"),
            Self::Host(pattern) => write!(f, "{pattern}"),
        }
    }
}

/// What the store knows about one owner's certificate files.
#[derive(Debug, Clone)]
pub struct CertSlot {
    /// Where the certificate chain is read from.
    pub cert_path: PathBuf,
    /// Where the key is read from.
    pub key_path: PathBuf,
    /// The certificate being served: the newest good one. `None` when the
    /// files were never good.
    pub cert: Option<Arc<LoadedCert>>,
    /// Why the current files were refused, when they were (the previous
    /// `cert`, if any, keeps serving).
    pub refused: Option<String>,
    pub(crate) refused_stamp: Option<Stamp>,
}

/// An immutable snapshot; see the crate documentation. Built by
/// [`CertStore::rebuild`]; `Default` is the empty store.
#[derive(Debug, Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<LoadedCert>>,
    /// `(suffix, cert)` for `*.suffix` folders, longest suffix first.
    wildcards: Vec<(String, Arc<LoadedCert>)>,
    default: Option<Arc<LoadedCert>>,
    pub(crate) slots: BTreeMap<CertOwner, CertSlot>,
    /// Exact names under another project's wildcard, each with the
    /// suffixes of the wildcards its own project declares above it: only
    /// those wildcards' certificates may answer for it (else the default),
    /// never the other project's.
    pub(crate) own_wildcards: HashMap<String, Box<[String]>>,
}

impl CertStore {
    pub(crate) fn from_slots(slots: BTreeMap<CertOwner, CertSlot>) -> Self {
        let mut store = Self {
            slots,
            ..Self::default()
        };
        for (owner, slot) in &store.slots {
            let Some(cert) = &slot.cert else { continue };
            match owner {
                CertOwner::Default => store.default = Some(cert.clone()),
                CertOwner::Host(HostPattern::Exact(name)) => {
                    store.exact.insert(name.to_string(), cert.clone());
                }
                CertOwner::Host(HostPattern::Wildcard(suffix)) => {
                    store.wildcards.push((suffix.to_string(), cert.clone()));
                }
            }
        }
        store
            .wildcards
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        store
    }

    /// The certificate for a handshake: the exact host folder's, else the
    /// longest matching wildcard folder's (one or more leading labels, as
    /// in routing), else the default. `None` refuses the handshake.
    pub fn resolve(&self, sni: Option<&str>) -> Option<&Arc<LoadedCert>> {
        sni.and_then(|sni| self.for_host(sni))
            .or(self.default.as_ref())
    }

    /// The certificate of the host folder serving `host` (exact, then
    /// longest wildcard); the default is not considered.
    pub fn for_host(&self, host: &str) -> Option<&Arc<LoadedCert>> {
        let host = normalise(host);
        if let Some(cert) = self.exact.get(host.as_ref()) {
            return Some(cert);
        }
        // Usually empty: no lookup at all then.
        let allowed = match self.own_wildcards.is_empty() {
            true => None,
            false => self.own_wildcards.get(host.as_ref()),
        };
        self.wildcards.iter().find_map(|(suffix, cert)| {
            let covers = host
                .strip_suffix(suffix.as_str())
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty());
            let permitted = allowed.is_none_or(|own| own.iter().any(|s| s == suffix));
            (covers && permitted).then_some(cert)
        })
    }

    /// Limits the wildcard certificates that may answer for some exact
    /// names: `name → the suffixes of its own project's wildcards above
    /// it`. For a name listed here, another project's wildcard
    /// certificate is never used; without an own certificate it gets the
    /// default (issue: a project declaring a name under another's
    /// wildcard must not be handed that project's certificate).
    pub fn limit_wildcards(&mut self, own_wildcards: HashMap<String, Box<[String]>>) {
        self.own_wildcards = own_wildcards;
    }

    /// Whether a TLS client asking for `host` gets a certificate that is
    /// valid for it (from its folder or the default).
    pub fn serves(&self, host: &str) -> bool {
        self.resolve(Some(host))
            .is_some_and(|cert| cert.covers(host))
    }

    /// Every owner with certificate files, good or refused, in order
    /// (default first, then hosts by name).
    pub fn slots(&self) -> impl Iterator<Item = (&CertOwner, &CertSlot)> {
        self.slots.iter()
    }

    /// The slot of `owner`, if it has certificate files.
    pub fn slot(&self, owner: &CertOwner) -> Option<&CertSlot> {
        self.slots.get(owner)
    }

    /// How many certificates are being served.
    pub fn len(&self) -> usize {
        self.slots.values().filter(|s| s.cert.is_some()).count()
    }

    /// No certificate is being served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SNI as sent may differ in case or carry a trailing dot.
fn normalise(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
