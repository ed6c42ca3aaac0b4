//! The storage behind the bridge.
//!
//! One FTP session owns one [`Upstream`] session, opened at PASS. The trait has
//! the operations FTP needs and nothing FTP-specific: paths are absolute
//! upstream paths as raw bytes, errors are [`UpstreamError`] kinds. Backends:
//! [`sftp`] (russh + our own SFTP v3 client) and [`webdav`] (hyper +
//! rustls).

pub mod error;
pub mod instrumented;
pub mod sftp;
pub mod upload;
pub mod webdav;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{ErrorKind, Result, UpstreamError};

/// An absolute path on the upstream, as bytes (names are never re-encoded).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RemotePath(Vec<u8>);

impl RemotePath {
    /// `path` must be absolute and normalised (no `.`/`..`, no doubled `/`);
    /// the FTP path resolver is the only producer.
    pub fn new(path: Vec<u8>) -> Self {
        RemotePath(path)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path of `name` inside this directory.
    pub fn join(&self, name: &[u8]) -> RemotePath {
        let mut path = self.0.clone();
        if !path.ends_with(b"/") {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        RemotePath(path)
    }

    /// The parent directory and the final component; `None` for `/`.
    pub fn split_last(&self) -> Option<(RemotePath, &[u8])> {
        let trimmed = self.0.strip_suffix(b"/").unwrap_or(&self.0);
        let slash = trimmed.iter().rposition(|&b| b == b'/')?;
        let name = &trimmed[slash + 1..];
        if name.is_empty() {
            return None;
        }
        let parent = if slash == 0 {
            b"/".to_vec()
        } else {
            trimmed[..slash].to_vec()
        };
        Some((RemotePath(parent), name))
    }
}

impl std::fmt::Debug for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl std::fmt::Display for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// What the bridge needs to know about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (UTC).
    pub modified: Option<i64>,
    /// Permission bits (`0o7777` at most), when the upstream reports them.
    pub permissions: Option<u32>,
}

impl Metadata {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Bytes,
    pub metadata: Metadata,
}

/// How an upload opens its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create a file that must not exist yet (temporary upload names).
    CreateNew,
    /// Create or truncate.
    Truncate,
    /// Keep the content and write after its end (APPE).
    Append,
    /// Keep the first `n` bytes, drop the rest, write from `n` (REST + STOR).
    Resume(u64),
}

/// Attribute changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttributes {
    pub size: Option<u64>,
    pub permissions: Option<u32>,
    pub modified: Option<i64>,
}

/// What a backend can do beyond the basic operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `rename` can replace an existing target atomically.
    pub atomic_replace: bool,
    /// `free_space` answers.
    pub free_space: bool,
}

/// A download in progress: chunks in file order.
#[async_trait]
pub trait ReadStream: Send {
    /// The next chunk, or `None` at end of file.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>>;
    /// Releases the upstream handle.
    async fn close(self: Box<Self>);
}

/// An upload in progress.
#[async_trait]
pub trait WriteStream: Send {
    /// Where in the file the first byte of this stream lands.
    fn start_offset(&self) -> u64;
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Waits until the upstream confirmed every byte and closed the file;
    /// returns the number of bytes written.
    async fn finish(self: Box<Self>) -> Result<u64>;
    /// Gives up: stops sending and releases the handle without confirming.
    async fn abort(self: Box<Self>);
}

/// A directory listing in progress: entries in the batches the server
/// sends them in, so a listing can be passed on before it is complete.
#[async_trait]
pub trait ListStream: Send {
    /// The next entries (never an empty batch), or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>>;
    /// Releases the upstream handle.
    async fn close(self: Box<Self>);
}

/// A listing that arrived whole (backends without incremental listings).
struct WholeListing(Option<Vec<DirEntry>>);

#[async_trait]
impl ListStream for WholeListing {
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>> {
        Ok(self.0.take().filter(|entries| !entries.is_empty()))
    }

    async fn close(self: Box<Self>) {}
}

/// One authenticated session with a storage backend.
#[async_trait]
pub trait Upstream: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// Follows symbolic links.
    async fn stat(&self, path: &RemotePath) -> Result<Metadata>;
    /// Entries of a directory, without `.` and `..`.
    async fn list(&self, path: &RemotePath) -> Result<Vec<DirEntry>>;
    /// Entries of a directory as they arrive; errors opening the directory
    /// come from this call, errors reading it from the stream.
    async fn list_stream(&self, path: &RemotePath) -> Result<Box<dyn ListStream>> {
        Ok(Box::new(WholeListing(Some(self.list(path).await?))))
    }
    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<Box<dyn ReadStream>>;
    async fn open_write(&self, path: &RemotePath, mode: WriteMode) -> Result<Box<dyn WriteStream>>;
    async fn create_dir(&self, path: &RemotePath) -> Result<()>;
    /// Removes an empty directory; never recursive.
    async fn remove_dir(&self, path: &RemotePath) -> Result<()>;
    async fn remove_file(&self, path: &RemotePath) -> Result<()>;
    /// Renames; with `replace`, an existing file at `to` is replaced.
    async fn rename(&self, from: &RemotePath, to: &RemotePath, replace: bool) -> Result<()>;
    async fn set_attributes(&self, path: &RemotePath, attrs: &SetAttributes) -> Result<()>;
    /// Bytes available for new data on the filesystem holding `path`.
    async fn free_space(&self, path: &RemotePath) -> Result<u64>;
    /// Ends the session (best effort, bounded in time).
    async fn close(&self);
}

pub type SharedUpstream = Arc<dyn Upstream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_last_gives_parent_and_name() {
        let path = RemotePath::new(b"/srv/ftp/a.txt".to_vec());
        let (parent, name) = path.split_last().unwrap();
        assert_eq!(parent.as_bytes(), b"/srv/ftp");
        assert_eq!(name, b"a.txt");
        let top = RemotePath::new(b"/a".to_vec());
        assert_eq!(top.split_last().unwrap().0.as_bytes(), b"/");
        assert!(RemotePath::new(b"/".to_vec()).split_last().is_none());
    }

    #[test]
    fn join_adds_exactly_one_separator() {
        assert_eq!(RemotePath::new(b"/".to_vec()).join(b"x").as_bytes(), b"/x");
        assert_eq!(
            RemotePath::new(b"/a".to_vec()).join(b"x").as_bytes(),
            b"/a/x"
        );
    }
}
