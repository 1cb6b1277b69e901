//! The thread that keeps a front door's [`KeyRing`] in step with a
//! PostgreSQL state database shared by a fleet.
//!
//! It holds its own connection with `LISTEN elsinore_state`: every change
//! made through any front door (or `elsinore keys`) notifies in its
//! transaction, and the ring is reloaded as soon as the notification
//! arrives. Every [`CHECK_INTERVAL`] it also compares the change counter
//! (`elsinore_state_version`), the backstop for a notification missed
//! while reconnecting. When PostgreSQL goes away the ring keeps the last
//! keys (the request path never waits on the database), [`StateHealth`]
//! says since when, and the thread reconnects with a growing pause; back
//! online, it reloads at once.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use elsinore_keys::{now_ms, KeyRing};
use elsinore_postgres::postgres::Client;
use elsinore_postgres::PostgresUrl;

use super::tables::PgTables;
use super::{live_keys, KeyError, Result};
use crate::pg::{self, classify};
use crate::StateHealth;

/// How often the change counter is compared, whatever the notifications.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// First pause before reconnecting; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long one wait for a notification lasts: also how soon the thread
/// notices that the ring was dropped.
const WAIT_SLICE: Duration = Duration::from_millis(500);

/// How long the periodic check waits for PostgreSQL to answer at all.
const VALID_WITHIN: Duration = Duration::from_secs(2);

/// Starts the refresh thread for `ring` (already filled once by the
/// caller). It ends once the ring is dropped.
pub fn watch_fleet(
    ring: &Arc<KeyRing>,
    url: &PostgresUrl,
    health: Arc<StateHealth>,
    check_every: Duration,
) -> Result<()> {
    let ring = Arc::downgrade(ring);
    let url = url.clone();
    std::thread::Builder::new()
        .name("elsinore-state-listen".into())
        .spawn(move || fleet_loop(&ring, &url, &health, check_every))
        .map_err(|err| KeyError::Thread(err.to_string()))?;
    Ok(())
}

fn fleet_loop(ring: &Weak<KeyRing>, url: &PostgresUrl, health: &StateHealth, every: Duration) {
    let mut backoff = FIRST_BACKOFF;
    while ring.strong_count() > 0 {
        match listen(url) {
            Ok(mut client) => {
                backoff = FIRST_BACKOFF;
                // Returns only when the connection failed or the ring is gone.
                let err = follow(&mut client, ring, url, health, every);
                pg::discard(client);
                if let Some(err) = err {
                    tracing::warn!(%err, "state database: lost the change notifications; serving with the keys held, reconnecting");
                    health.unreachable(&err.to_string());
                }
            }
            Err(err) => {
                if health.unreachable_since().is_none() {
                    tracing::warn!(%err, "state database unreachable; serving with the keys held");
                }
                health.unreachable(&err.to_string());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn listen(url: &PostgresUrl) -> Result<Client> {
    let mut client = pg::connect(url, "elsinore state listen")?;
    client
        .batch_execute(&format!("LISTEN {}", pg::CHANNEL))
        .map_err(|err| KeyError::Store(classify(&url.redacted(), "cannot LISTEN")(err)))?;
    Ok(client)
}

/// Reloads now, then on every notification and whenever the change
/// counter moved. `Some(error)` when the connection failed.
fn follow(
    client: &mut Client,
    ring: &Weak<KeyRing>,
    url: &PostgresUrl,
    health: &StateHealth,
    every: Duration,
) -> Option<KeyError> {
    let redacted = url.redacted();
    let mut seen = match reload(client, ring, &redacted) {
        Ok(version) => version,
        Err(err) => return Some(err),
    };
    if health.reachable() {
        tracing::info!("state database reachable again; key ring reloaded");
    }
    let mut next_check = Instant::now() + every;
    loop {
        if ring.strong_count() == 0 {
            return None;
        }
        // Several changes in a burst: one reload.
        let notified = match elsinore_postgres::wait_for_notification(client, WAIT_SLICE) {
            Ok(notified) => notified,
            Err(err) => return Some(KeyError::Store(classify(&redacted, "LISTEN")(err))),
        };
        let due = Instant::now() >= next_check;
        if !notified && !due {
            continue;
        }
        next_check = Instant::now() + every;
        // A connection whose network path died answers nothing and says
        // nothing either: this round trip has a client-side time limit.
        if let Err(err) = client.is_valid(VALID_WITHIN) {
            return Some(KeyError::Store(classify(&redacted, "no answer")(err)));
        }
        let version = match pg::state_version(client, &redacted) {
            Ok(version) => version,
            Err(err) => return Some(err.into()),
        };
        // Also reloads when a grace period may have ended: cheap enough.
        if notified || version != seen {
            match reload(client, ring, &redacted) {
                Ok(version) => seen = version,
                Err(err) => return Some(err),
            }
        }
    }
}

/// Reads the counter and the live keys in one snapshot and refills the
/// ring; returns the counter.
fn reload(client: &mut Client, ring: &Weak<KeyRing>, url: &str) -> Result<i64> {
    let mut tx = client
        .build_transaction()
        .isolation_level(elsinore_postgres::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(|err| KeyError::Store(classify(url, "cannot read keys")(err)))?;
    let version: i64 = tx
        .query_one(
            "SELECT version FROM elsinore_state_version WHERE id = 1",
            &[],
        )
        .map(|row| row.get(0))
        .map_err(|err| KeyError::Store(classify(url, "cannot read the change counter")(err)))?;
    let keys = live_keys(&mut PgTables { tx: &mut tx, url }, now_ms())?;
    tx.commit()
        .map_err(|err| KeyError::Store(classify(url, "cannot read keys")(err)))?;
    if let Some(ring) = ring.upgrade() {
        let count = keys.len();
        if ring.replace(keys) {
            tracing::info!(
                keys = count,
                "host keys changed in the state database; key ring reloaded"
            );
        }
    }
    Ok(version)
}
