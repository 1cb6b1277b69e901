//! Unit tests with certificates made by rcgen in temp folders.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use elsinore_config::HostPattern;

use crate::{CertOwner, CertSource, CertStore, Error, LoadedCert, CERT_FILE, KEY_FILE, TLS_DIR};

/// A self-signed certificate for `names`: (cert PEM, key PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Hosts {
    dir: tempfile::TempDir,
}

impl Hosts {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    /// Writes `hosts/<host>/tls/{cert,key}.pem` (key mode 0600).
    fn write(&self, host: &str, (cert, key): &(String, String)) {
        let tls = self.host_dir(host).join(TLS_DIR);
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join(CERT_FILE), cert).unwrap();
        write_key(&tls.join(KEY_FILE), key);
    }

    fn source(&self, host: &str) -> CertSource {
        std::fs::create_dir_all(self.host_dir(host)).unwrap();
        CertSource::host(HostPattern::parse(host).unwrap(), &self.host_dir(host))
    }
}

fn write_key(path: &Path, key: &str) {
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn owner(host: &str) -> CertOwner {
    CertOwner::Host(HostPattern::parse(host).unwrap())
}

fn names_of(store: &CertStore, sni: Option<&str>) -> Option<Vec<String>> {
    store.resolve(sni).map(|cert| cert.names.clone())
}

#[test]
fn loads_chain_names_and_expiry() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["blog.test", "*.Blog.test"]));
    let tls = hosts.host_dir("blog.test").join(TLS_DIR);
    let cert = LoadedCert::load(&tls.join(CERT_FILE), &tls.join(KEY_FILE)).unwrap();
    assert_eq!(cert.names, ["blog.test", "*.blog.test"]);
    assert!(cert.covers("blog.test"));
    assert!(cert.covers("www.blog.test"));
    assert!(!cert.covers("a.www.blog.test"));
    assert!(!cert.covers("news.test"));
    // rcgen's default validity ends in 4096.
    assert!(cert.days_left(SystemTime::now()) > 365 * 1000);
    assert_eq!(cert.certified.cert.len(), 1);
}

#[test]
fn refuses_a_key_of_another_certificate() {
    let hosts = Hosts::new();
    let (cert, _) = self_signed(&["blog.test"]);
    let (_, other_key) = self_signed(&["blog.test"]);
    hosts.write("blog.test", &(cert, other_key));
    let tls = hosts.host_dir("blog.test").join(TLS_DIR);
    let err = LoadedCert::load(&tls.join(CERT_FILE), &tls.join(KEY_FILE)).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("key.pem: this private key does not match"),
        "{err}"
    );
}

#[test]
fn refuses_garbage_with_the_file_named() {
    let hosts = Hosts::new();
    let good = self_signed(&["blog.test"]);
    let tls = hosts.host_dir("blog.test").join(TLS_DIR);
    let (cert_path, key_path) = (tls.join(CERT_FILE), tls.join(KEY_FILE));

    hosts.write(
        "blog.test",
        &("not a certificate".to_owned(), good.1.clone()),
    );
    let err = LoadedCert::load(&cert_path, &key_path).unwrap_err();
    assert!(matches!(err, Error::NoCertificate { .. }), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    hosts.write("blog.test", &(broken.to_owned(), good.1.clone()));
    let err = LoadedCert::load(&cert_path, &key_path).unwrap_err();
    assert!(matches!(err, Error::Pem { .. }), "{err}");
    assert!(err
        .to_string()
        .starts_with(&cert_path.display().to_string()));

    hosts.write("blog.test", &(good.0.clone(), "garbage".to_owned()));
    let err = LoadedCert::load(&cert_path, &key_path).unwrap_err();
    assert!(matches!(err, Error::NoKey { .. }), "{err}");

    std::fs::remove_file(&key_path).unwrap();
    let err = LoadedCert::load(&cert_path, &key_path).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}

#[test]
fn warns_when_the_key_is_readable_by_others() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["blog.test"]));
    let key = hosts.host_dir("blog.test").join(TLS_DIR).join(KEY_FILE);
    assert_eq!(crate::key_mode_warning(&key), None);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warning = crate::key_mode_warning(&key).unwrap();
    assert!(warning.contains("mode 0644"), "{warning}");

    // And it is reported when loaded.
    let rebuilt = CertStore::default().rebuild(&[hosts.source("blog.test")], SystemTime::now());
    assert!(rebuilt.errors.is_empty(), "{:?}", rebuilt.errors);
    assert!(
        rebuilt.warnings.iter().any(|w| w.contains("mode 0644")),
        "{:?}",
        rebuilt.warnings
    );
}

#[test]
fn sni_picks_exact_then_longest_wildcard_then_default() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["blog.test"]));
    hosts.write("*.test", &self_signed(&["*.test"]));
    hosts.write("*.shop.test", &self_signed(&["*.shop.test"]));
    let sources = [
        hosts.source("blog.test"),
        hosts.source("*.test"),
        hosts.source("*.shop.test"),
        hosts.source("bare.test"),
    ];
    let store = CertStore::default()
        .rebuild(&sources, SystemTime::now())
        .store;
    assert_eq!(store.len(), 3);
    let one = |name: &str| Some(vec![name.to_owned()]);
    assert_eq!(names_of(&store, Some("blog.test")), one("blog.test"));
    assert_eq!(names_of(&store, Some("BLOG.test.")), one("blog.test"));
    assert_eq!(names_of(&store, Some("news.test")), one("*.test"));
    assert_eq!(names_of(&store, Some("a.shop.test")), one("*.shop.test"));
    assert_eq!(names_of(&store, Some("a.b.shop.test")), one("*.shop.test"));
    // bare.test has a folder but no tls/: the wildcard answers for it.
    assert_eq!(names_of(&store, Some("bare.test")), one("*.test"));
    assert_eq!(names_of(&store, Some("other.example")), None);
    assert_eq!(names_of(&store, None), None);
    assert!(store.serves("news.test"));
    assert!(
        !store.serves("a.b.shop.test"),
        "*.shop.test covers one label"
    );

    let defaults = Hosts::new();
    defaults.write("fallback", &self_signed(&["fallback.example"]));
    let tls = defaults.host_dir("fallback").join(TLS_DIR);
    let mut with_default = sources.to_vec();
    with_default.push(CertSource::default_cert(
        tls.join(CERT_FILE),
        tls.join(KEY_FILE),
    ));
    let store = store.rebuild(&with_default, SystemTime::now()).store;
    assert_eq!(
        names_of(&store, Some("other.example")),
        one("fallback.example")
    );
    assert_eq!(names_of(&store, None), one("fallback.example"));
    assert_eq!(names_of(&store, Some("blog.test")), one("blog.test"));
}

#[test]
fn rebuild_keeps_the_last_good_certificate_and_skips_unchanged_files() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["blog.test"]));
    let sources = [hosts.source("blog.test")];
    let first = CertStore::default().rebuild(&sources, SystemTime::now());
    assert_eq!(first.changes.len(), 1, "{:?}", first.changes);
    assert!(first.changes[0].starts_with("+ certificate blog.test (names: blog.test; expires "));
    let served = first.store.resolve(Some("blog.test")).unwrap().clone();

    // Nothing changed on disk: the same certificate, not read again.
    let second = first.store.rebuild(&sources, SystemTime::now());
    assert!(second.changes.is_empty() && second.errors.is_empty());
    assert!(Arc::ptr_eq(
        second.store.resolve(Some("blog.test")).unwrap(),
        &served
    ));

    // Garbage: refused, the previous one keeps serving, and the refusal is
    // remembered (and repeated) until the files change again.
    let cert_path = hosts.host_dir("blog.test").join(TLS_DIR).join(CERT_FILE);
    std::fs::write(&cert_path, "garbage").unwrap();
    let third = second.store.rebuild(&sources, SystemTime::now());
    assert!(third.changes.is_empty(), "{:?}", third.changes);
    assert_eq!(third.errors.len(), 1);
    assert!(
        third.errors[0].contains("cert.pem: no certificate found")
            && third.errors[0].contains("keeping the previous certificate for blog.test"),
        "{}",
        third.errors[0]
    );
    assert!(Arc::ptr_eq(
        third.store.resolve(Some("blog.test")).unwrap(),
        &served
    ));
    let slot = third.store.slot(&owner("blog.test")).unwrap();
    assert_eq!(slot.refused.as_deref(), Some(third.errors[0].as_str()));
    let fourth = third.store.rebuild(&sources, SystemTime::now());
    assert_eq!(fourth.errors, third.errors);

    // A good new pair replaces it.
    hosts.write("blog.test", &self_signed(&["blog.test", "www.blog.test"]));
    let fifth = fourth.store.rebuild(&sources, SystemTime::now());
    assert!(fifth.errors.is_empty(), "{:?}", fifth.errors);
    assert!(
        fifth.changes[0]
            .starts_with("~ certificate blog.test replaced (names: blog.test, www.blog.test"),
        "{:?}",
        fifth.changes
    );
    assert!(fifth
        .store
        .slot(&owner("blog.test"))
        .unwrap()
        .refused
        .is_none());

    // tls/ removed: no certificate any more.
    std::fs::remove_dir_all(hosts.host_dir("blog.test").join(TLS_DIR)).unwrap();
    let sixth = fifth.store.rebuild(&sources, SystemTime::now());
    assert_eq!(sixth.changes, ["- certificate blog.test"]);
    assert!(sixth.store.is_empty());

    // A host folder gone altogether (not among the sources) too.
    hosts.write("blog.test", &self_signed(&["blog.test"]));
    let seventh = sixth.store.rebuild(&sources, SystemTime::now());
    let eighth = seventh.store.rebuild(&[], SystemTime::now());
    assert_eq!(eighth.changes, ["- certificate blog.test"]);
}

#[test]
fn a_new_host_with_bad_files_has_no_certificate_and_says_so() {
    let hosts = Hosts::new();
    let (cert, _) = self_signed(&["blog.test"]);
    let (_, wrong_key) = self_signed(&["blog.test"]);
    hosts.write("blog.test", &(cert, wrong_key));
    let rebuilt = CertStore::default().rebuild(&[hosts.source("blog.test")], SystemTime::now());
    assert!(rebuilt.store.is_empty());
    assert_eq!(rebuilt.errors.len(), 1);
    assert!(
        rebuilt.errors[0].contains("does not match")
            && rebuilt.errors[0].ends_with("blog.test has no certificate until this is fixed"),
        "{}",
        rebuilt.errors[0]
    );
    // The slot is still listed, with its refusal.
    let slot = rebuilt.store.slot(&owner("blog.test")).unwrap();
    assert!(slot.cert.is_none() && slot.refused.is_some());
}

#[test]
fn warns_about_names_that_do_not_cover_the_folder_and_expired_certificates() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["other.test"]));
    let later = SystemTime::now() + Duration::from_secs(5000 * 365 * 86_400);
    let rebuilt = CertStore::default().rebuild(&[hosts.source("blog.test")], later);
    assert!(
        rebuilt
            .warnings
            .iter()
            .any(|w| w.contains("does not cover blog.test (its names: other.test)")),
        "{:?}",
        rebuilt.warnings
    );
    assert!(
        rebuilt
            .warnings
            .iter()
            .any(|w| w.contains("certificate for blog.test expired ")
                && w.contains(" days ago (4096-01-01T")),
        "{:?}",
        rebuilt.warnings
    );
}

#[test]
fn a_missing_default_is_an_error_and_an_empty_tls_folder_is_nothing() {
    let hosts = Hosts::new();
    std::fs::create_dir_all(hosts.host_dir("blog.test").join(TLS_DIR)).unwrap();
    let missing = hosts.dir.path().join("nope.pem");
    let rebuilt = CertStore::default().rebuild(
        &[
            hosts.source("blog.test"),
            CertSource::default_cert(missing.clone(), missing),
        ],
        SystemTime::now(),
    );
    assert_eq!(rebuilt.errors.len(), 1, "{:?}", rebuilt.errors);
    assert!(
        rebuilt.errors[0].starts_with("certificate (default): ")
            && rebuilt.errors[0].contains("nope.pem: cannot read"),
        "{}",
        rebuilt.errors[0]
    );
    assert!(rebuilt.store.slot(&owner("blog.test")).is_none());
}

#[test]
fn the_daily_check_warns_only_of_certificates_that_expire_soon() {
    let hosts = Hosts::new();
    hosts.write("blog.test", &self_signed(&["blog.test"]));
    let now = SystemTime::now();
    let store = CertStore::default()
        .rebuild(&[hosts.source("blog.test")], now)
        .store;
    // rcgen's default validity runs to 4096: nothing to say today.
    assert_eq!(store.expiry_warnings(now), Vec::<String>::new());
    let later = now + Duration::from_secs(5000 * 365 * 86_400);
    let warnings = store.expiry_warnings(later);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("certificate for blog.test expired "),
        "{warnings:?}"
    );
}

#[test]
fn a_name_under_another_projects_wildcard_never_gets_its_certificate() {
    // beta declares *.wild.test (with a certificate); alpha declares
    // shop.wild.test without tls/, and a.own.test under its own
    // *.own.test.
    let hosts = Hosts::new();
    hosts.write("*.wild.test", &self_signed(&["*.wild.test"]));
    hosts.write("*.own.test", &self_signed(&["*.own.test"]));
    let defaults = Hosts::new();
    defaults.write("fallback", &self_signed(&["fallback.example"]));
    let tls = defaults.host_dir("fallback").join(TLS_DIR);
    let sources = [
        hosts.source("*.wild.test"),
        hosts.source("*.own.test"),
        hosts.source("shop.wild.test"),
        CertSource::default_cert(tls.join(CERT_FILE), tls.join(KEY_FILE)),
    ];
    let mut store = CertStore::default()
        .rebuild(&sources, SystemTime::now())
        .store;
    let one = |name: &str| Some(vec![name.to_owned()]);
    assert_eq!(names_of(&store, Some("shop.wild.test")), one("*.wild.test"));
    store.limit_wildcards(HashMap::from([
        // alpha's shop.wild.test: its project declares no wildcard above.
        ("shop.wild.test".to_owned(), Box::from([])),
        // a.own.test under alpha's own *.own.test and beta's *.test.
        ("a.own.test".to_owned(), Box::from(["own.test".to_owned()])),
    ]));
    assert_eq!(
        names_of(&store, Some("shop.wild.test")),
        one("fallback.example"),
        "the other project's wildcard certificate is not used"
    );
    assert_eq!(names_of(&store, Some("a.own.test")), one("*.own.test"));
    assert_eq!(
        names_of(&store, Some("news.wild.test")),
        one("*.wild.test"),
        "names nobody declares exactly still get the wildcard"
    );
}
