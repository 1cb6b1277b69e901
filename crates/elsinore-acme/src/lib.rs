//! Automatic certificates for tenant hosts from an ACME CA (RFC 8555),
//! configured by `acme` in config.json.
//!
//! - [`Acme`]: the running client. Every exact host folder without its own
//!   `tls/` gets a certificate when it is served (at start, or when the
//!   folder appears) and keeps it renewed; failures are retried with
//!   backoff, each logged once.
//! - It answers the CA's validations itself: HTTP-01 on the plain listener
//!   ([`elsinore_proxy::Http01Answers`]) and TLS-ALPN-01 in the TLS
//!   handshake ([`elsinore_tls::ExtraCerts::alpn_challenge`]).
//! - Issued certificates are served through [`elsinore_tls::ExtraCerts`],
//!   after a host's own `tls/` (which always wins) and before wildcard
//!   folders and the default certificate; they are stored in
//!   `acme.storage` (keys 0600) and served from there after a restart
//!   without a new order.
//! - With a PostgreSQL `state_database`, the account and certificates live
//!   there instead ([`pg_storage`]), each name is ordered by one front
//!   door of the fleet at a time, and every front door answers the
//!   challenges and serves the certificates ([`fleet`]).
//!
//! The ACME protocol itself (JWS, nonces, polling) is `instant-acme`'s.

mod ask;
mod carry_over;
mod challenges;
mod error;
mod fleet;
mod order;
mod pg_storage;
mod schedule;
mod storage;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use elsinore_config::{AcmeConfig, HostPattern, Hostname, PostgresUrl};
use elsinore_routes::{DeclaredName, RouteTable};
use elsinore_tls::{CertOwner, LoadedCert};
use instant_acme::Account;
use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

pub use error::Error;

use challenges::Pending;
use fleet::Fleet;
use order::blocking;
use pg_storage::PgStorage;
use schedule::{backoff, renew_at, OrderRate};
use storage::{FileStorage, Storage};

/// How often the route table is looked at for new or removed hosts and
/// due renewals when nothing wakes the task earlier.
const TICK: Duration = Duration::from_millis(500);
/// On-demand names waiting for their order at most; handshakes for more
/// names are refused without being queued (an SNI flood costs a bounded
/// amount of memory and never more than `rate` orders).
const MAX_QUEUED: usize = 64;
/// Names remembered with their last failure at most (refused on-demand
/// names included), so a flood of names cannot grow the map forever.
const MAX_REMEMBERED: usize = 10_000;
/// How soon a name another front door is ordering is looked at again
/// (its certificate normally arrives by notification before that).
const FLEET_RECHECK: Duration = Duration::from_secs(5);

/// What `/routes` and the metrics show for one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameStatus {
    /// The issuer of the certificate being served, if any.
    pub issuer: Option<String>,
    /// Its `notAfter`.
    pub not_after: Option<SystemTime>,
    /// When it will be renewed.
    pub next_renewal: Option<SystemTime>,
    /// Why the last order failed, until one succeeds.
    pub last_error: Option<String>,
    /// When the next attempt after a failure is made.
    pub retry_at: Option<SystemTime>,
}

/// Per-name bookkeeping of the issuing task.
#[derive(Debug, Default)]
struct NameState {
    failures: u32,
    retry_at: Option<Instant>,
    status: NameStatus,
}

/// The running ACME client; see the crate documentation.
#[derive(Debug)]
pub struct Acme {
    config: AcmeConfig,
    storage: Arc<dyn Storage>,
    /// With a PostgreSQL state database: the order locks, the shared
    /// challenge answers.
    fleet: Option<Arc<Fleet>>,
    pending: Pending,
    certs: ArcSwap<HashMap<String, Arc<LoadedCert>>>,
    names: Mutex<BTreeMap<String, NameState>>,
    wake: Notify,
    table: Arc<ArcSwap<RouteTable>>,
    /// Elsinore's own plain listener, where `ask` requests are sent.
    listener: SocketAddr,
    /// On-demand names seen in handshakes, waiting for `ask` and `rate`.
    queued: Mutex<VecDeque<String>>,
}

impl Acme {
    /// Opens `config.storage`, loads the certificates stored there (so
    /// they serve from the first handshake, without any order), and starts
    /// the issuing task over the hosts of `table`. `listener` is the plain
    /// listener, where `ask` requests go.
    ///
    /// With `state` (a PostgreSQL state database, already migrated), the
    /// account and certificates are kept there and shared by every front
    /// door naming it; `acme.storage` is not used.
    pub fn start(
        config: AcmeConfig,
        table: Arc<ArcSwap<RouteTable>>,
        listener: SocketAddr,
        state: Option<&PostgresUrl>,
    ) -> Result<Arc<Self>, Error> {
        let (storage, fleet): (Arc<dyn Storage>, _) = match state {
            Some(url) => {
                let storage = Arc::new(PgStorage::new(url));
                carry_over(&config, &storage);
                let fleet = Arc::new(Fleet::new(storage.clone()));
                (storage, Some(fleet))
            }
            None => (Arc::new(FileStorage::open(&config.storage)?), None),
        };
        let acme = Arc::new(Self {
            config,
            storage,
            fleet,
            pending: Pending::default(),
            certs: ArcSwap::default(),
            names: Mutex::default(),
            wake: Notify::new(),
            table: table.clone(),
            listener,
            queued: Mutex::default(),
        });
        // Blocking reads (a PostgreSQL client runs its own runtime, which
        // must not start on an async worker): once, before serving.
        off_runtime(|| {
            for name in acme.storage.stored_names()? {
                match acme.load_stored(&name) {
                    Ok(cert) => {
                        tracing::info!(target: "elsinore::acme", name, not_after = %httpdate::fmt_http_date(cert.not_after), "certificate loaded from storage");
                    }
                    Err(err) => {
                        tracing::error!(target: "elsinore::acme", name, error = %err, "stored certificate cannot be served; ordering a new one");
                    }
                }
            }
            Ok::<(), Error>(())
        })?;
        if let Some(fleet) = &acme.fleet {
            fleet::watch(fleet.clone(), Arc::downgrade(&acme))?;
        }
        tokio::spawn(acme.clone().run(table));
        Ok(acme)
    }

    /// Every name ACME serves or tries to, with its state.
    pub fn status(&self) -> Vec<(String, NameStatus)> {
        lock(&self.names)
            .iter()
            .map(|(name, state)| (name.clone(), state.status.clone()))
            .collect()
    }

    /// With a PostgreSQL state database: whether this front door still
    /// follows the certificates the fleet stores (`reachable`, or
    /// `unreachable since <RFC 3339>: <reason>`, as `state_database`
    /// says it); `None` without one.
    pub fn fleet_refresh(&self) -> Option<String> {
        self.fleet.as_ref().map(|fleet| fleet.describe_refresh())
    }

    /// `/routes`' `acme` section: per name, the certificate's issuer,
    /// `not_after`, next renewal, and the last error with the next retry.
    pub fn status_json(&self) -> serde_json::Value {
        let rfc3339 = |time: Option<SystemTime>| {
            time.map(|time| humantime::format_rfc3339_seconds(time).to_string())
        };
        let names: serde_json::Map<String, serde_json::Value> = self
            .status()
            .into_iter()
            .map(|(name, status)| {
                let serving = self.certs.load().contains_key(&name);
                (
                    name,
                    serde_json::json!({
                        "serving": serving,
                        "issuer": status.issuer,
                        "not_after": rfc3339(status.not_after),
                        "next_renewal": rfc3339(status.next_renewal),
                        "last_error": status.last_error,
                        "retry_at": rfc3339(status.retry_at),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "directory": self.config.directory,
            "on_demand": self.config.on_demand,
            "fleet_refresh": self.fleet_refresh(),
            "names": names,
        })
    }

    /// Reads `name`'s stored pair and serves it (blocking: start-up only).
    fn load_stored(&self, name: &str) -> Result<Arc<LoadedCert>, Error> {
        let cert = self
            .storage
            .cert(name)?
            .ok_or_else(|| Error::Certificate("no longer stored".to_owned()))?;
        Ok(self.serve(name, Arc::new(cert)))
    }

    /// Reads `name`'s stored pair off the async workers.
    async fn stored(&self, name: &str) -> Result<Option<LoadedCert>, Error> {
        let name = name.to_owned();
        blocking(&self.storage, move |storage| storage.cert(&name)).await
    }

    /// Certificates stored by the fleet (the refresh thread's latest
    /// read): served from now on unless already served. Invalid ones are
    /// logged and skipped.
    fn fleet_certificates(
        &self,
        rows: Vec<fleet::StoredRow>,
        origin: impl Fn(&str) -> std::path::PathBuf,
    ) {
        for (name, cert_pem, key_pem) in rows {
            let loaded = match LoadedCert::from_pem(
                cert_pem.as_bytes(),
                key_pem.as_bytes(),
                &origin(&name),
            ) {
                Ok(cert) => cert,
                Err(err) => {
                    tracing::error!(target: "elsinore::acme", name, error = %err, "a certificate in the state database cannot be served");
                    continue;
                }
            };
            let same = self.certs.load().get(&name).is_some_and(|served| {
                served.certified.cert.first() == loaded.certified.cert.first()
            });
            if same {
                continue;
            }
            let cert = self.serve(&name, Arc::new(loaded));
            tracing::info!(target: "elsinore::acme", name, not_after = %httpdate::fmt_http_date(cert.not_after), "certificate loaded from the state database");
        }
    }

    /// Serves `cert` for `name` and clears the name's failures.
    fn serve(&self, name: &str, cert: Arc<LoadedCert>) -> Arc<LoadedCert> {
        let mut status = NameStatus {
            issuer: issuer(&cert),
            not_after: Some(cert.not_after),
            next_renewal: Some(renew_at(&cert, self.config.renew_before)),
            ..NameStatus::default()
        };
        {
            let mut names = lock(&self.names);
            let state = names.entry(name.to_owned()).or_default();
            status.last_error = None;
            state.status = status;
            state.failures = 0;
            state.retry_at = None;
        }
        self.certs.rcu(|certs| {
            let mut certs = HashMap::clone(certs);
            certs.insert(name.to_owned(), cert.clone());
            certs
        });
        cert
    }

    /// The issuing task: forever, orders what is due, within `rate`.
    async fn run(self: Arc<Self>, table: Arc<ArcSwap<RouteTable>>) {
        let mut account: Option<Account> = None;
        let mut rate = OrderRate::new(self.config.rate);
        loop {
            let current = table.load_full();
            let mut wanted = wanted_names(&current);
            if self.config.on_demand {
                // On-demand certificates are renewed while their names
                // still route to a project.
                let certs = self.certs.load();
                wanted.extend(
                    certs
                        .keys()
                        .filter(|name| on_demand_route(&current, name))
                        .cloned(),
                );
            }
            drop(current);
            self.forget_unwanted(&wanted);
            for name in self.due(&wanted) {
                if self.reuse_stored(&name).await {
                    continue;
                }
                if !rate.try_take(Instant::now()) {
                    // The rest waits for the window to move on.
                    break;
                }
                let result = match &account {
                    Some(account) => self.order(account, &name).await,
                    None => match order::account(&self.config, &self.storage).await {
                        Ok(new) => {
                            let result = self.order(&new, &name).await;
                            account = Some(new);
                            result
                        }
                        Err(err) => Err(err),
                    },
                };
                if let Err(err) = result {
                    self.failed(&name, &err);
                }
            }
            self.order_on_demand(&mut account, &mut rate).await;
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// The queued on-demand names: each asked (`ask`), then ordered if
    /// the rate allows; the others are dropped (their next handshake
    /// queues them again).
    async fn order_on_demand(&self, account: &mut Option<Account>, rate: &mut OrderRate) {
        let queued: Vec<String> = lock(&self.queued).drain(..).collect();
        let mut over_rate = 0usize;
        for name in queued {
            if self.certs.load().contains_key(&name) {
                continue;
            }
            if let Some(path) = &self.config.ask {
                if let Err(why) = ask::ask(self.listener, path, &name).await {
                    self.failed(&name, &Error::Refused(why));
                    continue;
                }
            }
            if !rate.try_take(Instant::now()) {
                over_rate += 1;
                continue;
            }
            if account.is_none() {
                match order::account(&self.config, &self.storage).await {
                    Ok(new) => *account = Some(new),
                    Err(err) => {
                        self.failed(&name, &err);
                        continue;
                    }
                }
            }
            if let Some(account) = account.as_ref() {
                if let Err(err) = self.order(account, &name).await {
                    self.failed(&name, &err);
                }
            }
        }
        if over_rate > 0 {
            tracing::warn!(
                target: "elsinore::acme",
                refused = over_rate,
                rate = self.config.rate,
                "acme.rate reached: on-demand names refused for now (their handshakes fail until a later one fits the rate)"
            );
        }
    }

    /// Serves `name`'s stored certificate instead of ordering, when one is
    /// stored, not yet due, and not being served (a host whose own `tls/`
    /// was removed gets ACME's certificate back without a new order).
    async fn reuse_stored(&self, name: &str) -> bool {
        if self.certs.load().contains_key(name) {
            return false;
        }
        self.reuse_fresh(name).await
    }

    /// Serves `name`'s stored certificate if it is not due for renewal
    /// and not the one already served (in a fleet, another front door may
    /// have stored a renewed one).
    async fn reuse_fresh(&self, name: &str) -> bool {
        let Ok(Some(cert)) = self.stored(name).await else {
            return false;
        };
        if SystemTime::now() >= renew_at(&cert, self.config.renew_before) {
            return false;
        }
        let served = self
            .certs
            .load()
            .get(name)
            .is_some_and(|served| served.certified.cert.first() == cert.certified.cert.first());
        if served {
            return false;
        }
        self.serve(name, Arc::new(cert));
        tracing::info!(target: "elsinore::acme", name, "certificate loaded from storage");
        true
    }

    /// Names of `wanted` without a certificate, or due for renewal, and
    /// not waiting after a failure.
    fn due(&self, wanted: &BTreeSet<String>) -> Vec<String> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let certs = self.certs.load();
        let names = lock(&self.names);
        wanted
            .iter()
            .filter(|name| {
                let renew = certs
                    .get(name.as_str())
                    .is_none_or(|cert| wall >= renew_at(cert, self.config.renew_before));
                let waiting = names
                    .get(name.as_str())
                    .and_then(|state| state.retry_at)
                    .is_some_and(|at| now < at);
                renew && !waiting
            })
            .cloned()
            .collect()
    }

    /// Stops serving (not deleting) certificates of names no longer
    /// served by a host folder without its own `tls/`.
    fn forget_unwanted(&self, wanted: &BTreeSet<String>) {
        let certs = self.certs.load();
        if certs.keys().all(|name| wanted.contains(name)) {
            return;
        }
        self.certs.rcu(|certs| {
            let mut certs = HashMap::clone(certs);
            certs.retain(|name, _| wanted.contains(name));
            certs
        });
        lock(&self.names).retain(|name, _| wanted.contains(name));
    }

    /// Orders `name`; in a fleet, only while holding its order lock.
    async fn order(&self, account: &Account, name: &str) -> Result<(), Error> {
        let Some(fleet) = &self.fleet else {
            return self.order_now(account, name).await;
        };
        let Some(lock) = fleet.try_lock(name).await? else {
            tracing::info!(target: "elsinore::acme", name, "another front door is ordering this name; serving its certificate when it is stored");
            self.wait_for_fleet(name);
            return Ok(());
        };
        // Under the lock: the holder before may just have stored it.
        let result = if self.reuse_fresh(name).await {
            Ok(())
        } else {
            self.order_now(account, name).await
        };
        Fleet::unlock(lock).await;
        result
    }

    /// Looks at `name` again after [`FLEET_RECHECK`], without counting a
    /// failure: another front door holds its order lock.
    fn wait_for_fleet(&self, name: &str) {
        let mut names = lock(&self.names);
        if names.len() >= MAX_REMEMBERED && !names.contains_key(name) {
            return;
        }
        let state = names.entry(name.to_owned()).or_default();
        state.retry_at = Some(Instant::now() + FLEET_RECHECK);
    }

    async fn order_now(&self, account: &Account, name: &str) -> Result<(), Error> {
        tracing::info!(target: "elsinore::acme", name, "ordering a certificate");
        let (cert_pem, key_pem) = order::issue(
            account,
            &self.config,
            &self.pending,
            self.fleet.as_ref(),
            name,
        )
        .await?;
        let owned = name.to_owned();
        blocking(&self.storage, move |storage| {
            storage.save_cert(&owned, &cert_pem, &key_pem)
        })
        .await?;
        let cert = self
            .stored(name)
            .await?
            .ok_or_else(|| Error::Certificate("not found where it was just stored".to_owned()))?;
        let cert = self.serve(name, Arc::new(cert));
        tracing::info!(
            target: "elsinore::acme",
            name,
            issuer = issuer(&cert).unwrap_or_default(),
            not_after = %httpdate::fmt_http_date(cert.not_after),
            next_renewal = %httpdate::fmt_http_date(renew_at(&cert, self.config.renew_before)),
            "certificate issued"
        );
        Ok(())
    }

    /// Records a failed order; the name is tried again after a backoff.
    fn failed(&self, name: &str, err: &Error) {
        let mut names = lock(&self.names);
        if names.len() >= MAX_REMEMBERED && !names.contains_key(name) {
            tracing::error!(target: "elsinore::acme", name, error = %err, "certificate order failed");
            return;
        }
        let state = names.entry(name.to_owned()).or_default();
        state.failures += 1;
        let delay = backoff(state.failures);
        state.retry_at = Some(Instant::now() + delay);
        state.status.last_error = Some(err.to_string());
        state.status.retry_at = Some(SystemTime::now() + delay);
        tracing::error!(target: "elsinore::acme", name, error = %err, retry_in = ?delay, failures = state.failures, "certificate order failed");
    }
}

impl elsinore_tls::ExtraCerts for Acme {
    fn certificate(&self, name: &str) -> Option<Arc<LoadedCert>> {
        self.certs.load().get(name).cloned()
    }

    fn alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.pending
            .tls_alpn01(name)
            .or_else(|| self.fleet.as_ref()?.tls_alpn01(name))
    }

    /// Across a fleet: the digest another front door stored, when this
    /// one's refresh has not loaded it yet.
    fn stored_alpn_challenge(&self, name: &str) -> Option<elsinore_tls::StoredChallenge> {
        let name = name.to_owned();
        look_up(self.fleet.as_ref(), move |fleet| {
            fleet.stored_tls_alpn01(&name)
        })
    }

    /// Queues `name` for an on-demand order when `on_demand` is on and
    /// the name routes to a project through a wildcard folder or the
    /// default project. Never blocks: the handshake is refused meanwhile.
    fn missing(&self, name: &str) {
        if !self.config.on_demand || !on_demand_route(&self.table.load(), name) {
            return;
        }
        let waiting = lock(&self.names)
            .get(name)
            .and_then(|state| state.retry_at)
            .is_some_and(|at| Instant::now() < at);
        if waiting {
            return;
        }
        let mut queued = lock(&self.queued);
        if queued.len() >= MAX_QUEUED || queued.iter().any(|queued| queued == name) {
            return;
        }
        queued.push_back(name.to_owned());
        drop(queued);
        self.wake.notify_one();
    }
}

impl elsinore_proxy::Http01Answers for Acme {
    fn answer(&self, token: &str) -> Option<String> {
        self.pending
            .http01(token)
            .or_else(|| self.fleet.as_ref()?.http01(token))
    }

    /// Across a fleet: the answer another front door stored, when this
    /// one's refresh has not loaded it yet.
    fn stored_answer(&self, token: &str) -> Option<elsinore_proxy::StoredAnswer> {
        let token = token.to_owned();
        look_up(self.fleet.as_ref(), move |fleet| {
            fleet.stored_http01(&token)
        })
    }
}

/// How long a validation request waits for the state database's answer
/// before it is answered as a miss (the CA waits longer than this).
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

/// `look` run against the fleet's state database on a blocking thread and
/// waited for [`LOOKUP_WAIT`] at most; `None` without a fleet.
fn look_up<T: Send + 'static>(
    fleet: Option<&Arc<Fleet>>,
    look: impl FnOnce(&Fleet) -> Option<T> + Send + 'static,
) -> Option<Pin<Box<dyn Future<Output = Option<T>> + Send>>> {
    let fleet = fleet?.clone();
    Some(Box::pin(async move {
        let lookup = tokio::task::spawn_blocking(move || look(&fleet));
        tokio::time::timeout(LOOKUP_WAIT, lookup)
            .await
            .ok()?
            .ok()
            .flatten()
    }))
}

/// Exact host names of `table` whose folder has no `tls/` of its own.
fn wanted_names(table: &RouteTable) -> BTreeSet<String> {
    table
        .hosts
        .iter()
        .filter(|(declared, _)| !declared.wildcard)
        .filter_map(|(declared, _)| {
            let host = Hostname::parse(declared.name).ok()?;
            let own = table
                .certs
                .slot(&CertOwner::Host(HostPattern::Exact(host)))
                .is_some();
            (!own).then(|| declared.name.to_owned())
        })
        .collect()
}

/// Whether `name` may get an on-demand certificate: a valid host name
/// with no exact host folder (those are ordered anyway), served through a
/// wildcard folder or by the default project.
fn on_demand_route(table: &RouteTable, name: &str) -> bool {
    let Ok(host) = Hostname::parse(name) else {
        return false;
    };
    let exact = DeclaredName {
        wildcard: false,
        name: host.as_str(),
    };
    if table.hosts.get(exact).is_some() {
        return false;
    }
    table.hosts.lookup(host.as_str()).is_some() || table.default_project.is_some()
}

/// The leaf's issuer, as `CN=..., O=...`.
fn issuer(cert: &LoadedCert) -> Option<String> {
    let leaf = cert.certified.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(parsed.issuer().to_string())
}

/// Runs blocking `work` from start-up code that may be on an async
/// worker: moved off the runtime when on a multi-threaded one.
/// Copies what `acme.storage` holds into the state database where it
/// holds nothing yet (see `carry_over.rs`), logging what moved. A failure
/// is logged and start-up goes on: the names are then ordered as usual.
fn carry_over(config: &AcmeConfig, storage: &PgStorage) {
    let moved = off_runtime(|| {
        carry_over::into_state_database(
            &config.storage,
            storage,
            &config.directory,
            std::time::SystemTime::now(),
        )
    });
    match moved {
        Ok(moved) => {
            for (name, reason) in &moved.skipped {
                tracing::info!(target: "elsinore::acme", name, reason, folder = %config.storage.display(), "certificate in acme.storage not carried over to the state database");
            }
            if moved.account || !moved.certificates.is_empty() {
                tracing::info!(target: "elsinore::acme", account = moved.account, certificates = moved.certificates.len(), folder = %config.storage.display(), "acme.storage carried over to the state database");
            }
        }
        Err(err) => {
            tracing::error!(target: "elsinore::acme", error = %err, folder = %config.storage.display(), "cannot carry acme.storage over to the state database; its names will be ordered again");
        }
    }
}

fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
