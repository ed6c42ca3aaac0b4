//! A data connection, plain or protected (PROT P, RFC 4217 §9).
//!
//! On a protected connection the end of an upload should be a TLS
//! close_notify; a bare TCP close could be an attacker truncating the file.
//! Many clients never send one, so the listener's `data_close_notify`
//! policy decides: `optional` treats the bare close as the end of the file
//! (and logs it), `required` fails the upload.
//!
//! A data-connection handshake that resumed a session of the control
//! connection proves who the peer is. For that proof to hold, a handshake
//! that is then refused must leave nothing behind: otherwise a peer refused
//! for its full handshake (`data_tls_resumption = "required"`, or a
//! `tls-session` candidate from a foreign address) would find the session it
//! was just issued in the control connection's cache and resume it on its
//! next try. So sessions issued during a data handshake are staged, and join
//! the cache only when the connection is accepted ([`Secured::accept`]).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::HandshakeKind;
use rustls::ServerConfig;
use rustls::server::StoresServerSessions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::warn;

use super::control_stream::handshake;
use crate::config::CloseNotifyPolicy;

pub enum DataStream {
    Plain(TcpStream),
    Tls {
        stream: Box<TlsStream<TcpStream>>,
        close_notify: CloseNotifyPolicy,
    },
}

/// A protected data connection and whether its handshake resumed a session
/// of this control connection: the proof a NAT-tolerant source policy can
/// accept instead of a matching IP address.
pub struct Secured {
    stream: DataStream,
    pub resumed: bool,
    staged: Arc<StagedSessions>,
}

impl Secured {
    /// Accepts the connection: the sessions issued on it join the control
    /// connection's cache (so the client can resume them next time).
    /// Dropping a `Secured` instead discards them.
    pub fn accept(self) -> DataStream {
        self.staged.commit();
        self.stream
    }
}

impl DataStream {
    /// TLS server handshake on a new data connection with the control
    /// connection's session config; new sessions are staged (see the module
    /// documentation).
    pub async fn secure(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        timeout: Duration,
        close_notify: CloseNotifyPolicy,
    ) -> io::Result<Secured> {
        let staged = Arc::new(StagedSessions::new(config.session_storage.clone()));
        let mut staging = (*config).clone();
        staging.session_storage = staged.clone();
        let stream = handshake(tcp, Arc::new(staging), timeout).await?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        Ok(Secured {
            stream: DataStream::Tls {
                stream: Box::new(stream),
                close_notify,
            },
            resumed,
            staged,
        })
    }
}

/// The session store one data-connection handshake sees: the control
/// connection's cache for lookups, plus the sessions this handshake issued,
/// held back until [`StagedSessions::commit`].
struct StagedSessions {
    cache: Arc<dyn StoresServerSessions>,
    staged: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StagedSessions {
    fn new(cache: Arc<dyn StoresServerSessions>) -> Self {
        StagedSessions {
            cache,
            staged: Mutex::new(Vec::new()),
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, Vec<u8>)>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commit(&self) {
        for (key, value) in self.staged().drain(..) {
            self.cache.put(key, value);
        }
    }
}

impl fmt::Debug for StagedSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedSessions")
            .field("staged", &self.staged().len())
            .finish()
    }
}

impl StoresServerSessions for StagedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut staged = self.staged();
        staged.retain(|(k, _)| *k != key);
        staged.push((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let staged = self
            .staged()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        staged.or_else(|| self.cache.get(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut staged = self.staged();
        if let Some(index) = staged.iter().position(|(k, _)| k == key) {
            return Some(staged.remove(index).1);
        }
        drop(staged);
        self.cache.take(key)
    }

    fn can_cache(&self) -> bool {
        self.cache.can_cache()
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            DataStream::Tls {
                stream,
                close_notify,
            } => match Pin::new(stream.as_mut()).poll_read(cx, buf) {
                Poll::Ready(Err(e))
                    if e.kind() == io::ErrorKind::UnexpectedEof
                        && *close_notify == CloseNotifyPolicy::Optional =>
                {
                    warn!(
                        "protected upload ended without TLS close_notify; accepted (data_close_notify = \"optional\")"
                    );
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DataStream::Plain(tcp) => Pin::new(tcp).poll_write(cx, data),
            DataStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            DataStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    /// For TLS this sends close_notify before the TCP FIN, so a download's
    /// end is authenticated before the 226.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DataStream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            DataStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::session::SessionCache;

    #[test]
    fn staged_sessions_reach_the_cache_only_on_commit() {
        let cache = Arc::new(SessionCache::new(8));
        cache.put(b"control".to_vec(), b"c".to_vec());
        let staged = StagedSessions::new(cache.clone());
        assert_eq!(
            staged.get(b"control"),
            Some(b"c".to_vec()),
            "lookups see the cache"
        );
        assert!(staged.put(b"data".to_vec(), b"d".to_vec()));
        assert_eq!(staged.get(b"data"), Some(b"d".to_vec()));
        assert_eq!(cache.get(b"data"), None, "not in the cache before commit");
        staged.commit();
        assert_eq!(cache.get(b"data"), Some(b"d".to_vec()));
    }

    #[test]
    fn dropped_staged_sessions_never_reach_the_cache() {
        let cache = Arc::new(SessionCache::new(8));
        {
            let staged = StagedSessions::new(cache.clone());
            staged.put(b"data".to_vec(), b"d".to_vec());
        }
        assert_eq!(cache.get(b"data"), None);
    }
}
