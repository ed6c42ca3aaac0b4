//! WebDAV upstream (RFC 4918) over HTTPS: hyper 1 + hyper-rustls.
//!
//! Operation mapping: stat → PROPFIND Depth 0; list → PROPFIND Depth 1;
//! download → GET (with `Range: bytes=N-` after REST); upload → streamed
//! PUT (to the temporary name; `upload.rs` then renames it with MOVE and
//! `Overwrite: T`); MKD → MKCOL; DELE → DELETE; RMD → PROPFIND Depth 1,
//! then DELETE only if the collection is empty (a WebDAV DELETE of a
//! collection is always recursive); rename → MOVE; modification time →
//! PROPPATCH where the server allows it; free space → RFC 4331 quota.
//!
//! Partial writes (APPE, REST + STOR) are refused: a plain PUT replaces
//! the whole file, and partial PUT is not something a client can detect
//! safely (a server that ignores `Content-Range` would silently store the
//! tail alone).

pub mod client;
pub mod status;
mod streams;
pub mod tls;
pub mod url;
pub mod xml;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request as HttpRequest, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tracing::debug;

pub use self::client::{DavClient, Timeouts};
pub use self::url::{BaseUrl, UrlTemplate};

use self::client::Body;
use self::status::Request;
use self::streams::{DavReadStream, DavWriteStream, upload_body};
use super::error::{ErrorKind, Result, UpstreamError};
use super::{
    Capabilities, DirEntry, FileKind, Metadata, ReadStream, RemotePath, SetAttributes, Upstream,
    WriteMode, WriteStream,
};
use crate::secret::Secret;

/// Everything needed to reach one WebDAV server, shared by its sessions.
#[derive(Debug, Clone)]
pub struct WebDavSettings {
    /// The base URL, `{user}` still in it.
    pub url: UrlTemplate,
    /// The connection pool of this upstream.
    pub client: DavClient,
}

/// The identity presented to the WebDAV server.
#[derive(Clone)]
pub enum DavCredentials {
    /// HTTP Basic (RFC 7617), over TLS.
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer` (RFC 6750).
    Bearer(Secret),
}

impl std::fmt::Debug for DavCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DavCredentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?} }}")
            }
            DavCredentials::Bearer(_) => f.write_str("Bearer"),
        }
    }
}

impl DavCredentials {
    /// The `Authorization` header value, marked sensitive so it is never logged.
    fn header(&self) -> Result<HeaderValue> {
        let text = match self {
            DavCredentials::Basic { username, .. } if username.contains(':') => {
                return Err(UpstreamError::new(ErrorKind::AuthenticationFailed)
                    .with_detail("HTTP Basic cannot carry a user name with ':'"));
            }
            DavCredentials::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
            DavCredentials::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            UpstreamError::new(ErrorKind::AuthenticationFailed)
                .with_detail("the credentials contain characters not allowed in an HTTP header")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// One FTP user's session with a WebDAV server.
pub struct WebDavUpstream {
    client: DavClient,
    base: BaseUrl,
    authorization: HeaderValue,
    /// Whether the server reported RFC 4331 quota at login.
    reports_quota: bool,
}

impl std::fmt::Debug for WebDavUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebDavUpstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn method(name: &'static str) -> Result<Method> {
    Method::from_bytes(name.as_bytes())
        .map_err(|e| UpstreamError::new(ErrorKind::Failure).with_source(e))
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn xml_body(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn build_error(e: http::Error) -> UpstreamError {
    UpstreamError::new(ErrorKind::Failure).with_detail(format!("cannot build the request: {e}"))
}

impl WebDavUpstream {
    /// Opens a session for `ftp_user` and checks the credentials with one
    /// PROPFIND Depth 0 of the base URL, so a wrong password is refused at
    /// login rather than at the first transfer (crates.md §4: hyper sends
    /// no `Expect: 100-continue`). The same request asks for the quota.
    pub async fn connect(
        settings: &WebDavSettings,
        ftp_user: &str,
        credentials: &DavCredentials,
    ) -> Result<Self> {
        let base = settings.url.for_user(ftp_user).ok_or_else(|| {
            UpstreamError::new(ErrorKind::AuthenticationFailed)
                .with_detail("the URL needs {domain} and the login name has no '@'")
        })?;
        let mut session = WebDavUpstream {
            client: settings.client.clone(),
            base,
            authorization: credentials.header()?,
            reports_quota: false,
        };
        let root = RemotePath::new(b"/".to_vec());
        let responses = session
            .propfind(&root, "0", true, xml::PROPFIND_QUOTA, Request::Login)
            .await?;
        session.reports_quota = responses
            .first()
            .is_some_and(|r| r.props.quota_available.is_some());
        debug!(base = ?session.base, quota = session.reports_quota, "WebDAV session ready");
        Ok(session)
    }

    fn request(&self, method: Method, url: &str) -> http::request::Builder {
        HttpRequest::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, self.authorization.clone())
    }

    /// Sends a request with no body that must answer 2xx; returns the status.
    async fn simple(
        &self,
        method: Method,
        url: &str,
        headers: &[(&'static str, HeaderValue)],
        kind: Request,
    ) -> Result<StatusCode> {
        let mut builder = self.request(method.clone(), url);
        for (name, value) in headers {
            builder = builder.header(*name, value.clone());
        }
        let response = self
            .client
            .send(builder.body(empty()).map_err(build_error)?)
            .await?;
        let status = response.status();
        self.client.discard(response.into_body()).await;
        if status.is_success() && status != StatusCode::MULTI_STATUS {
            Ok(status)
        } else if status == StatusCode::MULTI_STATUS {
            // DELETE and MOVE answer 207 when part of a collection failed.
            Err(UpstreamError::new(ErrorKind::Failure)
                .with_detail(format!("{method} {url}: partly failed (207 Multi-Status)")))
        } else {
            Err(status::error(status, kind, method.as_str(), url))
        }
    }

    /// PROPFIND of `path`; `collection` adds the trailing slash. A server
    /// that redirects a directory to its slashed URL (Apache's mod_dir)
    /// gets the request again with the slash.
    async fn propfind(
        &self,
        path: &RemotePath,
        depth: &'static str,
        collection: bool,
        body: &'static str,
        kind: Request,
    ) -> Result<Vec<xml::Response>> {
        let mut collection = collection || path.as_bytes() == b"/";
        loop {
            let url = self.base.url_of(path, collection);
            let request = self
                .request(method("PROPFIND")?, &url)
                .header("Depth", depth)
                .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
                .body(xml_body(body))
                .map_err(build_error)?;
            let response = self.client.send(request).await?;
            let status = response.status();
            if status.is_redirection() && !collection {
                self.client.discard(response.into_body()).await;
                collection = true;
                continue;
            }
            if status != StatusCode::MULTI_STATUS {
                self.client.discard(response.into_body()).await;
                return Err(status::error(status, kind, "PROPFIND", &url));
            }
            let text = self.client.read_xml(response.into_body()).await?;
            return xml::parse_multistatus(&text).map_err(|e| {
                UpstreamError::new(ErrorKind::Protocol).with_detail(format!("PROPFIND {url}: {e}"))
            });
        }
    }

    /// The response about `path` itself among `responses`: the one whose
    /// href is the requested path, else the first (RFC 4918 servers list
    /// the collection itself first).
    fn own_response<'r>(
        &self,
        path: &RemotePath,
        responses: &'r [xml::Response],
    ) -> Option<(usize, &'r xml::Response)> {
        let wanted = url::href_path(&self.base.url_path_of(path, false));
        responses
            .iter()
            .position(|r| url::same_path(&url::href_path(&r.href), &wanted))
            .or((!responses.is_empty()).then_some(0))
            .map(|i| (i, &responses[i]))
    }

    async fn stat_response(&self, path: &RemotePath) -> Result<xml::Response> {
        let responses = self
            .propfind(path, "0", false, xml::PROPFIND_ENTRIES, Request::Other)
            .await?;
        let (_, own) = self.own_response(path, &responses).ok_or_else(|| {
            UpstreamError::new(ErrorKind::Protocol).with_detail("PROPFIND answered no response")
        })?;
        if !own.found {
            let kind = match own.status {
                Some(404) | None => ErrorKind::NotFound,
                Some(code) => StatusCode::from_u16(code)
                    .map(|s| status::error_kind(s, Request::Other))
                    .unwrap_or(ErrorKind::Failure),
            };
            return Err(UpstreamError::new(kind).with_detail(format!("PROPFIND {path}")));
        }
        Ok(own.clone())
    }

    /// The members of the collection `path`, with the collection's own
    /// response removed.
    async fn members(&self, path: &RemotePath) -> Result<(xml::Response, Vec<xml::Response>)> {
        let mut responses = self
            .propfind(path, "1", true, xml::PROPFIND_ENTRIES, Request::Other)
            .await?;
        let Some((own, _)) = self.own_response(path, &responses) else {
            return Err(UpstreamError::new(ErrorKind::Protocol)
                .with_detail("PROPFIND answered no response"));
        };
        let own = responses.remove(own);
        Ok((own, responses))
    }
}

fn to_metadata(props: &xml::Props) -> Metadata {
    Metadata {
        kind: if props.collection {
            FileKind::Directory
        } else {
            FileKind::File
        },
        size: if props.collection {
            0
        } else {
            props.content_length.unwrap_or(0)
        },
        modified: props.last_modified,
        permissions: None,
    }
}

/// Where a 206 answer's body starts: `Content-Range: bytes 100-199/200`.
fn content_range_start(value: Option<&HeaderValue>) -> Option<u64> {
    let text = value?.to_str().ok()?;
    let range = text.trim().strip_prefix("bytes")?.trim_start();
    range.split('-').next()?.trim().parse().ok()
}

/// The complete length in a 416 answer's `Content-Range: bytes */200`.
fn unsatisfied_range_length(value: Option<&HeaderValue>) -> Option<u64> {
    let text = value?.to_str().ok()?;
    text.trim().strip_prefix("bytes */")?.trim().parse().ok()
}

#[async_trait]
impl Upstream for WebDavUpstream {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // MOVE with `Overwrite: T` may delete the target before moving
            // (Apache mod_dav_fs does), so replacing is not known to be atomic.
            atomic_replace: false,
            free_space: self.reports_quota,
        }
    }

    async fn stat(&self, path: &RemotePath) -> Result<Metadata> {
        Ok(to_metadata(&self.stat_response(path).await?.props))
    }

    async fn list(&self, path: &RemotePath) -> Result<Vec<DirEntry>> {
        let (own, members) = self.members(path).await?;
        if own.found && !own.props.collection {
            return Err(UpstreamError::new(ErrorKind::WrongType)
                .with_detail(format!("{path} is not a collection")));
        }
        let mut entries = Vec::with_capacity(members.len());
        for member in members.iter().filter(|m| m.found) {
            match url::href_name(&member.href) {
                Some(name) => entries.push(DirEntry {
                    name: Bytes::from(name),
                    metadata: to_metadata(&member.props),
                }),
                None => debug!(href = %member.href, "skipping a member without a usable name"),
            }
        }
        Ok(entries)
    }

    async fn open_read(&self, path: &RemotePath, offset: u64) -> Result<Box<dyn ReadStream>> {
        let url = self.base.url_of(path, false);
        let mut request = self.request(Method::GET, &url);
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let response = self
            .client
            .send(request.body(empty()).map_err(build_error)?)
            .await?;
        let status = response.status();
        let range_start = content_range_start(response.headers().get(header::CONTENT_RANGE));
        let full_length = unsatisfied_range_length(response.headers().get(header::CONTENT_RANGE));
        let body: Incoming = response.into_body();
        let skip = match status {
            StatusCode::OK => {
                if offset > 0 {
                    debug!(%url, offset, "the server ignored the Range header; skipping to the offset");
                }
                offset
            }
            StatusCode::PARTIAL_CONTENT if range_start == Some(offset) => 0,
            StatusCode::PARTIAL_CONTENT => {
                return Err(UpstreamError::new(ErrorKind::Protocol).with_detail(format!(
                    "GET {url}: asked for bytes from {offset}, got Content-Range starting at {range_start:?}"
                )));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                self.client.discard(body).await;
                // REST to exactly the end of the file: nothing left to send.
                // Apache omits the `Content-Range: bytes */length` that says so.
                let length = match full_length {
                    Some(length) => length,
                    None => self.stat(path).await?.size,
                };
                if offset > 0 && length == offset {
                    return Ok(Box::new(EmptyStream));
                }
                return Err(
                    UpstreamError::new(ErrorKind::BadOffset).with_detail(format!(
                        "GET {url}: offset {offset} is past the end ({length} bytes)"
                    )),
                );
            }
            other => {
                self.client.discard(body).await;
                return Err(status::error(other, Request::Other, "GET", &url));
            }
        };
        Ok(Box::new(DavReadStream::new(
            self.client.clone(),
            body,
            skip,
        )))
    }

    async fn open_write(&self, path: &RemotePath, mode: WriteMode) -> Result<Box<dyn WriteStream>> {
        let url = self.base.url_of(path, false);
        let mut request = self.request(Method::PUT, &url);
        match mode {
            // RFC 7232 §3.2: fail with 412 if anything exists at the URL.
            WriteMode::CreateNew => request = request.header(header::IF_NONE_MATCH, "*"),
            WriteMode::Truncate => {}
            WriteMode::Append | WriteMode::Resume(_) => {
                return Err(UpstreamError::new(ErrorKind::Unsupported)
                    .with_detail("WebDAV PUT replaces whole files; appending or resuming an upload is not supported")
                    .with_hint("This storage (WebDAV) cannot append to a file or resume an upload; upload the whole file."));
            }
        }
        // Some servers create missing parents on PUT (nginx with
        // `create_full_put_path`); FTP, like SFTP, must answer 550 instead.
        if let Some((parent, _)) = path.split_last()
            && !self.stat(&parent).await?.is_dir()
        {
            return Err(UpstreamError::new(ErrorKind::NotFound)
                .with_detail(format!("{parent} is not a directory")));
        }
        let (queue, body) = upload_body();
        let request = request
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(body.boxed_unsync())
            .map_err(build_error)?;
        let response = tokio::spawn(self.client.start(request));
        Ok(Box::new(DavWriteStream::new(
            self.client.clone(),
            url,
            queue,
            response,
        )))
    }

    async fn create_dir(&self, path: &RemotePath) -> Result<()> {
        let url = self.base.url_of(path, true);
        self.simple(method("MKCOL")?, &url, &[], Request::MakeCollection)
            .await
            .map(drop)
    }

    async fn remove_dir(&self, path: &RemotePath) -> Result<()> {
        // DELETE of a collection removes everything in it (RFC 4918 §9.6.1):
        // look first, and refuse unless it is empty. Another client adding
        // a file between the two requests is a window we cannot close.
        let (own, members) = self.members(path).await?;
        if !own.props.collection {
            return Err(UpstreamError::new(ErrorKind::WrongType)
                .with_detail(format!("{path} is not a collection")));
        }
        if !members.is_empty() {
            return Err(UpstreamError::new(ErrorKind::DirectoryNotEmpty)
                .with_detail(format!("{path} has {} members", members.len())));
        }
        let url = self.base.url_of(path, true);
        self.simple(Method::DELETE, &url, &[], Request::Other)
            .await
            .map(drop)
    }

    async fn remove_file(&self, path: &RemotePath) -> Result<()> {
        // A DELETE without the trailing slash still removes a whole
        // collection on Apache: make sure it is a file.
        if self.stat(path).await?.is_dir() {
            return Err(UpstreamError::new(ErrorKind::WrongType)
                .with_detail(format!("{path} is a collection")));
        }
        let url = self.base.url_of(path, false);
        self.simple(Method::DELETE, &url, &[], Request::Other)
            .await
            .map(drop)
    }

    async fn rename(&self, from: &RemotePath, to: &RemotePath, replace: bool) -> Result<()> {
        let collection = self.stat(from).await?.is_dir();
        match self.stat(to).await {
            // `Overwrite: T` onto a collection would delete it with all its
            // content; rename(2) refuses that as well.
            Ok(meta) if meta.is_dir() => {
                return Err(UpstreamError::new(ErrorKind::AlreadyExists)
                    .with_detail(format!("{to} is a directory")));
            }
            Ok(_) if !replace => {
                return Err(UpstreamError::new(ErrorKind::AlreadyExists)
                    .with_detail(format!("{to} exists")));
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let source = self.base.url_of(from, collection);
        let destination = HeaderValue::from_str(&self.base.url_of(to, collection))
            .map_err(|e| UpstreamError::new(ErrorKind::Failure).with_source(e))?;
        let overwrite = HeaderValue::from_static(if replace { "T" } else { "F" });
        self.simple(
            method("MOVE")?,
            &source,
            &[("Destination", destination), ("Overwrite", overwrite)],
            Request::Write,
        )
        .await
        .map(drop)
    }

    async fn set_attributes(&self, path: &RemotePath, attrs: &SetAttributes) -> Result<()> {
        if attrs.size.is_some() || attrs.permissions.is_some() {
            return Err(UpstreamError::new(ErrorKind::Unsupported)
                .with_detail("WebDAV has no way to truncate a file or change its permissions")
                .with_hint("This storage (WebDAV) has no file permissions or sizes to set."));
        }
        let Some(mtime) = attrs.modified else {
            return Ok(());
        };
        let date = xml::format_http_date(mtime).ok_or_else(|| {
            UpstreamError::new(ErrorKind::Unsupported).with_detail("timestamp out of range")
        })?;
        let url = self.base.url_of(path, false);
        let request = self
            .request(method("PROPPATCH")?, &url)
            .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
            .body(xml_body(xml::proppatch_last_modified(&date)))
            .map_err(build_error)?;
        let response = self.client.send(request).await?;
        let status = response.status();
        let refused = |why: String| {
            UpstreamError::new(ErrorKind::Unsupported)
                .with_detail(format!(
                    "the server does not let clients set the modification time ({why})"
                ))
                .with_hint("This storage does not let clients set modification times.")
        };
        match status {
            StatusCode::MULTI_STATUS => {
                let text = self.client.read_xml(response.into_body()).await?;
                let responses = xml::parse_multistatus(&text).map_err(|e| {
                    UpstreamError::new(ErrorKind::Protocol)
                        .with_detail(format!("PROPPATCH {url}: {e}"))
                })?;
                if let Some(failed) = responses
                    .iter()
                    .find_map(|r| r.props.failed_statuses.first())
                {
                    return Err(refused(format!(
                        "PROPPATCH getlastmodified answered {failed}"
                    )));
                }
            }
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
                self.client.discard(response.into_body()).await;
                return Err(refused(format!("PROPPATCH answered {status}")));
            }
            other if other.is_success() => self.client.discard(response.into_body()).await,
            other => {
                self.client.discard(response.into_body()).await;
                return Err(status::error(other, Request::Other, "PROPPATCH", &url));
            }
        }
        // Some servers store `getlastmodified` as a dead property and keep
        // their own time: only a changed time counts as success.
        match self.stat(path).await?.modified {
            Some(actual) if actual == mtime => Ok(()),
            actual => Err(refused(format!(
                "PROPPATCH was accepted but the time is {actual:?}"
            ))),
        }
    }

    async fn free_space(&self, path: &RemotePath) -> Result<u64> {
        let responses = self
            .propfind(path, "0", true, xml::PROPFIND_QUOTA, Request::Other)
            .await?;
        self.own_response(path, &responses)
            .and_then(|(_, own)| own.props.quota_available)
            .ok_or_else(|| {
                UpstreamError::new(ErrorKind::Unsupported)
                    .with_detail("the server reports no quota-available-bytes (RFC 4331)")
            })
    }

    async fn close(&self) {
        // Connections belong to the upstream's shared pool and stay open
        // for the next session; nothing is held per session.
    }
}

/// The download of nothing (a REST offset at the end of the file).
struct EmptyStream;

#[async_trait]
impl ReadStream for EmptyStream {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn close(self: Box<Self>) {}
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn content_range_starts_are_read() {
        let value = HeaderValue::from_static("bytes 100-199/200");
        assert_eq!(content_range_start(Some(&value)), Some(100));
        assert_eq!(content_range_start(None), None);
        let unsatisfied = HeaderValue::from_static("bytes */200");
        assert_eq!(unsatisfied_range_length(Some(&unsatisfied)), Some(200));
        assert_eq!(content_range_start(Some(&unsatisfied)), None);
    }

    #[test]
    fn basic_credentials_are_encoded_and_sensitive() {
        let credentials = DavCredentials::Basic {
            username: "Aladdin".into(),
            password: Secret::new("open sesame"),
        };
        let header = credentials.header().unwrap();
        assert_eq!(header, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(header.is_sensitive());
        assert!(!format!("{credentials:?}").contains("sesame"));
        let bearer = DavCredentials::Bearer(Secret::new("tok\nen"));
        assert!(
            bearer.header().is_err(),
            "a newline cannot go into a header"
        );
    }
}
