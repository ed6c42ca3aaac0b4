//! The admin HTTP listener (`[admin] bind`): `/metrics` (Prometheus text),
//! `/healthz` (the process answers) and `/readyz` (it should get traffic).
//!
//! Readiness is false the moment shutdown begins (so a load balancer stops
//! sending new clients while transfers drain), and while any upstream is
//! unreachable: each upstream gets a TCP connect (and, for SFTP, the SSH
//! banner) within `readiness_timeout`, and the answer is reused for
//! `readiness_cache` so that frequent probes do not hammer the upstreams.
//! Keep the listener on a private address: it has no authentication.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{Backend, UpstreamConfig};
use crate::state::Shared;

/// What `/readyz` last found, and when.
struct Readiness {
    cached: Mutex<Option<(Instant, bool, String)>>,
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let readiness = Arc::new(Readiness {
        cached: Mutex::new(None),
    });
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(route(request, &shared, &readiness).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn route(
    request: Request<Incoming>,
    shared: &Shared,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (ready, report) = readiness.check(shared).await;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "text/plain", report)
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

impl Readiness {
    async fn check(&self, shared: &Shared) -> (bool, String) {
        if !shared.is_accepting() {
            return (false, "not ready: shutting down\n".into());
        }
        let config = shared.config();
        let Some(admin) = config.admin.clone() else {
            return (true, "ready\n".into());
        };
        if let Some((when, ready, report)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            && when.elapsed() < admin.readiness_cache
        {
            return (ready, report);
        }
        let mut names: Vec<&String> = config.upstreams.keys().collect();
        names.sort();
        let probes = names
            .iter()
            .map(|name| probe(&config.upstreams[*name], admin.readiness_timeout));
        let results = futures_util::future::join_all(probes).await;
        let mut ready = true;
        let mut report = String::new();
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(()) => report.push_str(&format!("upstream {name}: reachable\n")),
                Err(e) => {
                    ready = false;
                    report.push_str(&format!("upstream {name}: {e}\n"));
                }
            }
        }
        if let Some(error) = shared.last_reload_error() {
            // The running config is still valid; say the new one was not taken.
            report.push_str(&format!(
                "last reload failed (running config kept): {error}\n"
            ));
        }
        report.insert_str(0, if ready { "ready\n" } else { "not ready\n" });
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), ready, report.clone()));
        (ready, report)
    }
}

/// TCP connect within `timeout`; for SFTP also the server's `SSH-` banner.
async fn probe(upstream: &UpstreamConfig, timeout: Duration) -> Result<(), String> {
    let (host, port, ssh) = match &upstream.backend {
        Backend::Sftp { settings, .. } => (settings.host.clone(), settings.port, true),
        Backend::WebDav { settings, .. } => {
            let (host, port) = settings.url.host_port().ok_or("the URL has no host")?;
            (host, port, false)
        }
    };
    let attempt = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        if ssh {
            let mut banner = [0u8; 4];
            stream
                .read_exact(&mut banner)
                .await
                .map_err(|e| format!("no SSH banner from {host}:{port}: {e}"))?;
            if &banner != b"SSH-" {
                return Err(format!("{host}:{port} does not speak SSH"));
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer from {host}:{port} within {timeout:?}"))?
}
