//! Which certificate files a route table serves: the certificate-source
//! policy a reload applies before it rebuilds the [`CertStore`](crate::CertStore).

use std::collections::HashMap;
use std::path::PathBuf;

use elsinore_config::{DefaultCert, HostPattern};

use crate::rebuild::CertSource;

/// Where a table's certificates come from: the `tls/` folder of every
/// host each project keeps, then the configured default. Each project
/// comes as its `hosts/` folder, the hosts it keeps (a host lost in a
/// conflict is left out: its owner's folder serves it) and the folder
/// names as spelled on disk (`elsinore_routes::HostScan::folders`:
/// `hosts/Blog.Localhost/tls/` for the host `blog.localhost`). They come
/// as plain data so that this crate stays below the route table, which
/// holds a [`CertStore`](crate::CertStore).
pub fn cert_sources<'a>(
    projects: impl IntoIterator<Item = (PathBuf, &'a [HostPattern], &'a HashMap<HostPattern, String>)>,
    default: Option<&DefaultCert>,
) -> Vec<CertSource> {
    let mut sources: Vec<CertSource> = projects
        .into_iter()
        .flat_map(|(hosts_dir, hosts, folders)| {
            hosts.iter().map(move |host| {
                let dir = match folders.get(host) {
                    Some(folder) => hosts_dir.join(folder),
                    None => hosts_dir.join(host.to_string()),
                };
                CertSource::host(host.clone(), &dir)
            })
        })
        .collect();
    if let Some(DefaultCert { cert, key }) = default {
        sources.push(CertSource::default_cert(cert.clone(), key.clone()));
    }
    sources
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::CertOwner;

    #[test]
    fn each_kept_host_reads_its_folder_as_spelled_on_disk_then_the_default() {
        let blog = HostPattern::parse("blog.localhost").expect("host");
        let shop = HostPattern::parse("shop.localhost").expect("host");
        let folders = HashMap::from([(blog.clone(), "Blog.Localhost".to_owned())]);
        let kept = [blog.clone(), shop.clone()];
        let default = DefaultCert {
            cert: PathBuf::from("/etc/d/cert.pem"),
            key: PathBuf::from("/etc/d/key.pem"),
        };
        let sources = cert_sources(
            [(PathBuf::from("/p/hamlet/hosts"), &kept[..], &folders)],
            Some(&default),
        );
        let paths: Vec<(&CertOwner, &Path, &Path)> = sources
            .iter()
            .map(|s| (&s.owner, s.cert_path.as_path(), s.key_path.as_path()))
            .collect();
        assert_eq!(
            paths,
            [
                (
                    &CertOwner::Host(blog),
                    Path::new("/p/hamlet/hosts/Blog.Localhost/tls/cert.pem"),
                    Path::new("/p/hamlet/hosts/Blog.Localhost/tls/key.pem"),
                ),
                (
                    &CertOwner::Host(shop),
                    Path::new("/p/hamlet/hosts/shop.localhost/tls/cert.pem"),
                    Path::new("/p/hamlet/hosts/shop.localhost/tls/key.pem"),
                ),
                (
                    &CertOwner::Default,
                    Path::new("/etc/d/cert.pem"),
                    Path::new("/etc/d/key.pem"),
                ),
            ]
        );
    }

    #[test]
    fn a_host_lost_in_a_conflict_reads_no_folder_of_the_loser() {
        let shared = HostPattern::parse("shared.test").expect("host");
        let folders = HashMap::from([(shared, "shared.test".to_owned())]);
        // The project kept none of its declared hosts.
        let sources = cert_sources([(PathBuf::from("/p/b/hosts"), &[][..], &folders)], None);
        assert!(sources.is_empty());
    }
}
