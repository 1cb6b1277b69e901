//! `elsinore keys …`: host keys from the command line, on the same database
//! and with the same rules as the admin API. Works whether or not the
//! server runs: a running server notices the change within a second.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::Subcommand;
use elsinore_config::Hostname;
use elsinore_keys::now_ms;
use elsinore_live::Declared;
use elsinore_store::keys::{
    Caller, Imported, ImportedKey, KeyError, KeyInfo, KeyStatus, KeyStore, Revocation, Scope,
};
use elsinore_store::Databases;

use crate::keys_import::read_rows;

/// The `keys` verbs.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List a host's keys, revoked ones included (never the keys themselves).
    List {
        /// The hostname, e.g. blog.example.com.
        #[arg(long)]
        host: String,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Create a key for a host. The key is printed once, alone on stdout.
    Create {
        /// The hostname; a project in config.json must serve it.
        #[arg(long)]
        host: String,
        /// What the key is for (shown in listings).
        #[arg(long, default_value = "")]
        label: String,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Import plaintext host keys from Hamlet's hamlet_host_keys table (the
    /// CSV psql's `\copy … CSV HEADER` writes, or a JSON array), stored
    /// hashed. Keys of hosts the project does not own are refused, one line
    /// each on stderr; keys already imported are skipped.
    Import {
        /// The project whose hosts the keys open.
        #[arg(long)]
        project: String,
        /// The exported file (read only, never copied).
        file: PathBuf,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Revoke a key at once (a rotation's grace period ends too).
    Revoke {
        /// The key's id, as listed.
        #[arg(long)]
        id: i64,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
}

/// Runs one `keys` verb.
pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List { host, config } => {
            let (store, host, project) = open_for_host(&config, &host)?;
            let keys = store.list(host.as_str(), &project)?;
            print!("{}", render_list(&host, &project, &keys, now_ms()));
        }
        KeysCommand::Create {
            host,
            label,
            config,
        } => {
            let (store, host, project) = open_for_host(&config, &host)?;
            let created = store.create(host.as_str(), &project, &label, &Caller::operator())?;
            // The key alone on stdout, so `KEY=$(elsinore keys create …)` works.
            println!("{}", created.key.expose());
            eprintln!(
                "created key {} ({}) for {host} (project {project}); it is shown only this once",
                created.info.id, created.info.prefix
            );
        }
        KeysCommand::Import {
            project,
            file,
            config,
        } => import(&config, &project, &file)?,
        KeysCommand::Revoke { id, config } => {
            let declared = Declared::load(&config)?;
            let store = KeyStore::open(&crate::tenant_api::databases(&declared.config))?;
            match store.revoke(Scope::Any, id, &Caller::operator()) {
                Ok(Revocation::Revoked(key)) => println!(
                    "revoked key {id} ({}) of {} (project {})",
                    key.prefix, key.host, key.project
                ),
                Ok(Revocation::AlreadyRevoked(key)) => println!(
                    "key {id} ({}) of {} was already revoked; nothing changed",
                    key.prefix, key.host
                ),
                Err(KeyError::NotFound { .. }) => bail!("there is no key with id {id}"),
                Err(err) => return Err(err.into()),
            }
        }
    }
    Ok(())
}

/// `keys import`: every row is read (and checked for shape) before any is
/// stored, so a malformed file changes nothing; then each key is stored or
/// refused on its own.
fn import(config: &Path, project: &str, file: &Path) -> anyhow::Result<()> {
    let declared = Declared::load(config)?;
    if !declared.projects.iter().any(|p| p.config.name == project) {
        bail!(
            "--project: no project named {project:?} in {}",
            declared.config.file.display()
        );
    }
    let rows = read_rows(file)?;
    let databases = crate::tenant_api::databases(&declared.config);
    // The store first: opening it creates and migrates the state database,
    // which the recorded owners are read from.
    let store = KeyStore::open(&databases)?;
    let owners = HostOwnership::of(&declared, &databases)?;
    let (mut imported, mut present, mut refused) = (0, 0, 0);
    let now = now_ms();
    for row in &rows {
        let refuse = |why: String| {
            eprintln!("{}, {}: refused: {why}", file.display(), row.at);
        };
        let host = match Hostname::parse(&row.host) {
            Ok(host) => host,
            Err(err) => {
                refuse(format!("target_host {:?}: {err}", row.host));
                refused += 1;
                continue;
            }
        };
        match owners.owner(host.as_str()) {
            Some(owner) if owner == project => {}
            Some(owner) => {
                refuse(format!("{host} belongs to project {owner}, not {project}"));
                refused += 1;
                continue;
            }
            None => {
                refuse(format!(
                    "no project serves {host} (add a folder hosts/{host}/ to project {project} first)"
                ));
                refused += 1;
                continue;
            }
        }
        let key = ImportedKey {
            host: host.as_str(),
            project,
            key: &row.key,
            label: &row.label,
            created_at: row.created_at.unwrap_or(now),
            revoked_at: row.revoked_at,
        };
        match store.import(&key, &Caller::operator()) {
            Ok(Imported::Added(_)) => imported += 1,
            Ok(Imported::AlreadyPresent(_)) => present += 1,
            Ok(Imported::HeldElsewhere(other)) => {
                refuse(format!(
                    "the same key is already stored for {} (project {}, key {})",
                    other.host, other.project, other.id
                ));
                refused += 1;
            }
            Err(err @ (KeyError::InvalidImportedKey(_) | KeyError::InvalidLabel(_))) => {
                refuse(err.to_string());
                refused += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    println!(
        "imported {imported}, already present {present}, refused {refused} (of {} in {})",
        rows.len(),
        file.display()
    );
    Ok(())
}

/// Who owns each host, as the running server decides it: `host_owners`
/// in config.json, then the owner recorded in the state database, then
/// the first project declaring it.
struct HostOwnership {
    names: Vec<String>,
    table: elsinore_routes::HostTable<usize>,
}

impl HostOwnership {
    fn of(declared: &Declared, databases: &Databases) -> anyhow::Result<Self> {
        let recorded: HashMap<String, String> = elsinore_store::OwnerRecords::open(databases)?
            .load()?
            .into_iter()
            .collect();
        let projects: Vec<(&str, &elsinore_routes::HostScan)> = declared
            .projects
            .iter()
            .map(|p| (p.config.name.as_str(), &p.scan))
            .collect();
        let (table, _) = elsinore_routes::decide_owners(
            &projects,
            |host| recorded.get(&host.to_string()).map(String::as_str),
            |host| declared.config.host_owners.get(host),
        );
        Ok(Self {
            names: projects
                .iter()
                .map(|(name, _)| (*name).to_owned())
                .collect(),
            table,
        })
    }

    fn owner(&self, host: &str) -> Option<&str> {
        self.table
            .lookup(host)
            .and_then(|&index| self.names.get(index))
            .map(String::as_str)
    }
}

/// Loads the configuration, finds the project serving `host`, opens the
/// state database.
fn open_for_host(config: &Path, host: &str) -> anyhow::Result<(KeyStore, Hostname, String)> {
    let name = Hostname::parse(host).map_err(|err| anyhow!("--host: {err}"))?;
    let declared = Declared::load(config)?;
    let (owners, _) = declared.host_owners();
    let project = owners
        .lookup(name.as_str())
        .map(|&index| declared.projects[index].config.name.clone())
        .with_context(|| {
            format!(
                "no project in {} serves {name} (add a folder hosts/{name}/ to a project first)",
                declared.config.file.display()
            )
        })?;
    let store = KeyStore::open(&crate::tenant_api::databases(&declared.config))?;
    Ok((store, name, project))
}

fn render_list(host: &Hostname, project: &str, keys: &[KeyInfo], now: i64) -> String {
    if keys.is_empty() {
        return format!("no keys for {host} (project {project})\n");
    }
    let mut out = format!("keys for {host} (project {project}):\n");
    let _ = writeln!(
        out,
        "{:>4}  {:<12}  {:<8}  {:<20}  {:<20}  LABEL",
        "ID", "PREFIX", "STATUS", "CREATED", "REVOKED"
    );
    for key in keys {
        let status = key.status(now);
        let revoked = match (status, key.revoked_at, key.grace_until) {
            (KeyStatus::Grace, _, Some(until)) => format!("valid until {}", time(until)),
            (_, Some(at), _) => time(at),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<12}  {:<8}  {:<20}  {:<20}  {}",
            key.id,
            key.prefix,
            status.as_str(),
            time(key.created_at),
            revoked,
            key.label
        );
    }
    out
}

/// Epoch milliseconds as RFC 3339 UTC, to the second.
fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}
