//! The one table from upstream error kinds to FTP replies.
//!
//! The same kind can deserve different codes depending on when it happens:
//! RFC 959 §5.4 lists 550 (not 451) for MKD/RMD/CWD failures, and 426 for a
//! transfer cut off after its 150. `Phase` carries that distinction.

use super::reply::Reply;
use crate::upstream::{ErrorKind, UpstreamError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A file action on the control channel (CWD, MKD, DELE, SIZE, RNTO, …).
    FileAction,
    /// Preparing a transfer, before the 150 reply.
    Opening,
    /// A transfer after its 150 reply.
    Transfer,
}

/// The reply for `err`, and whether the session must end after it because
/// its upstream session is unusable.
pub fn upstream_reply(err: &UpstreamError, phase: Phase) -> (Reply, bool) {
    use ErrorKind::*;
    let kind = err.kind();
    let (code, text) = match (kind, phase) {
        (NotFound, _) => (550, "No such file or directory."),
        (PermissionDenied, _) => (550, "Permission denied."),
        (AlreadyExists, _) => (550, "File or directory already exists."),
        (DirectoryNotEmpty, _) => (550, "Directory not empty."),
        (WrongType, _) => (550, "Not a plain file or directory as required."),
        // RFC 3659 §5.5: an impossible restart point is 554.
        (BadOffset, _) => (554, "Requested action not taken: invalid REST parameter."),
        (NoSpace, _) => (
            552,
            "Insufficient storage space on the upstream; nothing was stored.",
        ),
        (Unsupported, _) => (502, "The storage backend does not support this operation."),
        (Transient, _) => (450, "Storage temporarily unavailable; try again later."),
        (Timeout, Phase::Transfer) => (426, "Upstream storage timed out; transfer aborted."),
        (Timeout, _) => (451, "Upstream storage timed out."),
        (ConnectionLost | Protocol, Phase::Transfer) => (
            426,
            "Connection to the upstream storage lost; transfer aborted.",
        ),
        (ConnectionLost | Protocol, _) => {
            (421, "Connection to the upstream storage lost; closing.")
        }
        (Unreachable | HostKeyRejected, _) => (421, "Upstream storage unavailable; closing."),
        (AuthenticationFailed, _) => (530, "Login incorrect."),
        (Failure, Phase::FileAction) => (
            550,
            "Requested action not taken: the upstream reported a failure.",
        ),
        (Failure, _) => (
            451,
            "Requested action aborted: the upstream reported a failure.",
        ),
    };
    let close = code == 421;
    let reply = match err.hint() {
        Some(hint) => Reply::new(code, format!("{text} {hint}")),
        None => Reply::new(code, text),
    };
    (reply, close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(kind: ErrorKind, phase: Phase) -> u16 {
        upstream_reply(&UpstreamError::new(kind), phase).0.code()
    }

    #[test]
    fn missing_and_forbidden_paths_are_550() {
        for phase in [Phase::FileAction, Phase::Opening, Phase::Transfer] {
            assert_eq!(code(ErrorKind::NotFound, phase), 550);
            assert_eq!(code(ErrorKind::PermissionDenied, phase), 550);
        }
    }

    #[test]
    fn full_storage_is_552() {
        assert_eq!(code(ErrorKind::NoSpace, Phase::Transfer), 552);
        assert_eq!(code(ErrorKind::NoSpace, Phase::Opening), 552);
    }

    #[test]
    fn generic_failure_is_550_for_file_actions_and_451_for_transfers() {
        assert_eq!(code(ErrorKind::Failure, Phase::FileAction), 550);
        assert_eq!(code(ErrorKind::Failure, Phase::Opening), 451);
        assert_eq!(code(ErrorKind::Failure, Phase::Transfer), 451);
    }

    #[test]
    fn a_lost_upstream_aborts_a_transfer_and_closes_an_idle_session() {
        assert_eq!(code(ErrorKind::ConnectionLost, Phase::Transfer), 426);
        let (reply, close) = upstream_reply(
            &UpstreamError::new(ErrorKind::ConnectionLost),
            Phase::FileAction,
        );
        assert_eq!(reply.code(), 421);
        assert!(close);
    }

    #[test]
    fn unsupported_operations_are_502() {
        assert_eq!(code(ErrorKind::Unsupported, Phase::FileAction), 502);
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn a_hint_follows_the_standard_text_and_the_detail_stays_private() {
        let err = UpstreamError::new(ErrorKind::Unsupported)
            .with_detail("PUT https://internal.example/x returned 501")
            .with_hint("WebDAV cannot append to a file.");
        let (reply, _) = upstream_reply(&err, Phase::Opening);
        assert_eq!(reply.code(), 502);
        assert!(
            reply.text().ends_with("WebDAV cannot append to a file."),
            "{}",
            reply.text()
        );
        assert!(!reply.text().contains("internal.example"));
    }
}
