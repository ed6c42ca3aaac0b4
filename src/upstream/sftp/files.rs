//! Pipelined file transfers over SFTP.
//!
//! A one-request-at-a-time loop moves one chunk per round trip; OpenSSH's
//! `sftp` keeps 64 requests outstanding for that reason. Both streams here keep
//! a window of requests in flight and consume replies strictly in file order.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::debug;

use super::channel::PendingReply;
use super::client::{SftpClient, check_write_reply, status_error};
use super::wire::{self, Response};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};
use crate::upstream::{ReadStream, RemotePath, WriteStream};

/// How long closing a handle may take when we are abandoning it anyway.
const ABANDON_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads start with this many requests in flight and double on every full
/// reply, so small files cost few wasted requests and big ones reach the full
/// window within a few round trips.
const INITIAL_READ_WINDOW: usize = 4;

/// Sizes that bound a transfer's memory: at most `requests_in_flight ×
/// request_size` bytes are outstanding per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSizes {
    pub read_request: u32,
    pub write_request: u32,
    pub requests_in_flight: usize,
}

struct InFlightRead {
    offset: u64,
    len: u32,
    reply: PendingReply,
}

/// A download: READ requests pipelined ahead of the consumer.
pub struct SftpReadStream {
    client: SftpClient,
    handle: Bytes,
    next_offset: u64,
    in_flight: VecDeque<InFlightRead>,
    window: usize,
    sizes: TransferSizes,
    /// Set once the server said EOF: nothing more is requested.
    at_eof: bool,
}

impl SftpReadStream {
    pub fn new(client: SftpClient, handle: Bytes, offset: u64, sizes: TransferSizes) -> Self {
        SftpReadStream {
            client,
            handle,
            next_offset: offset,
            in_flight: VecDeque::with_capacity(sizes.requests_in_flight),
            window: INITIAL_READ_WINDOW.min(sizes.requests_in_flight),
            sizes,
            at_eof: false,
        }
    }

    async fn fill_window(&mut self) -> Result<()> {
        while !self.at_eof && self.in_flight.len() < self.window {
            let len = self.sizes.read_request;
            let reply = self
                .client
                .send_read(&self.handle, self.next_offset, len)
                .await?;
            self.in_flight.push_back(InFlightRead {
                offset: self.next_offset,
                len,
                reply,
            });
            self.next_offset += u64::from(len);
        }
        Ok(())
    }
}

#[async_trait]
impl ReadStream for SftpReadStream {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            self.fill_window().await?;
            let Some(request) = self.in_flight.pop_front() else {
                return Ok(None);
            };
            match request.reply.wait().await? {
                Response::Data(data) if data.len() > request.len as usize => {
                    return Err(UpstreamError::new(ErrorKind::Protocol)
                        .with_detail("server returned more data than requested"));
                }
                Response::Data(data) if data.is_empty() => {
                    // Not an EOF status, but no progress either: ask again.
                    let reply = self
                        .client
                        .send_read(&self.handle, request.offset, request.len)
                        .await?;
                    self.in_flight.push_front(InFlightRead { reply, ..request });
                }
                Response::Data(data) => {
                    let got = data.len() as u32;
                    if got < request.len {
                        // A short read (end of file, or a server cap): the gap must
                        // come next, before the replies already in flight.
                        let offset = request.offset + u64::from(got);
                        let len = request.len - got;
                        let reply = self.client.send_read(&self.handle, offset, len).await?;
                        self.in_flight
                            .push_front(InFlightRead { offset, len, reply });
                    } else if self.window < self.sizes.requests_in_flight {
                        self.window = (self.window * 2).min(self.sizes.requests_in_flight);
                    }
                    return Ok(Some(data));
                }
                Response::Status {
                    code: wire::SSH_FX_EOF,
                    ..
                } => {
                    // Every later request is past the end as well.
                    self.at_eof = true;
                    self.in_flight.clear();
                    return Ok(None);
                }
                Response::Status { code, message } => return Err(status_error(code, &message)),
                _ => {
                    return Err(UpstreamError::new(ErrorKind::Protocol)
                        .with_detail("unexpected reply to READ"));
                }
            }
        }
    }

    async fn close(self: Box<Self>) {
        let SftpReadStream { client, handle, .. } = *self;
        // Outstanding READs are simply forgotten; CLOSE is ordered after them.
        close_quietly(&client, &handle).await;
    }
}

/// An upload: WRITE requests sent without waiting, acknowledged in order.
pub struct SftpWriteStream {
    client: SftpClient,
    handle: Bytes,
    path: RemotePath,
    start: u64,
    offset: u64,
    in_flight: VecDeque<PendingReply>,
    sizes: TransferSizes,
    fsync: bool,
}

impl SftpWriteStream {
    pub fn new(
        client: SftpClient,
        handle: Bytes,
        path: RemotePath,
        start: u64,
        sizes: TransferSizes,
        fsync: bool,
    ) -> Self {
        SftpWriteStream {
            client,
            handle,
            path,
            start,
            offset: start,
            in_flight: VecDeque::with_capacity(sizes.requests_in_flight),
            sizes,
            fsync,
        }
    }

    async fn await_oldest(&mut self) -> Result<()> {
        if let Some(reply) = self.in_flight.pop_front() {
            let outcome = reply.wait().await.and_then(check_write_reply);
            if let Err(err) = outcome {
                return Err(self.explain_write_failure(err).await);
            }
        }
        Ok(())
    }

    /// OpenSSH answers ENOSPC and EDQUOT with a bare SSH_FX_FAILURE; ask the
    /// server for free space so the client gets "storage full" rather than a
    /// generic failure (crates.md §2, measured on OpenSSH 9.2).
    async fn explain_write_failure(&self, err: UpstreamError) -> UpstreamError {
        if err.kind() != ErrorKind::Failure || !self.client.supports("statvfs@openssh.com") {
            return err;
        }
        let dir = self
            .path
            .split_last()
            .map(|(parent, _)| parent)
            .unwrap_or_else(|| self.path.clone());
        match self.client.statvfs(dir.as_bytes()).await {
            Ok(vfs) if vfs.available_bytes() <= low_space_threshold(self.sizes) => {
                UpstreamError::new(ErrorKind::NoSpace).with_detail(format!(
                    "write failed with {} bytes left on the upstream filesystem",
                    vfs.available_bytes()
                ))
            }
            _ => err,
        }
    }
}

/// Free space at or below which a failed write is blamed on a full disk: what
/// one window of writes could have needed, and at least 1 MiB.
fn low_space_threshold(sizes: TransferSizes) -> u64 {
    let window = sizes.write_request as u64 * sizes.requests_in_flight as u64;
    window.max(1024 * 1024)
}

#[async_trait]
impl WriteStream for SftpWriteStream {
    fn start_offset(&self) -> u64 {
        self.start
    }

    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        while !data.is_empty() {
            if self.in_flight.len() >= self.sizes.requests_in_flight {
                self.await_oldest().await?;
            }
            let len = data.len().min(self.sizes.write_request as usize);
            let chunk = data.split_to(len);
            let reply = self
                .client
                .send_write(&self.handle, self.offset, chunk)
                .await?;
            self.in_flight.push_back(reply);
            self.offset += len as u64;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        while !self.in_flight.is_empty() {
            if let Err(err) = self.await_oldest().await {
                close_quietly(&self.client, &self.handle).await;
                return Err(err);
            }
        }
        if self.fsync
            && self.client.supports("fsync@openssh.com")
            && let Err(err) = self.client.fsync(&self.handle).await
        {
            close_quietly(&self.client, &self.handle).await;
            return Err(err);
        }
        // CLOSE's status is the server's last word on the data (a deferred
        // write error surfaces here), so it must succeed before any 226.
        self.client.close(&self.handle).await?;
        Ok(self.offset - self.start)
    }

    async fn abort(self: Box<Self>) {
        let SftpWriteStream { client, handle, .. } = *self;
        close_quietly(&client, &handle).await;
    }
}

pub(super) async fn close_quietly(client: &SftpClient, handle: &[u8]) {
    match tokio::time::timeout(ABANDON_CLOSE_TIMEOUT, client.close(handle)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "closing an abandoned SFTP handle failed"),
        Err(_) => debug!("closing an abandoned SFTP handle timed out"),
    }
}
