//! A test certificate authority: CA, server and client certificates as PEM
//! files, generated per test (no private key is ever committed).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test certificate authority and what it issued, as PEM files.
pub struct TestPki {
    /// The CA certificate: what `ca_file` points to.
    pub ca: PathBuf,
    /// Server certificate (for `127.0.0.1` and `localhost` unless
    /// [`TestPki::generate_for`] named others), and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (mutual TLS), and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates a CA, a server and a client certificate into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        TestPki::generate_for(dir, &["127.0.0.1", "localhost"])
    }

    /// Like [`TestPki::generate`], with a server certificate for `names`
    /// (IP addresses become IP SANs).
    pub fn generate_for(dir: &Path, names: &[&str]) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ftpbridge test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign the CA");

        let issue = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca).expect("sign the leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(
            names.iter().map(|n| (*n).to_owned()).collect(),
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = issue(
            vec!["ftpbridge".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        TestPki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}
