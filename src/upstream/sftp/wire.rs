//! SFTP version 3 wire format (draft-ietf-secsh-filexfer-02), pure encoding and
//! decoding with no I/O.
//!
//! "All packets transmitted over the secure connection are of the following
//! format: uint32 length, byte type, byte[length - 1] data payload." (§3)
//!
//! File names travel as raw bytes here: SFTP v3 defines no encoding for them,
//! and FTP clients rely on names round-tripping unchanged, so nothing in this
//! module ever decodes a name as UTF-8.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const SSH_FXP_INIT: u8 = 1;
pub const SSH_FXP_VERSION: u8 = 2;
pub const SSH_FXP_OPEN: u8 = 3;
pub const SSH_FXP_CLOSE: u8 = 4;
pub const SSH_FXP_READ: u8 = 5;
pub const SSH_FXP_WRITE: u8 = 6;
pub const SSH_FXP_LSTAT: u8 = 7;
pub const SSH_FXP_FSTAT: u8 = 8;
pub const SSH_FXP_SETSTAT: u8 = 9;
pub const SSH_FXP_FSETSTAT: u8 = 10;
pub const SSH_FXP_OPENDIR: u8 = 11;
pub const SSH_FXP_READDIR: u8 = 12;
pub const SSH_FXP_REMOVE: u8 = 13;
pub const SSH_FXP_MKDIR: u8 = 14;
pub const SSH_FXP_RMDIR: u8 = 15;
pub const SSH_FXP_REALPATH: u8 = 16;
pub const SSH_FXP_STAT: u8 = 17;
pub const SSH_FXP_RENAME: u8 = 18;
pub const SSH_FXP_STATUS: u8 = 101;
pub const SSH_FXP_HANDLE: u8 = 102;
pub const SSH_FXP_DATA: u8 = 103;
pub const SSH_FXP_NAME: u8 = 104;
pub const SSH_FXP_ATTRS: u8 = 105;
pub const SSH_FXP_EXTENDED: u8 = 200;
pub const SSH_FXP_EXTENDED_REPLY: u8 = 201;

pub const SSH_FX_OK: u32 = 0;
pub const SSH_FX_EOF: u32 = 1;
pub const SSH_FX_NO_SUCH_FILE: u32 = 2;
pub const SSH_FX_PERMISSION_DENIED: u32 = 3;
pub const SSH_FX_FAILURE: u32 = 4;
pub const SSH_FX_BAD_MESSAGE: u32 = 5;
pub const SSH_FX_NO_CONNECTION: u32 = 6;
pub const SSH_FX_CONNECTION_LOST: u32 = 7;
pub const SSH_FX_OP_UNSUPPORTED: u32 = 8;

pub const SSH_FXF_READ: u32 = 0x01;
pub const SSH_FXF_WRITE: u32 = 0x02;
pub const SSH_FXF_APPEND: u32 = 0x04;
pub const SSH_FXF_CREAT: u32 = 0x08;
pub const SSH_FXF_TRUNC: u32 = 0x10;
pub const SSH_FXF_EXCL: u32 = 0x20;

const ATTR_SIZE: u32 = 0x0000_0001;
const ATTR_UIDGID: u32 = 0x0000_0002;
const ATTR_PERMISSIONS: u32 = 0x0000_0004;
const ATTR_ACMODTIME: u32 = 0x0000_0008;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// File type bits of `st_mode`, as SFTP v3 servers send them in `permissions`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// The protocol version we speak.
pub const SFTP_VERSION: u32 = 3;

/// Largest packet we accept from a server. OpenSSH's own limit is 256 KiB; the
/// margin covers servers that add a little on top of that.
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// Bytes of a WRITE packet that are not file data, excluding the handle:
/// length(4) + type(1) + id(4) + handle length(4) + offset(8) + data length(4).
pub const WRITE_OVERHEAD: usize = 25;

/// A malformed packet from the server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("packet truncated")]
    Truncated,
    #[error("packet of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unexpected packet type {0}")]
    UnexpectedType(u8),
}

/// File attributes (§5). Every field is optional, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttributes {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub permissions: Option<u32>,
    /// (atime, mtime) in seconds since the Unix epoch.
    pub times: Option<(u32, u32)>,
}

impl FileAttributes {
    pub fn file_type(&self) -> Option<u32> {
        self.permissions.map(|p| p & S_IFMT)
    }

    fn encode(&self, out: &mut BytesMut) {
        let mut flags = 0;
        if self.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if self.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if self.permissions.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if self.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        out.put_u32(flags);
        if let Some(size) = self.size {
            out.put_u64(size);
        }
        if let Some((uid, gid)) = self.uid_gid {
            out.put_u32(uid);
            out.put_u32(gid);
        }
        if let Some(permissions) = self.permissions {
            out.put_u32(permissions);
        }
        if let Some((atime, mtime)) = self.times {
            out.put_u32(atime);
            out.put_u32(mtime);
        }
    }

    fn decode(buf: &mut Bytes) -> Result<Self, WireError> {
        let flags = get_u32(buf)?;
        let mut attrs = FileAttributes::default();
        if flags & ATTR_SIZE != 0 {
            attrs.size = Some(get_u64(buf)?);
        }
        if flags & ATTR_UIDGID != 0 {
            attrs.uid_gid = Some((get_u32(buf)?, get_u32(buf)?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            attrs.permissions = Some(get_u32(buf)?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            attrs.times = Some((get_u32(buf)?, get_u32(buf)?));
        }
        if flags & ATTR_EXTENDED != 0 {
            // Vendor extensions carry nothing we use; skip them correctly.
            let count = get_u32(buf)?;
            for _ in 0..count {
                get_string(buf)?;
                get_string(buf)?;
            }
        }
        Ok(attrs)
    }
}

/// One entry of an SSH_FXP_NAME reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameEntry {
    pub filename: Bytes,
    pub attrs: FileAttributes,
}

/// A reply from the server, already matched to a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Status { code: u32, message: String },
    Handle(Bytes),
    Data(Bytes),
    Name(Vec<NameEntry>),
    Attrs(FileAttributes),
    ExtendedReply(Bytes),
}

/// The server's SSH_FXP_VERSION: its version and the extensions it advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerVersion {
    pub version: u32,
    pub extensions: Vec<(String, String)>,
}

impl ServerVersion {
    pub fn supports(&self, name: &str) -> bool {
        self.extensions.iter().any(|(n, _)| n == name)
    }
}

/// Server limits from `limits@openssh.com`; zero means "no limit stated".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_packet_length: u64,
    pub max_read_length: u64,
    pub max_write_length: u64,
    pub max_open_handles: u64,
}

/// Free-space figures from `statvfs@openssh.com`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatVfs {
    pub block_size: u64,
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
}

impl StatVfs {
    /// Bytes available to an unprivileged user.
    pub fn available_bytes(&self) -> u64 {
        let unit = if self.fragment_size > 0 {
            self.fragment_size
        } else {
            self.block_size
        };
        self.blocks_available.saturating_mul(unit)
    }
}

fn get_u32(buf: &mut Bytes) -> Result<u32, WireError> {
    buf.try_get_u32().map_err(|_| WireError::Truncated)
}

fn get_u64(buf: &mut Bytes) -> Result<u64, WireError> {
    buf.try_get_u64().map_err(|_| WireError::Truncated)
}

fn get_string(buf: &mut Bytes) -> Result<Bytes, WireError> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(WireError::Truncated);
    }
    Ok(buf.split_to(len))
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    out.put_u32(s.len() as u32);
    out.put_slice(s);
}

/// Builds one request packet: the length is patched in when finished.
pub struct PacketBuilder {
    buf: BytesMut,
}

impl PacketBuilder {
    pub fn new(packet_type: u8, capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity + 9);
        buf.put_u32(0);
        buf.put_u8(packet_type);
        PacketBuilder { buf }
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.buf.put_u32(v);
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.buf.put_u64(v);
        self
    }

    pub fn string(mut self, s: &[u8]) -> Self {
        put_string(&mut self.buf, s);
        self
    }

    pub fn attrs(mut self, attrs: &FileAttributes) -> Self {
        attrs.encode(&mut self.buf);
        self
    }

    /// Finishes a packet whose body is entirely in the builder.
    pub fn finish(self) -> Bytes {
        self.finish_with_trailing(0)
    }

    /// Finishes a packet header that `trailing` more bytes will follow on the
    /// wire (the data of a WRITE, sent without copying it into the header).
    pub fn finish_with_trailing(mut self, trailing: usize) -> Bytes {
        let len = (self.buf.len() - 4 + trailing) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf.freeze()
    }
}

/// SSH_FXP_INIT carries no request id.
pub fn init_packet() -> Bytes {
    PacketBuilder::new(SSH_FXP_INIT, 4)
        .u32(SFTP_VERSION)
        .finish()
}

/// If `buf` starts with a whole packet, splits it off and returns its body
/// (type byte onwards). Returns `Ok(None)` when more bytes are needed.
pub fn split_packet(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_INCOMING_PACKET {
        return Err(WireError::TooLarge(len));
    }
    if len == 0 {
        return Err(WireError::Truncated);
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Parses SSH_FXP_VERSION, the reply to INIT.
pub fn parse_version(mut body: Bytes) -> Result<ServerVersion, WireError> {
    let packet_type = body.try_get_u8().map_err(|_| WireError::Truncated)?;
    if packet_type != SSH_FXP_VERSION {
        return Err(WireError::UnexpectedType(packet_type));
    }
    let version = get_u32(&mut body)?;
    let mut extensions = Vec::new();
    while body.has_remaining() {
        let name = get_string(&mut body)?;
        let data = get_string(&mut body)?;
        extensions.push((
            String::from_utf8_lossy(&name).into_owned(),
            String::from_utf8_lossy(&data).into_owned(),
        ));
    }
    Ok(ServerVersion {
        version,
        extensions,
    })
}

/// Parses a reply packet body into its request id and response.
pub fn parse_response(mut body: Bytes) -> Result<(u32, Response), WireError> {
    let packet_type = body.try_get_u8().map_err(|_| WireError::Truncated)?;
    let id = get_u32(&mut body)?;
    let response = match packet_type {
        SSH_FXP_STATUS => {
            let code = get_u32(&mut body)?;
            // Servers before v3 drafts may omit the message; tolerate it.
            let message = if body.has_remaining() {
                String::from_utf8_lossy(&get_string(&mut body)?).into_owned()
            } else {
                String::new()
            };
            Response::Status { code, message }
        }
        SSH_FXP_HANDLE => Response::Handle(get_string(&mut body)?),
        SSH_FXP_DATA => Response::Data(get_string(&mut body)?),
        SSH_FXP_NAME => {
            let count = get_u32(&mut body)? as usize;
            // Each entry is at least 12 bytes; a bigger count is a lie.
            if count > body.remaining() / 12 {
                return Err(WireError::Truncated);
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let filename = get_string(&mut body)?;
                let _longname = get_string(&mut body)?;
                let attrs = FileAttributes::decode(&mut body)?;
                entries.push(NameEntry { filename, attrs });
            }
            Response::Name(entries)
        }
        SSH_FXP_ATTRS => Response::Attrs(FileAttributes::decode(&mut body)?),
        SSH_FXP_EXTENDED_REPLY => Response::ExtendedReply(body),
        other => return Err(WireError::UnexpectedType(other)),
    };
    Ok((id, response))
}

/// Decodes the body of a `limits@openssh.com` reply.
pub fn parse_limits(mut body: Bytes) -> Result<ServerLimits, WireError> {
    Ok(ServerLimits {
        max_packet_length: get_u64(&mut body)?,
        max_read_length: get_u64(&mut body)?,
        max_write_length: get_u64(&mut body)?,
        max_open_handles: get_u64(&mut body)?,
    })
}

/// Decodes the body of a `statvfs@openssh.com` reply.
pub fn parse_statvfs(mut body: Bytes) -> Result<StatVfs, WireError> {
    Ok(StatVfs {
        block_size: get_u64(&mut body)?,
        fragment_size: get_u64(&mut body)?,
        blocks: get_u64(&mut body)?,
        blocks_free: get_u64(&mut body)?,
        blocks_available: get_u64(&mut body)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(body.len() as u32);
        b.put_slice(body);
        b
    }

    #[test]
    fn split_packet_waits_for_the_whole_packet() {
        let mut whole = framed(&[SSH_FXP_STATUS, 0, 0, 0, 1, 0, 0, 0, 0]);
        let mut partial = BytesMut::from(&whole[..6]);
        assert_eq!(split_packet(&mut partial), Ok(None));
        let body = split_packet(&mut whole).unwrap().unwrap();
        assert_eq!(body[0], SSH_FXP_STATUS);
        assert!(whole.is_empty());
    }

    #[test]
    fn split_packet_refuses_oversized_lengths() {
        let mut b = BytesMut::new();
        b.put_u32(u32::MAX);
        assert_eq!(
            split_packet(&mut b),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
    }

    #[test]
    fn builder_patches_the_length_including_trailing_data() {
        let header = PacketBuilder::new(SSH_FXP_WRITE, 32)
            .u32(7)
            .string(b"h")
            .u64(0)
            .u32(3)
            .finish_with_trailing(3);
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        assert_eq!(len, header.len() - 4 + 3);
        assert_eq!(header.len() + 3, WRITE_OVERHEAD + 1 + 3);
    }

    #[test]
    fn attributes_round_trip() {
        let attrs = FileAttributes {
            size: Some(1 << 40),
            uid_gid: Some((1000, 1001)),
            permissions: Some(S_IFREG | 0o644),
            times: Some((1, 1_700_000_000)),
        };
        let mut out = BytesMut::new();
        attrs.encode(&mut out);
        let decoded = FileAttributes::decode(&mut out.freeze()).unwrap();
        assert_eq!(decoded, attrs);
        assert_eq!(decoded.file_type(), Some(S_IFREG));
    }

    #[test]
    fn attributes_skip_extended_pairs() {
        let mut out = BytesMut::new();
        out.put_u32(ATTR_SIZE | ATTR_EXTENDED);
        out.put_u64(5);
        out.put_u32(1);
        put_string(&mut out, b"vendor@example");
        put_string(&mut out, b"data");
        out.put_u8(0xAA);
        let mut bytes = out.freeze();
        let attrs = FileAttributes::decode(&mut bytes).unwrap();
        assert_eq!(attrs.size, Some(5));
        assert_eq!(bytes.as_ref(), &[0xAA]);
    }

    #[test]
    fn name_reply_keeps_non_utf8_names_as_bytes() {
        let mut body = BytesMut::new();
        body.put_u8(SSH_FXP_NAME);
        body.put_u32(9);
        body.put_u32(1);
        put_string(&mut body, b"caf\xe9.txt");
        put_string(&mut body, b"-rw-r--r-- ...");
        FileAttributes::default().encode(&mut body);
        let (id, response) = parse_response(body.freeze()).unwrap();
        assert_eq!(id, 9);
        let Response::Name(entries) = response else {
            panic!("expected a name reply");
        };
        assert_eq!(entries[0].filename.as_ref(), b"caf\xe9.txt");
    }

    #[test]
    fn name_reply_with_an_impossible_count_is_rejected() {
        let mut body = BytesMut::new();
        body.put_u8(SSH_FXP_NAME);
        body.put_u32(1);
        body.put_u32(1_000_000);
        assert_eq!(parse_response(body.freeze()), Err(WireError::Truncated));
    }

    #[test]
    fn status_without_message_is_tolerated() {
        let mut body = BytesMut::new();
        body.put_u8(SSH_FXP_STATUS);
        body.put_u32(3);
        body.put_u32(SSH_FX_EOF);
        let (id, response) = parse_response(body.freeze()).unwrap();
        assert_eq!(id, 3);
        assert_eq!(
            response,
            Response::Status {
                code: SSH_FX_EOF,
                message: String::new()
            }
        );
    }

    #[test]
    fn version_lists_extensions() {
        let mut body = BytesMut::new();
        body.put_u8(SSH_FXP_VERSION);
        body.put_u32(3);
        put_string(&mut body, b"posix-rename@openssh.com");
        put_string(&mut body, b"1");
        let version = parse_version(body.freeze()).unwrap();
        assert_eq!(version.version, 3);
        assert!(version.supports("posix-rename@openssh.com"));
        assert!(!version.supports("statvfs@openssh.com"));
    }

    #[test]
    fn statvfs_available_bytes_use_the_fragment_size() {
        let mut body = BytesMut::new();
        for v in [4096u64, 1024, 100, 50, 40] {
            body.put_u64(v);
        }
        let vfs = parse_statvfs(body.freeze()).unwrap();
        assert_eq!(vfs.available_bytes(), 40 * 1024);
    }
}
