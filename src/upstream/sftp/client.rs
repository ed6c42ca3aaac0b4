//! Typed SFTP v3 operations on top of [`SftpChannel`], and the mapping of SFTP
//! status codes to upstream error kinds.

use bytes::Bytes;

use super::channel::{PendingReply, SftpChannel};
use super::wire::{self, FileAttributes, NameEntry, PacketBuilder, Response, StatVfs};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};

/// Maps an SFTP status code to what it means for an FTP client.
///
/// SFTP v3 has only eight codes, and OpenSSH's sftp-server folds most errno
/// values (EEXIST, ENOTEMPTY, ENOSPC, EDQUOT) into `SSH_FX_FAILURE`; callers
/// that can tell more (a failed MKD on a path that exists, a failed WRITE on a
/// full disk) refine `Failure` with a follow-up query.
pub fn status_kind(code: u32) -> ErrorKind {
    match code {
        wire::SSH_FX_NO_SUCH_FILE => ErrorKind::NotFound,
        wire::SSH_FX_PERMISSION_DENIED => ErrorKind::PermissionDenied,
        wire::SSH_FX_NO_CONNECTION | wire::SSH_FX_CONNECTION_LOST => ErrorKind::ConnectionLost,
        wire::SSH_FX_OP_UNSUPPORTED => ErrorKind::Unsupported,
        wire::SSH_FX_BAD_MESSAGE => ErrorKind::Protocol,
        _ => ErrorKind::Failure,
    }
}

pub(super) fn status_error(code: u32, message: &str) -> UpstreamError {
    let err = UpstreamError::new(status_kind(code));
    if message.is_empty() {
        err.with_detail(format!("SFTP status {code}"))
    } else {
        err.with_detail(format!("SFTP status {code}: {message}"))
    }
}

fn unexpected(response: &Response) -> UpstreamError {
    let what = match response {
        Response::Status { .. } => "STATUS",
        Response::Handle(_) => "HANDLE",
        Response::Data(_) => "DATA",
        Response::Name(_) => "NAME",
        Response::Attrs(_) => "ATTRS",
        Response::ExtendedReply(_) => "EXTENDED_REPLY",
    };
    UpstreamError::new(ErrorKind::Protocol).with_detail(format!("unexpected {what} reply"))
}

fn expect_ok(response: Response) -> Result<()> {
    match response {
        Response::Status {
            code: wire::SSH_FX_OK,
            ..
        } => Ok(()),
        Response::Status { code, message } => Err(status_error(code, &message)),
        other => Err(unexpected(&other)),
    }
}

fn expect_handle(response: Response) -> Result<Bytes> {
    match response {
        Response::Handle(handle) => Ok(handle),
        Response::Status { code, message } => Err(status_error(code, &message)),
        other => Err(unexpected(&other)),
    }
}

fn expect_attrs(response: Response) -> Result<FileAttributes> {
    match response {
        Response::Attrs(attrs) => Ok(attrs),
        Response::Status { code, message } => Err(status_error(code, &message)),
        other => Err(unexpected(&other)),
    }
}

fn expect_extended(response: Response) -> Result<Bytes> {
    match response {
        Response::ExtendedReply(body) => Ok(body),
        Response::Status { code, message } => Err(status_error(code, &message)),
        other => Err(unexpected(&other)),
    }
}

/// The SFTP operations the bridge needs, with replies decoded and checked.
#[derive(Clone)]
pub struct SftpClient {
    channel: SftpChannel,
}

impl SftpClient {
    pub fn new(channel: SftpChannel) -> Self {
        SftpClient { channel }
    }

    pub fn channel(&self) -> &SftpChannel {
        &self.channel
    }

    pub fn supports(&self, extension: &str) -> bool {
        self.channel.version().supports(extension)
    }

    async fn path_request(&self, packet_type: u8, path: &[u8]) -> Result<Response> {
        self.channel
            .request(|id| {
                PacketBuilder::new(packet_type, 8 + path.len())
                    .u32(id)
                    .string(path)
                    .finish()
            })
            .await
    }

    /// Queues a request whose only argument is a path or handle, without
    /// waiting for its reply.
    pub async fn send_path_request(&self, packet_type: u8, path: &[u8]) -> Result<PendingReply> {
        self.channel
            .send(|id| {
                let packet = PacketBuilder::new(packet_type, 8 + path.len())
                    .u32(id)
                    .string(path)
                    .finish();
                (packet, Bytes::new())
            })
            .await
    }

    async fn extended(&self, name: &str, args: &[&[u8]]) -> Result<Response> {
        let size: usize = name.len() + args.iter().map(|a| a.len() + 4).sum::<usize>() + 8;
        self.channel
            .request(|id| {
                let mut builder = PacketBuilder::new(wire::SSH_FXP_EXTENDED, size)
                    .u32(id)
                    .string(name.as_bytes());
                for arg in args {
                    builder = builder.string(arg);
                }
                builder.finish()
            })
            .await
    }

    pub async fn open(&self, path: &[u8], pflags: u32, attrs: &FileAttributes) -> Result<Bytes> {
        self.channel.handle_opening();
        let response = self
            .channel
            .request(|id| {
                PacketBuilder::new(wire::SSH_FXP_OPEN, 32 + path.len())
                    .u32(id)
                    .string(path)
                    .u32(pflags)
                    .attrs(attrs)
                    .finish()
            })
            .await?;
        self.opened(response)
    }

    /// Uncounts a refused open (a lost reply leaves it counted: see
    /// `SftpChannel::handle_opening`).
    fn opened(&self, response: Response) -> Result<Bytes> {
        let handle = expect_handle(response);
        if handle.is_err() {
            self.channel.handle_gone();
        }
        handle
    }

    pub async fn close(&self, handle: &[u8]) -> Result<()> {
        expect_ok(self.path_request(wire::SSH_FXP_CLOSE, handle).await?)?;
        self.channel.handle_gone();
        Ok(())
    }

    pub async fn stat(&self, path: &[u8]) -> Result<FileAttributes> {
        expect_attrs(self.path_request(wire::SSH_FXP_STAT, path).await?)
    }

    pub async fn lstat(&self, path: &[u8]) -> Result<FileAttributes> {
        expect_attrs(self.path_request(wire::SSH_FXP_LSTAT, path).await?)
    }

    pub async fn fstat(&self, handle: &[u8]) -> Result<FileAttributes> {
        expect_attrs(self.path_request(wire::SSH_FXP_FSTAT, handle).await?)
    }

    pub async fn setstat(&self, path: &[u8], attrs: &FileAttributes) -> Result<()> {
        self.set_attributes(wire::SSH_FXP_SETSTAT, path, attrs)
            .await
    }

    pub async fn fsetstat(&self, handle: &[u8], attrs: &FileAttributes) -> Result<()> {
        self.set_attributes(wire::SSH_FXP_FSETSTAT, handle, attrs)
            .await
    }

    async fn set_attributes(
        &self,
        packet: u8,
        target: &[u8],
        attrs: &FileAttributes,
    ) -> Result<()> {
        let response = self
            .channel
            .request(|id| {
                PacketBuilder::new(packet, 40 + target.len())
                    .u32(id)
                    .string(target)
                    .attrs(attrs)
                    .finish()
            })
            .await?;
        expect_ok(response)
    }

    pub async fn opendir(&self, path: &[u8]) -> Result<Bytes> {
        self.channel.handle_opening();
        let response = self.path_request(wire::SSH_FXP_OPENDIR, path).await?;
        self.opened(response)
    }

    /// One batch of directory entries, or `None` once the listing is complete.
    pub async fn readdir(&self, handle: &[u8]) -> Result<Option<Vec<NameEntry>>> {
        match self.path_request(wire::SSH_FXP_READDIR, handle).await? {
            Response::Name(entries) => Ok(Some(entries)),
            Response::Status {
                code: wire::SSH_FX_EOF,
                ..
            } => Ok(None),
            Response::Status { code, message } => Err(status_error(code, &message)),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn remove(&self, path: &[u8]) -> Result<()> {
        expect_ok(self.path_request(wire::SSH_FXP_REMOVE, path).await?)
    }

    pub async fn rmdir(&self, path: &[u8]) -> Result<()> {
        expect_ok(self.path_request(wire::SSH_FXP_RMDIR, path).await?)
    }

    pub async fn mkdir(&self, path: &[u8]) -> Result<()> {
        let response = self
            .channel
            .request(|id| {
                PacketBuilder::new(wire::SSH_FXP_MKDIR, 16 + path.len())
                    .u32(id)
                    .string(path)
                    .attrs(&FileAttributes::default())
                    .finish()
            })
            .await?;
        expect_ok(response)
    }

    pub async fn realpath(&self, path: &[u8]) -> Result<Bytes> {
        match self.path_request(wire::SSH_FXP_REALPATH, path).await? {
            Response::Name(mut entries) if !entries.is_empty() => {
                Ok(entries.swap_remove(0).filename)
            }
            Response::Status { code, message } => Err(status_error(code, &message)),
            other => Err(unexpected(&other)),
        }
    }

    /// SFTP v3 RENAME: fails when the target exists (§6.5).
    pub async fn rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let response = self
            .channel
            .request(|id| {
                PacketBuilder::new(wire::SSH_FXP_RENAME, 16 + from.len() + to.len())
                    .u32(id)
                    .string(from)
                    .string(to)
                    .finish()
            })
            .await?;
        expect_ok(response)
    }

    /// `posix-rename@openssh.com`: rename(2) semantics, atomically replacing `to`.
    pub async fn posix_rename(&self, from: &[u8], to: &[u8]) -> Result<()> {
        expect_ok(
            self.extended("posix-rename@openssh.com", &[from, to])
                .await?,
        )
    }

    pub async fn statvfs(&self, path: &[u8]) -> Result<StatVfs> {
        let body = expect_extended(self.extended("statvfs@openssh.com", &[path]).await?)?;
        wire::parse_statvfs(body)
            .map_err(|e| UpstreamError::new(ErrorKind::Protocol).with_source(e))
    }

    pub async fn fsync(&self, handle: &[u8]) -> Result<()> {
        expect_ok(self.extended("fsync@openssh.com", &[handle]).await?)
    }

    pub async fn limits(&self) -> Result<wire::ServerLimits> {
        let body = expect_extended(self.extended("limits@openssh.com", &[]).await?)?;
        wire::parse_limits(body).map_err(|e| UpstreamError::new(ErrorKind::Protocol).with_source(e))
    }

    /// Queues a READ without waiting (for pipelined downloads).
    pub async fn send_read(&self, handle: &[u8], offset: u64, len: u32) -> Result<PendingReply> {
        self.channel
            .send(|id| {
                let header = PacketBuilder::new(wire::SSH_FXP_READ, 20 + handle.len())
                    .u32(id)
                    .string(handle)
                    .u64(offset)
                    .u32(len)
                    .finish();
                (header, Bytes::new())
            })
            .await
    }

    /// Queues a WRITE without waiting (for pipelined uploads). The data is not
    /// copied: it follows the header on the wire as its own buffer.
    pub async fn send_write(
        &self,
        handle: &[u8],
        offset: u64,
        data: Bytes,
    ) -> Result<PendingReply> {
        self.channel
            .send(|id| {
                let header = PacketBuilder::new(wire::SSH_FXP_WRITE, 20 + handle.len())
                    .u32(id)
                    .string(handle)
                    .u64(offset)
                    .u32(data.len() as u32)
                    .finish_with_trailing(data.len());
                (header, data)
            })
            .await
    }
}

/// Checks the reply to a WRITE.
pub fn check_write_reply(response: Response) -> Result<()> {
    expect_ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_status_codes_map_to_kinds() {
        assert_eq!(status_kind(wire::SSH_FX_NO_SUCH_FILE), ErrorKind::NotFound);
        assert_eq!(
            status_kind(wire::SSH_FX_PERMISSION_DENIED),
            ErrorKind::PermissionDenied
        );
        assert_eq!(status_kind(wire::SSH_FX_FAILURE), ErrorKind::Failure);
        assert_eq!(
            status_kind(wire::SSH_FX_CONNECTION_LOST),
            ErrorKind::ConnectionLost
        );
        assert_eq!(
            status_kind(wire::SSH_FX_NO_CONNECTION),
            ErrorKind::ConnectionLost
        );
        assert_eq!(
            status_kind(wire::SSH_FX_OP_UNSUPPORTED),
            ErrorKind::Unsupported
        );
        assert_eq!(status_kind(wire::SSH_FX_BAD_MESSAGE), ErrorKind::Protocol);
        assert_eq!(status_kind(99), ErrorKind::Failure);
    }
}
