//! Recorded host owners: read from the state database before the first
//! plan, written back after each swap that changed an owner, always on the
//! blocking pool (never the request path).

use std::collections::HashMap;
use std::sync::Arc;

use elsinore_routes::{DeclaredName, HostTable};
use elsinore_store::{OwnerChanges, OwnerRecords};

/// Rows written per transaction by [`record_changes`]: a first start
/// with a million hosts writes a million rows, and building them all
/// first cost over 100 MB that the allocator then kept.
const BATCH: usize = 20_000;

/// What to write so the record matches `after`: names new or moved, and
/// names no project serves any more (released: a tenant moves a name by
/// removing its folder, then another project adding one). Handed to
/// `write` in batches of at most [`BATCH`] names; returns how many were
/// set and released, and the changes themselves when they all fit in one
/// batch (for the log).
pub(crate) fn owner_changes(
    before: &HostTable<Arc<str>>,
    recorded: &HashMap<String, String>,
    after: &HostTable<Arc<str>>,
    mut write: impl FnMut(&OwnerChanges),
) -> (usize, usize, Option<OwnerChanges>) {
    let mut batch = OwnerChanges::default();
    let (mut set, mut released, mut flushed) = (0, 0, false);
    let mut flush = |batch: &mut OwnerChanges, force: bool| {
        if batch.set.len() + batch.released.len() >= BATCH || (force && flushed) {
            batch.set.sort();
            batch.released.sort();
            write(batch);
            *batch = OwnerChanges::default();
            flushed = true;
        }
    };
    // The recorded owner of a name the table does not hold (only at the
    // first start, and then read once).
    let recorded_owner = |name: DeclaredName<'_>| -> Option<&str> {
        match recorded.is_empty() {
            true => None,
            false => recorded.get(&name.to_string()).map(String::as_str),
        }
    };
    for (name, project) in after.iter() {
        let was = before
            .get(name)
            .map(|p| &**p)
            .or_else(|| recorded_owner(name));
        if was != Some(&**project) {
            batch.set.push((name.to_string(), project.to_string()));
            set += 1;
            flush(&mut batch, false);
        }
    }
    for (name, _) in before.iter() {
        if after.get(name).is_none() {
            batch.released.push(name.to_string());
            released += 1;
            flush(&mut batch, false);
        }
    }
    for name in recorded.keys() {
        let declared = match name.strip_prefix("*.") {
            Some(suffix) => DeclaredName {
                wildcard: true,
                name: suffix,
            },
            None => DeclaredName {
                wildcard: false,
                name,
            },
        };
        if before.get(declared).is_none() && after.get(declared).is_none() {
            batch.released.push(name.clone());
            released += 1;
            flush(&mut batch, false);
        }
    }
    flush(&mut batch, true);
    let whole = (!flushed).then(|| {
        batch.set.sort();
        batch.released.sort();
        batch
    });
    (set, released, whole)
}

/// Writes the changes from `before` (and `recorded`) to `after` on the
/// blocking pool, in batches, and logs them.
pub(crate) async fn record_changes(
    records: &Arc<OwnerRecords>,
    before: HostTable<Arc<str>>,
    recorded: HashMap<String, String>,
    after: HostTable<Arc<str>>,
) {
    let writer = records.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut failed = None;
        let (set, released, whole) = owner_changes(&before, &recorded, &after, |batch| {
            if failed.is_none() {
                failed = writer.record(batch).err();
            }
        });
        // Freed here, on this thread, not while the caller goes on.
        drop((before, recorded, after));
        (set, released, whole, failed)
    })
    .await;
    match outcome {
        // Few: written (and logged one by one) as any reload's.
        Ok((_, _, Some(changes), _)) => record(records, changes).await,
        Ok((recorded, released, None, None)) => {
            tracing::info!(target: crate::LOG_TARGET, recorded, released, "host owners recorded");
        }
        Ok((_, _, None, Some(err))) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot record host owners")
        }
        Err(err) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot record host owners")
        }
    }
}

/// Every recorded owner; an unreadable record is logged and treated as
/// empty (the projects' order decides, as before owners were recorded).
pub(crate) async fn load(records: &Arc<OwnerRecords>) -> HashMap<String, String> {
    let records = records.clone();
    match tokio::task::spawn_blocking(move || records.load()).await {
        Ok(Ok(owners)) => owners.into_iter().collect(),
        Ok(Err(err)) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot read the recorded host owners; config.json order decides this start");
            HashMap::new()
        }
        Err(err) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot read the recorded host owners");
            HashMap::new()
        }
    }
}

/// More owner changes than this are logged as one line.
const MAX_LOGGED: usize = 1_000;

/// Writes `changes`; a failure is logged (the next reload that changes
/// an owner tries again with its own changes, and the live table is right
/// either way).
pub(crate) async fn record(records: &Arc<OwnerRecords>, changes: OwnerChanges) {
    if changes.is_empty() {
        return;
    }
    // One line per name, up to a point: a first start with a million
    // hosts records a million names, and a line each took seconds.
    if changes.set.len() + changes.released.len() <= MAX_LOGGED {
        for (host, project) in &changes.set {
            tracing::info!(target: crate::LOG_TARGET, host, project, "host owner recorded");
        }
        for host in &changes.released {
            tracing::info!(target: crate::LOG_TARGET, host, "host owner released (no project declares it)");
        }
    } else {
        tracing::info!(target: crate::LOG_TARGET, recorded = changes.set.len(), released = changes.released.len(), "host owners recorded");
    }
    let records = records.clone();
    let outcome = tokio::task::spawn_blocking(move || records.record(&changes)).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot record host owners")
        }
        Err(err) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot record host owners")
        }
    }
}
