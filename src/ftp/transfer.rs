//! The copy loops between a data connection and the upstream.
//!
//! Every byte of every transfer passes through here, in chunks of bounded
//! size, so memory per transfer is constant whatever the file size. The loops
//! never flush per chunk (crates.md §2: `tokio::io::copy` would make SFTP
//! drain its whole write pipeline on every stall), and they stop promptly
//! when the control channel cancels them (ABOR, shutdown). Under a rate
//! limit, bytes move in small pieces, each after its buckets let it pass:
//! a limit delays a transfer, it never drops data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::ascii::{FromNetwork, ToNetwork};
use crate::limit::TransferThrottle;
use crate::upstream::upload::Upload;
use crate::upstream::{ReadStream, UpstreamError};

/// Bytes read from a data connection before they are handed to the upstream.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("data connection failed: {0}")]
    DataConnection(std::io::Error),
    #[error("data connection idle for {0:?}")]
    DataTimeout(Duration),
    #[error("upstream: {0}")]
    Upstream(UpstreamError),
    #[error("aborted by the client")]
    Aborted,
}

/// What a running transfer shares with its session.
#[derive(Clone)]
pub struct TransferControl {
    pub cancel: CancellationToken,
    /// Bytes moved so far (for STAT during a transfer).
    pub progress: Arc<AtomicU64>,
    pub idle_timeout: Duration,
}

impl TransferControl {
    pub fn new(idle_timeout: Duration) -> Self {
        TransferControl {
            cancel: CancellationToken::new(),
            progress: Arc::new(AtomicU64::new(0)),
            idle_timeout,
        }
    }

    /// Runs one step unless cancelled; data-connection steps are also bounded
    /// by the idle timeout.
    async fn step<T>(
        &self,
        future: impl Future<Output = Result<T, TransferError>>,
    ) -> Result<T, TransferError> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(TransferError::Aborted),
            result = future => result,
        }
    }

    async fn data_io<T>(
        &self,
        future: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, TransferError> {
        let timeout = self.idle_timeout;
        self.step(async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(TransferError::DataConnection(e)),
                Err(_) => Err(TransferError::DataTimeout(timeout)),
            }
        })
        .await
    }

    fn advance(&self, n: usize) {
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The rate limits a transfer passes, if any apply to its session.
pub type Throttle = Option<TransferThrottle>;

/// Writes `bytes` to the client, piece by piece when a rate limit applies.
async fn write_shaped<W>(
    data: &mut W,
    bytes: &[u8],
    control: &TransferControl,
    throttle: &mut Throttle,
) -> Result<(), TransferError>
where
    W: AsyncWrite + Unpin,
{
    let Some(throttle) = throttle else {
        control.data_io(data.write_all(bytes)).await?;
        control.advance(bytes.len());
        return Ok(());
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = throttle
            .piece()
            .map_or(rest.len(), |piece| piece.min(rest.len()));
        let (piece, tail) = rest.split_at(n);
        control
            .step(async {
                throttle.pass(n).await;
                Ok(())
            })
            .await?;
        control.data_io(data.write_all(piece)).await?;
        control.advance(n);
        rest = tail;
    }
    Ok(())
}

/// Sends bytes already in memory (a listing). Returns the bytes sent.
pub async fn send_bytes<W>(
    data: &mut W,
    bytes: Bytes,
    control: &TransferControl,
    throttle: &mut Throttle,
) -> Result<u64, TransferError>
where
    W: AsyncWrite + Unpin,
{
    write_shaped(data, &bytes, control, throttle).await?;
    control.data_io(data.shutdown()).await?;
    Ok(bytes.len() as u64)
}

/// RETR: upstream → client. Ends with a shutdown of the data connection, so
/// the client has seen end-of-file before the 226.
pub async fn download<W>(
    data: &mut W,
    source: &mut dyn ReadStream,
    ascii: bool,
    control: &TransferControl,
    throttle: &mut Throttle,
) -> Result<u64, TransferError>
where
    W: AsyncWrite + Unpin,
{
    let mut converter = ascii.then(ToNetwork::default);
    let mut sent = 0u64;
    loop {
        let chunk = control
            .step(async { source.next_chunk().await.map_err(TransferError::Upstream) })
            .await?;
        let Some(chunk) = chunk else {
            break;
        };
        let chunk = match converter.as_mut() {
            Some(converter) => converter.convert(chunk),
            None => chunk,
        };
        write_shaped(data, &chunk, control, throttle).await?;
        sent += chunk.len() as u64;
    }
    control.data_io(data.shutdown()).await?;
    Ok(sent)
}

/// STOR/APPE: client → upstream, until the client closes the data
/// connection. Returns the bytes received from the client; the caller still
/// has to commit the upload.
pub async fn upload<D>(
    data: &mut D,
    sink: &mut Upload,
    ascii: bool,
    control: &TransferControl,
    throttle: &mut Throttle,
) -> Result<u64, TransferError>
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut converter = ascii.then(FromNetwork::default);
    let mut received = 0u64;
    let mut buf = BytesMut::with_capacity(UPLOAD_CHUNK);
    loop {
        buf.reserve(UPLOAD_CHUNK);
        let piece = throttle.as_mut().and_then(TransferThrottle::piece);
        let n = match piece {
            // Read a whole piece, no more, then wait for the limit: the wait
            // holds the client back through TCP flow control. Whole pieces
            // keep the sessions sharing a bucket fair, as each turn then
            // carries the same number of bytes.
            Some(piece) => {
                let mut n = 0;
                while n < piece {
                    let got = control
                        .data_io((&mut *data).take((piece - n) as u64).read_buf(&mut buf))
                        .await?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                if let Some(throttle) = throttle.as_mut() {
                    control
                        .step(async {
                            throttle.pass(n).await;
                            Ok(())
                        })
                        .await?;
                }
                n
            }
            None => control.data_io(data.read_buf(&mut buf)).await?,
        };
        let at_end = n == 0;
        received += n as u64;
        control.advance(n);
        // Hand over full chunks; keep reading while a chunk is still small.
        if buf.len() >= UPLOAD_CHUNK / 2 || (at_end && !buf.is_empty()) {
            let chunk = buf.split().freeze();
            let chunk = match converter.as_mut() {
                Some(converter) => converter.convert(&chunk),
                None => chunk,
            };
            write_upstream(sink, chunk, control).await?;
        }
        if at_end {
            break;
        }
    }
    if let Some(mut converter) = converter {
        let tail = converter.finish();
        if !tail.is_empty() {
            write_upstream(sink, tail, control).await?;
        }
    }
    // Close our side too. Under TLS this answers the client's close_notify
    // with ours: clients that shut TLS down both ways (Python's ftplib
    // `unwrap()`) wait for it before they read the 226. A client that has
    // already gone away makes this fail, which changes nothing for the upload.
    let _ = control.data_io(data.shutdown()).await;
    Ok(received)
}

async fn write_upstream(
    sink: &mut Upload,
    chunk: Bytes,
    control: &TransferControl,
) -> Result<(), TransferError> {
    if chunk.is_empty() {
        return Ok(());
    }
    control
        .step(async { sink.write(chunk).await.map_err(TransferError::Upstream) })
        .await
}
