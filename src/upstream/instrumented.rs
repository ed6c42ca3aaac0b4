//! Latency and error metrics for any upstream, without either backend
//! knowing about metrics: a wrapper that times each operation.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    Capabilities, DirEntry, ErrorKind, ListStream, Metadata, ReadStream, RemotePath, Result,
    SetAttributes, SharedUpstream, Upstream, WriteMode, WriteStream,
};
use crate::obs::metrics::{Metrics, UpstreamErrorLabels, UpstreamOperationLabels};

pub struct Instrumented {
    inner: SharedUpstream,
    upstream: String,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn wrap(inner: SharedUpstream, upstream: &str, metrics: Arc<Metrics>) -> SharedUpstream {
        Arc::new(Instrumented {
            inner,
            upstream: upstream.to_owned(),
            metrics,
        })
    }

    fn observe<T>(&self, operation: &'static str, started: Instant, result: &Result<T>) {
        self.metrics
            .upstream_operation_seconds
            .get_or_create(&UpstreamOperationLabels {
                upstream: self.upstream.clone(),
                operation,
            })
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    upstream: self.upstream.clone(),
                    kind: kind_label(e.kind()),
                })
                .inc();
        }
    }
}

/// The error kind as a metric label.
pub fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::AlreadyExists => "already_exists",
        ErrorKind::DirectoryNotEmpty => "directory_not_empty",
        ErrorKind::WrongType => "wrong_type",
        ErrorKind::BadOffset => "bad_offset",
        ErrorKind::NoSpace => "no_space",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Transient => "transient",
        ErrorKind::Timeout => "timeout",
        ErrorKind::ConnectionLost => "connection_lost",
        ErrorKind::Unreachable => "unreachable",
        ErrorKind::AuthenticationFailed => "authentication_failed",
        ErrorKind::HostKeyRejected => "host_key_rejected",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Failure => "failure",
    }
}

macro_rules! timed {
    ($self:ident, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call.await;
        $self.observe($operation, started, &result);
        result
    }};
}

#[async_trait]
impl Upstream for Instrumented {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn stat(&self, path: &RemotePath) -> Result<Metadata> {
        timed!(self, "stat", self.inner.stat(path))
    }

    async fn list(&self, path: &RemotePath) -> Result<Vec<DirEntry>> {
        timed!(self, "list", self.inner.list(path))
    }

    async fn list_stream(&self, path: &RemotePath) -> Result<Box<dyn ListStream>> {
        // Timed up to the opened directory; the batches follow the client's pace.
        timed!(self, "list", self.inner.list_stream(path))
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<Box<dyn ReadStream>> {
        timed!(self, "open_read", self.inner.open_read(path, offset))
    }

    async fn open_write(&self, path: &RemotePath, mode: WriteMode) -> Result<Box<dyn WriteStream>> {
        timed!(self, "open_write", self.inner.open_write(path, mode))
    }

    async fn create_dir(&self, path: &RemotePath) -> Result<()> {
        timed!(self, "create_dir", self.inner.create_dir(path))
    }

    async fn remove_dir(&self, path: &RemotePath) -> Result<()> {
        timed!(self, "remove_dir", self.inner.remove_dir(path))
    }

    async fn remove_file(&self, path: &RemotePath) -> Result<()> {
        timed!(self, "remove_file", self.inner.remove_file(path))
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath, replace: bool) -> Result<()> {
        timed!(self, "rename", self.inner.rename(from, to, replace))
    }

    async fn set_attributes(&self, path: &RemotePath, attrs: &SetAttributes) -> Result<()> {
        timed!(
            self,
            "set_attributes",
            self.inner.set_attributes(path, attrs)
        )
    }

    async fn free_space(&self, path: &RemotePath) -> Result<u64> {
        timed!(self, "free_space", self.inner.free_space(path))
    }

    async fn close(&self) {
        self.inner.close().await
    }
}
