//! Opening an authenticated SSH session with the `sftp` subsystem.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::MethodKind;
use russh::client::AuthResult;
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tracing::{debug, warn};

use super::channel::SftpChannel;
use super::pool::PoolSettings;
use crate::secret::Secret;
use crate::upstream::error::{ErrorKind, Result, UpstreamError};

/// How the server's host key is checked. There is no "trust on first use":
/// an unknown key is refused unless `AcceptAny` was written explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// `SHA256:…` fingerprints, as `ssh-keygen -lf` prints them.
    Fingerprints(Vec<String>),
    /// An OpenSSH known_hosts file.
    KnownHosts(PathBuf),
    /// `host_key = "insecure-accept-any"`.
    AcceptAny,
}

/// Everything needed to reach one SFTP server.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    pub host: String,
    pub port: u16,
    pub host_keys: HostKeyCheck,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub requests_in_flight: usize,
    pub keepalive_interval: Duration,
    /// Ask the server to fsync uploads before confirming them.
    pub fsync_uploads: bool,
    /// Reuse of authenticated connections between FTP sessions.
    pub pool: PoolSettings,
}

/// The identity presented to the SFTP server.
#[derive(Clone)]
pub enum SftpCredentials {
    Password {
        username: String,
        password: Secret,
    },
    Key {
        username: String,
        key: Arc<PrivateKey>,
    },
}

impl std::fmt::Debug for SftpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SftpCredentials::Password { username, .. } => {
                write!(f, "Password {{ username: {username:?} }}")
            }
            SftpCredentials::Key { username, .. } => write!(f, "Key {{ username: {username:?} }}"),
        }
    }
}

impl SftpCredentials {
    fn username(&self) -> &str {
        match self {
            SftpCredentials::Password { username, .. } | SftpCredentials::Key { username, .. } => {
                username
            }
        }
    }
}

/// Checks the server key during the handshake and remembers why it refused,
/// because russh reports a refusal only as a generic error.
pub struct HostKeyVerifier {
    host: String,
    port: u16,
    check: HostKeyCheck,
    refusal: Arc<Mutex<Option<String>>>,
}

impl HostKeyVerifier {
    fn verdict(&self, key: &PublicKeyOrCertificate) -> std::result::Result<(), String> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // A certificate's key is only as good as its CA, which we do not check.
            return Err("the server presented a certificate; only plain keys can be pinned".into());
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match &self.check {
            HostKeyCheck::AcceptAny => Ok(()),
            HostKeyCheck::Fingerprints(pins) => {
                if pins.iter().any(|pin| pin == &fingerprint) {
                    Ok(())
                } else {
                    Err(format!("host key {fingerprint} is not pinned"))
                }
            }
            HostKeyCheck::KnownHosts(path) => {
                match russh::keys::check_known_hosts_path(&self.host, self.port, key, path) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!(
                        "host key {fingerprint} is not in {}",
                        path.display()
                    )),
                    Err(e) => Err(format!(
                        "host key {fingerprint} does not match {}: {e}",
                        path.display()
                    )),
                }
            }
        }
    }
}

impl client::Handler for HostKeyVerifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        match self.verdict(server_public_key) {
            Ok(()) => Ok(true),
            Err(reason) => {
                warn!(host = %self.host, port = self.port, %reason, "refusing SFTP upstream host key");
                *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                Ok(false)
            }
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        names: &russh::Names,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        debug!(host = %self.host, cipher = names.cipher.as_ref(), "SSH key exchange done");
        Ok(())
    }
}

pub type SshHandle = client::Handle<HostKeyVerifier>;

/// AES-GCM first where the CPU has AES instructions (it is then the cheapest
/// cipher per byte, as OpenSSH's own measurements show), ChaCha20-Poly1305
/// first elsewhere, where software AES would be the slowest choice.
fn cipher_preference() -> &'static [russh::cipher::Name] {
    use russh::cipher::{
        AES_128_CTR, AES_128_GCM, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305,
    };
    static AES_FIRST: &[russh::cipher::Name] = &[
        AES_128_GCM,
        AES_256_GCM,
        CHACHA20_POLY1305,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    static CHACHA_FIRST: &[russh::cipher::Name] = &[
        CHACHA20_POLY1305,
        AES_128_GCM,
        AES_256_GCM,
        AES_256_CTR,
        AES_192_CTR,
        AES_128_CTR,
    ];
    if cpu_has_aes() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    }
}

fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn ssh_config(settings: &SftpSettings) -> client::Config {
    let preferred = russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(cipher_preference()),
        ..russh::Preferred::default()
    };
    client::Config {
        preferred,
        // Bulk transfer, not an interactive shell: no Nagle, a window large
        // enough for a full pipeline of reads.
        nodelay: true,
        window_size: 8 * 1024 * 1024,
        keepalive_interval: Some(settings.keepalive_interval),
        keepalive_max: 3,
        ..Default::default()
    }
}

/// Connects, verifies the host key and authenticates.
pub async fn connect_ssh(
    settings: &SftpSettings,
    credentials: &SftpCredentials,
) -> Result<SshHandle> {
    let address = format!("{}:{}", settings.host, settings.port);
    let tcp = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::TcpStream::connect((settings.host.as_str(), settings.port)),
    )
    .await
    .map_err(|_| {
        UpstreamError::new(ErrorKind::Unreachable)
            .with_detail(format!("TCP connect to {address} timed out"))
    })?
    .map_err(|e| {
        UpstreamError::new(ErrorKind::Unreachable)
            .with_detail(format!("TCP connect to {address}"))
            .with_source(e)
    })?;
    let _ = tcp.set_nodelay(true);

    let refusal = Arc::new(Mutex::new(None));
    let verifier = HostKeyVerifier {
        host: settings.host.clone(),
        port: settings.port,
        check: settings.host_keys.clone(),
        refusal: refusal.clone(),
    };
    let handshake = client::connect_stream(Arc::new(ssh_config(settings)), tcp, verifier);
    let mut handle = match tokio::time::timeout(settings.connect_timeout, handshake).await {
        Err(_) => {
            return Err(UpstreamError::new(ErrorKind::Unreachable)
                .with_detail(format!("SSH handshake with {address} timed out")));
        }
        Ok(Err(e)) => {
            let refused = refusal.lock().unwrap_or_else(|e| e.into_inner()).take();
            return Err(match refused {
                Some(reason) => UpstreamError::new(ErrorKind::HostKeyRejected).with_detail(reason),
                None => UpstreamError::new(ErrorKind::Unreachable)
                    .with_detail(format!("SSH handshake with {address}"))
                    .with_source(e),
            });
        }
        Ok(Ok(handle)) => handle,
    };

    let authenticated = tokio::time::timeout(
        settings.connect_timeout,
        authenticate(&mut handle, credentials),
    )
    .await
    .map_err(|_| {
        UpstreamError::new(ErrorKind::Unreachable)
            .with_detail(format!("SSH authentication with {address} timed out"))
    })??;
    if !authenticated {
        return Err(
            UpstreamError::new(ErrorKind::AuthenticationFailed).with_detail(format!(
                "{address} refused user {:?}",
                credentials.username()
            )),
        );
    }

    Ok(handle)
}

async fn authenticate(handle: &mut SshHandle, credentials: &SftpCredentials) -> Result<bool> {
    let result = match credentials {
        SftpCredentials::Password { username, password } => {
            let result = handle
                .authenticate_password(username.clone(), password.expose())
                .await
                .map_err(ssh_error)?;
            return match result {
                AuthResult::Failure {
                    remaining_methods, ..
                } if remaining_methods.contains(&MethodKind::KeyboardInteractive) => {
                    keyboard_interactive(handle, username, password).await
                }
                other => Ok(other.success()),
            };
        }
        SftpCredentials::Key { username, key } => {
            // RSA keys must be signed with SHA-2; `None` would mean SHA-1,
            // which current OpenSSH refuses.
            let hash_alg = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(ssh_error)?
                    .flatten()
            } else {
                None
            };
            handle
                .authenticate_publickey(
                    username.clone(),
                    PrivateKeyWithHashAlg::new(key.clone(), hash_alg),
                )
                .await
        }
    };
    Ok(result.map_err(ssh_error)?.success())
}

/// Servers that ask for the password through PAM offer keyboard-interactive
/// rather than password authentication: answer their prompts with the
/// password (and the user name where a prompt echoes, as for "Login:").
async fn keyboard_interactive(
    handle: &mut SshHandle,
    username: &str,
    password: &Secret,
) -> Result<bool> {
    /// Servers ask for a password, perhaps an expiry notice; never more.
    const MAX_ROUNDS: usize = 4;
    let mut reply = handle
        .authenticate_keyboard_interactive_start(username, None::<String>)
        .await
        .map_err(ssh_error)?;
    for _ in 0..MAX_ROUNDS {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts
                    .iter()
                    .map(|prompt| {
                        if prompt.echo {
                            username.to_owned()
                        } else {
                            password.expose().to_owned()
                        }
                    })
                    .collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await
                    .map_err(ssh_error)?;
            }
        }
    }
    Ok(false)
}

/// Opens a channel running the `sftp` subsystem on an authenticated connection.
pub async fn start_sftp(handle: &SshHandle, settings: &SftpSettings) -> Result<SftpChannel> {
    let channel = handle.channel_open_session().await.map_err(ssh_error)?;
    // want_reply: a refused subsystem must be an error, not a silent INIT timeout.
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| ssh_error(e).with_detail("the server refused the sftp subsystem"))?;
    let (read_half, write_half) = channel.split();
    SftpChannel::start(read_half, write_half, settings.request_timeout).await
}

fn ssh_error(e: russh::Error) -> UpstreamError {
    UpstreamError::new(ErrorKind::ConnectionLost).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_leads_exactly_when_the_cpu_has_aes_instructions() {
        let order = cipher_preference();
        assert_eq!(order[0] == russh::cipher::AES_128_GCM, cpu_has_aes());
        assert!(order.contains(&russh::cipher::CHACHA20_POLY1305));
    }

    #[test]
    fn credentials_debug_never_shows_the_password() {
        let credentials = SftpCredentials::Password {
            username: "svc".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
