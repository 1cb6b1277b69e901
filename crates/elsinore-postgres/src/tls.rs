//! rustls for PostgreSQL connections (ring provider, as everywhere else).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's variable for the CA file that signs the server's certificate.
const ROOT_CERT_ENV: &str = "PGSSLROOTCERT";

/// A connector verifying the server against `PGSSLROOTCERT` or the
/// system's roots.
pub(crate) fn connector() -> Result<MakeRustlsConnect, String> {
    let mut roots = RootCertStore::empty();
    match std::env::var_os(ROOT_CERT_ENV) {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| format!("{ROOT_CERT_ENV}={}: {err}", path.to_string_lossy()))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|err| format!("{ROOT_CERT_ENV}: {err}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold certificates rustls cannot use;
                // the others still verify.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA roots to verify the server (set {ROOT_CERT_ENV} to the CA's PEM file)"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
