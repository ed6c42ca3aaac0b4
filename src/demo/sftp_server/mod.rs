//! Embedded SSH + SFTP server used by `ftpbridge demo`.
//!
//! It serves one local directory over SFTP (russh for SSH, russh-sftp for the
//! SFTP protocol) so a newcomer can watch the FTP bridge work without setting
//! up a real SFTP server. OpenSSH's `sftp` client can use it directly.
//!
//! Scope and limits, on purpose:
//! - One account, password authentication only, a fresh Ed25519 host key per
//!   start (so clients must not pin it across runs; [`EmbeddedSftpServer::host_key_fingerprint`]
//!   tells them what to expect).
//! - SFTP paths are virtual: `/` is the served directory and `.`/`..` are
//!   resolved lexically, so no request can name a path outside it. Symbolic
//!   links that the local operator placed inside the directory are followed
//!   like any other file (clients cannot create links: SYMLINK is not
//!   implemented).
//! - Extensions: `posix-rename@openssh.com` and `fsync@openssh.com`.
//!   `statvfs@openssh.com` is *not* advertised: std has no `statvfs`, and a
//!   demo server does not justify a direct `libc` dependency plus `unsafe`.
//!   Clients see "not supported" (russh-sftp's `fs_info` returns `None`).
//! - Unix only (it relies on `std::os::unix` for modes, owners and positional I/O).

mod fs;
mod handler;
mod paths;
mod ssh;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{RunningServerHandle, Server as _};
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::ssh::{Shared, SshServer};

/// Largest READ we answer. OpenSSH clients refuse SFTP messages over 256 KiB,
/// so like OpenSSH's sftp-server we keep 1 KiB of headroom for the header.
const MAX_READ_LEN: u32 = 256 * 1024 - 1024;
/// Open file/directory handles per SFTP session; bounds what one peer can pin.
const MAX_OPEN_HANDLES: usize = 256;
/// Session channels per SSH connection (OpenSSH's `MaxSessions` default).
const MAX_SESSION_CHANNELS: usize = 10;
/// Directory entries returned per READDIR reply (OpenSSH uses 100 too).
const READDIR_BATCH: usize = 100;
/// Rejections are delayed by russh to hide timing; short enough for tests.
const AUTH_REJECTION_TIME: Duration = Duration::from_millis(200);

const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";
const EXT_FSYNC: &str = "fsync@openssh.com";

/// A running embedded SFTP server.
///
/// Dropping it (or calling [`EmbeddedSftpServer::shutdown`]) stops accepting
/// connections and disconnects the clients.
pub struct EmbeddedSftpServer {
    local_addr: SocketAddr,
    fingerprint: String,
    stop: RunningServerHandle,
    task: JoinHandle<()>,
}

/// Why the embedded SFTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedServerError {
    /// The directory to serve cannot be resolved or inspected.
    #[error("cannot serve {}: {source}", path.display())]
    Root {
        /// The directory as given by the caller.
        path: PathBuf,
        /// The underlying filesystem error.
        #[source]
        source: io::Error,
    },
    /// The path to serve exists but is not a directory.
    #[error("cannot serve {}: not a directory", .0.display())]
    RootNotDirectory(PathBuf),
    /// An empty username or password would make the account trivially guessable.
    #[error("the embedded SFTP server needs a non-empty username and password")]
    EmptyCredentials,
    /// The listener has no local address (it was not bound).
    #[error("cannot read the listener's local address: {0}")]
    LocalAddr(#[source] io::Error),
    /// Generating the Ed25519 host key failed.
    #[error("cannot generate the Ed25519 host key: {0}")]
    HostKey(#[source] russh::keys::ssh_key::Error),
    /// The server task ended before it reported that it was running.
    #[error("the embedded SFTP server task ended during startup")]
    Startup,
}

impl EmbeddedSftpServer {
    /// Starts serving `root` on an already-bound listener; only
    /// `username`/`password` may log in (password auth).
    ///
    /// Every accepted connection runs in its own task; the server runs until
    /// [`shutdown`](Self::shutdown) or drop.
    pub async fn start(
        listener: TcpListener,
        root: PathBuf,
        username: String,
        password: String,
    ) -> Result<Self, EmbeddedServerError> {
        if username.is_empty() || password.is_empty() {
            return Err(EmbeddedServerError::EmptyCredentials);
        }
        let root = canonical_root(root).await?;
        let local_addr = listener
            .local_addr()
            .map_err(EmbeddedServerError::LocalAddr)?;
        let host_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(EmbeddedServerError::HostKey)?;
        let fingerprint = host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();

        let config = Arc::new(ssh_config(host_key));
        let mut server = SshServer {
            shared: Arc::new(Shared {
                root: Arc::new(root),
                username,
                password,
            }),
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        // `run_on_socket` borrows the listener, so the listener lives in the task.
        let task = tokio::spawn(async move {
            let running = server.run_on_socket(config, &listener);
            if stop_tx.send(running.handle()).is_err() {
                return; // `start` was cancelled: nobody can stop us, so do not run.
            }
            if let Err(error) = running.await {
                warn!(%error, "embedded SFTP server stopped accepting connections");
            }
        });
        let stop = stop_rx.await.map_err(|_| EmbeddedServerError::Startup)?;
        info!(%local_addr, %fingerprint, "embedded SFTP server started");
        Ok(Self {
            local_addr,
            fingerprint,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// "SHA256:..." fingerprint of the generated Ed25519 host key (same format
    /// as `ssh-keygen -lf`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Stops accepting and aborts the server task.
    pub fn shutdown(self) {
        // Drop does the work, so an explicit shutdown and a drop behave the same.
        drop(self);
    }
}

impl std::fmt::Debug for EmbeddedSftpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSftpServer")
            .field("local_addr", &self.local_addr)
            .field("host_key_fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedSftpServer {
    fn drop(&mut self) {
        // The broadcast makes every connection task send a disconnect; the
        // abort stops the accept loop at once and releases the listener.
        self.stop.shutdown("server shutting down".to_owned());
        self.task.abort();
    }
}

/// Canonicalises the served directory so that every resolved path is absolute.
async fn canonical_root(root: PathBuf) -> Result<PathBuf, EmbeddedServerError> {
    let root_error = |source| EmbeddedServerError::Root {
        path: root.clone(),
        source,
    };
    let canonical = tokio::fs::canonicalize(&root).await.map_err(root_error)?;
    let metadata = tokio::fs::metadata(&canonical).await.map_err(root_error)?;
    if !metadata.is_dir() {
        return Err(EmbeddedServerError::RootNotDirectory(root));
    }
    Ok(canonical)
}

fn ssh_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::Password][..]),
        auth_rejection_time: AUTH_REJECTION_TIME,
        // OpenSSH first probes with "none" to learn the methods; answering that
        // probe instantly costs nothing and speeds up every login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        nodelay: true,
        // The bridge may keep an upstream session idle for a long time: rather
        // than russh's 10-minute inactivity cut-off, drop only dead peers
        // (no keepalive answer for about 90 s).
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    }
}
