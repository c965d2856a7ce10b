//! SMPP over TLS: the configurations both sides need, from PEM files. Servers present a certificate chain and
//! key; clients trust the system's roots, or only the CA certificates of a PEM file (a carrier's private CA).
//! The crypto provider is `ring`, installed once for the process.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Installs `ring` as the process's crypto provider, unless one is installed already.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A server's TLS from its certificate chain and private key (PEM files).
pub fn acceptor(cert_pem: &Path, key_pem: &Path) -> Result<TlsAcceptor, String> {
    install_provider();
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| format!("reading the private key {}: {e}", key_pem.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate {} and key {}: {e}", cert_pem.display(), key_pem.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client's TLS: trusting the CA certificates in `ca_pem`, or the system's roots when there is none.
pub fn connector(ca_pem: Option<&Path>) -> Result<TlsConnector, String> {
    install_provider();
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| format!("a CA certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificates on this system: give a CA file".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a server's certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a host name for TLS: {e}"))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}
