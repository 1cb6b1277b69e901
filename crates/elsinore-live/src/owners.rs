//! Recorded host owners: read from the state database before the first
//! plan, written back after each swap that changed an owner, always on the
//! blocking pool (never the request path).

use std::collections::HashMap;
use std::sync::Arc;

use elsinore_routes::HostTable;
use elsinore_store::{OwnerChanges, OwnerRecords};

/// What to write so the record matches `after`: names new or moved, and
/// names no project serves any more (released: a tenant moves a name by
/// removing its folder, then another project adding one).
pub(crate) fn owner_changes(
    before: &HostTable<Arc<str>>,
    recorded: &HashMap<String, String>,
    after: &HostTable<usize>,
    project_name: impl Fn(usize) -> String,
) -> OwnerChanges {
    let mut was: HashMap<String, String> = recorded.clone();
    for (name, project) in before.iter() {
        was.insert(name.to_string(), project.to_string());
    }
    let mut changes = OwnerChanges::default();
    for (name, &index) in after.iter() {
        let name = name.to_string();
        let project = project_name(index);
        if was.remove(&name).as_ref() != Some(&project) {
            changes.set.push((name, project));
        }
    }
    changes.released = was.into_keys().collect();
    changes.set.sort();
    changes.released.sort();
    changes
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
