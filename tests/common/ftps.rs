//! An FTPS control connection (rustls as the client) for exact reply codes
//! over TLS, and protected data connections with a chosen client config.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::proxy::TEST_TIMEOUT;
use super::raw::{RawReply, read_reply_from};

/// A client config trusting `ca`, limited to `versions`. Each config has its
/// own session cache, so two configs never share a resumable session.
pub fn client_config(
    ca: &Path,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

pub fn all_versions() -> &'static [&'static SupportedProtocolVersion] {
    rustls::ALL_VERSIONS
}

async fn tls_connect(tcp: TcpStream, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(TEST_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

pub struct FtpsControl {
    stream: BufReader<TlsStream<TcpStream>>,
    addr: SocketAddr,
}

impl FtpsControl {
    /// Connects, reads 220, sends AUTH TLS, expects 234, runs the handshake.
    pub async fn connect_explicit(addr: SocketAddr, config: Arc<ClientConfig>) -> FtpsControl {
        FtpsControl::connect_with(addr, config, "TLS").await
    }

    /// Like `connect_explicit`, with another AUTH mechanism name (e.g. SSL).
    pub async fn connect_with(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        mechanism: &str,
    ) -> FtpsControl {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut plain = BufReader::new(tcp);
        assert_eq!(
            read_reply_from(&mut plain).await.expect("greeting").code,
            220
        );
        plain
            .get_mut()
            .write_all(format!("AUTH {mechanism}\r\n").as_bytes())
            .await
            .expect("send AUTH");
        let reply = read_reply_from(&mut plain).await.expect("AUTH reply");
        assert_eq!(reply.code, 234, "{reply:?}");
        assert!(
            plain.buffer().is_empty(),
            "nothing may follow 234 in clear text"
        );
        let tls = tls_connect(plain.into_inner(), config).await;
        FtpsControl {
            stream: BufReader::new(tls),
            addr,
        }
    }

    /// Implicit FTPS: TLS first, then the greeting.
    pub async fn connect_implicit(addr: SocketAddr, config: Arc<ClientConfig>) -> FtpsControl {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut control = FtpsControl {
            stream: BufReader::new(tls_connect(tcp, config).await),
            addr,
        };
        assert_eq!(control.reply().await.code, 220);
        control
    }

    pub async fn reply(&mut self) -> RawReply {
        tokio::time::timeout(TEST_TIMEOUT, read_reply_from(&mut self.stream))
            .await
            .expect("reply in time")
            .expect("the server closed the connection")
    }

    pub async fn cmd(&mut self, line: &str) -> RawReply {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("send command");
        self.reply().await
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).await.code, 331);
        let reply = self.cmd(&format!("PASS {password}")).await;
        assert_eq!(reply.code, 230, "login: {reply:?}");
    }

    /// PBSZ 0 + PROT P.
    pub async fn protect_data(&mut self) {
        assert_eq!(self.cmd("PBSZ 0").await.code, 200);
        assert_eq!(self.cmd("PROT P").await.code, 200);
    }

    /// EPSV and a TCP connection to the announced port (TLS comes after the 150).
    pub async fn epsv_connect(&mut self) -> TcpStream {
        let reply = self.cmd("EPSV").await;
        assert_eq!(reply.code, 229, "{reply:?}");
        let port: u16 = reply
            .text
            .split("|||")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {reply:?}"));
        TcpStream::connect((self.addr.ip(), port))
            .await
            .expect("data connection")
    }

    /// The TLS client side of a protected data connection.
    pub async fn secure_data(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from("localhost").expect("server name");
        tokio::time::timeout(TEST_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
            .await
            .expect("TLS handshake in time")
    }
}
