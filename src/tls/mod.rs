//! TLS for FTPS (RFC 4217), with rustls and the aws-lc-rs provider only.
//!
//! - [`store`]: the certificate of a listener, swappable while sessions run.
//! - [`session`]: one `ServerConfig` per control connection, whose private
//!   session cache turns "this data connection resumed a TLS session" into
//!   proof that its client holds a session issued on *this* control
//!   connection (crates.md §6, measured on TLS 1.2 and 1.3).
//!
//! Certificates rotate through the server's one reload mechanism (`crate::reload`).
//!
//! Protocol versions are TLS 1.2 and 1.3, with the provider's default cipher
//! suites (AEAD only: AES-GCM and ChaCha20-Poly1305; nothing legacy).

pub mod session;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use store::CertStore;

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs the provider as the process default (idempotent). Libraries that
/// build rustls configs without naming a provider use it.
pub fn install_default_provider() {
    // Err means another provider (ours) is already installed: nothing to do.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Reads a PEM certificate chain and its private key and checks they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            cert.display()
        ));
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private_key, &provider()).map_err(|e| {
        format!(
            "{} and {} do not form a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// The listener-wide TLS configuration every session's config derives from.
pub fn base_server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}
