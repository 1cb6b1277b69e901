//! Waiting for `NOTIFY`s on a connection that `LISTEN`s.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::Client;

/// Waits up to `slice` for a notification on the channels `client`
/// listens to. `Ok(true)` when one or more arrived: a burst of changes is
/// one wake-up, since what already arrived is taken without waiting (the
/// library's timeout iterator would wait a whole slice for one more).
pub fn wait_for_notification(
    client: &mut Client,
    slice: Duration,
) -> Result<bool, postgres::Error> {
    let mut notifications = client.notifications();
    let mut waiting = notifications.timeout_iter(slice);
    match waiting.next()? {
        Some(_) => {
            drop(waiting);
            let _ = notifications.iter().count();
            Ok(true)
        }
        None => Ok(false),
    }
}
