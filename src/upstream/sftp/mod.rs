//! SFTP upstream: russh for SSH, and our own SFTP v3 client on top of it.
//!
//! Our own client rather than russh-sftp's: names must pass through as bytes
//! (russh-sftp decodes them lossily as UTF-8), and reads and writes must be
//! pipelined under our control.

mod channel;
pub mod client;
pub mod connect;
mod files;
mod listing;
pub mod pool;
pub mod wire;

use async_trait::async_trait;
use tracing::debug;

pub use connect::{HostKeyCheck, SftpCredentials, SftpSettings};
pub use files::TransferSizes;
pub use pool::{PoolMetrics, PoolSettings, SshPool};

use self::client::SftpClient;
use self::files::{SftpReadStream, SftpWriteStream};
use self::listing::SftpListStream;
use self::pool::Lease;
use self::wire::{FileAttributes, S_IFDIR, S_IFLNK, S_IFREG};
use super::error::{ErrorKind, Result, UpstreamError};
use super::{
    Capabilities, DirEntry, FileKind, ListStream, Metadata, ReadStream, RemotePath, SetAttributes,
    Upstream, WriteMode, WriteStream,
};

/// Request size every SFTP server must accept (draft-02 §3 recommends 32 KiB
/// of data); used when the server does not state its limits.
const SAFE_REQUEST_SIZE: u32 = 32 * 1024;
/// Upper bound on request size even when a server allows more: OpenSSH's own
/// maximum (255 KiB) keeps its packets under the 256 KiB message cap.
const MAX_REQUEST_SIZE: u32 = 255 * 1024;

/// An authenticated SFTP session.
pub struct SftpUpstream {
    // The SSH connection: the session's own, or one shared through the pool
    // (returned when this is dropped).
    ssh: Lease,
    client: SftpClient,
    sizes: TransferSizes,
    fsync_uploads: bool,
}

impl SftpUpstream {
    /// Connects and authenticates (or reuses a pooled connection for the
    /// same upstream and credentials); errors say whether the host was
    /// unreachable, its key refused, or the credentials rejected.
    pub async fn connect(
        pool: &SshPool,
        upstream: &str,
        settings: &SftpSettings,
        credentials: &SftpCredentials,
    ) -> Result<Self> {
        let (ssh, channel) = pool.open(upstream, settings, credentials).await?;
        let client = SftpClient::new(channel);
        let sizes = negotiate_sizes(&client, settings.requests_in_flight).await;
        debug!(?sizes, extensions = ?client.channel().version().extensions, "SFTP session ready");
        Ok(SftpUpstream {
            ssh,
            client,
            sizes,
            fsync_uploads: settings.fsync_uploads,
        })
    }

    pub fn transfer_sizes(&self) -> TransferSizes {
        self.sizes
    }

    async fn refine_failure(&self, err: UpstreamError, path: &RemotePath, op: Op) -> UpstreamError {
        if err.kind() != ErrorKind::Failure {
            return err;
        }
        // SSH_FX_FAILURE hides errno; look at the path to say what went wrong.
        let existing = self.client.lstat(path.as_bytes()).await.ok();
        let kind = match (op, existing.as_ref().map(attrs_kind)) {
            (Op::CreateDir, Some(_)) => ErrorKind::AlreadyExists,
            (Op::RemoveDir, Some(FileKind::Directory)) => ErrorKind::DirectoryNotEmpty,
            (Op::RemoveDir, Some(_)) => ErrorKind::WrongType,
            (Op::RemoveFile, Some(FileKind::Directory)) => ErrorKind::WrongType,
            (_, None) if op != Op::CreateDir => ErrorKind::NotFound,
            _ => return err,
        };
        UpstreamError::new(kind).with_detail(err.detail().unwrap_or_default().to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateDir,
    RemoveDir,
    RemoveFile,
}

async fn negotiate_sizes(client: &SftpClient, requests_in_flight: usize) -> TransferSizes {
    let (mut read, mut write) = (SAFE_REQUEST_SIZE, SAFE_REQUEST_SIZE);
    if client.supports("limits@openssh.com") {
        match client.limits().await {
            Ok(limits) => {
                read = clamp_limit(limits.max_read_length);
                write = clamp_limit(limits.max_write_length);
            }
            Err(e) => debug!(error = %e, "limits@openssh.com failed; using 32 KiB requests"),
        }
    }
    TransferSizes {
        read_request: read,
        write_request: write,
        requests_in_flight: requests_in_flight.max(1),
    }
}

fn clamp_limit(limit: u64) -> u32 {
    if limit == 0 {
        SAFE_REQUEST_SIZE
    } else {
        limit.min(u64::from(MAX_REQUEST_SIZE)) as u32
    }
}

fn attrs_kind(attrs: &FileAttributes) -> FileKind {
    match attrs.file_type() {
        Some(S_IFDIR) => FileKind::Directory,
        Some(S_IFLNK) => FileKind::Symlink,
        // Servers that omit the type bits serve plain files in practice.
        Some(S_IFREG) | Some(0) | None => FileKind::File,
        Some(_) => FileKind::Other,
    }
}

fn to_metadata(attrs: &FileAttributes) -> Metadata {
    Metadata {
        kind: attrs_kind(attrs),
        size: attrs.size.unwrap_or(0),
        modified: attrs.times.map(|(_, mtime)| i64::from(mtime)),
        permissions: attrs.permissions.map(|p| p & 0o7777),
    }
}

#[async_trait]
impl Upstream for SftpUpstream {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_replace: self.client.supports("posix-rename@openssh.com"),
            free_space: self.client.supports("statvfs@openssh.com"),
        }
    }

    async fn stat(&self, path: &RemotePath) -> Result<Metadata> {
        Ok(to_metadata(&self.client.stat(path.as_bytes()).await?))
    }

    async fn list(&self, path: &RemotePath) -> Result<Vec<DirEntry>> {
        let mut stream = self.list_stream(path).await?;
        let mut entries = Vec::new();
        let outcome = async {
            while let Some(batch) = stream.next_batch().await? {
                entries.extend(batch);
            }
            Ok::<_, UpstreamError>(())
        }
        .await;
        stream.close().await;
        outcome.map(|()| entries)
    }

    async fn list_stream(&self, path: &RemotePath) -> Result<Box<dyn ListStream>> {
        let handle = self.client.opendir(path.as_bytes()).await?;
        Ok(Box::new(SftpListStream::new(
            self.client.clone(),
            handle,
            path.clone(),
        )))
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<Box<dyn ReadStream>> {
        let handle = self
            .client
            .open(
                path.as_bytes(),
                wire::SSH_FXF_READ,
                &FileAttributes::default(),
            )
            .await?;
        Ok(Box::new(SftpReadStream::new(
            self.client.clone(),
            handle,
            offset,
            self.sizes,
        )))
    }

    async fn open_write(&self, path: &RemotePath, mode: WriteMode) -> Result<Box<dyn WriteStream>> {
        let base = wire::SSH_FXF_WRITE | wire::SSH_FXF_CREAT;
        let pflags = match mode {
            WriteMode::CreateNew => base | wire::SSH_FXF_TRUNC | wire::SSH_FXF_EXCL,
            WriteMode::Truncate => base | wire::SSH_FXF_TRUNC,
            // Explicit offsets rather than SSH_FXF_APPEND: some servers ignore
            // the flag, and pipelined writes need known offsets anyway.
            WriteMode::Append | WriteMode::Resume(_) => base,
        };
        let handle = self
            .client
            .open(path.as_bytes(), pflags, &FileAttributes::default())
            .await?;
        let start = match mode {
            WriteMode::CreateNew | WriteMode::Truncate => Ok(0),
            WriteMode::Append => self
                .client
                .fstat(&handle)
                .await
                .map(|attrs| attrs.size.unwrap_or(0)),
            WriteMode::Resume(offset) => {
                let truncate = FileAttributes {
                    size: Some(offset),
                    ..Default::default()
                };
                self.client
                    .fsetstat(&handle, &truncate)
                    .await
                    .map(|()| offset)
            }
        };
        let start = match start {
            Ok(start) => start,
            Err(err) => {
                let _ = self.client.close(&handle).await;
                return Err(err);
            }
        };
        Ok(Box::new(SftpWriteStream::new(
            self.client.clone(),
            handle,
            path.clone(),
            start,
            self.sizes,
            self.fsync_uploads,
        )))
    }

    async fn create_dir(&self, path: &RemotePath) -> Result<()> {
        match self.client.mkdir(path.as_bytes()).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.refine_failure(err, path, Op::CreateDir).await),
        }
    }

    async fn remove_dir(&self, path: &RemotePath) -> Result<()> {
        match self.client.rmdir(path.as_bytes()).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.refine_failure(err, path, Op::RemoveDir).await),
        }
    }

    async fn remove_file(&self, path: &RemotePath) -> Result<()> {
        match self.client.remove(path.as_bytes()).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.refine_failure(err, path, Op::RemoveFile).await),
        }
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath, replace: bool) -> Result<()> {
        if replace && self.client.supports("posix-rename@openssh.com") {
            return self
                .client
                .posix_rename(from.as_bytes(), to.as_bytes())
                .await;
        }
        match self.client.rename(from.as_bytes(), to.as_bytes()).await {
            Err(err) if replace && err.kind() == ErrorKind::Failure => {
                // SFTP v3 RENAME refuses an existing target. Without
                // posix-rename the only way is remove-then-rename, which
                // leaves a short window without a file at `to`.
                let target = self.client.lstat(to.as_bytes()).await.ok();
                if target.as_ref().map(attrs_kind) != Some(FileKind::File) {
                    return Err(err);
                }
                self.client.remove(to.as_bytes()).await?;
                self.client.rename(from.as_bytes(), to.as_bytes()).await
            }
            other => other,
        }
    }

    async fn set_attributes(&self, path: &RemotePath, attrs: &SetAttributes) -> Result<()> {
        let times = match attrs.modified {
            None => None,
            Some(mtime) => {
                // SFTP v3 sets atime and mtime together; keep the current atime.
                let current = self.client.stat(path.as_bytes()).await?;
                let atime = current.times.map(|(atime, _)| atime).unwrap_or(0);
                let mtime = u32::try_from(mtime).map_err(|_| {
                    UpstreamError::new(ErrorKind::Unsupported)
                        .with_detail("SFTP v3 timestamps end in 2106")
                })?;
                Some((atime, mtime))
            }
        };
        let wire_attrs = FileAttributes {
            size: attrs.size,
            uid_gid: None,
            permissions: attrs.permissions,
            times,
        };
        self.client.setstat(path.as_bytes(), &wire_attrs).await
    }

    async fn free_space(&self, path: &RemotePath) -> Result<u64> {
        if !self.client.supports("statvfs@openssh.com") {
            return Err(UpstreamError::new(ErrorKind::Unsupported)
                .with_detail("the server does not offer statvfs@openssh.com"));
        }
        Ok(self
            .client
            .statvfs(path.as_bytes())
            .await?
            .available_bytes())
    }

    async fn close(&self) {
        if !self.ssh.is_pooled() {
            self.client.channel().shutdown();
            self.ssh.close().await;
        }
        // A pooled connection and its channel are handed back on drop.
    }
}

impl Drop for SftpUpstream {
    fn drop(&mut self) {
        // The pool may keep the channel for the next session of the same
        // credentials; otherwise dropping the last handle closes it.
        self.ssh.keep_channel(self.client.channel());
    }
}

impl std::fmt::Debug for SftpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpUpstream")
            .field("sizes", &self.sizes)
            .field("fsync_uploads", &self.fsync_uploads)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_limits_are_clamped_to_safe_request_sizes() {
        assert_eq!(clamp_limit(0), SAFE_REQUEST_SIZE);
        assert_eq!(clamp_limit(1 << 30), MAX_REQUEST_SIZE);
        assert_eq!(clamp_limit(65536), 65536);
    }

    #[test]
    fn file_type_bits_decide_the_kind() {
        let with_mode = |mode| FileAttributes {
            permissions: Some(mode),
            ..Default::default()
        };
        assert_eq!(attrs_kind(&with_mode(S_IFDIR | 0o755)), FileKind::Directory);
        assert_eq!(attrs_kind(&with_mode(S_IFREG | 0o644)), FileKind::File);
        assert_eq!(attrs_kind(&with_mode(S_IFLNK | 0o777)), FileKind::Symlink);
        assert_eq!(attrs_kind(&with_mode(0o010000)), FileKind::Other);
        assert_eq!(attrs_kind(&FileAttributes::default()), FileKind::File);
    }

    #[test]
    fn metadata_keeps_only_permission_bits() {
        let attrs = FileAttributes {
            size: Some(12),
            permissions: Some(S_IFREG | 0o4755),
            times: Some((1, 2)),
            ..Default::default()
        };
        let meta = to_metadata(&attrs);
        assert_eq!(meta.permissions, Some(0o4755));
        assert_eq!(meta.modified, Some(2));
        assert_eq!(meta.size, 12);
    }
}
