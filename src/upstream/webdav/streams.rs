//! Downloads (GET bodies) and uploads (streamed PUT bodies).
//!
//! Both are constant in memory whatever the file size: a download hands
//! each body chunk on as it arrives; an upload passes chunks through a
//! bounded channel into the request body, so a slow server slows the FTP
//! client down instead of filling memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::client::{BoxError, DavClient};
use super::status::{self, Request};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};
use crate::upstream::{ReadStream, WriteStream};

/// Chunks queued between the FTP data connection and the PUT body. With
/// the FTP layer's 256 KiB chunks this is at most about 1 MiB per upload.
const UPLOAD_QUEUE: usize = 4;

/// A GET response body, from the requested offset on.
pub struct DavReadStream {
    client: DavClient,
    body: Incoming,
    /// Bytes still to drop: a server that ignored our `Range` sent the file
    /// from its start, and the client must get it from the offset.
    skip: u64,
}

impl DavReadStream {
    pub fn new(client: DavClient, body: Incoming, skip: u64) -> Self {
        DavReadStream { client, body, skip }
    }
}

#[async_trait]
impl ReadStream for DavReadStream {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(mut chunk) = self.client.next_chunk(&mut self.body).await? else {
                return Ok(None);
            };
            if self.skip > 0 {
                let len = chunk.len() as u64;
                if len <= self.skip {
                    self.skip -= len;
                    continue;
                }
                // `skip < len`, so it fits in usize.
                chunk = chunk.slice(self.skip as usize..);
                self.skip = 0;
            }
            return Ok(Some(chunk));
        }
    }

    async fn close(self: Box<Self>) {
        // Dropping an unfinished body closes its connection (HTTP/1.1) or
        // resets its stream (HTTP/2); nothing is owed to the server.
    }
}

/// What the upload side puts into the PUT body.
pub enum Piece {
    Data(Bytes),
    /// The upload is complete: end the body normally.
    End,
}

/// The PUT request body. It ends normally only after [`Piece::End`]; if
/// the sending side goes away without it (abort, a dropped transfer) the
/// body fails, so hyper abandons the request and the server never takes a
/// truncated upload for a complete one.
pub struct UploadBody {
    queue: mpsc::Receiver<Piece>,
    ended: bool,
}

impl hyper::body::Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.queue.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(Some(Err("the upload was abandoned".into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown: FTP does not announce sizes, so HTTP/1.1 sends it chunked.
        SizeHint::default()
    }
}

/// A new upload body and the sender that feeds it.
pub fn upload_body() -> (mpsc::Sender<Piece>, UploadBody) {
    let (tx, rx) = mpsc::channel(UPLOAD_QUEUE);
    (
        tx,
        UploadBody {
            queue: rx,
            ended: false,
        },
    )
}

/// A PUT in progress.
pub struct DavWriteStream {
    client: DavClient,
    url: String,
    queue: Option<mpsc::Sender<Piece>>,
    /// The request, running in its own task so the body is pulled while
    /// the FTP side is still producing it.
    response: JoinHandle<Result<http::Response<Incoming>>>,
    written: u64,
}

impl DavWriteStream {
    pub fn new(
        client: DavClient,
        url: String,
        queue: mpsc::Sender<Piece>,
        response: JoinHandle<Result<http::Response<Incoming>>>,
    ) -> Self {
        DavWriteStream {
            client,
            url,
            queue: Some(queue),
            response,
            written: 0,
        }
    }

    async fn push(&mut self, piece: Piece) -> Result<()> {
        let Some(queue) = self.queue.as_ref() else {
            return Err(UpstreamError::new(ErrorKind::Failure).with_detail("upload already ended"));
        };
        let limit = self.client.timeouts().request;
        match tokio::time::timeout(limit, queue.send(piece)).await {
            Ok(Ok(())) => Ok(()),
            // The body is gone: the server answered (or the connection
            // failed) before the upload was complete. Its answer says why.
            Ok(Err(_)) => Err(self.early_end().await),
            Err(_) => Err(UpstreamError::new(ErrorKind::Timeout).with_detail(format!(
                "PUT {}: the server accepted no data for {limit:?}",
                self.url
            ))),
        }
    }

    /// The reason a PUT ended before its body did.
    async fn early_end(&mut self) -> UpstreamError {
        self.queue = None;
        let limit = self.client.timeouts().request;
        match tokio::time::timeout(limit, &mut self.response).await {
            Ok(Ok(Ok(response))) if !response.status().is_success() => {
                status::error(response.status(), Request::Write, "PUT", &self.url)
            }
            Ok(Ok(Ok(response))) => UpstreamError::new(ErrorKind::Protocol).with_detail(format!(
                "PUT {}: the server answered {} before the upload was complete",
                self.url,
                response.status()
            )),
            Ok(Ok(Err(err))) => err,
            Ok(Err(join)) => UpstreamError::new(ErrorKind::Failure).with_source(join),
            Err(_) => UpstreamError::new(ErrorKind::Timeout)
                .with_detail(format!("PUT {}: no answer after the body ended", self.url)),
        }
    }
}

#[async_trait]
impl WriteStream for DavWriteStream {
    fn start_offset(&self) -> u64 {
        0
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as u64;
        self.push(Piece::Data(data)).await?;
        self.written += len;
        Ok(())
    }

    /// Ends the body and returns only once the server answered 2xx: the
    /// FTP layer sends its 226 after this.
    async fn finish(mut self: Box<Self>) -> Result<u64> {
        self.push(Piece::End).await?;
        self.queue = None;
        let limit = self.client.timeouts().request;
        let response = match tokio::time::timeout(limit, &mut self.response).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) => {
                return Err(UpstreamError::new(ErrorKind::Failure).with_source(join));
            }
            Err(_) => {
                self.response.abort();
                return Err(UpstreamError::new(ErrorKind::Timeout).with_detail(format!(
                    "PUT {}: no answer within {limit:?} after the last byte",
                    self.url
                )));
            }
        };
        let status = response.status();
        self.client.discard(response.into_body()).await;
        if !status.is_success() {
            return Err(status::error(status, Request::Write, "PUT", &self.url));
        }
        if status == StatusCode::OK
            || status == StatusCode::CREATED
            || status == StatusCode::NO_CONTENT
        {
            Ok(self.written)
        } else {
            // 202 Accepted and friends: stored later, maybe never.
            Err(UpstreamError::new(ErrorKind::Failure).with_detail(format!(
                "PUT {}: {status} does not confirm the upload",
                self.url
            )))
        }
    }

    async fn abort(mut self: Box<Self>) {
        // Without `Piece::End` the body fails and hyper drops the request.
        self.queue = None;
        self.response.abort();
        debug!(url = %self.url, "upload aborted");
    }
}
