//! A minimal FTP control connection for asserting exact reply codes and
//! sequences, which client libraries hide.

use std::net::SocketAddr;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::proxy::TEST_TIMEOUT;

pub struct RawFtp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// A reply: its code and its text (lines joined with '\n', codes stripped
/// from the first and last line).
#[derive(Debug, Clone)]
pub struct RawReply {
    pub code: u16,
    pub text: String,
}

impl RawFtp {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> (RawFtp, RawReply) {
        let stream = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        RawFtp::from_stream(stream).await
    }

    /// Takes over a connected stream (one bound to a chosen source address,
    /// or one that already carried a PROXY header) and reads the greeting.
    pub async fn from_stream(stream: TcpStream) -> (RawFtp, RawReply) {
        let (read, write) = stream.into_split();
        let mut ftp = RawFtp {
            reader: BufReader::new(read),
            writer: write,
        };
        let greeting = ftp.reply().await;
        (ftp, greeting)
    }

    pub async fn send(&mut self, line: &[u8]) {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.writer.write_all(&bytes).await.expect("send command");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send bytes");
    }

    /// RFC 959 §4.1.3's abort procedure: Telnet IP, then Synch (IAC with DM
    /// sent as TCP urgent data), then the command itself.
    pub async fn send_with_synch(&mut self, line: &[u8]) {
        self.send_raw(b"\xff\xf4\xff").await;
        let sent = socket2::SockRef::from(self.writer.as_ref())
            .send_out_of_band(b"\xf2")
            .expect("send urgent data");
        assert_eq!(sent, 1);
        self.send(line).await;
    }

    /// The local address of the control connection (what PORT must name).
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.local_addr().expect("local address")
    }

    /// Reads one complete reply (RFC 959 §4.2 multi-line form included).
    pub async fn reply(&mut self) -> RawReply {
        tokio::time::timeout(TEST_TIMEOUT, self.read_reply())
            .await
            .expect("reply in time")
    }

    /// Reads a reply, or `None` if the server closed the connection.
    pub async fn try_reply(&mut self) -> Option<RawReply> {
        tokio::time::timeout(TEST_TIMEOUT, self.read_reply_opt())
            .await
            .expect("reply or close in time")
    }

    async fn read_reply(&mut self) -> RawReply {
        self.read_reply_opt()
            .await
            .expect("the server closed the connection")
    }

    async fn read_reply_opt(&mut self) -> Option<RawReply> {
        read_reply_from(&mut self.reader).await
    }

    pub async fn cmd(&mut self, line: &str) -> RawReply {
        self.send(line.as_bytes()).await;
        self.reply().await
    }

    pub async fn cmd_bytes(&mut self, line: &[u8]) -> RawReply {
        self.send(line).await;
        self.reply().await
    }

    pub async fn login(&mut self, user: &str, password: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).await.code, 331);
        let reply = self.cmd(&format!("PASS {password}")).await;
        assert_eq!(reply.code, 230, "login: {reply:?}");
    }

    /// EPSV, then connects to the announced port.
    pub async fn epsv_connect(&mut self, addr: SocketAddr) -> TcpStream {
        let reply = self.cmd("EPSV").await;
        assert_eq!(reply.code, 229, "{reply:?}");
        let port: u16 = reply
            .text
            .split("|||")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {reply:?}"));
        TcpStream::connect((addr.ip(), port))
            .await
            .expect("data connection")
    }

    /// Reads a data connection to its end.
    pub async fn read_all(mut data: TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(TEST_TIMEOUT, data.read_to_end(&mut out))
            .await
            .expect("data in time")
            .expect("read data");
        out
    }
}

/// Reads one complete reply (RFC 959 §4.2 multi-line form included) from any
/// buffered stream; `None` when the server closed the connection.
pub async fn read_reply_from<R: AsyncBufRead + Unpin>(reader: &mut R) -> Option<RawReply> {
    let first = read_line(reader).await?;
    let code: u16 = first.get(..3)?.parse().ok()?;
    let mut text = first.get(4..).unwrap_or_default().to_owned();
    if first.as_bytes().get(3) == Some(&b'-') {
        let end = format!("{code} ");
        loop {
            let line = read_line(reader).await?;
            if let Some(last) = line.strip_prefix(&end) {
                text.push('\n');
                text.push_str(last);
                break;
            }
            text.push('\n');
            text.push_str(&line);
        }
    }
    Some(RawReply { code, text })
}

async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Option<String> {
    let mut buf = Vec::new();
    let n = reader.read_until(b'\n', &mut buf).await.ok()?;
    if n == 0 {
        return None;
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}
