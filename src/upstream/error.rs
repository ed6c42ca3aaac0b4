//! The one error vocabulary of the upstream layer.
//!
//! Every backend maps its own failures (SFTP status codes, SSH errors, HTTP
//! statuses) to an [`ErrorKind`] that says what the failure *means* for an FTP
//! client. The FTP layer maps kinds to reply codes in exactly one table
//! (`ftp::reply_map`), so no backend ever chooses an FTP reply itself.

use std::fmt;

/// What went wrong, in terms an FTP client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The path does not exist.
    NotFound,
    /// The upstream refused the operation for this account.
    PermissionDenied,
    /// The target already exists (MKD of an existing directory, exclusive create).
    AlreadyExists,
    /// A directory that must be empty is not.
    DirectoryNotEmpty,
    /// The operation needs a directory and the path is something else, or the reverse.
    WrongType,
    /// A restart offset beyond the end of the file.
    BadOffset,
    /// The upstream is out of space or the account is over its quota.
    NoSpace,
    /// The upstream does not implement this operation.
    Unsupported,
    /// A temporary condition (a lock, a busy resource): retrying later may work.
    Transient,
    /// The upstream did not answer in time.
    Timeout,
    /// The connection to the upstream broke; this upstream session is unusable.
    ConnectionLost,
    /// The upstream could not be reached at all (DNS, TCP, SSH handshake).
    Unreachable,
    /// The upstream refused the credentials.
    AuthenticationFailed,
    /// The upstream presented a host key that is not pinned.
    HostKeyRejected,
    /// The upstream sent something that violates its protocol.
    Protocol,
    /// Any other failure the upstream reported.
    Failure,
}

impl ErrorKind {
    /// True when the upstream session cannot be used any more after this error.
    pub fn is_fatal_to_session(self) -> bool {
        matches!(self, ErrorKind::ConnectionLost | ErrorKind::Protocol)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ErrorKind::NotFound => "no such file or directory",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::DirectoryNotEmpty => "directory not empty",
            ErrorKind::WrongType => "wrong file type",
            ErrorKind::BadOffset => "restart offset beyond the end of the file",
            ErrorKind::NoSpace => "no space left on upstream storage",
            ErrorKind::Unsupported => "operation not supported by the upstream",
            ErrorKind::Transient => "upstream temporarily unavailable",
            ErrorKind::Timeout => "upstream timed out",
            ErrorKind::ConnectionLost => "connection to the upstream lost",
            ErrorKind::Unreachable => "upstream unreachable",
            ErrorKind::AuthenticationFailed => "upstream refused the credentials",
            ErrorKind::HostKeyRejected => "upstream host key not trusted",
            ErrorKind::Protocol => "upstream protocol error",
            ErrorKind::Failure => "upstream failure",
        };
        f.write_str(text)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An upstream failure: its meaning plus whatever the backend knows about the cause.
#[derive(Debug)]
pub struct UpstreamError {
    kind: ErrorKind,
    detail: Option<String>,
    /// Text written for the FTP client (the detail may hold URLs or host
    /// names that are not the client's business, so it stays in the log).
    hint: Option<String>,
    source: Option<BoxError>,
}

impl UpstreamError {
    pub fn new(kind: ErrorKind) -> Self {
        UpstreamError {
            kind,
            detail: None,
            hint: None,
            source: None,
        }
    }

    /// Attaches a human-readable detail (for logs; never shown with secrets).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a sentence the FTP client sees after the reply's standard text.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl From<ErrorKind> for UpstreamError {
    fn from(kind: ErrorKind) -> Self {
        UpstreamError::new(kind)
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T, E = UpstreamError> = std::result::Result<T, E>;
