//! A data connection, plain or protected (PROT P, RFC 4217 §9).
//!
//! On a protected connection the end of an upload should be a TLS
//! close_notify; a bare TCP close could be an attacker truncating the file.
//! Many clients never send one, so the listener's `data_close_notify`
//! policy decides: `optional` treats the bare close as the end of the file
//! (and logs it), `required` fails the upload.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::HandshakeKind;
use rustls::ServerConfig;
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
    pub stream: DataStream,
    pub resumed: bool,
}

impl DataStream {
    /// TLS server handshake on a new data connection with the control
    /// connection's session config.
    pub async fn secure(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        timeout: Duration,
        close_notify: CloseNotifyPolicy,
    ) -> io::Result<Secured> {
        let stream = handshake(tcp, config, timeout).await?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        Ok(Secured {
            stream: DataStream::Tls {
                stream: Box::new(stream),
                close_notify,
            },
            resumed,
        })
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
