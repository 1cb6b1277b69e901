//! `elsinore dev-cert HOSTNAME --project NAME`: a self-signed certificate
//! for local development, written where the HTTPS listener looks for it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use elsinore_config::{Config, HostPattern};
use elsinore_routes::{scan_hosts, HOSTS_DIR};
use elsinore_tls::{SelfSigned, CERT_FILE, KEY_FILE, TLS_DIR};

/// What to write.
#[derive(Debug)]
pub struct DevCert {
    pub config: PathBuf,
    pub hostname: String,
    pub project: String,
    pub force: bool,
}

/// Writes `hosts/<hostname>/tls/cert.pem` and `key.pem` (mode 0600) in
/// the project, and prints how to use them.
pub fn run(args: &DevCert) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let host = HostPattern::parse(&args.hostname)
        .with_context(|| format!("{:?} cannot be a host folder name", args.hostname))?;
    let Some(project) = config.projects.iter().find(|p| p.name == args.project) else {
        let names: Vec<&str> = config.projects.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no project named {:?} in {} (projects: {})",
            args.project,
            config.file.display(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    // An existing folder for the host keeps its spelling (hosts/Blog.Test/
    // for blog.test): a second, lower-case folder would not be used.
    let folder = scan_hosts(&project.path)
        .ok()
        .and_then(|scan| scan.folder(&host).map(str::to_owned))
        .unwrap_or_else(|| host.to_string());
    let host_dir = project.path.join(HOSTS_DIR).join(folder);
    let tls_dir = host_dir.join(TLS_DIR);
    let (cert_path, key_path) = (tls_dir.join(CERT_FILE), tls_dir.join(KEY_FILE));
    if !args.force {
        for existing in [&cert_path, &key_path] {
            if existing.exists() {
                bail!(
                    "{} already exists; pass --force to replace it",
                    existing.display()
                );
            }
        }
    }
    let new_host = !host_dir.exists();
    fs::create_dir_all(&tls_dir).with_context(|| format!("cannot create {}", tls_dir.display()))?;

    let pair = SelfSigned::generate(&host)?;
    pair.write(&cert_path, &key_path)?;

    if new_host {
        println!(
            "created host folder {} (project {})",
            host_dir.display(),
            project.name
        );
    }
    println!(
        "wrote {} (self-signed for {host}, valid until {})",
        cert_path.display(),
        pair.not_after.date()
    );
    println!("wrote {} (mode 0600)", key_path.display());
    println!();
    println!("{}", usage(&config, &host, &cert_path));
    Ok(())
}

/// How to reach the host with curl, trusting the new certificate.
fn usage(config: &Config, host: &HostPattern, cert_path: &Path) -> String {
    let example = match host {
        HostPattern::Exact(name) => name.to_string(),
        HostPattern::Wildcard(suffix) => format!("dev.{suffix}"),
    };
    let Some(tls) = config.startup.tls_listen else {
        return format!(
            "config.json has no tls_listen yet; add e.g. \"tls_listen\": \"127.0.0.1:8443\" and restart, then:\n  curl --cacert {} --resolve {example}:8443:127.0.0.1 https://{example}:8443/",
            cert_path.display()
        );
    };
    let port = tls.port();
    let ip = if tls.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        tls.ip().to_string()
    };
    let url = if port == 443 {
        format!("https://{example}/")
    } else {
        format!("https://{example}:{port}/")
    };
    format!(
        "A running Elsinore serves it within a second, no restart needed. Clients do not\n\
         trust a self-signed certificate by default; tell curl to trust this one:\n  \
         curl --cacert {cert} --resolve {example}:{port}:{ip} {url}\n\
         (--resolve is only needed when {example} does not resolve to this machine.)",
        cert = cert_path.display()
    )
}
