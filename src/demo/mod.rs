//! `ftpbridge demo`: everything needed to show the bridge working on one machine.
//!
//! An embedded SSH/SFTP server serves a directory; the proxy runs in front of
//! it with a configuration built from the same TOML path as `ftpbridge run`,
//! and the FTP login `demo`/`demo` is passed through to the SFTP server. So the
//! demo exercises the real config loader, the real SFTP client and a real SSH
//! hop, only with both ends on this machine.

pub mod sftp_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use self::sftp_server::{EmbeddedServerError, EmbeddedSftpServer};
use crate::config::{self, ConfigError, RuntimeConfig};
use crate::server::{self, BoundListener};

pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create the demo directory: {0}")]
    Directory(std::io::Error),
    #[error("cannot start the embedded SFTP server: {0}")]
    SftpServer(#[from] EmbeddedServerError),
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("demo configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot create the demo certificate: {0}")]
    Certificate(String),
    #[error("{0}")]
    Server(#[from] crate::server::ServerError),
}

/// A running demo: the SFTP server and the configuration for the proxy.
pub struct Demo {
    pub sftp: EmbeddedSftpServer,
    pub config: Arc<RuntimeConfig>,
    pub listener: BoundListener,
    pub directory: PathBuf,
    /// The generated certificate (PEM) when the demo serves FTPS.
    pub certificate: Option<PathBuf>,
    // Keeps the temporary directory alive; `None` when the user chose one.
    _temporary: Option<tempfile::TempDir>,
    _certificate_dir: tempfile::TempDir,
}

/// A self-signed certificate for localhost and the listen address.
fn self_signed_certificate(dir: &Path, bind: SocketAddr) -> Result<(PathBuf, PathBuf), DemoError> {
    let names = vec!["localhost".to_owned(), bind.ip().to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| DemoError::Certificate(e.to_string()))?;
    let cert = dir.join("demo-cert.pem");
    let key = dir.join("demo-key.pem");
    std::fs::write(&cert, generated.cert.pem()).map_err(DemoError::Directory)?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).map_err(DemoError::Directory)?;
    Ok((cert, key))
}

/// The demo configuration: the same keys a user would write in proxy.toml.
/// With `tls`, the listener offers explicit FTPS with that certificate and key.
pub fn demo_config_toml(
    ftp_bind: SocketAddr,
    sftp: SocketAddr,
    fingerprint: &str,
    tls: Option<(&Path, &Path)>,
) -> String {
    let tls = match tls {
        Some((cert, key)) => format!(
            "tls = \"explicit\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    format!(
        r#"
[[listeners]]
name = "demo"
bind = "{ftp_bind}"
passive_address = "auto"
{tls}


[[upstreams]]
name = "embedded-sftp"
kind = "sftp"
address = "{sftp}"
host_key = "{fingerprint}"
auth = "passthrough"
root = "/"

[[users]]
name = "{DEMO_USER}"
upstream = "embedded-sftp"
"#
    )
}

impl Demo {
    /// Starts the embedded SFTP server over `directory` (a new temporary
    /// directory when `None`) and binds the FTP listener on `ftp_bind`. With
    /// `tls`, the listener offers explicit FTPS with a self-signed
    /// certificate generated for this run.
    pub async fn start(
        ftp_bind: SocketAddr,
        directory: Option<PathBuf>,
        tls: bool,
    ) -> Result<Demo, DemoError> {
        let (directory, temporary) = match directory {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(DemoError::Directory)?;
                (dir, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("ftpbridge-demo-")
                    .tempdir()
                    .map_err(DemoError::Directory)?;
                let welcome = temp.path().join("welcome.txt");
                std::fs::write(
                    &welcome,
                    "This file lives on the embedded SFTP server; you fetched it over FTP.\n",
                )
                .map_err(DemoError::Directory)?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let sftp_socket = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DemoError::Bind("127.0.0.1:0".parse().expect("literal address"), e))?;
        let sftp = EmbeddedSftpServer::start(
            sftp_socket,
            directory.clone(),
            DEMO_USER.to_owned(),
            DEMO_PASSWORD.to_owned(),
        )
        .await?;
        let certificate_dir = tempfile::Builder::new()
            .prefix("ftpbridge-demo-tls-")
            .tempdir()
            .map_err(DemoError::Directory)?;
        let certificate = if tls {
            Some(self_signed_certificate(certificate_dir.path(), ftp_bind)?)
        } else {
            None
        };
        let toml = demo_config_toml(
            ftp_bind,
            sftp.local_addr(),
            sftp.host_key_fingerprint(),
            certificate
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        );
        let config = Arc::new(config::from_toml(&toml, std::iter::empty())?);
        let listener_config = config.listeners.first().cloned().ok_or_else(|| {
            ConfigError::new("listeners", "the demo configuration has no listener")
        })?;
        let socket = TcpListener::bind(ftp_bind)
            .await
            .map_err(|e| DemoError::Bind(ftp_bind, e))?;
        Ok(Demo {
            sftp,
            config,
            listener: BoundListener {
                config: listener_config,
                socket,
            },
            directory,
            certificate: certificate.map(|(cert, _)| cert),
            _temporary: temporary,
            _certificate_dir: certificate_dir,
        })
    }

    /// Runs the proxy until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
        let Demo {
            sftp,
            config,
            listener,
            _temporary,
            _certificate_dir,
            ..
        } = self;
        let result = server::run(config, vec![listener], shutdown).await;
        sftp.shutdown();
        Ok(result?)
    }
}
