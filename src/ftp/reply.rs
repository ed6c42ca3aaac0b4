//! Replies are values; only [`Reply::encode`] turns them into bytes.
//!
//! RFC 959 §4.2: a reply is a three-digit code followed by text. A multi-line
//! reply starts with "NNN-", ends with "NNN <SP>", and lines in between that
//! begin with a digit must not be mistaken for the end, so they are indented.

use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    /// At least one line; text may hold file names, so it is bytes.
    lines: Vec<Vec<u8>>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Vec<u8>>) -> Self {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply: `first`, then `body` lines, then `last`.
    pub fn multiline(
        code: u16,
        first: impl Into<Vec<u8>>,
        body: impl IntoIterator<Item = Vec<u8>>,
        last: impl Into<Vec<u8>>,
    ) -> Self {
        let mut lines = vec![first.into()];
        lines.extend(body);
        lines.push(last.into());
        Reply { code, lines }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text of every line, for tests and logs.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// RFC 959 §4.2 framing, CRLF line ends.
    pub fn encode(&self, out: &mut BytesMut) {
        let code = self.code.to_string();
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            if i == 0 {
                out.put_slice(code.as_bytes());
                out.put_u8(if last == 0 { b' ' } else { b'-' });
            } else if i == last {
                out.put_slice(code.as_bytes());
                out.put_u8(b' ');
            } else if line.first().is_some_and(u8::is_ascii_digit) {
                out.put_u8(b' ');
            }
            put_sanitized(out, line);
            out.put_slice(b"\r\n");
        }
    }
}

/// A CR or LF inside a name would end the reply line early and let a file
/// name inject a fake reply; RFC 2640 §3.1 never allows them raw.
fn put_sanitized(out: &mut BytesMut, line: &[u8]) {
    for &b in line {
        out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
}

/// Quotes a path for a 257 reply: RFC 959 Appendix II doubles embedded quotes.
pub fn quote_path(path: &[u8]) -> Vec<u8> {
    let mut quoted = Vec::with_capacity(path.len() + 2);
    quoted.push(b'"');
    for &b in path {
        if b == b'"' {
            quoted.push(b'"');
        }
        quoted.push(b);
    }
    quoted.push(b'"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply) -> String {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn single_line_reply_has_code_space_text_crlf() {
        assert_eq!(encoded(&Reply::new(200, "OK")), "200 OK\r\n");
    }

    #[test]
    fn multiline_reply_marks_first_and_last_line() {
        let reply = Reply::multiline(211, "Features:", [b" EPSV".to_vec()], "End");
        assert_eq!(encoded(&reply), "211-Features:\r\n EPSV\r\n211 End\r\n");
    }

    #[test]
    fn body_lines_starting_with_a_digit_are_indented() {
        let reply = Reply::multiline(211, "Status", [b"226 looks like an end".to_vec()], "End");
        assert_eq!(
            encoded(&reply),
            "211-Status\r\n 226 looks like an end\r\n211 End\r\n"
        );
    }

    #[test]
    fn line_breaks_inside_text_cannot_inject_a_reply() {
        let reply = Reply::new(550, b"a\r\n230 fake".to_vec());
        assert_eq!(encoded(&reply), "550 a  230 fake\r\n");
    }

    #[test]
    fn quote_path_doubles_quotes() {
        assert_eq!(quote_path(b"/say \"hi\""), b"\"/say \"\"hi\"\"\"".to_vec());
    }
}
