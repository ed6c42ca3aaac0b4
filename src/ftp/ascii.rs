//! TYPE A line-end conversion (RFC 959 §3.1.1.1): "end-of-line" is CRLF on
//! the wire and LF in storage. Both converters keep state across chunks, so a
//! CRLF split between two reads is still recognised.

use bytes::{Bytes, BytesMut};

/// Storage → wire: a bare LF becomes CRLF; an existing CRLF is left alone so
/// files that already use CRLF do not gain a second CR.
#[derive(Debug, Default)]
pub struct ToNetwork {
    previous_was_cr: bool,
}

impl ToNetwork {
    pub fn convert(&mut self, chunk: Bytes) -> Bytes {
        if chunk.is_empty() {
            return chunk;
        }
        if !chunk.contains(&b'\n') {
            self.previous_was_cr = chunk.last() == Some(&b'\r');
            return chunk;
        }
        let mut out = BytesMut::with_capacity(chunk.len() + chunk.len() / 16 + 1);
        for &b in chunk.iter() {
            if b == b'\n' && !self.previous_was_cr {
                out.extend_from_slice(b"\r");
            }
            out.extend_from_slice(&[b]);
            self.previous_was_cr = b == b'\r';
        }
        out.freeze()
    }
}

/// Wire → storage: CRLF becomes LF; a CR not followed by LF is kept.
#[derive(Debug, Default)]
pub struct FromNetwork {
    pending_cr: bool,
}

impl FromNetwork {
    pub fn convert(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(chunk.len() + 1);
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if b != b'\n' {
                    out.extend_from_slice(b"\r");
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.extend_from_slice(&[b]);
            }
        }
        out.freeze()
    }

    /// Bytes held back at the end of the stream (a trailing lone CR).
    pub fn finish(&mut self) -> Bytes {
        if std::mem::take(&mut self.pending_cr) {
            Bytes::from_static(b"\r")
        } else {
            Bytes::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut conv = ToNetwork::default();
        chunks
            .iter()
            .flat_map(|c| conv.convert(Bytes::copy_from_slice(c)).to_vec())
            .collect()
    }

    fn from_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut conv = FromNetwork::default();
        let mut out: Vec<u8> = chunks
            .iter()
            .flat_map(|c| conv.convert(c).to_vec())
            .collect();
        out.extend_from_slice(&conv.finish());
        out
    }

    #[test]
    fn lf_becomes_crlf_on_the_wire() {
        assert_eq!(to_network(&[b"a\nb\n"]), b"a\r\nb\r\n");
    }

    #[test]
    fn existing_crlf_is_not_doubled_even_across_chunks() {
        assert_eq!(to_network(&[b"a\r", b"\nb\r\n"]), b"a\r\nb\r\n");
    }

    #[test]
    fn crlf_becomes_lf_in_storage_even_across_chunks() {
        assert_eq!(from_network(&[b"a\r", b"\nb\r\n"]), b"a\nb\n");
    }

    #[test]
    fn lone_cr_survives_upload() {
        assert_eq!(from_network(&[b"a\rb", b"\r"]), b"a\rb\r");
    }

    #[test]
    fn round_trip_restores_lf_text() {
        let text: &[u8] = b"line one\nline two\n\nend";
        let wire = to_network(&[text]);
        assert_eq!(from_network(&[&wire]), text);
    }
}
