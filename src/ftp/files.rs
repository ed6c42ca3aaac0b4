//! File and directory commands on the control channel: CWD/CDUP, MKD, RMD,
//! DELE, RNFR/RNTO (RFC 959 §4.1), SIZE, MDTM, MLST (RFC 3659), STAT path.

use bytes::Bytes;

use super::listing;
use super::path::VirtualPath;
use super::reply::{Reply, quote_path};
use super::reply_map::Phase;
use super::session::{Outcome, Session};
use crate::upstream::{DirEntry, FileKind, Metadata, RemotePath};

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

    /// MDTM (RFC 3659 §3): modification time as YYYYMMDDHHMMSS, UTC.
    pub(super) async fn mdtm(&mut self, arg: &[u8]) -> Outcome {
        match self.stat_target(arg).await {
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
        ));
        let mut first = b"Listing ".to_vec();
        first.extend_from_slice(&shown);
        Reply::multiline(250, first, [line], "End.").into()
    }

    /// What a listing of `arg` shows: a directory's entries sorted by name,
    /// or the single entry of a file (as `ls -l file` does). The bool says
    /// whether `arg` is a directory.
    pub(super) async fn entries_of(
        &self,
        arg: &[u8],
        phase: Phase,
    ) -> Result<(VirtualPath, RemotePath, Vec<DirEntry>, bool), Outcome> {
        let (path, remote, upstream) = self.target(arg).map_err(Outcome::Reply)?;
        let meta = upstream
            .stat(&remote)
            .await
            .map_err(|e| self.upstream_failure(&e, phase))?;
        if !meta.is_dir() {
            let name = Bytes::copy_from_slice(path.file_name().unwrap_or(b"/"));
            let entry = DirEntry {
                name,
                metadata: meta,
            };
            return Ok((path, remote, vec![entry], false));
        }
        let mut entries = upstream
            .list(&remote)
            .await
            .map_err(|e| self.upstream_failure(&e, phase))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((path, remote, entries, true))
    }

    /// STAT path (RFC 959 §4.1.3): a LIST over the control channel.
    pub(super) async fn stat_path(&mut self, arg: &[u8]) -> Outcome {
        let (path, _, entries, _) = match self.entries_of(arg, Phase::FileAction).await {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        let now = chrono::Utc::now().timestamp();
        let lines = entries.iter().map(|entry| {
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
