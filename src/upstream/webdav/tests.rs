//! Behaviour the real test servers never show: a server that ignores
//! `Range`, one that answers with the wrong range, an upload cut short.
//! A canned HTTP/1.1 server on 127.0.0.1:0 records what arrives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    head: String,
    /// A chunked body ended with its terminating `0` chunk.
    body_complete: bool,
    body: Vec<u8>,
}

type Answer = fn(&Seen) -> Vec<u8>;

struct FakeServer {
    addr: std::net::SocketAddr,
    /// Requests as they complete.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Request heads as they arrive.
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeServer {
    async fn start(answer: Answer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (log, head_log) = (seen.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, answer, log.clone(), head_log.clone()));
            }
        });
        FakeServer { addr, seen, heads }
    }

    fn upstream(&self) -> WebDavUpstream {
        let tls = tls::client_config(tls::TlsFiles::default()).unwrap();
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(5),
            pool_idle: Duration::from_secs(30),
        };
        WebDavUpstream {
            client: DavClient::new(tls, timeouts),
            base: UrlTemplate::parse(&format!("http://{}/dav/", self.addr))
                .unwrap()
                .for_user("u")
                .unwrap(),
            authorization: HeaderValue::from_static("Basic dTpw"),
            reports_quota: false,
        }
    }

    /// Waits until the head of a request with `method` arrived.
    async fn wait_for_head(&self, method: &str) {
        for _ in 0..500 {
            if self
                .heads
                .lock()
                .unwrap()
                .iter()
                .any(|h| h.starts_with(method))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {method} request arrived");
    }

    /// Waits until a request with `method` was fully handled.
    async fn wait_for(&self, method: &str) -> Seen {
        for _ in 0..500 {
            if let Some(seen) = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.method == method)
            {
                return seen.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {method} request arrived");
    }
}

/// Reads one request (head, then a chunked body to its end or to EOF),
/// answers it and closes the connection. A 507 for a PUT is sent right
/// after the head; the body is then read and dropped, as nginx and Apache
/// do before closing.
async fn serve(
    mut stream: TcpStream,
    answer: Answer,
    log: Arc<Mutex<Vec<Seen>>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    heads.lock().unwrap().push(head.clone());
    let method = head.split(' ').next().unwrap_or_default().to_owned();
    let mut seen = Seen {
        method,
        head: head.clone(),
        body_complete: false,
        body: buf[head_end..].to_vec(),
    };
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let early = answer(&seen);
        if seen.method == "PUT" && early.starts_with(b"HTTP/1.1 507") {
            let _ = stream.write_all(&early).await;
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
            log.lock().unwrap().push(seen);
            return;
        } else {
            while !seen.body.ends_with(b"0\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.body.extend_from_slice(&chunk[..n]),
                }
            }
            seen.body_complete = seen.body.ends_with(b"0\r\n\r\n");
        }
    }
    let response = answer(&seen);
    log.lock().unwrap().push(seen);
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

const COLLECTION: &str = r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/dav/u/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;

fn path(p: &str) -> RemotePath {
    RemotePath::new(p.as_bytes().to_vec())
}

async fn read_all(mut stream: Box<dyn ReadStream>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[tokio::test]
async fn a_server_that_ignores_range_still_yields_the_bytes_from_the_offset() {
    let server = FakeServer::start(|_| response("200 OK", "", b"0123456789")).await;
    let upstream = server.upstream();
    let stream = upstream.open_read(&path("/f"), 4).await.unwrap();
    assert_eq!(read_all(stream).await.unwrap(), b"456789");
    let get = server.wait_for("GET").await;
    assert!(get.head.contains("range: bytes=4-"), "{}", get.head);
}

#[tokio::test]
async fn a_206_for_another_range_is_refused_rather_than_sent() {
    let server = FakeServer::start(|_| {
        response(
            "206 Partial Content",
            "Content-Range: bytes 0-9/10\r\n",
            b"0123456789",
        )
    })
    .await;
    let err = server
        .upstream()
        .open_read(&path("/f"), 4)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::Protocol);
}

fn put_accepting_server(seen: &Seen) -> Vec<u8> {
    match seen.method.as_str() {
        "PROPFIND" => response("207 Multi-Status", "", COLLECTION.as_bytes()),
        "PUT" if seen.body_complete => response("201 Created", "", b""),
        _ => response("400 Bad Request", "", b""),
    }
}

#[tokio::test]
async fn a_finished_upload_ends_its_body_and_waits_for_the_answer() {
    let server = FakeServer::start(put_accepting_server).await;
    let upstream = server.upstream();
    let mut stream = upstream
        .open_write(&path("/new.bin"), WriteMode::CreateNew)
        .await
        .unwrap();
    stream.write(Bytes::from_static(b"hello ")).await.unwrap();
    stream.write(Bytes::from_static(b"world")).await.unwrap();
    assert_eq!(stream.finish().await.unwrap(), 11);
    let put = server.wait_for("PUT").await;
    assert!(put.body_complete);
    assert!(put.head.contains("if-none-match: *"), "{}", put.head);
    assert!(
        put.head.contains("authorization: Basic dTpw"),
        "{}",
        put.head
    );
}

#[tokio::test]
async fn an_aborted_upload_never_ends_its_body_cleanly() {
    let server = FakeServer::start(put_accepting_server).await;
    let upstream = server.upstream();
    let mut stream = upstream
        .open_write(&path("/new.bin"), WriteMode::Truncate)
        .await
        .unwrap();
    stream.write(Bytes::from(vec![7u8; 100_000])).await.unwrap();
    server.wait_for_head("PUT").await;
    stream.abort().await;
    let put = server.wait_for("PUT").await;
    assert!(
        !put.body_complete,
        "the server must not see a complete body for an aborted upload"
    );
}

#[tokio::test]
async fn a_put_refused_mid_body_reports_the_servers_status() {
    let server = FakeServer::start(|seen| match seen.method.as_str() {
        "PROPFIND" => response("207 Multi-Status", "", COLLECTION.as_bytes()),
        _ => response("507 Insufficient Storage", "", b""),
    })
    .await;
    let upstream = server.upstream();
    let mut stream = upstream
        .open_write(&path("/big.bin"), WriteMode::Truncate)
        .await
        .unwrap();
    let mut outcome = Ok(());
    for _ in 0..1024 {
        outcome = stream.write(Bytes::from(vec![0u8; 64 * 1024])).await;
        if outcome.is_err() {
            break;
        }
    }
    let err = match outcome {
        Err(err) => err,
        Ok(()) => stream.finish().await.expect_err("refused"),
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
}

#[tokio::test]
async fn appending_is_refused_before_anything_is_sent() {
    let server = FakeServer::start(put_accepting_server).await;
    let err = server
        .upstream()
        .open_write(&path("/f"), WriteMode::Append)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(server.seen.lock().unwrap().is_empty());
}
