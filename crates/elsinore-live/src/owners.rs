//! Recorded host owners: read from the state database before the first
//! plan, written back after each swap that changed an owner, always on the
//! blocking pool (never the request path).

use std::sync::Arc;

use elsinore_routes::HostTable;
use elsinore_store::{OwnerChanges, OwnerRecords};

use crate::recorded::RecordedOwners;

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
    recorded: &RecordedOwners,
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
    for (name, project) in after.iter() {
        // The recorded owner counts only for a name the table does not
        // hold (at the first start, when `before` is empty).
        let was = before
            .get(name)
            .map(|p| &**p)
            .or_else(|| recorded.get(name));
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
    for name in recorded.names() {
        if before.get(name).is_none() && after.get(name).is_none() {
            batch.released.push(name.to_string());
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
    recorded: RecordedOwners,
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

/// Every recorded owner, made compact on the blocking thread that read
/// them; an unreadable record is logged and treated as empty (the
/// projects' order decides, as before owners were recorded).
pub(crate) async fn load(records: &Arc<OwnerRecords>) -> RecordedOwners {
    let records = records.clone();
    let loaded =
        tokio::task::spawn_blocking(move || records.load().map(RecordedOwners::from_rows)).await;
    match loaded {
        Ok(Ok(owners)) => owners,
        Ok(Err(err)) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot read the recorded host owners; config.json order decides this start");
            RecordedOwners::default()
        }
        Err(err) => {
            tracing::error!(target: crate::LOG_TARGET, error = %err, "cannot read the recorded host owners");
            RecordedOwners::default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use elsinore_config::HostPattern;
    use elsinore_routes::HostTableBuilder;

    fn table(entries: &[(&str, &str)]) -> HostTable<Arc<str>> {
        let mut builder = HostTableBuilder::new();
        for (name, project) in entries {
            let pattern = HostPattern::parse(name).expect("a valid name");
            builder.insert(project, &pattern, Arc::from(*project));
        }
        builder.finish().0
    }

    fn recorded(rows: &[(&str, &str)]) -> RecordedOwners {
        RecordedOwners::from_rows(
            rows.iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
        )
    }

    fn changes(
        before: &HostTable<Arc<str>>,
        recorded: &RecordedOwners,
        after: &HostTable<Arc<str>>,
    ) -> OwnerChanges {
        let (_, _, whole) = owner_changes(before, recorded, after, |_| {
            panic!("a few changes are returned whole, not written in batches")
        });
        whole.expect("a few changes")
    }

    #[test]
    fn a_restart_that_finds_what_was_recorded_writes_nothing() {
        let rows = [
            ("a.test", "alpha"),
            ("b.test", "beta"),
            ("*.wild.test", "beta"),
        ];
        let written = changes(&HostTable::default(), &recorded(&rows), &table(&rows));
        assert!(written.is_empty(), "{written:?}");
    }

    #[test]
    fn a_restart_records_new_and_moved_names_and_releases_names_gone() {
        let written = changes(
            &HostTable::default(),
            &recorded(&[
                ("a.test", "alpha"),
                ("gone.test", "alpha"),
                ("*.gone.test", "beta"),
                ("moved.test", "alpha"),
            ]),
            &table(&[
                ("a.test", "alpha"),
                ("moved.test", "beta"),
                ("new.test", "beta"),
                ("*.new.test", "alpha"),
            ]),
        );
        assert_eq!(
            written,
            OwnerChanges {
                set: vec![
                    ("*.new.test".into(), "alpha".into()),
                    ("moved.test".into(), "beta".into()),
                    ("new.test".into(), "beta".into()),
                ],
                released: vec!["*.gone.test".into(), "gone.test".into()],
            }
        );
    }

    #[test]
    fn a_recorded_wildcard_is_not_the_exact_name_of_its_suffix() {
        // `*.wild.test` recorded for beta; now alpha serves `wild.test`
        // itself and beta no longer declares the wildcard.
        let written = changes(
            &HostTable::default(),
            &recorded(&[("*.wild.test", "beta")]),
            &table(&[("wild.test", "alpha")]),
        );
        assert_eq!(
            written,
            OwnerChanges {
                set: vec![("wild.test".into(), "alpha".into())],
                released: vec!["*.wild.test".into()],
            }
        );
    }

    #[test]
    fn more_changes_than_a_batch_are_written_in_batches() {
        let rows: Vec<(String, String)> = (0..BATCH + 1)
            .map(|i| (format!("h{i}.test"), "alpha".to_owned()))
            .collect();
        let mut after = HostTable::default();
        for (name, project) in &rows {
            after.insert_exact(name, Arc::from(project.as_str()));
        }
        // Everything recorded: nothing to write, whatever the size.
        let (set, released, whole) = owner_changes(
            &HostTable::default(),
            &RecordedOwners::from_rows(rows),
            &after,
            |_| panic!("nothing to write"),
        );
        assert_eq!((set, released), (0, 0));
        assert!(whole.is_some_and(|w| w.is_empty()));
        // Nothing recorded: every name, in batches of at most BATCH.
        let mut batches = Vec::new();
        let (set, _, whole) = owner_changes(
            &HostTable::default(),
            &RecordedOwners::default(),
            &after,
            |batch| batches.push(batch.set.len()),
        );
        assert_eq!(set, BATCH + 1);
        assert!(whole.is_none());
        assert_eq!(batches, [BATCH, 1]);
    }
}
