//! What `elsinore check` and `elsinore routes` print about a
//! [`Declared`]: the settings, every project and handler, host → project
//! → handlers, the certificates the HTTPS listener would load, and the
//! warnings. Text for people; nothing here starts or changes anything.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use elsinore_config::{
    format_duration, format_size, Config, DefaultCert, EventsConfig, HandlerKind, HandlerSpec,
    HostPattern, StartPolicy,
};
use elsinore_routes::HostTable;
use elsinore_tls::{CertSource, CertStore};

use crate::declared::{Declared, DeclaredProject};

impl Declared {
    /// `host → project → handler [routes], …`, one line per host.
    pub fn render_routes(&self) -> String {
        self.render_owners(&self.host_owners().0)
    }

    fn render_owners(&self, owners: &HostTable<usize>) -> String {
        let entries = owners.entries();
        let width = entries
            .iter()
            .map(|(host, _)| host.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (host, &index) in &entries {
            let project = &self.projects[index];
            let public = if self.has_public(project, host) {
                "public/ + "
            } else {
                ""
            };
            let handlers: Vec<String> = project
                .manifest
                .handlers
                .iter()
                .map(|h| format!("{} [{}]", h.name, h.routes.join(" ")))
                .collect();
            let _ = writeln!(
                out,
                "{host:width$}  → {}  → {public}{}",
                project.config.name,
                handlers.join(", ")
            );
        }
        if entries.is_empty() {
            out.push_str("(no hosts declared: add folders under <project>/hosts/)\n");
        }
        out
    }

    /// Whether the folder declaring `host` in `project` has `public/`.
    fn has_public(&self, project: &DeclaredProject, host: &str) -> bool {
        HostPattern::parse(host)
            .ok()
            .and_then(|pattern| project.scan.folder(&pattern).map(str::to_owned))
            .is_some_and(|folder| {
                project
                    .config
                    .path
                    .join(elsinore_routes::HOSTS_DIR)
                    .join(folder)
                    .join(elsinore_static::PUBLIC_DIR)
                    .is_dir()
            })
    }

    /// The `check` report: settings, projects, routes, and warnings.
    pub fn render_check(&self) -> String {
        let (owners, conflicts) = self.host_owners();
        let config = &self.config;
        let mut out = String::new();
        let _ = writeln!(out, "config:   {}", config.file.display());
        let _ = writeln!(out, "listen:   http://{}", config.startup.listen);
        if let Some(admin) = config.startup.admin_listen {
            let _ = writeln!(out, "admin:    http://{admin}");
        }
        if let Some(tls) = config.startup.tls_listen {
            let _ = writeln!(out, "https:    https://{tls}");
        }
        match &config.startup.database_url {
            Some(url) => {
                let _ = writeln!(
                    out,
                    "database: {url} (PostgreSQL; handlers get it as ELSINORE_DB and DATABASE_URL)"
                );
            }
            None => {
                let _ = writeln!(out, "database: {}", config.startup.database.display());
            }
        }
        match &config.startup.state_database_url {
            // Display hides the password.
            Some(url) => {
                let _ = writeln!(out, "state:    {url}");
            }
            None => {
                let _ = writeln!(out, "state:    {}", config.startup.state_database.display());
            }
        }
        let _ = writeln!(out, "events:   {}", describe_events(&config.startup.events));
        let (limits, timeouts) = (&config.startup.limits, &config.startup.timeouts);
        let _ = writeln!(
            out,
            "limits:   max_header_bytes {}, max_body {}, max_connections {}",
            format_size(limits.max_header_bytes),
            format_size(limits.max_body),
            limits.max_connections
        );
        let _ = writeln!(
            out,
            "timeouts: header_read {}, idle {}, handler_connect {}",
            format_duration(timeouts.header_read),
            format_duration(timeouts.idle),
            format_duration(timeouts.handler_connect)
        );
        let files = &config.startup.static_files;
        let recheck = files
            .recheck_after
            .map_or_else(|| "off".to_owned(), format_duration);
        let _ = writeln!(
            out,
            "static:   cache {}, files up to {} kept in memory, recheck_after {recheck}",
            format_size(files.cache_size),
            format_size(files.cache_file_max),
        );
        if let Some(name) = &config.default_project {
            let _ = writeln!(out, "unknown hosts: → {name} (default_project)");
        }
        if let Some(host) = &config.preview_host {
            let _ = writeln!(out, "previews: http://{host}/projects/<project>/");
        }
        let _ = writeln!(out, "\nprojects:");
        for project in &self.projects {
            let key = if project.config.key.is_some() {
                "key set"
            } else {
                "no key"
            };
            let max_body = project
                .config
                .max_body
                .map(|bytes| format!(", max_body {}", format_size(bytes)))
                .unwrap_or_default();
            let cors = match project.config.cors_origins.as_slice() {
                [] => String::new(),
                origins => format!(", CORS from {}", origins.join(" ")),
            };
            let admin_api = match project.config.admin_api {
                elsinore_config::AdminApiMode::Elsinore => String::new(),
                mode => format!(", admin_api {}", mode.as_str()),
            };
            let user = project
                .config
                .run_as
                .as_ref()
                .map(|run_as| format!(", runs as {} (uid {})", run_as.user, run_as.uid))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} ({}, {}, {key}{max_body}{cors}{admin_api}{user})",
                project.config.name,
                project.config.path.display(),
                count_of(project.scan.hosts.len(), "host")
            );
            if let Some(url) = &project.config.public_url {
                let _ = writeln!(out, "    public_url {url}");
            }
            if project.config.forward_host == elsinore_config::ForwardHost::Tenant {
                let _ = writeln!(out, "    forward_host tenant (Host is the tenant host)");
            }
            if let Some(key_env) = &project.config.handler_key_env {
                let _ = writeln!(out, "    handler_key_env {}", key_env.name);
            }
            for handler in &project.manifest.handlers {
                let _ = writeln!(out, "    handler {}", describe_handler(handler));
            }
            if let Some(dir) = &project.manifest.handlers_dir {
                let count = project.manifest.generated().count();
                let found = if project.config.path.join(dir).is_dir() {
                    count_of(count, "generated handler")
                } else {
                    "not there yet: no generated handlers until it appears".to_owned()
                };
                let _ = writeln!(out, "    handlers_dir {} ({found})", dir.display());
            }
        }
        let _ = writeln!(out, "\nroutes ({}):", count_of(owners.len(), "host"));
        for line in self.render_owners(&owners).lines() {
            let _ = writeln!(out, "  {line}");
        }
        let mut warnings: Vec<String> = self.warnings().iter().map(ToString::to_string).collect();
        warnings.extend(conflicts.iter().map(|c| {
            format!(
                "host {} is declared by both {} and {}; {} keeps it (first in config.json)",
                c.host, c.kept_by, c.refused_for, c.kept_by
            )
        }));
        // Each kept host with its folder as spelled on disk.
        let mut hosts: Vec<(HostPattern, std::path::PathBuf)> = self
            .projects
            .iter()
            .enumerate()
            .flat_map(|(index, project)| {
                let hosts_dir = project.config.path.join(elsinore_routes::HOSTS_DIR);
                let owners = &owners;
                project
                    .scan
                    .hosts
                    .iter()
                    .filter(move |host| owners.get_pattern(host) == Some(&index))
                    .filter_map(move |host| {
                        let folder = project.scan.folder(host)?;
                        Some((host.clone(), hosts_dir.join(folder)))
                    })
            })
            .collect();
        hosts.sort_by_cached_key(|(host, _)| host.to_string());
        let (certificates, tls_warnings) =
            certificates_report(config, &hosts, std::time::SystemTime::now());
        if config.startup.tls_listen.is_some() {
            let _ = writeln!(out, "\ncertificates ({}):", certificates.len());
            for line in &certificates {
                let _ = writeln!(out, "  {line}");
            }
        }
        warnings.extend(tls_warnings);
        if !warnings.is_empty() {
            let _ = writeln!(out, "\nwarnings:");
            for warning in warnings {
                let _ = writeln!(out, "  {warning}");
            }
        }
        out.push_str("\nconfiguration OK\n");
        out
    }
}

/// `every 10m, retention 30d, batch 500[, N table settings]`.
fn describe_events(events: &EventsConfig) -> String {
    let schedule = events.interval.map_or_else(
        || "on request only (interval off)".to_owned(),
        |interval| format!("every {}", format_duration(interval)),
    );
    let mut text = format!(
        "{schedule}, retention {}, batch {}",
        format_duration(events.retention),
        events.batch
    );
    if !events.tables.is_empty() {
        let _ = write!(text, ", {} table settings", events.tables.len());
    }
    text
}

fn describe_handler(handler: &HandlerSpec) -> String {
    let target = match &handler.kind {
        HandlerKind::Command { argv } => {
            let ready = handler
                .ready
                .as_deref()
                .map_or_else(|| "ready: tcp".to_owned(), |path| format!("ready: {path}"));
            format!("command: {}, {ready}", argv.join(" "))
        }
        // Not probed: Elsinore does not run it.
        HandlerKind::Url { authority } => format!("url: http://{authority}"),
    };
    let limit = handler
        .max_concurrent
        .map(|max| {
            format!(
                ", max_concurrent {max} (queue {}, {})",
                handler.queue,
                format_duration(handler.queue_timeout)
            )
        })
        .unwrap_or_default();
    let mut sleep = String::new();
    if let Some(after) = handler.idle_after() {
        let _ = write!(sleep, ", idle_stop {}", format_duration(after));
    }
    if handler.start == StartPolicy::OnDemand {
        sleep.push_str(", on_demand");
    }
    if handler.listen_fd {
        sleep.push_str(", listen_fd");
    }
    // Generated handlers have no [[handler]] to look up: say where from.
    let origin = if handler.generated.is_some() {
        " (from handlers_dir)"
    } else {
        ""
    };
    format!(
        "{} [{}] {target}{limit}{sleep}{origin}",
        handler.name,
        handler.routes.join(" ")
    )
}

/// "1 host", "2 hosts": `count` and `noun`, plural unless one.
fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The `certificates` part of `elsinore check`: each certificate the
/// HTTPS listener would load, and a warning for each that it would
/// refuse or that needs attention. Empty without `tls_listen`.
fn certificates_report(
    config: &Config,
    hosts: &[(HostPattern, PathBuf)],
    now: SystemTime,
) -> (Vec<String>, Vec<String>) {
    if config.startup.tls_listen.is_none() {
        return (Vec::new(), Vec::new());
    }
    let mut sources: Vec<CertSource> = hosts
        .iter()
        .map(|(host, host_dir)| CertSource::host(host.clone(), host_dir))
        .collect();
    if let Some(DefaultCert { cert, key }) = &config.tls_default {
        sources.push(CertSource::default_cert(cert.clone(), key.clone()));
    }
    let rebuilt = CertStore::default().rebuild(&sources, now);
    let lines = rebuilt
        .store
        .slots()
        .filter_map(|(owner, slot)| {
            let cert = slot.cert.as_ref()?;
            Some(format!(
                "{owner}: {} (expires {}, {} days left)",
                cert.names.join(", "),
                rfc3339(cert.not_after),
                cert.days_left(now)
            ))
        })
        .collect();
    let mut warnings = rebuilt.errors;
    warnings.extend(rebuilt.warnings);
    (lines, warnings)
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_counts_read_as_english() {
        assert_eq!(super::count_of(0, "host"), "0 hosts");
        assert_eq!(super::count_of(1, "host"), "1 host");
        assert_eq!(super::count_of(2, "host"), "2 hosts");
        assert_eq!(
            super::count_of(3, "generated handler"),
            "3 generated handlers"
        );
    }
}
