//! File and directory commands on the control channel: CWD/CDUP, MKD, RMD,
//! DELE, RNFR/RNTO (RFC 959 §4.1), SIZE, MDTM, MLST (RFC 3659), STAT path.

use bytes::Bytes;

use super::command::{Site, Timestamp};
use super::glob;
use super::listing;
use super::parse::parse_time_val;
use super::path::VirtualPath;
use super::reply::{Reply, quote_path};
use super::reply_map::Phase;
use super::session::{Outcome, Session};
use crate::upstream::{
    DirEntry, ErrorKind, FileKind, ListStream, Metadata, RemotePath, SetAttributes, SharedUpstream,
};

/// "YYYYMMDDHHMMSS path" → (time, path).
fn mdtm_set_form(arg: &[u8]) -> Option<(Timestamp, &[u8])> {
    let space = arg.iter().position(|&b| b == b' ')?;
    let time = parse_time_val(&arg[..space])?;
    let path = &arg[space + 1..];
    (!path.is_empty()).then_some((time, path))
}

/// What was listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListingShape {
    Directory,
    File,
    Pattern,
}

/// The result of resolving a listing argument.
pub(super) struct Listing {
    /// The directory listed (or the file, for a single entry), as the client sees it.
    pub path: VirtualPath,
    /// The upstream directory the entries are in.
    pub directory: RemotePath,
    pub entries: Vec<DirEntry>,
    /// A directory's entries still to come from the upstream (instead of
    /// `entries`), when the caller asked for a streamed listing.
    pub stream: Option<Box<dyn ListStream>>,
    pub shape: ListingShape,
    /// What NLST puts before each name so that the result works as a path for
    /// RETR (RFC 959 §4.1.3, "multiple get"): the directory part of the
    /// argument exactly as the client wrote it.
    pub client_prefix: Vec<u8>,
}

/// `dir/sub/*.txt` → `dir/sub/`; `*.txt` → ``.
fn client_directory(arg: &[u8]) -> &[u8] {
    match arg.iter().rposition(|&b| b == b'/') {
        Some(slash) => &arg[..=slash],
        None => &[],
    }
}

impl Session {
    async fn stat_target(
        &self,
        arg: &[u8],
    ) -> Result<(VirtualPath, RemotePath, Metadata), Outcome> {
        let (path, remote, upstream) = self.target(arg).map_err(Outcome::Reply)?;
        match upstream.stat(&remote).await {
            Ok(meta) => Ok((path, remote, meta)),
            Err(e) => Err(self.upstream_failure(&e, Phase::FileAction)),
        }
    }

    /// CWD: 250 or 550 (RFC 959 §5.4).
    pub(super) async fn cwd(&mut self, arg: &[u8]) -> Outcome {
        let (path, _, meta) = match self.stat_target(arg).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        if !meta.is_dir() {
            return Reply::new(550, "Not a directory.").into();
        }
        let mut text = b"Directory changed to ".to_vec();
        text.extend_from_slice(&path.to_bytes());
        text.push(b'.');
        if let super::session::LoginState::LoggedIn(account) = &mut self.login {
            account.cwd = path;
        }
        Reply::new(250, text).into()
    }

    /// MKD: 257 with the quoted path of the new directory.
    pub(super) async fn mkd(&mut self, arg: &[u8]) -> Outcome {
        let (path, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        if path.is_root() {
            return Reply::new(550, "The root directory already exists.").into();
        }
        match upstream.create_dir(&remote).await {
            Ok(()) => {
                let mut text = quote_path(&path.to_bytes());
                text.extend_from_slice(b" created.");
                Reply::new(257, text).into()
            }
            Err(e) => self.upstream_failure(&e, Phase::FileAction),
        }
    }

    /// RMD: never recursive; a non-empty directory is a 550.
    pub(super) async fn rmd(&mut self, arg: &[u8]) -> Outcome {
        let (path, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        if path.is_root() {
            return Reply::new(550, "The root directory cannot be removed.").into();
        }
        match upstream.remove_dir(&remote).await {
            Ok(()) => Reply::new(250, "Directory removed.").into(),
            Err(e) => self.upstream_failure(&e, Phase::FileAction),
        }
    }

    pub(super) async fn dele(&mut self, arg: &[u8]) -> Outcome {
        let (_, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        match upstream.remove_file(&remote).await {
            Ok(()) => Reply::new(250, "File deleted.").into(),
            Err(e) => self.upstream_failure(&e, Phase::FileAction),
        }
    }

    /// RNFR: 350 when the source exists; RNTO must come next.
    pub(super) async fn rnfr(&mut self, arg: &[u8]) -> Outcome {
        let (path, _, _) = match self.stat_target(arg).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        if path.is_root() {
            return Reply::new(550, "The root directory cannot be renamed.").into();
        }
        self.rename_from = Some(path);
        Reply::new(350, "Ready for the destination name.").into()
    }

    /// RNTO: replaces an existing file at the destination, as rename(2) does.
    pub(super) async fn rnto(&mut self, arg: &[u8], from: Option<VirtualPath>) -> Outcome {
        let Some(from) = from else {
            return Reply::new(503, "Send RNFR first.").into();
        };
        let (to, remote_to, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        if to.is_root() {
            return Reply::new(553, "Cannot rename onto the root directory.").into();
        }
        let Some(account) = self.account() else {
            return Reply::new(530, "Please log in with USER and PASS first.").into();
        };
        let remote_from = from.to_remote(account.root());
        match upstream.rename(&remote_from, &remote_to, true).await {
            Ok(()) => Reply::new(250, "Rename successful.").into(),
            Err(e) => self.upstream_failure(&e, Phase::FileAction),
        }
    }

    /// SIZE (RFC 3659 §4): the size of a plain file, in bytes.
    pub(super) async fn size(&mut self, arg: &[u8]) -> Outcome {
        match self.stat_target(arg).await {
            Ok((_, _, meta)) if meta.kind == FileKind::File => {
                Reply::new(213, meta.size.to_string()).into()
            }
            Ok(_) => Reply::new(550, "Not a plain file.").into(),
            Err(outcome) => outcome,
        }
    }

    /// MDTM (RFC 3659 §3): modification time as YYYYMMDDHHMMSS, UTC. The
    /// set form some clients use ("MDTM YYYYMMDDHHMMSS path") is honoured
    /// only when no file has the whole argument as its name.
    pub(super) async fn mdtm(&mut self, arg: &[u8]) -> Outcome {
        let found = self.stat_target(arg).await;
        if let Err(Outcome::Reply(reply)) = &found
            && reply.code() == 550
            && let Some((time, path)) = mdtm_set_form(arg)
        {
            return self.set_modified(time, path).await;
        }
        match found {
            Ok((_, _, meta)) if meta.kind == FileKind::File => {
                match meta.modified.and_then(listing::mdtm_value) {
                    Some(value) => Reply::new(213, value).into(),
                    None => Reply::new(550, "The upstream reports no modification time.").into(),
                }
            }
            Ok(_) => Reply::new(550, "Not a plain file.").into(),
            Err(outcome) => outcome,
        }
    }

    /// MFMT (draft-somers-ftp-mfxx §3): set the modification time.
    pub(super) async fn mfmt(&mut self, time: Timestamp, arg: &[u8]) -> Outcome {
        self.set_modified(time, arg).await
    }

    async fn set_modified(&mut self, time: Timestamp, arg: &[u8]) -> Outcome {
        let (path, remote, upstream) = match self.target(arg) {
            Ok(target) => target,
            Err(reply) => return reply.into(),
        };
        let attrs = SetAttributes {
            modified: Some(time),
            ..Default::default()
        };
        match upstream.set_attributes(&remote, &attrs).await {
            Ok(()) => {
                let value = listing::mdtm_value(time).unwrap_or_default();
                let mut text = format!("Modify={value}; ").into_bytes();
                text.extend_from_slice(&path.to_bytes());
                Reply::new(213, text).into()
            }
            Err(e) => self.upstream_failure(&e, Phase::FileAction),
        }
    }

    /// SITE CHMOD and SITE HELP; other SITE commands are not implemented.
    pub(super) async fn site(&mut self, site: Site) -> Outcome {
        match site {
            Site::Help => Reply::multiline(
                214,
                "The following SITE commands are recognized:",
                [b" CHMOD".to_vec(), b" HELP".to_vec()],
                "Help OK.",
            )
            .into(),
            Site::Chmod { mode, path } => {
                let (_, remote, upstream) = match self.target(&path) {
                    Ok(target) => target,
                    Err(reply) => return reply.into(),
                };
                let attrs = SetAttributes {
                    permissions: Some(mode),
                    ..Default::default()
                };
                match upstream.set_attributes(&remote, &attrs).await {
                    Ok(()) => Reply::new(200, "SITE CHMOD command ok.").into(),
                    Err(e) => self.upstream_failure(&e, Phase::FileAction),
                }
            }
            Site::Other(name) => Reply::new(502, format!("SITE {name} not implemented.")).into(),
        }
    }

    /// ALLO (RFC 959 §4.1.3): nothing to reserve on SFTP, but a client that
    /// announces its size learns now, not after the upload, that it cannot fit.
    pub(super) async fn allo(&mut self, size: Option<u64>) -> Outcome {
        let not_needed = Reply::new(202, "No storage allocation necessary.");
        let Some(size) = size else {
            return not_needed.into();
        };
        let Some(account) = self.account() else {
            return Reply::new(530, "Please log in with USER and PASS first.").into();
        };
        if !account.upstream.capabilities().free_space {
            return not_needed.into();
        }
        let cwd = account.cwd.to_remote(account.root());
        match account.upstream.free_space(&cwd).await {
            Ok(free) if free < size => Reply::new(
                552,
                format!("Insufficient storage space: {size} bytes requested, {free} available."),
            )
            .into(),
            _ => not_needed.into(),
        }
    }

    /// MLST (RFC 3659 §7.2): the facts of one path, on the control channel.
    pub(super) async fn mlst(&mut self, arg: Option<Bytes>) -> Outcome {
        let (path, remote, meta) = match self.stat_target(arg.as_deref().unwrap_or(b".")).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let shown = path.to_bytes();
        let mut line = vec![b' '];
        line.extend(listing::mlsx_facts(
            &shown,
            &meta,
            listing::unique_id(remote.as_bytes()),
            self.mlst_facts,
        ));
        let mut first = b"Listing ".to_vec();
        first.extend_from_slice(&shown);
        Reply::multiline(250, first, [line], "End.").into()
    }

    /// What a listing of `arg` shows: a directory's entries (sorted by name,
    /// or with `streamed` in the server's order as they arrive, the
    /// directory already open so that opening errors come before any 150),
    /// the single entry of a file (as `ls -l file` does), or, when nothing
    /// has that name and its last component is a pattern, the matching
    /// entries of its directory (`NLST *.txt`).
    pub(super) async fn entries_of(
        &self,
        arg: &[u8],
        phase: Phase,
        streamed: bool,
    ) -> Result<Listing, Outcome> {
        let (path, remote, upstream) = self.target(arg).map_err(Outcome::Reply)?;
        let meta = match upstream.stat(&remote).await {
            Ok(meta) => meta,
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    && path.file_name().is_some_and(glob::is_pattern) =>
            {
                return self.matching_entries(arg, &path, &upstream, phase).await;
            }
            Err(e) => return Err(self.upstream_failure(&e, phase)),
        };
        if !meta.is_dir() {
            let name = Bytes::copy_from_slice(path.file_name().unwrap_or(b"/"));
            let entry = DirEntry {
                name,
                metadata: meta,
            };
            let directory = path.parent().to_remote(self.root());
            return Ok(Listing {
                entries: vec![entry],
                stream: None,
                directory,
                shape: ListingShape::File,
                client_prefix: client_directory(arg).to_vec(),
                path,
            });
        }
        let (entries, stream) = if streamed {
            let stream = upstream
                .list_stream(&remote)
                .await
                .map_err(|e| self.upstream_failure(&e, phase))?;
            (Vec::new(), Some(stream))
        } else {
            let mut entries = upstream
                .list(&remote)
                .await
                .map_err(|e| self.upstream_failure(&e, phase))?;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            (entries, None)
        };
        let mut client_prefix = arg.strip_suffix(b"/").unwrap_or(arg).to_vec();
        if !client_prefix.is_empty() && client_prefix != b"." {
            client_prefix.push(b'/');
        } else {
            client_prefix.clear();
        }
        Ok(Listing {
            entries,
            stream,
            directory: remote,
            shape: ListingShape::Directory,
            client_prefix,
            path,
        })
    }

    async fn matching_entries(
        &self,
        arg: &[u8],
        path: &VirtualPath,
        upstream: &SharedUpstream,
        phase: Phase,
    ) -> Result<Listing, Outcome> {
        let pattern = path.file_name().unwrap_or_default();
        let directory = path.parent().to_remote(self.root());
        let mut entries = upstream
            .list(&directory)
            .await
            .map_err(|e| self.upstream_failure(&e, phase))?;
        entries.retain(|entry| glob::matches(pattern, &entry.name));
        if entries.is_empty() {
            return Err(Reply::new(550, "No files found.").into());
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing {
            entries,
            stream: None,
            directory,
            shape: ListingShape::Pattern,
            client_prefix: client_directory(arg).to_vec(),
            path: path.parent(),
        })
    }

    fn root(&self) -> &RemotePath {
        static ROOT: std::sync::OnceLock<RemotePath> = std::sync::OnceLock::new();
        self.account()
            .map(|account| account.root())
            .unwrap_or_else(|| ROOT.get_or_init(|| RemotePath::new(b"/".to_vec())))
    }

    /// STAT path (RFC 959 §4.1.3): a LIST over the control channel.
    pub(super) async fn stat_path(&mut self, arg: &[u8]) -> Outcome {
        let listing = match self.entries_of(arg, Phase::FileAction, false).await {
            Ok(listing) => listing,
            Err(outcome) => return outcome,
        };
        let path = listing.path;
        let now = chrono::Utc::now().timestamp();
        let lines = listing.entries.iter().map(|entry| {
            let mut line = listing::list_line(&entry.name, &entry.metadata, now);
            line.truncate(line.len() - 2);
            line
        });
        let mut first = b"Status of ".to_vec();
        first.extend_from_slice(&path.to_bytes());
        first.push(b':');
        Reply::multiline(213, first, lines.collect::<Vec<_>>(), "End of status.").into()
    }
}
