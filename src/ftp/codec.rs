//! Control-channel framing: lines in, replies out.
//!
//! Lines end in CRLF (RFC 959 §4.1) but bare LF is accepted, as every
//! production server does. A line longer than the cap is reported once and
//! then discarded up to its end, so a client cannot grow the buffer.
//!
//! The control connection is a Telnet connection (RFC 959 §4.1.3): clients
//! send "Telnet IP" and "Synch" (IAC IP, IAC DM) before ABOR. Those sequences
//! are removed from each line; the socket has SO_OOBINLINE set so the urgent
//! byte stays in the stream instead of being cut out of it.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::reply::Reply;

/// Control lines longer than this are refused (500) and dropped.
pub const DEFAULT_MAX_LINE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlInput {
    /// One line, terminator removed.
    Line(Bytes),
    /// A line exceeded the cap; its bytes are being discarded.
    TooLong,
}

#[derive(Debug)]
pub struct ControlCodec {
    max_line: usize,
    /// Bytes already searched for a newline, so each byte is scanned once.
    scanned: usize,
    discarding: bool,
}

impl ControlCodec {
    pub fn new(max_line: usize) -> Self {
        ControlCodec {
            max_line,
            scanned: 0,
            discarding: false,
        }
    }
}

impl Default for ControlCodec {
    fn default() -> Self {
        ControlCodec::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for ControlCodec {
    type Item = ControlInput;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ControlInput>, Self::Error> {
        loop {
            let newline = buf[self.scanned..].iter().position(|&b| b == b'\n');
            match newline {
                Some(pos) => {
                    let end = self.scanned + pos;
                    let mut line = buf.split_to(end + 1);
                    self.scanned = 0;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    return Ok(Some(ControlInput::Line(without_telnet(line.freeze()))));
                }
                None if self.discarding => {
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                None if buf.len() > self.max_line => {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(ControlInput::TooLong));
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<ControlInput>, Self::Error> {
        // A final command without a line end is still a command.
        match self.decode(buf)? {
            Some(input) => Ok(Some(input)),
            None if !buf.is_empty() && !self.discarding => {
                let mut line = buf.split();
                self.scanned = 0;
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                Ok(Some(ControlInput::Line(without_telnet(line.freeze()))))
            }
            None => {
                buf.clear();
                Ok(None)
            }
        }
    }
}

const IAC: u8 = 255;
/// Telnet commands that take one option byte: WILL, WONT, DO, DONT.
const OPTION_COMMANDS: std::ops::RangeInclusive<u8> = 251..=254;
/// Telnet commands without an option: SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SB.
const PLAIN_COMMANDS: std::ops::RangeInclusive<u8> = 240..=250;

fn without_telnet(line: Bytes) -> Bytes {
    match strip_telnet(&line) {
        Cow::Borrowed(_) => line,
        Cow::Owned(stripped) => Bytes::from(stripped),
    }
}

/// Removes Telnet command sequences (RFC 854) and undoubles IAC IAC. An IAC
/// followed by anything else is kept as data: legacy clients send raw 8-bit
/// names, and a 0xFF byte in a name must survive.
pub fn strip_telnet(line: &[u8]) -> Cow<'_, [u8]> {
    if !line.contains(&IAC) {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        match (line[i], line.get(i + 1)) {
            (IAC, Some(&IAC)) => {
                out.push(IAC);
                i += 2;
            }
            (IAC, Some(command)) if OPTION_COMMANDS.contains(command) => i += 3,
            (IAC, Some(command)) if PLAIN_COMMANDS.contains(command) => i += 2,
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

impl Encoder<&Reply> for ControlCodec {
    type Error = std::io::Error;

    fn encode(&mut self, reply: &Reply, out: &mut BytesMut) -> Result<(), Self::Error> {
        reply.encode(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut ControlCodec, input: &[u8]) -> Vec<ControlInput> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    fn line(s: &str) -> ControlInput {
        ControlInput::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_and_bare_lf_both_end_a_line() {
        let mut codec = ControlCodec::default();
        assert_eq!(
            decode_all(&mut codec, b"USER a\r\nPASS b\nNOOP"),
            vec![line("USER a"), line("PASS b")]
        );
    }

    #[test]
    fn a_line_split_across_reads_is_reassembled() {
        let mut codec = ControlCodec::default();
        let mut buf = BytesMut::from(&b"RETR fi"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"le.txt\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("RETR file.txt")));
    }

    #[test]
    fn overlong_line_is_reported_once_and_discarded() {
        let mut codec = ControlCodec::new(16);
        let mut buf = BytesMut::from(&[b'A'; 40][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ControlInput::TooLong));
        assert!(buf.is_empty());
        buf.extend_from_slice(&[b'A'; 40]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "discarded bytes must not accumulate");
        buf.extend_from_slice(b"AAA\r\nNOOP\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("NOOP")));
    }

    #[test]
    fn a_final_line_without_terminator_is_delivered_at_eof() {
        let mut codec = ControlCodec::default();
        let mut buf = BytesMut::from(&b"QUIT\r"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(line("QUIT")));
    }

    #[test]
    fn telnet_interrupt_and_synch_before_abor_are_removed() {
        let mut codec = ControlCodec::default();
        assert_eq!(
            decode_all(&mut codec, b"\xff\xf4\xff\xf2ABOR\r\n"),
            vec![line("ABOR")]
        );
    }

    #[test]
    fn telnet_option_negotiation_is_removed_and_doubled_iac_undoubled() {
        assert_eq!(strip_telnet(b"\xff\xfb\x01NOOP").as_ref(), b"NOOP");
        assert_eq!(strip_telnet(b"RETR a\xff\xffb").as_ref(), b"RETR a\xffb");
    }

    #[test]
    fn a_raw_0xff_in_a_name_is_kept() {
        assert_eq!(strip_telnet(b"RETR \xffile").as_ref(), b"RETR \xffile");
        assert_eq!(strip_telnet(b"RETR x\xff").as_ref(), b"RETR x\xff");
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through() {
        let mut codec = ControlCodec::default();
        assert_eq!(
            decode_all(&mut codec, b"RETR caf\xe9\r\n"),
            vec![ControlInput::Line(Bytes::from_static(b"RETR caf\xe9"))]
        );
    }
}
