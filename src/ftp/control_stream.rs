//! The control connection as the session sees it: plain, or TLS after
//! `AUTH TLS` (RFC 4217 §4) or from the first byte (implicit FTPS).
//!
//! The stream changes in place under the session's `Framed`: the upgrade
//! takes the plain socket out (leaving `Closed` for the instant of the
//! handshake) and puts the TLS stream back, so the codec keeps working.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::control_socket::ControlSocket;

pub enum ControlStream {
    Plain(ControlSocket),
    Tls(Box<TlsStream<ControlSocket>>),
    /// Only while an upgrade or downgrade is in progress.
    Closed,
}

impl ControlStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ControlStream::Tls(_))
    }

    /// Runs the server side of a TLS handshake on a plain control stream.
    pub async fn upgrade(
        &mut self,
        config: Arc<ServerConfig>,
        timeout: Duration,
    ) -> io::Result<()> {
        let ControlStream::Plain(socket) = std::mem::replace(self, ControlStream::Closed) else {
            return Err(io::Error::other("the control connection is not plain"));
        };
        let tls = handshake(socket, config, timeout).await?;
        *self = ControlStream::Tls(Box::new(tls));
        Ok(())
    }

    /// CCC (RFC 4217 §12.2): ends TLS on the control connection with an
    /// exchange of close_notify alerts and goes on in plain text. Bytes the
    /// client sent after its close_notify are plain commands; they are returned
    /// so the caller can put them back in front of the codec.
    pub async fn downgrade(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let ControlStream::Tls(tls) = std::mem::replace(self, ControlStream::Closed) else {
            return Err(io::Error::other("the control connection is not TLS"));
        };
        let (mut socket, mut connection) = tls.into_inner();
        let exchange = async {
            connection.send_close_notify();
            let mut out = Vec::new();
            while connection.wants_write() {
                connection.write_tls(&mut out)?;
            }
            socket.write_all(&out).await?;
            read_until_close_notify(&mut socket, &mut connection).await
        };
        let leftover = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no close_notify from the client")
            })??;
        *self = ControlStream::Plain(socket);
        Ok(leftover)
    }
}

/// The server side of a TLS handshake, bounded in time.
pub async fn handshake<S>(
    stream: S,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Feeds the client's TLS records to rustls one record at a time until its
/// close_notify has been processed; whatever follows is plain text.
async fn read_until_close_notify(
    socket: &mut ControlSocket,
    connection: &mut rustls::ServerConnection,
) -> io::Result<Vec<u8>> {
    const HEADER: usize = 5;
    let mut pending = Vec::new();
    loop {
        while pending.len() >= HEADER {
            let length = usize::from(u16::from_be_bytes([pending[3], pending[4]]));
            if pending.len() < HEADER + length {
                break;
            }
            let record: Vec<u8> = pending.drain(..HEADER + length).collect();
            connection.read_tls(&mut record.as_slice())?;
            let state = connection.process_new_packets().map_err(io::Error::other)?;
            if state.peer_has_closed() {
                return Ok(pending);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "control connection closed")
}

impl AsyncRead for ControlStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Plain(socket) => Pin::new(socket).poll_read(cx, buf),
            ControlStream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
            ControlStream::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for ControlStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ControlStream::Plain(socket) => Pin::new(socket).poll_write(cx, data),
            ControlStream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, data),
            ControlStream::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Plain(socket) => Pin::new(socket).poll_flush(cx),
            ControlStream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            ControlStream::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Plain(socket) => Pin::new(socket).poll_shutdown(cx),
            ControlStream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            ControlStream::Closed => Poll::Ready(Ok(())),
        }
    }
}
