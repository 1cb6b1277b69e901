//! ACME across a fleet of front doors sharing a PostgreSQL state database.
//!
//! - **One order per name**: an order is made only while holding the
//!   session advisory lock [`order_lock_key`] of its name; a front door
//!   that does not get it leaves the name to the holder and picks the
//!   certificate up when it is stored.
//! - **Challenges answered by any front door**: the ordering front door
//!   writes each answer (HTTP-01 key authorization by token, TLS-ALPN-01
//!   digest by name) to `acme_challenges` and asks the CA to validate only
//!   once its own refresh has seen the write come back through `NOTIFY`
//!   (every front door hears the same notification at the same moment).
//! - **Certificates served by all**: the refresh thread ([`watch`]) holds
//!   `LISTEN elsinore_acme`, and on each notification (or when the
//!   `acme_version` counter moved, checked every [`CHECK_INTERVAL`] as a
//!   backstop) loads the new certificates into the TLS store and the
//!   challenge answers into memory. The request path reads memory, and
//!   only on a miss the database ([`Fleet::stored_http01`],
//!   [`Fleet::stored_tls_alpn01`]): the ordering front door asks the CA
//!   once its own refresh has loaded the answer, and another's refresh
//!   may still be a few milliseconds behind (a busy machine).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use elsinore_postgres::postgres::{Client, IsolationLevel};
use elsinore_postgres::{PostgresUrl, StateHealth};
use rustls::sign::CertifiedKey;

use crate::challenges::alpn_certificate;
use crate::pg_storage::{announce, now_ms, origin, state_error, PgStorage, CHANNEL};
use crate::{Acme, Error};

/// How often the change counter is compared, whatever the notifications.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a published challenge waits to be seen back before the CA is
/// asked anyway (the database or the notification is slow: the order may
/// fail and is retried with the usual backoff).
const PUBLISH_WAIT: Duration = Duration::from_secs(5);
/// One wait for a notification.
const WAIT_SLICE: Duration = Duration::from_millis(250);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Database lookups for answers memory does not have, per second at most:
/// a CA makes a few validation requests per order, while anyone can ask
/// for made-up tokens, and each lookup is a query on the fleet's shared
/// database. Past it a miss is a miss (the order is retried if it was
/// the CA's).
const STORED_LOOKUPS_PER_SECOND: u32 = 20;

/// The high 32 bits of every order lock: "ACME" in ASCII, so no order lock
/// is ever the events' or the migrations' lock (both start with "elsi").
const ORDER_LOCK_NAMESPACE: i64 = 0x4143_4d45;

/// The advisory lock one name's order is made under: the namespace, then
/// the name's FNV-1a hash. Two names sharing a hash only take turns.
pub(crate) fn order_lock_key(name: &str) -> i64 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (ORDER_LOCK_NAMESPACE << 32) | i64::from(hash)
}

/// Which validation an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChallengeKind {
    /// Keyed by token; the answer is the key authorization.
    Http01,
    /// Keyed by name; the answer is the key authorization's SHA-256, hex.
    TlsAlpn01,
}

impl ChallengeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// The fleet's pending answers, as last loaded.
#[derive(Debug, Default)]
struct Answers {
    http01: HashMap<String, String>,
    tls_alpn01: HashMap<String, Arc<CertifiedKey>>,
}

/// One front door's part in the fleet.
#[derive(Debug)]
pub(crate) struct Fleet {
    storage: Arc<PgStorage>,
    answers: ArcSwap<Answers>,
    /// The `acme_version` the last refresh loaded.
    seen: tokio::sync::watch::Sender<i64>,
    /// Whether the refresh thread reaches the state database.
    health: StateHealth,
    /// What is left of this second's database lookups on a miss.
    lookups: Mutex<LookupBudget>,
}

/// [`STORED_LOOKUPS_PER_SECOND`], counted from the first lookup of each
/// second.
#[derive(Debug, Default)]
struct LookupBudget {
    since: Option<Instant>,
    used: u32,
}

impl LookupBudget {
    /// Whether one more lookup at `now` fits.
    fn take(&mut self, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(1))
        {
            self.since = Some(now);
            self.used = 0;
        }
        if self.used >= STORED_LOOKUPS_PER_SECOND {
            return false;
        }
        self.used += 1;
        true
    }
}

/// An order lock held: its own connection (the lock lives as long as the
/// session, so a front door that dies mid-order frees the name).
pub(crate) struct OrderLock {
    client: Client,
    key: i64,
}

impl Fleet {
    pub(crate) fn new(storage: Arc<PgStorage>) -> Self {
        Self {
            storage,
            answers: ArcSwap::default(),
            seen: tokio::sync::watch::Sender::new(-1),
            health: StateHealth::new(),
            lookups: Mutex::default(),
        }
    }

    /// `reachable`, or `unreachable since <RFC 3339>: <reason>`: whether
    /// certificates stored by other front doors still reach this one.
    pub(crate) fn describe_refresh(&self) -> String {
        self.health.describe()
    }

    /// The fleet's HTTP-01 answer for `token`: memory only.
    pub(crate) fn http01(&self, token: &str) -> Option<String> {
        self.answers.load().http01.get(token).cloned()
    }

    /// The fleet's TLS-ALPN-01 certificate for `name`: memory only.
    pub(crate) fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.answers.load().tls_alpn01.get(name).cloned()
    }

    /// The HTTP-01 answer for `token` as stored in the state database, for
    /// a validation request that came before this front door's refresh
    /// loaded it. Blocking. `None` when none is stored, the second's
    /// lookups are spent, or the database fails.
    pub(crate) fn stored_http01(&self, token: &str) -> Option<String> {
        self.stored(ChallengeKind::Http01, token)
    }

    /// The TLS-ALPN-01 certificate for `name` made from the digest stored
    /// in the state database; as [`Self::stored_http01`].
    pub(crate) fn stored_tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let digest = unhex(&self.stored(ChallengeKind::TlsAlpn01, name)?)?;
        match alpn_certificate(name, &digest) {
            Ok(certified) => Some(certified),
            Err(err) => {
                tracing::warn!(target: "elsinore::acme", name, error = %err, "cannot answer a shared tls-alpn-01 challenge");
                None
            }
        }
    }

    fn stored(&self, kind: ChallengeKind, key: &str) -> Option<String> {
        if !self.take_lookup() {
            return None;
        }
        let found = self
            .storage
            .with_client("cannot look up a challenge answer", |client| {
                client.query_opt(
                    "SELECT answer FROM acme_challenges WHERE kind = $1 AND key = $2",
                    &[&kind.as_str(), &key],
                )
            });
        match found {
            Ok(row) => {
                let answer = row.map(|row| row.get::<_, String>(0));
                if answer.is_some() {
                    tracing::debug!(target: "elsinore::acme", kind = kind.as_str(), key, "answered a validation from the state database before the refresh loaded it");
                }
                answer
            }
            Err(err) => {
                // Debug: while the database is away every guessed token
                // would log one (up to the budget); the refresh's health
                // and a failed order already say so.
                tracing::debug!(target: "elsinore::acme", error = %err, "a validation request found no answer in memory and the state database could not be asked");
                None
            }
        }
    }

    /// Whether one more lookup fits this second's budget.
    fn take_lookup(&self) -> bool {
        self.lookups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now())
    }

    /// Takes `name`'s order lock, or `None` when another front door holds
    /// it (it is ordering that name now).
    pub(crate) async fn try_lock(&self, name: &str) -> Result<Option<OrderLock>, Error> {
        let url = self.storage.url().clone();
        let key = order_lock_key(name);
        tokio::task::spawn_blocking(move || {
            let mut client = elsinore_postgres::connect(&url, "elsinore acme order")
                .map_err(|err| Error::State(err.to_string()))?;
            let got = elsinore_postgres::lock::try_lock(&mut client, key)
                .map_err(|err| state_error(&url, "cannot take the order lock", &err))?;
            Ok(got.then_some(OrderLock { client, key }))
        })
        .await
        .map_err(|err| Error::State(format!("order lock task failed: {err}")))?
    }

    /// Releases an order lock (closing its session would too; unlocking
    /// first frees the name without waiting for the server to notice).
    pub(crate) async fn unlock(lock: OrderLock) {
        let OrderLock { mut client, key } = lock;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(err) = elsinore_postgres::lock::unlock(&mut client, key) {
                tracing::warn!(target: "elsinore::acme", error = %err, "cannot release an order lock; it goes with the connection");
            }
        })
        .await;
    }

    /// Writes one answer for the fleet and waits (bounded) until this
    /// front door's refresh has loaded it: the notification that brought
    /// it here reached the others at the same time.
    pub(crate) async fn publish(
        &self,
        kind: ChallengeKind,
        key: &str,
        name: &str,
        answer: &str,
    ) -> Result<(), Error> {
        let storage = self.storage.clone();
        let (key, name, answer) = (key.to_owned(), name.to_owned(), answer.to_owned());
        let version = tokio::task::spawn_blocking(move || {
            storage.with_client("cannot share a challenge answer", |client| {
                let mut tx = client.transaction()?;
                tx.execute(
                    "INSERT INTO acme_challenges (kind, key, name, answer, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (kind, key) DO UPDATE
                       SET name = EXCLUDED.name, answer = EXCLUDED.answer,
                           created_at = EXCLUDED.created_at",
                    &[&kind.as_str(), &key, &name, &answer, &now_ms()],
                )?;
                let version = announce(&mut tx)?;
                tx.commit()?;
                Ok(version)
            })
        })
        .await
        .map_err(|err| Error::State(format!("challenge task failed: {err}")))??;
        let mut seen = self.seen.subscribe();
        let caught_up = tokio::time::timeout(PUBLISH_WAIT, seen.wait_for(|seen| *seen >= version));
        if !matches!(caught_up.await, Ok(Ok(_))) {
            tracing::warn!(target: "elsinore::acme", wait = ?PUBLISH_WAIT, "the shared challenge answer did not come back from the state database in time; asking the CA anyway");
        }
        Ok(())
    }

    /// Deletes answers once their order is decided. Blocking.
    pub(crate) fn withdraw(&self, answers: &[(ChallengeKind, String)]) {
        let result = self
            .storage
            .with_client("cannot remove a challenge answer", |client| {
                let mut tx = client.transaction()?;
                for (kind, key) in answers {
                    tx.execute(
                        "DELETE FROM acme_challenges WHERE kind = $1 AND key = $2",
                        &[&kind.as_str(), key],
                    )?;
                }
                announce(&mut tx)?;
                tx.commit()
            });
        if let Err(err) = result {
            tracing::warn!(target: "elsinore::acme", error = %err, "challenge answers left in the state database (harmless: the CA no longer asks for them)");
        }
    }
}

/// Starts the refresh thread feeding `acme` (certificates) and `fleet`
/// (answers). It ends when `acme` is dropped.
pub(crate) fn watch(fleet: Arc<Fleet>, acme: Weak<Acme>) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("elsinore-acme-listen".into())
        .spawn(move || refresh_loop(&fleet, &acme))
        .map(drop)
        .map_err(|err| Error::State(format!("cannot start the ACME refresh thread: {err}")))
}

fn refresh_loop(fleet: &Fleet, acme: &Weak<Acme>) {
    let url = fleet.storage.url().clone();
    let mut backoff = FIRST_BACKOFF;
    // Certificates stored from this time on are (re)read; 0 = all.
    let mut since = 0;
    while acme.strong_count() > 0 {
        let err = match listen(&url) {
            Ok(mut client) => {
                backoff = FIRST_BACKOFF;
                follow(&mut client, fleet, acme, &url, &mut since)
            }
            Err(err) => Some(err),
        };
        if let Some(err) = err {
            fleet.health.unreachable(&err.to_string());
            tracing::warn!(target: "elsinore::acme", error = %err, "ACME fleet refresh: lost the state database; serving the certificates held, reconnecting");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn listen(url: &PostgresUrl) -> Result<Client, Error> {
    let mut client = elsinore_postgres::connect(url, "elsinore acme listen")
        .map_err(|err| Error::State(err.to_string()))?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|err| state_error(url, "cannot LISTEN", &err))?;
    Ok(client)
}

/// Loads now, then on every notification and whenever the counter moved.
/// `Some(error)` when the connection failed; `None` when `acme` is gone.
fn follow(
    client: &mut Client,
    fleet: &Fleet,
    acme: &Weak<Acme>,
    url: &PostgresUrl,
    since: &mut i64,
) -> Option<Error> {
    let mut seen = match reload(client, fleet, acme, url, since) {
        Ok(version) => version,
        Err(err) => return Some(err),
    };
    if fleet.health.reachable() {
        tracing::info!(target: "elsinore::acme", "ACME fleet refresh: reaching the state database again");
    } else {
        tracing::info!(target: "elsinore::acme", version = seen, "ACME fleet refresh: following the state database's certificates and challenge answers");
    }
    let mut next_check = Instant::now() + CHECK_INTERVAL;
    loop {
        if acme.strong_count() == 0 {
            return None;
        }
        let notified = match elsinore_postgres::wait_for_notification(client, WAIT_SLICE) {
            Ok(notified) => notified,
            Err(err) => return Some(state_error(url, "LISTEN", &err)),
        };
        let due = Instant::now() >= next_check;
        if !notified && !due {
            continue;
        }
        next_check = Instant::now() + CHECK_INTERVAL;
        if !notified {
            if let Err(err) = client.is_valid(CHECK_INTERVAL) {
                return Some(state_error(url, "no answer", &err));
            }
            let version = client
                .query_one("SELECT version FROM acme_version WHERE id = 1", &[])
                .map(|row| row.get::<_, i64>(0));
            match version {
                Ok(version) if version == seen => continue,
                Ok(_) => {}
                Err(err) => return Some(state_error(url, "cannot read acme_version", &err)),
            }
        }
        match reload(client, fleet, acme, url, since) {
            Ok(version) => seen = version,
            Err(err) => return Some(err),
        }
    }
}

/// A stored certificate as read: name, chain, key (PEM).
pub(crate) type StoredRow = (String, String, String);

/// Reads the counter, the certificates stored since `since` and every
/// pending answer in one snapshot, and hands them over.
fn reload(
    client: &mut Client,
    fleet: &Fleet,
    acme: &Weak<Acme>,
    url: &PostgresUrl,
    since: &mut i64,
) -> Result<i64, Error> {
    let fail = |context: &'static str| move |err| state_error(url, context, &err);
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(fail("cannot read ACME state"))?;
    let version: i64 = tx
        .query_one("SELECT version FROM acme_version WHERE id = 1", &[])
        .map_err(fail("cannot read acme_version"))?
        .get(0);
    let certs = tx
        .query(
            "SELECT name, cert_pem, key_pem, stored_at FROM acme_certificates WHERE stored_at >= $1",
            &[&*since],
        )
        .map_err(fail("cannot read certificates"))?;
    let challenges = tx
        .query("SELECT kind, key, name, answer FROM acme_challenges", &[])
        .map_err(fail("cannot read challenge answers"))?;
    tx.commit().map_err(fail("cannot read ACME state"))?;

    let mut answers = Answers::default();
    for row in &challenges {
        let (kind, key, name, answer): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if kind == ChallengeKind::Http01.as_str() {
            answers.http01.insert(key, answer);
        } else if kind == ChallengeKind::TlsAlpn01.as_str() {
            match unhex(&answer).map(|digest| alpn_certificate(&name, &digest)) {
                Some(Ok(certified)) => {
                    answers.tls_alpn01.insert(name, certified);
                }
                Some(Err(err)) => {
                    tracing::warn!(target: "elsinore::acme", name, error = %err, "cannot answer a shared tls-alpn-01 challenge");
                }
                None => {
                    tracing::warn!(target: "elsinore::acme", name, "a shared tls-alpn-01 answer is not hex; ignored");
                }
            }
        }
    }
    fleet.answers.store(Arc::new(answers));
    // The newest row's time again next round (>=): a row stored in the
    // same millisecond is not missed; rows read twice are recognised.
    *since = certs
        .iter()
        .map(|row| row.get::<_, i64>(3))
        .max()
        .unwrap_or(*since);
    let rows: Vec<StoredRow> = certs
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    if let Some(acme) = acme.upgrade() {
        acme.fleet_certificates(rows, |name| origin(url, name));
    }
    fleet.seen.send_replace(version);
    Ok(version)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_locks_are_per_name_and_never_the_events_lock() {
        let blog = order_lock_key("blog.test");
        assert_eq!(blog, order_lock_key("blog.test"));
        assert_ne!(blog, order_lock_key("shop.test"));
        assert_eq!(blog >> 32, ORDER_LOCK_NAMESPACE);
        // elsinore-events' EVENTS_LOCK and the migrations' lock.
        assert_ne!(blog >> 32, 0x656c_7369_6e6f_7265_i64 >> 32);
    }

    #[test]
    fn lookups_on_a_miss_are_limited_per_second() {
        let mut budget = LookupBudget::default();
        let start = Instant::now();
        let granted = (0..100).filter(|_| budget.take(start)).count();
        assert_eq!(granted, STORED_LOOKUPS_PER_SECOND as usize);
        assert!(!budget.take(start + Duration::from_millis(999)));
        assert!(budget.take(start + Duration::from_secs(1)));
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let digest = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&crate::order::hex(&digest)), Some(digest.to_vec()));
        assert_eq!(unhex("abc"), None);
    }
}
