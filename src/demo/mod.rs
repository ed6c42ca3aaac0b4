//! `ftpbridge demo`: everything needed to show the bridge working on one machine.
//!
//! An embedded SSH/SFTP server serves a directory; the proxy runs in front of
//! it with a configuration built from the same TOML path as `ftpbridge run`,
//! and the FTP login `demo`/`demo` is passed through to the SFTP server. So the
//! demo exercises the real config loader, the real SFTP client and a real SSH
//! hop, only with both ends on this machine.

pub mod sftp_server;

use std::net::SocketAddr;
use std::path::PathBuf;
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
}

/// A running demo: the SFTP server and the configuration for the proxy.
pub struct Demo {
    pub sftp: EmbeddedSftpServer,
    pub config: Arc<RuntimeConfig>,
    pub listener: BoundListener,
    pub directory: PathBuf,
    // Keeps the temporary directory alive; `None` when the user chose one.
    _temporary: Option<tempfile::TempDir>,
}

/// The demo configuration: the same keys a user would write in proxy.toml.
pub fn demo_config_toml(ftp_bind: SocketAddr, sftp: SocketAddr, fingerprint: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "demo"
bind = "{ftp_bind}"
passive_address = "auto"

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
    /// directory when `None`) and binds the FTP listener on `ftp_bind`.
    pub async fn start(
        ftp_bind: SocketAddr,
        directory: Option<PathBuf>,
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
        let toml = demo_config_toml(ftp_bind, sftp.local_addr(), sftp.host_key_fingerprint());
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
            _temporary: temporary,
        })
    }

    /// Runs the proxy until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Demo {
            sftp,
            config,
            listener,
            _temporary,
            ..
        } = self;
        server::run(config, vec![listener], shutdown).await;
        sftp.shutdown();
    }
}
