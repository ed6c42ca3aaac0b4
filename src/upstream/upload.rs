//! Uploads that never leave a half file under the final name.
//!
//! A full upload (STOR) is written to a temporary name in the target
//! directory and renamed over the final name only after the upstream
//! confirmed every byte; any failure removes the temporary file. Partial
//! writes (APPE, REST + STOR) must modify the file in place, so on failure
//! the file is truncated back to the length it had before, and the client
//! can simply retry.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, warn};

use super::{
    ErrorKind, FileKind, RemotePath, Result, SetAttributes, SharedUpstream, UpstreamError,
    WriteMode, WriteStream,
};

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// STOR: replace the file.
    Replace,
    /// APPE: add to the end.
    Append,
    /// REST n + STOR: keep the first n bytes, write from there.
    Resume(u64),
    /// STOU: a new file; fail rather than replace anything.
    Unique,
}

/// How to undo a failed upload.
#[derive(Debug)]
enum Undo {
    RemoveTemporary(RemotePath),
    Truncate(u64),
    RemoveCreated,
    Nothing,
}

/// An upload in progress. Call [`Upload::commit`] or [`Upload::abort`];
/// dropping it undoes the upload in the background.
pub struct Upload {
    upstream: SharedUpstream,
    target: RemotePath,
    stream: Option<Box<dyn WriteStream>>,
    temporary: Option<RemotePath>,
    /// Permissions of the file being replaced, carried over to the new one.
    keep_permissions: Option<u32>,
    /// Whether the final rename may replace an existing file.
    replace: bool,
    undo: Option<Undo>,
}

/// A temporary name beside `name`: hidden, recognisably ours, unique.
pub fn temporary_name(name: &[u8]) -> Vec<u8> {
    // Keep the result well under NAME_MAX (255) whatever the original length.
    let shown = &name[..name.len().min(160)];
    let mut out = Vec::with_capacity(shown.len() + 40);
    out.push(b'.');
    out.extend_from_slice(shown);
    out.extend_from_slice(format!(".{:016x}.ftpbridge-upload", rand::random::<u64>()).as_bytes());
    out
}

impl Upload {
    /// Prepares the upstream side of an upload of `target`.
    pub async fn begin(
        upstream: &SharedUpstream,
        target: &RemotePath,
        kind: UploadKind,
        atomic: bool,
    ) -> Result<Upload> {
        let existing = match upstream.stat(target).await {
            Ok(meta) if meta.kind == FileKind::Directory => {
                return Err(UpstreamError::new(ErrorKind::WrongType)
                    .with_detail("the target is a directory"));
            }
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut upload = Upload {
            upstream: upstream.clone(),
            target: target.clone(),
            stream: None,
            temporary: None,
            keep_permissions: existing.as_ref().and_then(|m| m.permissions),
            replace: kind != UploadKind::Unique,
            undo: None,
        };
        if kind == UploadKind::Unique && existing.is_some() {
            return Err(UpstreamError::new(ErrorKind::AlreadyExists)
                .with_detail("the unique name is taken"));
        }
        let (path, mode, undo) =
            match kind {
                UploadKind::Replace | UploadKind::Unique if atomic => {
                    let (dir, name) = target.split_last().ok_or_else(|| {
                        UpstreamError::new(ErrorKind::WrongType).with_detail("cannot upload to /")
                    })?;
                    let temporary = dir.join(&temporary_name(name));
                    upload.temporary = Some(temporary.clone());
                    (
                        temporary.clone(),
                        WriteMode::CreateNew,
                        Undo::RemoveTemporary(temporary),
                    )
                }
                UploadKind::Replace => (target.clone(), WriteMode::Truncate, Undo::Nothing),
                UploadKind::Unique => (target.clone(), WriteMode::CreateNew, Undo::RemoveCreated),
                UploadKind::Append => match &existing {
                    Some(meta) => (target.clone(), WriteMode::Append, Undo::Truncate(meta.size)),
                    None => (target.clone(), WriteMode::Append, Undo::RemoveCreated),
                },
                UploadKind::Resume(offset) => {
                    let size = existing.as_ref().map(|m| m.size).unwrap_or(0);
                    if offset > size {
                        return Err(UpstreamError::new(ErrorKind::BadOffset).with_detail(format!(
                        "restart offset {offset} is beyond the end of the file ({size} bytes)"
                    )));
                    }
                    (
                        target.clone(),
                        WriteMode::Resume(offset),
                        Undo::Truncate(offset),
                    )
                }
            };
        upload.stream = Some(upstream.open_write(&path, mode).await?);
        upload.undo = Some(undo);
        Ok(upload)
    }

    /// Where the first uploaded byte lands in the file.
    pub fn start_offset(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.start_offset())
    }

    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        match self.stream.as_mut() {
            Some(stream) => stream.write(data).await,
            None => Err(UpstreamError::new(ErrorKind::Failure).with_detail("upload already ended")),
        }
    }

    /// Confirms every byte with the upstream and moves the file into place.
    /// On error the upload has been undone.
    pub async fn commit(mut self) -> Result<u64> {
        let Some(stream) = self.stream.take() else {
            return Err(UpstreamError::new(ErrorKind::Failure).with_detail("upload already ended"));
        };
        let written = match stream.finish().await {
            Ok(written) => written,
            Err(err) => {
                self.undo().await;
                return Err(err);
            }
        };
        if let Some(temporary) = self.temporary.clone() {
            if let Some(mode) = self.keep_permissions {
                let attrs = SetAttributes {
                    permissions: Some(mode),
                    ..Default::default()
                };
                if let Err(e) = self.upstream.set_attributes(&temporary, &attrs).await {
                    debug!(error = %e, "could not carry the old file's permissions over");
                }
            }
            if let Err(err) = self
                .upstream
                .rename(&temporary, &self.target, self.replace)
                .await
            {
                self.undo().await;
                return Err(err);
            }
        }
        self.undo = None;
        Ok(written)
    }

    /// Stops the upload and undoes it.
    pub async fn abort(mut self) {
        if let Some(stream) = self.stream.take() {
            stream.abort().await;
        }
        self.undo().await;
    }

    async fn undo(&mut self) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        run_undo(&self.upstream, &self.target, undo).await;
    }
}

async fn run_undo(upstream: &SharedUpstream, target: &RemotePath, undo: Undo) {
    let result = match &undo {
        Undo::RemoveTemporary(temporary) => upstream.remove_file(temporary).await,
        Undo::Truncate(len) => {
            let attrs = SetAttributes {
                size: Some(*len),
                ..Default::default()
            };
            upstream.set_attributes(target, &attrs).await
        }
        Undo::RemoveCreated => upstream.remove_file(target).await,
        Undo::Nothing => Ok(()),
    };
    match result {
        Ok(()) => debug!(?undo, "upload undone"),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => warn!(?undo, path = %target, error = %e, "could not undo a failed upload"),
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Only reached when neither commit nor abort ran (a cancelled task):
        // undo in the background so no temporary file is left behind.
        let Some(undo) = self.undo.take() else {
            return;
        };
        let stream = self.stream.take();
        let upstream = Arc::clone(&self.upstream);
        let target = self.target.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(stream) = stream {
                    stream.abort().await;
                }
                run_undo(&upstream, &target, undo).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_hidden_unique_and_bounded() {
        let a = temporary_name(b"report.csv");
        let b = temporary_name(b"report.csv");
        assert!(a.starts_with(b".report.csv."));
        assert!(a.ends_with(b".ftpbridge-upload"));
        assert_ne!(a, b);
        assert!(temporary_name(&[b'x'; 255]).len() < 255);
    }
}
