//! The `elsinore` command: parse the CLI, set up logging, run a verb.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use elsinore_live::Declared;

mod dev_cert;
mod events_cmd;
mod inherited;
mod keys_cmd;
mod keys_import;
mod logging;
mod memory;
mod readiness;
mod serve;
mod state_cmd;
mod systemd;
mod tenant_api;
mod tracing_setup;
mod upgrade;
mod upgrade_cmd;
mod upgrade_files;

/// Hostname-routed front door for multi-project servers.
#[derive(Debug, Parser)]
#[command(name = "elsinore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: start every project's handlers and proxy requests.
    Serve {
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
        /// Log filter of the diagnostics on stderr, `RUST_LOG` syntax (e.g.
        /// `warn,elsinore_live=debug`); overrides `RUST_LOG`. The access
        /// log is config.json's `access_log`, not filtered by this.
        #[arg(long, value_name = "FILTER")]
        log: Option<String>,
        /// `text` or `json` log lines; overrides config.json `log_format`.
        #[arg(long, value_name = "FORMAT")]
        log_format: Option<LogFormatArg>,
    },
    /// Validate config.json and every project, print the route table.
    Check {
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Print host → project → handlers.
    Routes {
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
    },
    /// Manage per-host admin keys (list, create, revoke).
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// Move Elsinore's state (host keys as hashes, audit log, host owners,
    /// the events' run log) between state databases: export from one, import into another
    /// (e.g. from the SQLite file to PostgreSQL).
    State {
        #[command(subcommand)]
        command: state_cmd::StateCommand,
    },
    /// The framework events (SoftDeleteCleanup, SessionExpiry): run them
    /// now, or list recent runs.
    Events {
        #[command(subcommand)]
        verb: events_cmd::EventsVerb,
    },
    /// Hand the running server's listening sockets to a new binary without
    /// dropping a connection (the same as SIGUSR2): the new process starts
    /// its handlers, takes over once they are ready, and the old one
    /// drains. Exits non-zero, saying why, when it did not take over.
    Upgrade {
        /// Path of config.json (of the running server).
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
        /// Start this binary instead of the one the server was started
        /// from (same arguments).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
    /// Write a self-signed certificate for local development into
    /// <project>/hosts/HOSTNAME/tls/ (cert.pem, key.pem).
    DevCert {
        /// The host (`blog.localhost`, or `*.example.test` for a wildcard).
        hostname: String,
        /// The project whose host folder gets the certificate.
        #[arg(long)]
        project: String,
        /// Path of config.json.
        #[arg(long, default_value = "config.json")]
        config: PathBuf,
        /// Replace an existing certificate and key.
        #[arg(long)]
        force: bool,
    },
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve {
            config,
            log,
            log_format,
        } => {
            let format = match log_format {
                Some(LogFormatArg::Text) => elsinore_config::LogFormat::Text,
                Some(LogFormatArg::Json) => elsinore_config::LogFormat::Json,
                None => logging::configured_format(config),
            };
            logging::init(log.as_deref(), format);
            format
        }
        _ => {
            logging::init(None, elsinore_config::LogFormat::Text);
            elsinore_config::LogFormat::Text
        }
    };
    let result = match cli.command {
        // The access log is written in the diagnostics' format.
        Command::Serve { config, .. } => serve::run(&config, format),
        Command::Check { config } => Declared::load(&config)
            .map(|declared| print!("{}", declared.render_check()))
            .map_err(Into::into),
        Command::Routes { config } => Declared::load(&config)
            .map(|declared| print!("{}", declared.render_routes()))
            .map_err(Into::into),
        Command::Keys { command } => keys_cmd::run(command),
        Command::Events { verb } => events_cmd::run(verb),
        Command::State { command } => state_cmd::run(command),
        Command::Upgrade { config, binary } => upgrade_cmd::run(&config, binary),
        Command::DevCert {
            hostname,
            project,
            config,
            force,
        } => dev_cert::run(&dev_cert::DevCert {
            config,
            hostname,
            project,
            force,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping causes the message already quotes
/// (our library errors include their source's text in their own).
fn describe(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}
