//! SFTP layer: maps SFTP requests onto files under the served directory.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, DirBuilder, File as StdFile};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::PathBuf;
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tracing::debug;

use super::fs::{
    attributes, open_options, read_at_most, rename_no_replace, set_file_attributes,
    set_path_attributes, snapshot_dir, stat_entries, take_ssh_string,
};
use super::paths::{normalize_virtual, resolve_in, virtual_components};
use super::{EXT_FSYNC, EXT_POSIX_RENAME, MAX_OPEN_HANDLES, MAX_READ_LEN, READDIR_BATCH};

/// What an SFTP handle string refers to.
enum OpenHandle {
    /// `Arc` so a blocking task can use the file while the map keeps it.
    File(Arc<StdFile>),
    Dir(DirListing),
}

/// A directory being listed: a snapshot of its entries taken at OPENDIR,
/// stat'ed lazily batch by batch at READDIR.
pub(super) struct DirListing {
    pub(super) path: PathBuf,
    pub(super) pending: VecDeque<(String, PathBuf)>,
}

impl DirListing {
    fn next_batch(&mut self) -> Vec<(String, PathBuf)> {
        let n = self.pending.len().min(READDIR_BATCH);
        self.pending.drain(..n).collect()
    }
}

/// Per-channel SFTP handler mapping requests onto files under `root`.
pub(super) struct SftpHandler {
    root: Arc<PathBuf>,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    initialised: bool,
}

type SftpResult<T> = Result<T, StatusReply>;

impl SftpHandler {
    pub(super) fn new(root: Arc<PathBuf>) -> Self {
        Self {
            root,
            handles: HashMap::new(),
            next_handle: 0,
            initialised: false,
        }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        resolve_in(&self.root, path)
    }

    /// Resolves a path that a destructive request (remove, rename, ...) will
    /// modify; the served root itself is off limits.
    fn resolve_mutable(&self, path: &str) -> SftpResult<PathBuf> {
        if virtual_components(path).is_empty() {
            return Err(
                StatusCode::PermissionDenied.with_message("the root directory cannot be modified")
            );
        }
        Ok(self.resolve(path))
    }

    fn insert_handle(&mut self, handle: OpenHandle) -> SftpResult<String> {
        if self.handles.len() >= MAX_OPEN_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        self.next_handle += 1;
        let key = self.next_handle.to_string();
        self.handles.insert(key.clone(), handle);
        Ok(key)
    }

    fn file(&self, handle: &str) -> SftpResult<Arc<StdFile>> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(file)) => Ok(Arc::clone(file)),
            _ => Err(invalid_handle()),
        }
    }

    fn dir(&mut self, handle: &str) -> SftpResult<&mut DirListing> {
        match self.handles.get_mut(handle) {
            Some(OpenHandle::Dir(listing)) => Ok(listing),
            _ => Err(invalid_handle()),
        }
    }

    async fn posix_rename(&self, id: u32, data: &[u8]) -> SftpResult<Packet> {
        let mut payload = data;
        let (Some(old), Some(new)) = (take_ssh_string(&mut payload), take_ssh_string(&mut payload))
        else {
            return Err(StatusCode::BadMessage.into());
        };
        let (from, to) = (self.resolve_mutable(&old)?, self.resolve_mutable(&new)?);
        // rename(2) replaces an existing target atomically: POSIX semantics.
        blocking(move || fs::rename(from, to))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id).into())
    }

    async fn fsync(&self, id: u32, data: &[u8]) -> SftpResult<Packet> {
        let mut payload = data;
        let handle = take_ssh_string(&mut payload).ok_or(StatusCode::BadMessage)?;
        let file = self.file(&handle)?;
        blocking(move || file.sync_all()).await.map_err(io_status)?;
        Ok(ok_status(id).into())
    }
}

impl russh_sftp::server::Handler for SftpHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> SftpResult<Version> {
        if std::mem::replace(&mut self.initialised, true) {
            return Err(StatusCode::Failure.with_message("duplicate SSH_FXP_INIT"));
        }
        debug!(
            client_version = version,
            "embedded SFTP server: session initialised"
        );
        let mut reply = Version::new();
        reply
            .extensions
            .insert(EXT_POSIX_RENAME.to_owned(), "1".to_owned());
        reply
            .extensions
            .insert(EXT_FSYNC.to_owned(), "1".to_owned());
        Ok(reply)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> SftpResult<Handle> {
        let path = self.resolve(&filename);
        let options = open_options(pflags, &attrs);
        let file = blocking(move || options.open(path))
            .await
            .map_err(io_status)?;
        let handle = self.insert_handle(OpenHandle::File(Arc::new(file)))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> SftpResult<Status> {
        // Dropping the std::fs::File closes it; std offers no fallible close.
        self.handles.remove(&handle).ok_or_else(invalid_handle)?;
        Ok(ok_status(id))
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> SftpResult<Data> {
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ_LEN) as usize;
        let data = blocking(move || read_at_most(&file, offset, len))
            .await
            .map_err(io_status)?;
        if data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> SftpResult<Status> {
        let file = self.file(&handle)?;
        // pwrite(2) on a file opened with O_APPEND ignores the offset on Linux
        // and appends, which is exactly what SSH_FXF_APPEND asks for.
        blocking(move || file.write_all_at(&data, offset))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> SftpResult<Attrs> {
        let path = self.resolve(&path);
        let metadata = blocking(move || fs::symlink_metadata(path))
            .await
            .map_err(io_status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&metadata),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> SftpResult<Attrs> {
        let path = self.resolve(&path);
        let metadata = blocking(move || fs::metadata(path))
            .await
            .map_err(io_status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&metadata),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> SftpResult<Attrs> {
        let metadata = match self.handles.get(&handle) {
            Some(OpenHandle::File(file)) => {
                let file = Arc::clone(file);
                blocking(move || file.metadata()).await
            }
            Some(OpenHandle::Dir(listing)) => {
                let path = listing.path.clone();
                blocking(move || fs::metadata(path)).await
            }
            None => return Err(invalid_handle()),
        };
        Ok(Attrs {
            id,
            attrs: attributes(&metadata.map_err(io_status)?),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> SftpResult<Status> {
        let path = self.resolve(&path);
        blocking(move || set_path_attributes(&path, &attrs))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> SftpResult<Status> {
        let result = match self.handles.get(&handle) {
            Some(OpenHandle::File(file)) => {
                let file = Arc::clone(file);
                blocking(move || set_file_attributes(&file, &attrs)).await
            }
            Some(OpenHandle::Dir(listing)) => {
                let path = listing.path.clone();
                blocking(move || set_path_attributes(&path, &attrs)).await
            }
            None => return Err(invalid_handle()),
        };
        result.map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> SftpResult<Handle> {
        let virtual_dir = normalize_virtual(&path);
        let dir = self.resolve(&virtual_dir);
        // ".." of the served root is the root itself, never its real parent.
        let parent = self.resolve(&format!("{virtual_dir}/.."));
        let listing = blocking(move || snapshot_dir(dir, parent))
            .await
            .map_err(io_status)?;
        let handle = self.insert_handle(OpenHandle::Dir(listing))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> SftpResult<Name> {
        loop {
            let batch = self.dir(&handle)?.next_batch();
            if batch.is_empty() {
                return Err(StatusCode::Eof.into());
            }
            let files = blocking(move || Ok(stat_entries(batch)))
                .await
                .map_err(io_status)?;
            // A batch can come back empty if all its entries vanished meanwhile.
            if !files.is_empty() {
                return Ok(Name { id, files });
            }
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> SftpResult<Status> {
        let path = self.resolve_mutable(&filename)?;
        blocking(move || fs::remove_file(path))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> SftpResult<Status> {
        let path = self.resolve(&path);
        let mode = attrs.permissions.map_or(0o777, |mode| mode & 0o7777);
        blocking(move || DirBuilder::new().mode(mode).create(path))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> SftpResult<Status> {
        let path = self.resolve_mutable(&path)?;
        blocking(move || fs::remove_dir(path))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> SftpResult<Name> {
        // Purely lexical, like the confinement itself; OpenSSH's server also
        // answers with the path as both name and long name, without attributes.
        let path = normalize_virtual(&path);
        let file = File {
            filename: path.clone(),
            longname: path,
            attrs: FileAttributes::empty(),
        };
        Ok(Name {
            id,
            files: vec![file],
        })
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> SftpResult<Status> {
        let from = self.resolve_mutable(&oldpath)?;
        let to = self.resolve_mutable(&newpath)?;
        blocking(move || rename_no_replace(&from, &to))
            .await
            .map_err(io_status)?;
        Ok(ok_status(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> SftpResult<Packet> {
        match request.as_str() {
            EXT_POSIX_RENAME => self.posix_rename(id, &data).await,
            EXT_FSYNC => self.fsync(id, &data).await,
            _ => Err(StatusCode::OpUnsupported.into()),
        }
    }
}

fn ok_status(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn invalid_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

/// Maps a filesystem error onto the closest SFTPv3 status code.
fn io_status(error: io::Error) -> StatusReply {
    match error.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile.into(),
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied.into(),
        // io::Error messages carry no paths, so nothing about the real
        // location of the served directory leaks to the client.
        _ => StatusCode::Failure.with_message(error.to_string()),
    }
}

/// Runs blocking filesystem work off the async worker threads, as tokio::fs does.
async fn blocking<T, F>(work: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join_error) => Err(io::Error::other(join_error)),
    }
}
