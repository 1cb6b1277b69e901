//! `elsinore state export|import`: moving Elsinore's state between state
//! databases, typically from the SQLite file of one server to the
//! PostgreSQL database of a fleet (docs/scaling.md). The records are JSON
//! lines ([`elsinore_store::transfer`]); keys travel as hashes only.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use elsinore_live::Declared;
use elsinore_store::transfer;

/// The `state` verbs.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Write the state database of config.json (SQLite file or
    /// PostgreSQL URL) to FILE: host keys (hashes), audit log, host
    /// owners, the events' run log.
    Export {
        /// Where to write (created 0600; an existing file is refused).
        file: PathBuf,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Read FILE (from `state export`) into the state database of
    /// config.json. Rows already there are skipped: running it twice is
    /// harmless. A running server picks the keys up (at once on
    /// PostgreSQL, within a second on SQLite).
    Import {
        /// The exported file.
        file: PathBuf,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
}

/// Runs one `state` verb.
pub fn run(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Export { file, config } => {
            let declared = Declared::load(&config)?;
            let databases = crate::tenant_api::databases(&declared.config);
            // Hashes and the audit log are not for everyone's eyes.
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("{}: cannot create the export file", file.display()))?;
            let mut out = BufWriter::new(out);
            let counts = transfer::export(&databases, &mut out)?;
            println!(
                "exported {} keys, {} audit rows, {} host owners, {} event run rows from {} to {}",
                counts.keys,
                counts.audit,
                counts.owners,
                counts.event_runs,
                source_name(&declared),
                file.display()
            );
        }
        StateCommand::Import { file, config } => {
            let declared = Declared::load(&config)?;
            let databases = crate::tenant_api::databases(&declared.config);
            let input = File::open(&file)
                .with_context(|| format!("{}: cannot open the export file", file.display()))?;
            let done = transfer::import(&databases, &mut BufReader::new(input))
                .with_context(|| file.display().to_string())?;
            println!(
                "imported {} keys, {} audit rows, {} host owners, {} event run rows into {}; already there: {} keys, {} audit rows, {} host owners, {} event run rows",
                done.added.keys,
                done.added.audit,
                done.added.owners,
                done.added.event_runs,
                source_name(&declared),
                done.skipped.keys,
                done.skipped.audit,
                done.skipped.owners,
                done.skipped.event_runs
            );
        }
    }
    Ok(())
}

/// The state database, as shown to the operator (password hidden).
fn source_name(declared: &Declared) -> String {
    match &declared.config.startup.state_database_url {
        Some(url) => url.to_string(),
        None => declared.config.startup.state_database.display().to_string(),
    }
}
