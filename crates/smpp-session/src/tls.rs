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

/// A server's certificate and key, read again from their PEM files when they change ([`Reloading::reload`]):
/// a renewed certificate is taken up without a restart, by new connections; those open keep theirs. A pair that
/// does not load (a half-written file, a key that does not match) is refused and the one in force stays.
#[derive(Debug)]
pub struct Reloading {
    cert_pem: std::path::PathBuf,
    key_pem: std::path::PathBuf,
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, Option<std::time::SystemTime>)>,
}

impl Reloading {
    /// Loads the pair; an error says what is wrong with it.
    pub fn load(cert_pem: &Path, key_pem: &Path) -> Result<Arc<Reloading>, String> {
        install_provider();
        let key = certified(cert_pem, key_pem)?;
        let stamp = stamp(cert_pem, key_pem);
        Ok(Arc::new(Reloading {
            cert_pem: cert_pem.to_path_buf(),
            key_pem: key_pem.to_path_buf(),
            current: std::sync::RwLock::new((Arc::new(key), stamp)),
        }))
    }

    /// The acceptor that presents the pair in force at each handshake.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        TlsAcceptor::from(Arc::new(config))
    }

    /// Reads the files again if they changed since they were last read (`force`: whatever their times say); true
    /// when a new pair is in force.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let now = stamp(&self.cert_pem, &self.key_pem);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if !force && now == current.1 {
                return Ok(false);
            }
        }
        let key = certified(&self.cert_pem, &self.key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(key), now);
        Ok(true)
    }
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

/// The later of the two files' modification times.
fn stamp(cert_pem: &Path, key_pem: &Path) -> Option<std::time::SystemTime> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    modified(cert_pem).max(modified(key_pem))
}

fn certified(cert_pem: &Path, key_pem: &Path) -> Result<rustls::sign::CertifiedKey, String> {
    let chain = certificates(cert_pem)?;
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| format!("reading the private key {}: {e}", key_pem.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("the certificate {} and key {}: {e}", cert_pem.display(), key_pem.display()))?;
    Ok(certified)
}
