//! Directory listings as READDIR batches arrive.
//!
//! OpenSSH's sftp-server answers each READDIR with the next ~100 entries, so a
//! large directory takes one round trip per hundred names. A few READDIRs
//! stay in flight on the handle: each is answered with the next unread batch
//! (or EOF), whatever order the server processes them in, so the names are
//! all there and none twice, and the round trips overlap.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;

use super::channel::PendingReply;
use super::client::{SftpClient, status_error};
use super::wire::{self, Response};
use super::{FileKind, to_metadata};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};
use crate::upstream::{DirEntry, ListStream, RemotePath};

/// READDIR requests kept in flight on one directory handle.
const READDIRS_IN_FLIGHT: usize = 4;

pub struct SftpListStream {
    client: SftpClient,
    handle: Bytes,
    directory: RemotePath,
    in_flight: VecDeque<PendingReply>,
    at_end: bool,
}

impl SftpListStream {
    pub fn new(client: SftpClient, handle: Bytes, directory: RemotePath) -> Self {
        SftpListStream {
            client,
            handle,
            directory,
            in_flight: VecDeque::with_capacity(READDIRS_IN_FLIGHT),
            at_end: false,
        }
    }

    async fn fill(&mut self) -> Result<()> {
        while !self.at_end && self.in_flight.len() < READDIRS_IN_FLIGHT {
            let reply = self
                .client
                .send_path_request(wire::SSH_FXP_READDIR, &self.handle)
                .await?;
            self.in_flight.push_back(reply);
        }
        Ok(())
    }
}

#[async_trait]
impl ListStream for SftpListStream {
    async fn next_batch(&mut self) -> Result<Option<Vec<DirEntry>>> {
        loop {
            self.fill().await?;
            let Some(reply) = self.in_flight.pop_front() else {
                return Ok(None);
            };
            let names = match reply.wait().await? {
                Response::Name(names) => names,
                Response::Status {
                    code: wire::SSH_FX_EOF,
                    ..
                } => {
                    // Later READDIRs are answered EOF as well.
                    self.at_end = true;
                    self.in_flight.clear();
                    return Ok(None);
                }
                Response::Status { code, message } => return Err(status_error(code, &message)),
                _ => {
                    return Err(UpstreamError::new(ErrorKind::Protocol)
                        .with_detail("unexpected reply to READDIR"));
                }
            };
            let mut batch = Vec::with_capacity(names.len());
            for entry in names {
                if entry.filename.as_ref() == b"." || entry.filename.as_ref() == b".." {
                    continue;
                }
                let mut metadata = to_metadata(&entry.attrs);
                if metadata.kind == FileKind::Symlink {
                    // Show what the link points to, as `ls -lL` would; a
                    // dangling link stays a link. Only links cost a STAT.
                    if let Ok(target) = self
                        .client
                        .stat(self.directory.join(&entry.filename).as_bytes())
                        .await
                    {
                        metadata = to_metadata(&target);
                    }
                }
                batch.push(DirEntry {
                    name: entry.filename,
                    metadata,
                });
            }
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
    }

    async fn close(self: Box<Self>) {
        let SftpListStream { client, handle, .. } = *self;
        super::files::close_quietly(&client, &handle).await;
    }
}
