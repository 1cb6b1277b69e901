//! Session-level advisory locks: one holder across every front door that
//! connects to the same database, released by [`unlock`] or when the
//! holder's connection ends (a front door that dies mid-work frees it).

use postgres::Client;

/// Takes the advisory lock `key` for this session if nobody holds it;
/// `false` when another session does. Never waits.
pub fn try_lock(client: &mut Client, key: i64) -> Result<bool, postgres::Error> {
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
        .try_get(0)
}

/// Releases the lock `key` taken by [`try_lock`] on this session.
pub fn unlock(client: &mut Client, key: i64) -> Result<bool, postgres::Error> {
    client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])?
        .try_get(0)
}

/// Who holds the lock `key`, in words (`application_name`, client address
/// and backend pid), for the report of a session that did not get it;
/// `None` when nobody does (any more) or the catalog cannot say.
pub fn holder(client: &mut Client, key: i64) -> Result<Option<String>, postgres::Error> {
    // A bigint key is stored as classid (high 32 bits), objid (low 32
    // bits) and objsubid 1.
    let high = (key >> 32) & 0xffff_ffff;
    let low = key & 0xffff_ffff;
    let row = client.query_opt(
        "SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), l.pid
           FROM pg_locks l
           LEFT JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
            AND l.classid::bigint = $1 AND l.objid::bigint = $2
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          LIMIT 1",
        &[&high, &low],
    )?;
    Ok(row.map(|row| {
        let name: String = row.get(0);
        let addr: String = row.get(1);
        let pid: i32 = row.get(2);
        format!("{name:?} from {addr} (backend pid {pid})")
    }))
}
