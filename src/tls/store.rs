//! A listener's certificate, replaced atomically on reload.
//!
//! Running sessions keep their TLS connections; every new handshake (control
//! or data) picks up the current certificate. A reload that fails keeps the
//! certificate that works.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use super::load_certified_key;

pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, String> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    pub fn paths(&self) -> [&Path; 2] {
        [&self.cert_path, &self.key_path]
    }

    /// Reads the files again; on any error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                warn!(cert = %self.cert_path.display(), error = %e, "TLS certificate reload failed; keeping the current one");
                Err(e)
            }
        }
    }

    /// The certificate new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_failed_reload_keeps_the_working_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let store = CertStore::load(&cert, &key).unwrap();
        let before = store.current().cert[0].clone();
        std::fs::write(&cert, b"not a certificate").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(store.current().cert[0], before);
    }

    #[test]
    fn a_successful_reload_serves_the_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path());
        let store = CertStore::load(&cert, &key).unwrap();
        let before = store.current().cert[0].clone();
        write_pair(dir.path());
        store.reload().unwrap();
        assert_ne!(store.current().cert[0], before);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = CertStore::load(&missing, &missing).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let err = CertStore::load(&empty, &empty).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
