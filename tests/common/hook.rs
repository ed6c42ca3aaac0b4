//! An auth hook endpoint for tests: HTTPS (rustls, certificate from the
//! test CA) on 127.0.0.1:0, answering each login with what the test's
//! function decides, and keeping every request it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::TestPki;

/// What the hook does with one request.
pub enum HookReply {
    /// HTTP 200 with this JSON.
    Json(Value),
    /// Another status, empty body.
    Status(u16),
    /// Wait this long, then answer with the JSON (a slow identity provider).
    Slow(Duration, Value),
}

type Decide = dyn Fn(&Value) -> HookReply + Send + Sync;

pub struct HookServer {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HookServer {
    /// Serves `decide` at `https://127.0.0.1:PORT/login`, with the test
    /// CA's server certificate (which names 127.0.0.1).
    pub async fn start(
        pki: &TestPki,
        decide: impl Fn(&Value) -> HookReply + Send + Sync + 'static,
    ) -> HookServer {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .expect("server certificate")
            .collect::<Result<_, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("server key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the hook");
        let addr: SocketAddr = listener.local_addr().expect("hook address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let decide = decide.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let decide = decide.clone();
                        let seen = seen.clone();
                        async move {
                            // The method and bearer token ride along as
                            // `_method` and `_authorization` for the tests.
                            let method = request.method().to_string();
                            let authorization = request
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request.into_body().collect().await?.to_bytes();
                            let mut value: Value =
                                serde_json::from_slice(&body).unwrap_or(Value::Null);
                            if let Value::Object(fields) = &mut value {
                                fields.insert("_method".into(), method.into());
                                fields.insert("_authorization".into(), authorization.into());
                            }
                            seen.lock().unwrap().push(value.clone());
                            let reply = match decide(&value) {
                                HookReply::Json(json) => (StatusCode::OK, json.to_string()),
                                HookReply::Status(code) => {
                                    (StatusCode::from_u16(code).unwrap(), String::new())
                                }
                                HookReply::Slow(delay, json) => {
                                    tokio::time::sleep(delay).await;
                                    (StatusCode::OK, json.to_string())
                                }
                            };
                            let mut response = Response::new(Full::new(Bytes::from(reply.1)));
                            *response.status_mut() = reply.0;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HookServer {
            url: format!("https://{addr}/login"),
            requests,
            task,
        }
    }

    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
