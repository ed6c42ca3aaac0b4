//! One HTTP client per WebDAV upstream: hyper-util's pooled client over
//! hyper-rustls, shared by every session of that upstream.
//!
//! HTTP/1.1 keep-alive, and HTTP/2 when the server offers it through ALPN.
//! hyper has no timeouts of its own (crates.md §4), so every wait is bounded
//! here: TCP connect by the connector, connect + TLS + request + response
//! head by `request_timeout`, each body chunk by `request_timeout` again,
//! and idle pooled connections expire after `pool_idle_timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::upstream::error::{ErrorKind, Result, UpstreamError};

/// Errors a request body can end with (an abandoned upload).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one request body type of the client (crates.md §4: the client is
/// generic over it, so every request uses the same).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Largest PROPFIND/PROPPATCH answer we read into memory: about 100 000
/// entries of a listing.
const MAX_XML_BODY: usize = 64 * 1024 * 1024;

/// Idle keep-alive connections kept per host: enough for the sessions of a
/// busy upstream, few enough not to hold sockets a server wants back.
const MAX_IDLE_PER_HOST: usize = 32;

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// From sending a request to its response head, and between two chunks
    /// of a response body.
    pub request: Duration,
    /// Unused pooled connections are closed after this.
    pub pool_idle: Duration,
}

/// A pooled HTTPS (or HTTP) client. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct DavClient {
    inner: Client<HttpsConnector<HttpConnector>, Body>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for DavClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DavClient")
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl DavClient {
    /// A client trusting what `tls` trusts. Needs no runtime: connections
    /// are made (and the pool's timer started) at the first request.
    pub fn new(tls: Arc<rustls::ClientConfig>, timeouts: Timeouts) -> DavClient {
        let mut http = HttpConnector::new();
        // The connector refuses https:// unless told the TLS layer is above it.
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            // The timer must come before any HTTP/2 keep-alive setting, and
            // idle expiry needs the pool timer (crates.md §4).
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.pool_idle)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            // One slow upload must not starve the other streams of an
            // HTTP/2 connection with a fixed 64 KiB window.
            .http2_adaptive_window(true)
            .build(connector);
        DavClient { inner, timeouts }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends `request` and waits for the response head.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>> {
        let what = describe(&request);
        match tokio::time::timeout(self.timeouts.request, self.inner.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(transport_error(&e, &what)),
            Err(_) => Err(UpstreamError::new(ErrorKind::Timeout).with_detail(format!(
                "{what}: no response within {:?}",
                self.timeouts.request
            ))),
        }
    }

    /// Starts `request` without waiting (uploads: the body is still being
    /// produced, so the response cannot be bounded by the request timeout).
    pub fn start(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>>> + Send + 'static {
        let what = describe(&request);
        let response = self.inner.request(request);
        async move { response.await.map_err(|e| transport_error(&e, &what)) }
    }

    /// The next chunk of `body`, or `None` at its end; each wait is bounded.
    pub async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>> {
        loop {
            let frame = match tokio::time::timeout(self.timeouts.request, body.frame()).await {
                Err(_) => {
                    return Err(UpstreamError::new(ErrorKind::Timeout).with_detail(format!(
                        "the response body stalled for {:?}",
                        self.timeouts.request
                    )));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(UpstreamError::new(ErrorKind::Failure)
                        .with_detail(format!("reading the response body: {}", chain(&e))));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing we use.
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Ok(Some(data));
            }
        }
    }

    /// The whole body of an answer, at most `limit` bytes, bounded in time.
    pub async fn read_body(&self, mut body: Incoming, limit: usize) -> Result<Vec<u8>> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.next_chunk(&mut body).await? {
            if buf.len() + chunk.len() > limit {
                return Err(UpstreamError::new(ErrorKind::Failure)
                    .with_detail(format!("the server's answer exceeds {limit} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.to_vec())
    }

    /// The whole body of an XML answer, bounded in size and time.
    pub async fn read_xml(&self, body: Incoming) -> Result<String> {
        let bytes = self.read_body(body, MAX_XML_BODY).await?;
        String::from_utf8(bytes).map_err(|_| {
            UpstreamError::new(ErrorKind::Protocol).with_detail("the XML answer is not UTF-8")
        })
    }

    /// Reads and drops the rest of a body, so the connection can be reused;
    /// gives up (dropping the connection) after a little while.
    pub async fn discard(&self, mut body: Incoming) {
        const DISCARD_LIMIT: usize = 1024 * 1024;
        let mut seen = 0;
        while let Ok(Some(chunk)) = self.next_chunk(&mut body).await {
            seen += chunk.len();
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    }
}

/// `PUT https://…/x` for error messages.
fn describe(request: &Request<Body>) -> String {
    format!("{} {}", request.method(), request.uri())
}

/// Transport failures: a failed connect (DNS, TCP, TLS handshake, an
/// untrusted certificate) means the upstream cannot be reached; a broken
/// exchange on an established connection fails only this request, since
/// the pool opens a new connection for the next.
fn transport_error(err: &hyper_util::client::legacy::Error, what: &str) -> UpstreamError {
    let detail = format!("{what}: {}", chain(err));
    let kind = if err.is_connect() {
        ErrorKind::Unreachable
    } else if source_is(err, |e: &hyper::Error| e.is_timeout()) {
        ErrorKind::Timeout
    } else {
        ErrorKind::Failure
    };
    UpstreamError::new(kind).with_detail(detail)
}

fn source_is<E: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
    test: impl Fn(&E) -> bool,
) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>()
            && test(found)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// An error and its causes on one line: hyper's own messages ("client
/// error (Connect)") say little without the rustls or io error beneath.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        current = e.source();
    }
    text
}
