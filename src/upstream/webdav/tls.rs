//! The rustls client configuration of one WebDAV upstream.
//!
//! Built at configuration time, so `ftpbridge check` reports an unreadable
//! CA bundle or a client key that does not match its certificate. The
//! aws-lc-rs provider is passed explicitly rather than installed
//! process-wide: nothing then depends on which other crate happened to
//! install a default first (crates.md, dependency-graph notes).

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::ConfigBuilderExt;
use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::warn;

/// A problem with one of the TLS files; `key` is the config key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        TlsError {
            key,
            message: message.into(),
        }
    }
}

/// Where trust and identity come from.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// PEM bundle of the CAs to trust instead of the system's.
    pub ca_file: Option<&'a Path>,
    /// PEM certificate chain and private key for mutual TLS.
    pub client_identity: Option<(&'a Path, &'a Path)>,
}

/// The client configuration for `files`.
pub fn client_config(files: TlsFiles<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = with_roots(files.ca_file)?;
    let config = match files.client_identity {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain = certificates(cert_path, "client_cert")?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                TlsError::new(
                    "client_key",
                    format!("{}: no usable private key ({e})", key_path.display()),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                TlsError::new(
                    "client_key",
                    format!("does not fit the client certificate: {e}"),
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

fn builder() -> ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The aws-lc-rs provider supports every safe default version.
        .unwrap_or_else(|_| ClientConfig::builder_with_protocol_versions(rustls::ALL_VERSIONS))
}

/// A custom CA bundle replaces the system roots (a private CA should not
/// be trusted together with every public one, nor the reverse). Without
/// one, the system's roots; on a system that has none, the Mozilla roots
/// compiled into the binary.
fn with_roots(
    ca_file: Option<&Path>,
) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>, TlsError> {
    let Some(path) = ca_file else {
        return Ok(match builder().with_native_roots() {
            Ok(builder) => builder,
            Err(e) => {
                warn!(error = %e, "no system CA certificates; trusting the bundled Mozilla roots");
                builder().with_webpki_roots()
            }
        });
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "ca_file")? {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                "ca_file",
                format!("{}: unusable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(builder().with_root_certificates(roots))
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::new(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            format!("{}: no PEM certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_names_the_key() {
        let err = client_config(TlsFiles {
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            client_identity: None,
        })
        .unwrap_err();
        assert_eq!(err.key, "ca_file");
        assert!(
            err.message.contains("/nonexistent/ca.pem"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(TlsFiles {
            ca_file: Some(&path),
            client_identity: None,
        })
        .unwrap_err();
        assert_eq!(err.key, "ca_file");
        assert!(
            err.message.contains("no PEM certificate"),
            "{}",
            err.message
        );
    }

    #[test]
    fn system_roots_are_the_default() {
        assert!(client_config(TlsFiles::default()).is_ok());
    }
}
