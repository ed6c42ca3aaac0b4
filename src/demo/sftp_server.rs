//! Embedded SSH + SFTP server used by `ftpbridge demo`.
//!
//! It serves one local directory over SFTP (russh for SSH, russh-sftp for the
//! SFTP protocol) so a newcomer can watch the FTP bridge work without setting
//! up a real SFTP server. OpenSSH's `sftp` client can use it directly.
//!
//! Scope and limits, on purpose:
//! - One account, password authentication only, a fresh Ed25519 host key per
//!   start (so clients must not pin it across runs; [`EmbeddedSftpServer::host_key_fingerprint`]
//!   tells them what to expect).
//! - SFTP paths are virtual: `/` is the served directory and `.`/`..` are
//!   resolved lexically, so no request can name a path outside it. Symbolic
//!   links that the local operator placed inside the directory are followed
//!   like any other file (clients cannot create links: SYMLINK is not
//!   implemented).
//! - Extensions: `posix-rename@openssh.com` and `fsync@openssh.com`.
//!   `statvfs@openssh.com` is *not* advertised: std has no `statvfs`, and a
//!   demo server does not justify a direct `libc` dependency plus `unsafe`.
//!   Clients see "not supported" (russh-sftp's `fs_info` returns `None`).
//! - Unix only (it relies on `std::os::unix` for modes, owners and positional I/O).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, DirBuilder, File as StdFile, FileTimes, Metadata, OpenOptions, Permissions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, RunningServerHandle, Server as _, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, Pty};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Largest READ we answer. OpenSSH clients refuse SFTP messages over 256 KiB,
/// so like OpenSSH's sftp-server we keep 1 KiB of headroom for the header.
const MAX_READ_LEN: u32 = 256 * 1024 - 1024;
/// Open file/directory handles per SFTP session; bounds what one peer can pin.
const MAX_OPEN_HANDLES: usize = 256;
/// Session channels per SSH connection (OpenSSH's `MaxSessions` default).
const MAX_SESSION_CHANNELS: usize = 10;
/// Directory entries returned per READDIR reply (OpenSSH uses 100 too).
const READDIR_BATCH: usize = 100;
/// Rejections are delayed by russh to hide timing; short enough for tests.
const AUTH_REJECTION_TIME: Duration = Duration::from_millis(200);

const EXT_POSIX_RENAME: &str = "posix-rename@openssh.com";
const EXT_FSYNC: &str = "fsync@openssh.com";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// A running embedded SFTP server.
///
/// Dropping it (or calling [`EmbeddedSftpServer::shutdown`]) stops accepting
/// connections and disconnects the clients.
pub struct EmbeddedSftpServer {
    local_addr: SocketAddr,
    fingerprint: String,
    stop: RunningServerHandle,
    task: JoinHandle<()>,
}

/// Why the embedded SFTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedServerError {
    /// The directory to serve cannot be resolved or inspected.
    #[error("cannot serve {}: {source}", path.display())]
    Root {
        /// The directory as given by the caller.
        path: PathBuf,
        /// The underlying filesystem error.
        #[source]
        source: io::Error,
    },
    /// The path to serve exists but is not a directory.
    #[error("cannot serve {}: not a directory", .0.display())]
    RootNotDirectory(PathBuf),
    /// An empty username or password would make the account trivially guessable.
    #[error("the embedded SFTP server needs a non-empty username and password")]
    EmptyCredentials,
    /// The listener has no local address (it was not bound).
    #[error("cannot read the listener's local address: {0}")]
    LocalAddr(#[source] io::Error),
    /// Generating the Ed25519 host key failed.
    #[error("cannot generate the Ed25519 host key: {0}")]
    HostKey(#[source] russh::keys::ssh_key::Error),
    /// The server task ended before it reported that it was running.
    #[error("the embedded SFTP server task ended during startup")]
    Startup,
}

impl EmbeddedSftpServer {
    /// Starts serving `root` on an already-bound listener; only
    /// `username`/`password` may log in (password auth).
    ///
    /// Every accepted connection runs in its own task; the server runs until
    /// [`shutdown`](Self::shutdown) or drop.
    pub async fn start(
        listener: TcpListener,
        root: PathBuf,
        username: String,
        password: String,
    ) -> Result<Self, EmbeddedServerError> {
        if username.is_empty() || password.is_empty() {
            return Err(EmbeddedServerError::EmptyCredentials);
        }
        let root = canonical_root(root).await?;
        let local_addr = listener
            .local_addr()
            .map_err(EmbeddedServerError::LocalAddr)?;
        let host_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(EmbeddedServerError::HostKey)?;
        let fingerprint = host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();

        let config = Arc::new(ssh_config(host_key));
        let mut server = SshServer {
            shared: Arc::new(Shared {
                root: Arc::new(root),
                username,
                password,
            }),
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        // `run_on_socket` borrows the listener, so the listener lives in the task.
        let task = tokio::spawn(async move {
            let running = server.run_on_socket(config, &listener);
            if stop_tx.send(running.handle()).is_err() {
                return; // `start` was cancelled: nobody can stop us, so do not run.
            }
            if let Err(error) = running.await {
                warn!(%error, "embedded SFTP server stopped accepting connections");
            }
        });
        let stop = stop_rx.await.map_err(|_| EmbeddedServerError::Startup)?;
        info!(%local_addr, %fingerprint, "embedded SFTP server started");
        Ok(Self {
            local_addr,
            fingerprint,
            stop,
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// "SHA256:..." fingerprint of the generated Ed25519 host key (same format
    /// as `ssh-keygen -lf`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Stops accepting and aborts the server task.
    pub fn shutdown(self) {
        // Drop does the work, so an explicit shutdown and a drop behave the same.
        drop(self);
    }
}

impl std::fmt::Debug for EmbeddedSftpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSftpServer")
            .field("local_addr", &self.local_addr)
            .field("host_key_fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedSftpServer {
    fn drop(&mut self) {
        // The broadcast makes every connection task send a disconnect; the
        // abort stops the accept loop at once and releases the listener.
        self.stop.shutdown("server shutting down".to_owned());
        self.task.abort();
    }
}

/// Canonicalises the served directory so that every resolved path is absolute.
async fn canonical_root(root: PathBuf) -> Result<PathBuf, EmbeddedServerError> {
    let root_error = |source| EmbeddedServerError::Root {
        path: root.clone(),
        source,
    };
    let canonical = tokio::fs::canonicalize(&root).await.map_err(root_error)?;
    let metadata = tokio::fs::metadata(&canonical).await.map_err(root_error)?;
    if !metadata.is_dir() {
        return Err(EmbeddedServerError::RootNotDirectory(root));
    }
    Ok(canonical)
}

fn ssh_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        methods: MethodSet::from(&[MethodKind::Password][..]),
        auth_rejection_time: AUTH_REJECTION_TIME,
        // OpenSSH first probes with "none" to learn the methods; answering that
        // probe instantly costs nothing and speeds up every login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        nodelay: true,
        // The bridge may keep an upstream session idle for a long time: rather
        // than russh's 10-minute inactivity cut-off, drop only dead peers
        // (no keepalive answer for about 90 s).
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// SSH layer
// ---------------------------------------------------------------------------

/// State shared by all connections.
struct Shared {
    root: Arc<PathBuf>,
    username: String,
    password: String,
}

impl Shared {
    fn credentials_match(&self, user: &str, password: &str) -> bool {
        // Evaluate both comparisons (`&`, not `&&`) so the time taken does not
        // reveal whether the username alone was right.
        constant_time_eq(user.as_bytes(), self.username.as_bytes())
            & constant_time_eq(password.as_bytes(), self.password.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte (only the
/// length leaks, which is acceptable for a demo credential).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct SshServer {
    shared: Arc<Shared>,
}

impl russh::server::Server for SshServer {
    type Handler = SshConnection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> SshConnection {
        debug!(?peer, "embedded SFTP server: new connection");
        SshConnection {
            shared: Arc::clone(&self.shared),
            peer,
            channels: HashMap::new(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        debug!(%error, "embedded SFTP server: connection ended with an error");
    }
}

/// Per-connection SSH handler: password auth, session channels, "sftp" only.
struct SshConnection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// Opened session channels waiting for their subsystem request.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl SshConnection {
    /// Refuses a channel request (shell, exec, pty, ...): only SFTP is served.
    fn refuse(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        debug!(peer = ?self.peer, what, "embedded SFTP server: refusing channel request");
        session.channel_failure(channel)
    }
}

impl russh::server::Handler for SshConnection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.credentials_match(user, password) {
            info!(peer = ?self.peer, user, "embedded SFTP server: login");
            Ok(Auth::Accept)
        } else {
            info!(peer = ?self.peer, user, "embedded SFTP server: login refused");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_SESSION_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let channel = match name {
            "sftp" => self.channels.remove(&channel_id),
            _ => None,
        };
        let Some(channel) = channel else {
            return self.refuse(channel_id, "subsystem", session);
        };
        session.channel_success(channel_id)?;
        // `run` spawns its own task and returns at once; the task ends (and
        // closes the channel) when the client closes its side.
        russh_sftp::server::run(
            channel.into_stream(),
            SftpHandler::new(Arc::clone(&self.shared.root)),
        )
        .await;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "shell", session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "exec", session)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "pty", session)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "x11", session)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse(channel, "env", session)
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A channel still in the map never became SFTP, so nothing else will
        // close it. SFTP channels close themselves once their task has answered
        // every request (closing here could drop the last replies).
        if self.channels.remove(&channel).is_some() {
            session.close(channel)?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Path confinement
// ---------------------------------------------------------------------------

/// Splits an SFTP path into normalised components: `.` and empty parts are
/// dropped and `..` removes the previous part but never goes above `/`.
/// Relative paths are taken relative to `/`.
fn virtual_components(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts
}

/// The canonical virtual form of `path`, e.g. `/a/b`.
fn normalize_virtual(path: &str) -> String {
    format!("/{}", virtual_components(path).join("/"))
}

/// Maps an SFTP path onto the local filesystem, always inside `root`.
fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut real = root.to_path_buf();
    // Components contain no '/', and `..`/`.` were removed, so each push adds
    // exactly one level below `root`.
    real.extend(virtual_components(path));
    real
}

// ---------------------------------------------------------------------------
// SFTP layer
// ---------------------------------------------------------------------------

/// What an SFTP handle string refers to.
enum OpenHandle {
    /// `Arc` so a blocking task can use the file while the map keeps it.
    File(Arc<StdFile>),
    Dir(DirListing),
}

/// A directory being listed: a snapshot of its entries taken at OPENDIR,
/// stat'ed lazily batch by batch at READDIR.
struct DirListing {
    path: PathBuf,
    pending: VecDeque<(String, PathBuf)>,
}

impl DirListing {
    fn next_batch(&mut self) -> Vec<(String, PathBuf)> {
        let n = self.pending.len().min(READDIR_BATCH);
        self.pending.drain(..n).collect()
    }
}

/// Per-channel SFTP handler mapping requests onto files under `root`.
struct SftpHandler {
    root: Arc<PathBuf>,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
    initialised: bool,
}

type SftpResult<T> = Result<T, StatusReply>;

impl SftpHandler {
    fn new(root: Arc<PathBuf>) -> Self {
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

// ---------------------------------------------------------------------------
// Filesystem helpers
// ---------------------------------------------------------------------------

/// Translates SFTP open flags into `OpenOptions`.
///
/// Combinations std rejects (e.g. CREAT without WRITE, TRUNC with APPEND) fail
/// with `InvalidInput`, which reaches the client as a plain failure.
fn open_options(pflags: OpenFlags, attrs: &FileAttributes) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .read(pflags.contains(OpenFlags::READ))
        .write(pflags.contains(OpenFlags::WRITE))
        .append(pflags.contains(OpenFlags::APPEND))
        .truncate(pflags.contains(OpenFlags::TRUNCATE))
        // SFTPv3: EXCL only means something together with CREAT.
        .create(pflags.contains(OpenFlags::CREATE) && !pflags.contains(OpenFlags::EXCLUDE))
        .create_new(pflags.contains(OpenFlags::CREATE) && pflags.contains(OpenFlags::EXCLUDE))
        // Like OpenSSH: the client's permissions (or 0666) go through the umask.
        .mode(attrs.permissions.map_or(0o666, |mode| mode & 0o7777));
    options
}

/// Reads up to `len` bytes at `offset`; fewer only at end of file.
fn read_at_most(file: &StdFile, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        // The offset comes from the peer: never let it overflow.
        let Some(position) = offset.checked_add(filled as u64) else {
            break;
        };
        match file.read_at(&mut buf[filled..], position) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// SFTPv3 RENAME: fails when the target exists.
///
/// For regular files link+unlink (as OpenSSH does) makes the check atomic;
/// directories, and filesystems without hard links, fall back to
/// check-then-rename, which has a small race that a demo can live with.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(from)?.is_file() {
        match fs::hard_link(from, to) {
            Ok(()) => {
                return fs::remove_file(from).inspect_err(|_| {
                    // Undo the link so a failed rename leaves things as they were.
                    let _ = fs::remove_file(to);
                });
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Err(error),
            Err(_) => {} // e.g. EPERM on filesystems without hard links
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "target already exists",
        ));
    }
    fs::rename(from, to)
}

/// SETSTAT on a path. Times are set before permissions so that a request
/// that also removes read access can still open the file.
fn set_path_attributes(path: &Path, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        OpenOptions::new().write(true).open(path)?.set_len(size)?;
    }
    if let Some(times) = file_times(attrs) {
        // std has no path-based utimes; an O_RDONLY descriptor suffices for
        // futimens(2) when we own the file, and also works for directories.
        StdFile::open(path)?.set_times(times)?;
    }
    if let Some(mode) = attrs.permissions {
        fs::set_permissions(path, Permissions::from_mode(mode & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    Ok(())
}

/// FSETSTAT on an open file, same order as [`set_path_attributes`].
fn set_file_attributes(file: &StdFile, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        file.set_len(size)?;
    }
    if let Some(times) = file_times(attrs) {
        file.set_times(times)?;
    }
    if let Some(mode) = attrs.permissions {
        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(file, attrs.uid, attrs.gid)?;
    }
    Ok(())
}

fn file_times(attrs: &FileAttributes) -> Option<FileTimes> {
    let at = |secs: u32| UNIX_EPOCH + Duration::from_secs(secs.into());
    let mut times = FileTimes::new();
    if let Some(atime) = attrs.atime {
        times = times.set_accessed(at(atime));
    }
    if let Some(mtime) = attrs.mtime {
        times = times.set_modified(at(mtime));
    }
    (attrs.atime.is_some() || attrs.mtime.is_some()).then_some(times)
}

/// SFTP attributes for a file, including the file type bits in `permissions`.
fn attributes(metadata: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(metadata.len()),
        uid: Some(metadata.uid()),
        user: None,
        gid: Some(metadata.gid()),
        group: None,
        permissions: Some(metadata.mode()),
        atime: Some(clamp_u32(metadata.atime())),
        mtime: Some(clamp_u32(metadata.mtime())),
    }
}

/// SFTPv3 times are unsigned 32-bit seconds.
fn clamp_u32(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

/// Lists `dir` (names only) plus `.` and `..`, as readdir(3) does.
fn snapshot_dir(dir: PathBuf, parent: PathBuf) -> io::Result<DirListing> {
    let mut pending = VecDeque::from([(".".to_owned(), dir.clone()), ("..".to_owned(), parent)]);
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        // SFTP names are strings here; a non-UTF-8 name is shown lossily.
        pending.push_back((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    Ok(DirListing { path: dir, pending })
}

/// lstat()s a batch of directory entries, skipping those that vanished.
fn stat_entries(batch: Vec<(String, PathBuf)>) -> Vec<File> {
    let now = SystemTime::now();
    batch
        .into_iter()
        .filter_map(|(name, path)| {
            let metadata = fs::symlink_metadata(path).ok()?;
            let longname = long_name(&name, &metadata, now);
            Some(File {
                filename: name,
                longname,
                attrs: attributes(&metadata),
            })
        })
        .collect()
}

/// An `ls -l` line in the layout OpenSSH's sftp-server uses (numeric owners:
/// resolving names would need libc).
fn long_name(name: &str, metadata: &Metadata, now: SystemTime) -> String {
    format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(metadata.mode()),
        metadata.nlink(),
        metadata.uid(),
        metadata.gid(),
        metadata.len(),
        ls_date(metadata.mtime(), now),
        name
    )
}

/// `drwxr-xr-x`-style rendering of a Unix mode, including setuid/setgid/sticky.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut out = String::with_capacity(10);
    out.push(kind);
    for (shift, special_bit, special) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 0o7;
        out.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        out.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        out.push(match (bits & 0o1 != 0, mode & special_bit != 0) {
            (true, true) => special,
            (false, true) => special.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// `ls` date column: time of day for the last six months, else the year.
fn ls_date(mtime: i64, now: SystemTime) -> String {
    let Some(utc) = chrono::DateTime::from_timestamp(mtime, 0) else {
        return "?".to_owned();
    };
    let local = utc.with_timezone(&chrono::Local);
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let recent = now - 365 * 24 * 60 * 60 / 2 < mtime && now >= mtime;
    let format = if recent { "%b %e %H:%M" } else { "%b %e  %Y" };
    local.format(format).to_string()
}

/// Takes one SSH `string` (u32 big-endian length + bytes) off the front of
/// `buf`; `None` if truncated or not UTF-8.
fn take_ssh_string(buf: &mut &[u8]) -> Option<String> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    *buf = rest;
    String::from_utf8(value.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    //! Unit tests for the pure helpers, then end-to-end tests that drive the
    //! server with the real OpenSSH `sftp` client (skipped when it is missing)
    //! and with the russh-sftp client the bridge itself uses.

    use super::*;
    use std::process::{Output, Stdio};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::process::Command;
    use tokio::time::timeout;

    const USER: &str = "demo";
    const PASSWORD: &str = "correct horse battery";
    /// Upper bound for each end-to-end test.
    const TEST_TIMEOUT: Duration = Duration::from_secs(60);

    // ----- pure helpers ----------------------------------------------------

    #[test]
    fn virtual_paths_are_normalised_lexically() {
        assert_eq!(normalize_virtual(""), "/");
        assert_eq!(normalize_virtual("."), "/");
        assert_eq!(normalize_virtual("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_virtual("a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalize_virtual("../.."), "/");
    }

    #[test]
    fn resolved_paths_stay_under_root() {
        let root = Path::new("/srv/demo");
        assert_eq!(
            resolve_in(root, "/../../etc/passwd"),
            Path::new("/srv/demo/etc/passwd")
        );
        assert_eq!(resolve_in(root, ".."), Path::new("/srv/demo"));
        assert_eq!(resolve_in(root, "x/../../y"), Path::new("/srv/demo/y"));
    }

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o100_640), "-rw-r-----");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104_755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o041_776), "drwxrwxrwT");
    }

    #[test]
    fn ssh_strings_are_parsed_strictly() {
        let mut payload: &[u8] = &[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0];
        assert_eq!(take_ssh_string(&mut payload).as_deref(), Some("hi"));
        assert_eq!(take_ssh_string(&mut payload).as_deref(), Some(""));
        assert_eq!(take_ssh_string(&mut payload), None);
        let mut truncated: &[u8] = &[0, 0, 0, 9, b'x'];
        assert_eq!(take_ssh_string(&mut truncated), None);
    }

    #[test]
    fn credentials_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    // ----- harness ---------------------------------------------------------

    fn command_available(program: &str, probe_arg: &str) -> bool {
        std::process::Command::new(program)
            .arg(probe_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// `None` (with the reason printed) when OpenSSH's sftp is not installed.
    fn require_sftp() -> Option<()> {
        if command_available("sftp", "-h") {
            Some(())
        } else {
            eprintln!("SKIPPED: OpenSSH `sftp` is not installed");
            None
        }
    }

    /// A running server over a temporary root, plus a scratch directory used
    /// as the client's working directory.
    struct Harness {
        server: EmbeddedSftpServer,
        root: tempfile::TempDir,
        work: tempfile::TempDir,
    }

    impl Harness {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let root = tempfile::tempdir().expect("root tempdir");
            let work = tempfile::tempdir().expect("work tempdir");
            let server = EmbeddedSftpServer::start(
                listener,
                root.path().to_path_buf(),
                USER.to_owned(),
                PASSWORD.to_owned(),
            )
            .await
            .expect("server starts");
            // ssh runs this instead of prompting; the password comes from the
            // environment so it never appears in a file or on a command line.
            let askpass = work.path().join("askpass.sh");
            fs::write(
                &askpass,
                "#!/bin/sh\nprintf '%s\\n' \"$FTPBRIDGE_TEST_SSH_PASSWORD\"\n",
            )
            .expect("write askpass");
            fs::set_permissions(&askpass, Permissions::from_mode(0o700)).expect("chmod askpass");
            Self { server, root, work }
        }

        /// Runs an OpenSSH client program with password auth via SSH_ASKPASS.
        fn ssh_command(&self, program: &str, password: &str) -> Command {
            let mut command = Command::new(program);
            command
                .current_dir(self.work.path())
                .env("SSH_ASKPASS", self.work.path().join("askpass.sh"))
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("FTPBRIDGE_TEST_SSH_PASSWORD", password)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                // `sftp -b` appends "-o BatchMode yes", which would disable
                // password prompts; ssh keeps the first value it sees, so ours
                // must come first.
                .args(["-F", "/dev/null", "-o", "BatchMode=no"])
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                ])
                .args([
                    "-o",
                    "GlobalKnownHostsFile=/dev/null",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .args([
                    "-o",
                    "PreferredAuthentications=password",
                    "-o",
                    "PubkeyAuthentication=no",
                ])
                .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"]);
            command
        }

        /// Runs `sftp -b` with `batch` as the command file.
        async fn sftp(&self, user: &str, password: &str, batch: &str) -> Output {
            let batch_file = self.work.path().join("batch.txt");
            fs::write(&batch_file, batch).expect("write batch file");
            let port = self.server.local_addr().port().to_string();
            let mut command = self.ssh_command("sftp", password);
            command
                .args(["-P", &port, "-b"])
                .arg(&batch_file)
                .arg(format!("{user}@127.0.0.1"));
            command.output().await.expect("run sftp")
        }

        fn root_path(&self, relative: &str) -> PathBuf {
            self.root.path().join(relative)
        }

        fn work_path(&self, relative: &str) -> PathBuf {
            self.work.path().join(relative)
        }
    }

    fn describe(output: &Output) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn random_bytes(len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        rand::fill(&mut data[..]);
        data
    }

    // ----- OpenSSH sftp ----------------------------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openssh_sftp_transfers_and_manages_files() {
        let Some(()) = require_sftp() else { return };
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            let data = random_bytes(3 * 1024 * 1024);
            fs::write(harness.work_path("big.bin"), &data).expect("write local file");

            let output = harness
                .sftp(
                    USER,
                    PASSWORD,
                    "mkdir incoming\n\
                     cd incoming\n\
                     put big.bin\n\
                     put -f big.bin synced.bin\n\
                     chmod 640 big.bin\n\
                     ls -l\n\
                     get big.bin roundtrip.bin\n\
                     rename big.bin renamed.bin\n\
                     ls\n",
                )
                .await;
            assert!(output.status.success(), "{}", describe(&output));
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with("-rw-r-----") && l.ends_with(" big.bin")),
                "ls -l shows the long name with the new mode\n{}",
                describe(&output)
            );
            assert!(stdout.contains("renamed.bin"), "{}", describe(&output));
            assert!(fs::read(harness.work_path("roundtrip.bin")).expect("downloaded") == data);
            assert!(fs::read(harness.root_path("incoming/renamed.bin")).expect("uploaded") == data);
            assert!(fs::read(harness.root_path("incoming/synced.bin")).expect("fsynced") == data);
            assert!(!harness.root_path("incoming/big.bin").exists());
            let mode = fs::metadata(harness.root_path("incoming/renamed.bin"))
                .expect("stat")
                .mode();
            assert_eq!(mode & 0o777, 0o640);

            // OpenSSH's `rename` uses posix-rename@openssh.com, which replaces the target.
            let output = harness
                .sftp(
                    USER,
                    PASSWORD,
                    "cd incoming\n\
                     rename synced.bin renamed.bin\n\
                     rm renamed.bin\n\
                     cd /\n\
                     rmdir incoming\n\
                     ls -la\n",
                )
                .await;
            assert!(output.status.success(), "{}", describe(&output));
            let remaining: Vec<_> = fs::read_dir(harness.root.path())
                .expect("list root")
                .collect();
            assert!(remaining.is_empty(), "root should be empty: {remaining:?}");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openssh_sftp_cannot_escape_the_root() {
        let Some(()) = require_sftp() else { return };
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            fs::create_dir(harness.root_path("etc")).expect("mkdir etc");
            fs::write(harness.root_path("etc/hostname"), "inside-root\n").expect("write sentinel");

            let output = harness
                .sftp(
                    USER,
                    PASSWORD,
                    "get /../../etc/hostname escaped.txt\n\
                     cd ../../..\n\
                     pwd\n",
                )
                .await;
            assert!(output.status.success(), "{}", describe(&output));
            let fetched = fs::read_to_string(harness.work_path("escaped.txt")).expect("fetched");
            assert_eq!(
                fetched, "inside-root\n",
                "the path must map inside the root"
            );
            assert!(
                String::from_utf8_lossy(&output.stdout).contains("Remote working directory: /\n"),
                "{}",
                describe(&output)
            );

            // /etc/passwd exists on the host but not under the root.
            let output = harness
                .sftp(USER, PASSWORD, "get /../../../etc/passwd passwd.txt\n")
                .await;
            assert!(!output.status.success(), "{}", describe(&output));
            assert!(!harness.work_path("passwd.txt").exists());
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_credentials_are_refused() {
        let Some(()) = require_sftp() else { return };
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            for (user, password) in [(USER, "wrong password"), ("root", PASSWORD)] {
                let output = harness.sftp(user, password, "ls\n").await;
                assert!(!output.status.success(), "{}", describe(&output));
                assert!(
                    String::from_utf8_lossy(&output.stderr).contains("Permission denied"),
                    "{}",
                    describe(&output)
                );
            }
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_sftp_subsystem_is_served() {
        let Some(()) = require_sftp() else { return };
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            let port = harness.server.local_addr().port().to_string();
            let mut command = harness.ssh_command("ssh", PASSWORD);
            command.args(["-T", "-p", &port, &format!("{USER}@127.0.0.1"), "id"]);
            let output = command.output().await.expect("run ssh");
            assert!(!output.status.success(), "{}", describe(&output));
            assert!(
                String::from_utf8_lossy(&output.stderr).contains("exec request failed"),
                "{}",
                describe(&output)
            );
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fingerprint_matches_ssh_keyscan() {
        if !command_available("ssh-keyscan", "-h") || !command_available("ssh-keygen", "-h") {
            eprintln!("SKIPPED: ssh-keyscan/ssh-keygen are not installed");
            return;
        }
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            let port = harness.server.local_addr().port().to_string();
            let scan = Command::new("ssh-keyscan")
                .args(["-t", "ed25519", "-p", &port, "127.0.0.1"])
                .output()
                .await
                .expect("run ssh-keyscan");
            let mut keygen = Command::new("ssh-keygen")
                .args(["-l", "-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run ssh-keygen");
            let mut stdin = keygen.stdin.take().expect("stdin");
            stdin
                .write_all(&scan.stdout)
                .await
                .expect("feed ssh-keygen");
            drop(stdin);
            let listed = keygen.wait_with_output().await.expect("ssh-keygen output");
            let listed = String::from_utf8_lossy(&listed.stdout);
            let fingerprint = harness.server.host_key_fingerprint();
            assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
            assert!(listed.contains(fingerprint), "{listed} vs {fingerprint}");
        })
        .await
        .expect("test timed out");
    }

    // ----- russh-sftp client (what the bridge uses upstream) ---------------

    /// Accepts exactly the host key with the expected fingerprint.
    struct PinnedHostKey(String);

    impl russh::client::Handler for PinnedHostKey {
        type Error = russh::Error;

        async fn check_server_key(
            &mut self,
            key: &russh::keys::PublicKeyOrCertificate,
        ) -> Result<bool, Self::Error> {
            Ok(match key {
                russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                    key.fingerprint(HashAlg::Sha256).to_string() == self.0
                }
                russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
            })
        }
    }

    async fn russh_sftp_session(
        server: &EmbeddedSftpServer,
    ) -> (
        russh::client::Handle<PinnedHostKey>,
        russh_sftp::client::SftpSession,
    ) {
        let config = Arc::new(russh::client::Config::default());
        let pinned = PinnedHostKey(server.host_key_fingerprint().to_owned());
        let mut handle = russh::client::connect(config, server.local_addr(), pinned)
            .await
            .expect("ssh connect");
        let auth = handle
            .authenticate_password(USER, PASSWORD)
            .await
            .expect("auth");
        assert!(auth.success());
        let channel = handle
            .channel_open_session()
            .await
            .expect("session channel");
        channel
            .request_subsystem(true, "sftp")
            .await
            .expect("sftp subsystem");
        let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .expect("sftp init");
        (handle, sftp)
    }

    /// Writes a whole file. `SftpSession::write` opens with WRITE only (no
    /// CREAT, no TRUNC), so it cannot create files: use `create` instead.
    async fn upload(sftp: &russh_sftp::client::SftpSession, path: &str, data: &[u8]) {
        let mut file = sftp.create(path).await.expect("create");
        file.write_all(data).await.expect("write");
        file.shutdown().await.expect("close");
    }

    /// The status of a request that must fail (works for Ok types without Debug).
    fn failure_code<T>(result: Result<T, russh_sftp::client::error::Error>) -> StatusCode {
        match result {
            Ok(_) => panic!("the request unexpectedly succeeded"),
            Err(error) => status_code(error),
        }
    }

    fn status_code(error: russh_sftp::client::error::Error) -> StatusCode {
        match error {
            russh_sftp::client::error::Error::Status(status) => status.status_code,
            other => panic!("expected an SFTP status, got {other}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn russh_sftp_client_sees_protocol_semantics() {
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            let (_ssh, sftp) = russh_sftp_session(&harness.server).await;

            upload(&sftp, "/a.txt", b"hello").await;
            upload(&sftp, "/b.txt", b"other").await;
            // Legacy SSH_FXP_RENAME must not replace an existing target.
            let err = sftp
                .rename("/a.txt", "/b.txt")
                .await
                .expect_err("rename onto existing");
            assert_eq!(status_code(err), StatusCode::Failure);
            sftp.rename("/a.txt", "/c.txt")
                .await
                .expect("rename to a free name");

            // APPEND writes land at the end whatever the offset.
            let mut file = sftp
                .open_with_flags("/c.txt", OpenFlags::WRITE | OpenFlags::APPEND)
                .await
                .expect("open for append");
            file.write_all(b" world").await.expect("append");
            file.shutdown().await.expect("close");
            assert_eq!(
                sftp.read("/c.txt").await.expect("read back"),
                b"hello world"
            );

            // CREAT|EXCL refuses an existing file.
            let exclusive = sftp
                .open_with_flags(
                    "/c.txt",
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                )
                .await;
            assert_eq!(failure_code(exclusive), StatusCode::Failure);

            let missing = sftp.open("/missing.txt").await;
            assert_eq!(failure_code(missing), StatusCode::NoSuchFile);

            sftp.create_dir("/sub").await.expect("mkdir");
            let metadata = sftp.metadata("/sub").await.expect("stat dir");
            assert!(metadata.is_dir(), "type bits are sent: {metadata:?}");
            let entries: Vec<_> = sftp.read_dir("/").await.expect("readdir").collect();
            let c = entries
                .iter()
                .find(|e| e.file_name() == "c.txt")
                .expect("c.txt listed");
            assert_eq!(c.metadata().size, Some(11));
            assert!(c.metadata().is_regular());
            assert!(c.metadata().mtime.is_some() && c.metadata().uid.is_some());

            // Reading the whole file through the pipelined reader.
            let mut file = sftp.open("/c.txt").await.expect("open for read");
            let mut text = String::new();
            file.read_to_string(&mut text).await.expect("read to end");
            assert_eq!(text, "hello world");

            assert_eq!(
                sftp.canonicalize("/sub/../../x/.").await.expect("realpath"),
                "/x"
            );
            assert!(
                sftp.fs_info("/").await.expect("statvfs probe").is_none(),
                "statvfs is not advertised"
            );
            let err = sftp
                .remove_dir("/")
                .await
                .expect_err("the root cannot be removed");
            assert_eq!(status_code(err), StatusCode::PermissionDenied);
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_stops_accepting() {
        timeout(TEST_TIMEOUT, async {
            let harness = Harness::start().await;
            let addr = harness.server.local_addr();
            let (_ssh, sftp) = russh_sftp_session(&harness.server).await;
            sftp.metadata("/")
                .await
                .expect("session works before shutdown");
            harness.server.shutdown();
            // Established sessions are disconnected, not left dangling.
            sftp.set_timeout(5);
            sftp.metadata("/")
                .await
                .expect_err("session must be closed by shutdown");
            // The aborted task releases the listener asynchronously; give it a moment.
            for _ in 0..50 {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("still accepting connections after shutdown");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn start_rejects_bad_arguments() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let result = EmbeddedSftpServer::start(
            listener,
            file.path().to_path_buf(),
            USER.to_owned(),
            PASSWORD.to_owned(),
        )
        .await;
        assert!(matches!(
            result,
            Err(EmbeddedServerError::RootNotDirectory(_))
        ));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let result =
            EmbeddedSftpServer::start(listener, PathBuf::from("/"), USER.to_owned(), String::new())
                .await;
        assert!(matches!(result, Err(EmbeddedServerError::EmptyCredentials)));
    }
}
