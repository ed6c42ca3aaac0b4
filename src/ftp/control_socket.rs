//! The control connection's socket, read so that urgent data cannot stall it.
//!
//! Clients signal ABOR with TCP urgent data (RFC 959 §4.1.3; Python's ftplib
//! sends "ABOR\r\n" itself with MSG_OOB). With SO_OOBINLINE the urgent byte
//! stays in the stream, but a read never crosses the urgent mark, so the
//! kernel returns the bytes before the mark as a short read. tokio's
//! `TcpStream` takes any short read to mean "drained" and waits for the next
//! epoll edge (tokio `poll_evented.rs`: `if 0 < n && n < len {
//! clear_readiness }`), which never comes when the rest of the line had
//! already arrived: the session would hang until the client sent more.
//!
//! So each read first tries one direct non-blocking `recv` on the socket,
//! which does not depend on tokio's readiness state, and only when the kernel
//! says `WouldBlock` waits the usual way. One extra syscall per control read
//! is nothing next to a command's upstream round trip.

use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct ControlSocket {
    stream: TcpStream,
}

impl ControlSocket {
    /// Takes over an accepted connection and keeps urgent data inline.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        socket2::SockRef::from(&stream).set_out_of_band_inline(true)?;
        Ok(ControlSocket { stream })
    }
}

impl AsyncRead for ControlSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let direct = {
            let socket = socket2::SockRef::from(&self.stream);
            (&*socket).read(buf.initialize_unfilled())
        };
        match direct {
            Ok(n) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Pin::new(&mut self.stream).poll_read(cx, buf)
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for ControlSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    /// The scenario that stalls a plain tokio TcpStream: bytes before an
    /// urgent mark, the urgent byte, and the rest, all in the socket before
    /// tokio registers it, so there is exactly one readiness edge.
    #[tokio::test]
    async fn a_line_around_an_urgent_mark_is_read_completely() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        socket2::SockRef::from(&accepted)
            .set_out_of_band_inline(true)
            .unwrap();
        (&client).write_all(b"\xff\xf4\xff").unwrap();
        assert_eq!(
            socket2::SockRef::from(&client)
                .send_out_of_band(b"\xf2")
                .unwrap(),
            1
        );
        (&client).write_all(b"ABOR\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        accepted.set_nonblocking(true).unwrap();
        let mut control = ControlSocket::new(TcpStream::from_std(accepted).unwrap()).unwrap();

        let mut line = Vec::new();
        let read = async {
            while !line.ends_with(b"\r\n") {
                let mut chunk = [0u8; 64];
                let n = control.read(&mut chunk).await.unwrap();
                assert!(n > 0, "unexpected end of stream");
                line.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the read must not stall at the urgent mark");
        assert_eq!(line, b"\xff\xf4\xff\xf2ABOR\r\n");
    }
}
