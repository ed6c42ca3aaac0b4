//! SSH layer: password authentication and session channels, of which only
//! the "sftp" subsystem is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty};
use tracing::{debug, info};

use super::MAX_SESSION_CHANNELS;
use super::handler::SftpHandler;

/// State shared by all connections.
pub(super) struct Shared {
    pub(super) root: Arc<PathBuf>,
    pub(super) username: String,
    pub(super) password: String,
}

impl Shared {
    fn credentials_match(&self, user: &str, password: &str) -> bool {
        // Evaluate both comparisons (`&`, not `&&`) so the time taken does not
        // reveal whether the username alone was right.
        constant_time_eq(user.as_bytes(), self.username.as_bytes())
            & constant_time_eq(password.as_bytes(), self.password.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte (only the
/// length leaks, which is acceptable for a demo credential).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
pub(super) struct SshServer {
    pub(super) shared: Arc<Shared>,
}

impl russh::server::Server for SshServer {
    type Handler = SshConnection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> SshConnection {
        debug!(?peer, "embedded SFTP server: new connection");
        SshConnection {
            shared: Arc::clone(&self.shared),
            peer,
            channels: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        debug!(%error, "embedded SFTP server: connection ended with an error");
    }
}

/// Per-connection SSH handler: password auth, session channels, "sftp" only.
pub(super) struct SshConnection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// Opened session channels waiting for their subsystem request.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl SshConnection {
    /// Refuses a channel request (shell, exec, pty, ...): only SFTP is served.
    fn refuse(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        debug!(peer = ?self.peer, what, "embedded SFTP server: refusing channel request");
        session.channel_failure(channel)
    }
}

impl russh::server::Handler for SshConnection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.credentials_match(user, password) {
            info!(peer = ?self.peer, user, "embedded SFTP server: login");
            Ok(Auth::Accept)
        } else {
            info!(peer = ?self.peer, user, "embedded SFTP server: login refused");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_SESSION_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let channel = match name {
            "sftp" => self.channels.remove(&channel_id),
            _ => None,
        };
        let Some(channel) = channel else {
            return self.refuse(channel_id, "subsystem", session);
        };
        session.channel_success(channel_id)?;
        // `run` spawns its own task and returns at once; the task ends (and
        // closes the channel) when the client closes its side.
        russh_sftp::server::run(
            channel.into_stream(),
            SftpHandler::new(Arc::clone(&self.shared.root)),
        )
        .await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "shell", session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "exec", session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "pty", session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "x11", session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "env", session)
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A channel still in the map never became SFTP, so nothing else will
        // close it. SFTP channels close themselves once their task has answered
        // every request (closing here could drop the last replies).
        if self.channels.remove(&channel).is_some() {
            session.close(channel)?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
