//! Request multiplexing over one SSH channel running the `sftp` subsystem.
//!
//! SFTP lets a client keep many requests outstanding and match replies by id
//! (draft-ietf-secsh-filexfer-02 §3: "the server may process requests in any
//! order"). Throughput over any link with latency depends on that, so requests
//! are sent without waiting and each caller awaits only its own reply.
//!
//! Two tasks own the channel halves: a writer that sends whole packets in
//! order (so a request whose caller is cancelled is either sent entirely or not
//! at all) and a reader that reassembles packets and hands each reply to the
//! waiter registered under its id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use russh::ChannelMsg;
use russh::client::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::wire::{self, Response, ServerVersion};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};

/// Packets queued for the writer task. Small: back-pressure comes from the
/// SSH window, and the in-flight budget is enforced by the callers.
const OUTGOING_QUEUE: usize = 64;

/// One packet as it goes on the wire: a header and, for WRITE, the file data
/// that follows it (kept separate so the data is never copied into the header).
struct Outgoing {
    header: Bytes,
    payload: Bytes,
}

/// Waiters by request id, plus why the channel closed once it has.
#[derive(Default)]
struct Waiters {
    by_id: HashMap<u32, oneshot::Sender<Response>>,
    closed: Option<ErrorKind>,
}

#[derive(Default)]
struct Shared {
    waiters: Mutex<Waiters>,
    next_id: AtomicU32,
    /// Handles that may be open on the server: counted when OPEN/OPENDIR is
    /// sent, uncounted on an error reply or a successful CLOSE. A request
    /// abandoned midway stays counted, so the channel is never handed to
    /// another session with a handle it cannot know about.
    open_handles: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A poisoned lock only means another task panicked while holding it;
        // the map itself is still consistent.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, reason: ErrorKind) {
        let mut waiters = self.lock();
        waiters.closed.get_or_insert(reason);
        // Dropping the senders wakes every waiter with an error.
        waiters.by_id.clear();
    }

    fn closed_reason(&self) -> ErrorKind {
        self.lock().closed.unwrap_or(ErrorKind::ConnectionLost)
    }
}

/// A cloneable handle to one SFTP session.
#[derive(Clone)]
pub struct SftpChannel {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Outgoing>,
    version: Arc<ServerVersion>,
    request_timeout: Duration,
}

/// A request that has been queued; await [`PendingReply::wait`] for its reply.
/// Dropping it forgets the request (a late reply is discarded).
pub struct PendingReply {
    id: u32,
    shared: Arc<Shared>,
    rx: oneshot::Receiver<Response>,
    timeout: Duration,
}

impl PendingReply {
    pub async fn wait(mut self) -> Result<Response> {
        match tokio::time::timeout(self.timeout, &mut self.rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(UpstreamError::new(self.shared.closed_reason())),
            Err(_) => Err(UpstreamError::new(ErrorKind::Timeout)
                .with_detail(format!("no SFTP reply within {}s", self.timeout.as_secs()))),
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        self.shared.lock().by_id.remove(&self.id);
    }
}

impl SftpChannel {
    /// Runs the SFTP version exchange on a channel whose `sftp` subsystem has
    /// been started, then spawns the reader and writer tasks.
    pub async fn start(
        mut read_half: ChannelReadHalf,
        write_half: ChannelWriteHalf<Msg>,
        request_timeout: Duration,
    ) -> Result<Self> {
        write_half
            .data_bytes(wire::init_packet())
            .await
            .map_err(|e| UpstreamError::new(ErrorKind::ConnectionLost).with_source(e))?;
        let mut buf = BytesMut::new();
        let version = tokio::time::timeout(request_timeout, async {
            loop {
                if let Some(body) = wire::split_packet(&mut buf).map_err(protocol_error)? {
                    return wire::parse_version(body).map_err(protocol_error);
                }
                match read_half.wait().await {
                    Some(ChannelMsg::Data { data }) => buf.extend_from_slice(&data),
                    Some(ChannelMsg::ExtendedData { .. }) => {}
                    Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                        return Err(UpstreamError::new(ErrorKind::ConnectionLost)
                            .with_detail("the server closed the sftp channel during INIT"));
                    }
                    Some(_) => {}
                }
            }
        })
        .await
        .map_err(|_| {
            UpstreamError::new(ErrorKind::Timeout).with_detail("no SFTP version reply")
        })??;
        if version.version < wire::SFTP_VERSION {
            return Err(UpstreamError::new(ErrorKind::Protocol).with_detail(format!(
                "server speaks SFTP version {}, version 3 is required",
                version.version
            )));
        }

        let shared = Arc::new(Shared::default());
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        tokio::spawn(write_loop(write_half, outgoing_rx, shared.clone()));
        tokio::spawn(read_loop(read_half, buf, shared.clone()));
        Ok(SftpChannel {
            shared,
            outgoing,
            version: Arc::new(version),
            request_timeout,
        })
    }

    pub fn version(&self) -> &ServerVersion {
        &self.version
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Whether another session could take this channel over: open, no
    /// request outstanding, no file handle open, and no other handle to it left (the reader and
    /// writer tasks hold one each), so nothing of the old session can send
    /// on it any more (a late CLOSE of a handle number the server reuses).
    pub fn is_reusable(&self) -> bool {
        const TASKS: usize = 2;
        let waiters = self.shared.lock();
        waiters.closed.is_none()
            && waiters.by_id.is_empty()
            && self.shared.open_handles.load(Ordering::Acquire) == 0
            && Arc::strong_count(&self.shared) == 1 + TASKS
    }

    /// An OPEN or OPENDIR is about to be sent.
    pub fn handle_opening(&self) {
        self.shared.open_handles.fetch_add(1, Ordering::AcqRel);
    }

    /// A handle was closed, or an open was refused.
    pub fn handle_gone(&self) {
        let _ = self
            .shared
            .open_handles
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Queues a request built by `build(id)` (header, trailing payload) and
    /// returns without waiting for its reply, so callers can pipeline.
    pub async fn send(&self, build: impl FnOnce(u32) -> (Bytes, Bytes)) -> Result<PendingReply> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.shared.lock();
            if let Some(reason) = waiters.closed {
                return Err(UpstreamError::new(reason));
            }
            waiters.by_id.insert(id, tx);
        }
        // Constructed before the await so that cancellation removes the waiter.
        let pending = PendingReply {
            id,
            shared: self.shared.clone(),
            rx,
            timeout: self.request_timeout,
        };
        let (header, payload) = build(id);
        self.outgoing
            .send(Outgoing { header, payload })
            .await
            .map_err(|_| UpstreamError::new(self.shared.closed_reason()))?;
        Ok(pending)
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, build: impl FnOnce(u32) -> Bytes) -> Result<Response> {
        self.send(|id| (build(id), Bytes::new()))
            .await?
            .wait()
            .await
    }

    /// Stops both tasks; outstanding requests fail with `ConnectionLost`.
    pub fn shutdown(&self) {
        self.shared.close(ErrorKind::ConnectionLost);
    }
}

fn protocol_error(e: wire::WireError) -> UpstreamError {
    UpstreamError::new(ErrorKind::Protocol).with_source(e)
}

async fn write_loop(
    write_half: ChannelWriteHalf<Msg>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) {
    while let Some(packet) = outgoing.recv().await {
        let mut result = write_half.data_bytes(packet.header).await;
        if result.is_ok() && !packet.payload.is_empty() {
            result = write_half.data_bytes(packet.payload).await;
        }
        if let Err(e) = result {
            debug!(error = %e, "sftp channel write failed");
            shared.close(ErrorKind::ConnectionLost);
            return;
        }
    }
    // Every handle is gone: end the subsystem politely.
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
}

async fn read_loop(mut read_half: ChannelReadHalf, mut buf: BytesMut, shared: Arc<Shared>) {
    loop {
        loop {
            match wire::split_packet(&mut buf) {
                Ok(Some(body)) => match wire::parse_response(body) {
                    Ok((id, response)) => deliver(&shared, id, response),
                    Err(e) => {
                        warn!(error = %e, "malformed SFTP reply; closing the upstream session");
                        shared.close(ErrorKind::Protocol);
                        return;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "malformed SFTP packet; closing the upstream session");
                    shared.close(ErrorKind::Protocol);
                    return;
                }
            }
        }
        if shared.lock().closed.is_some() {
            return;
        }
        match read_half.wait().await {
            Some(ChannelMsg::Data { data }) => buf.extend_from_slice(&data),
            // stderr of the subsystem: nothing to do with replies.
            Some(ChannelMsg::ExtendedData { .. }) => {}
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => {
                shared.close(ErrorKind::ConnectionLost);
                return;
            }
            Some(_) => {}
        }
    }
}

fn deliver(shared: &Shared, id: u32, response: Response) {
    let waiter = shared.lock().by_id.remove(&id);
    match waiter {
        // The caller may have gone away (cancelled transfer); that is fine.
        Some(tx) => {
            let _ = tx.send(response);
        }
        None => debug!(id, "SFTP reply for a request nobody waits for"),
    }
}
