//! HTTP status → [`ErrorKind`], in one function.
//!
//! The FTP reply for each kind is chosen in `ftp::reply_map`; here we only
//! say what a status means. A few statuses mean different things depending
//! on the request (RFC 4918 §9.3.1: MKCOL on an existing resource is 405;
//! §9.9.4: MOVE onto an existing resource without `Overwrite: T` is 412).

use http::StatusCode;

use crate::upstream::error::{ErrorKind, UpstreamError};

/// The request a status answers, where that changes its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The credential check at login: 401 means the password is wrong.
    Login,
    /// MKCOL: 405 means the path already exists.
    MakeCollection,
    /// PUT, MOVE and other requests that create or replace a resource.
    Write,
    /// Everything else.
    Other,
}

/// What `status` (not 2xx) means for an FTP client.
pub fn error_kind(status: StatusCode, request: Request) -> ErrorKind {
    match (status.as_u16(), request) {
        (401, Request::Login) => ErrorKind::AuthenticationFailed,
        // After login, a 401 means these credentials may not do this here.
        (401 | 403, _) => ErrorKind::PermissionDenied,
        // 409: a parent collection is missing (RFC 4918 §9.3.1, §9.7.1).
        (404 | 409 | 410, _) => ErrorKind::NotFound,
        (405, Request::MakeCollection) => ErrorKind::AlreadyExists,
        (405 | 501, _) => ErrorKind::Unsupported,
        (412, _) => ErrorKind::AlreadyExists,
        (413 | 507, _) => ErrorKind::NoSpace,
        (416, _) => ErrorKind::BadOffset,
        // 423 Locked: someone holds a WebDAV lock; it may be released.
        (423 | 429 | 503, _) => ErrorKind::Transient,
        (408 | 504, _) => ErrorKind::Timeout,
        // 500, 502 and the rest: the request failed; the session may go on.
        _ => ErrorKind::Failure,
    }
}

/// The error for a non-2xx answer to `method` on `url`.
pub fn error(status: StatusCode, request: Request, method: &str, url: &str) -> UpstreamError {
    UpstreamError::new(error_kind(status, request)).with_detail(format!("{method} {url}: {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: u16, request: Request) -> ErrorKind {
        error_kind(StatusCode::from_u16(code).unwrap(), request)
    }

    #[test]
    fn unauthorized_is_a_login_failure_only_at_login() {
        assert_eq!(kind(401, Request::Login), ErrorKind::AuthenticationFailed);
        assert_eq!(kind(401, Request::Other), ErrorKind::PermissionDenied);
        assert_eq!(kind(403, Request::Login), ErrorKind::PermissionDenied);
    }

    #[test]
    fn missing_paths_and_missing_parents_are_not_found() {
        for code in [404, 409, 410] {
            assert_eq!(kind(code, Request::Other), ErrorKind::NotFound, "{code}");
        }
    }

    #[test]
    fn mkcol_of_an_existing_path_is_already_exists() {
        assert_eq!(kind(405, Request::MakeCollection), ErrorKind::AlreadyExists);
        assert_eq!(kind(405, Request::Other), ErrorKind::Unsupported);
        assert_eq!(kind(412, Request::Write), ErrorKind::AlreadyExists);
    }

    #[test]
    fn full_storage_locks_and_server_errors_have_their_own_kinds() {
        assert_eq!(kind(507, Request::Write), ErrorKind::NoSpace);
        assert_eq!(kind(413, Request::Write), ErrorKind::NoSpace);
        assert_eq!(kind(423, Request::Write), ErrorKind::Transient);
        assert_eq!(kind(503, Request::Other), ErrorKind::Transient);
        assert_eq!(kind(504, Request::Other), ErrorKind::Timeout);
        assert_eq!(kind(500, Request::Other), ErrorKind::Failure);
        assert_eq!(kind(400, Request::Other), ErrorKind::Failure);
    }
}
