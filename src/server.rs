//! Listeners, session admission and shutdown.
//!
//! [`run`] receives already-bound listeners and a shutdown future (as
//! mini-redis's `server::run` does), so tests run the real server in-process
//! on port 0. On shutdown: listeners close at once, idle sessions get 421,
//! running transfers may finish within `server.shutdown_grace`, then whatever
//! is left is stopped (unfinished uploads undo themselves).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::auth::PasswordChecker;
use crate::config::{ListenerConfig, RuntimeConfig};
use crate::ftp::passive::PassivePorts;
use crate::ftp::{SessionContext, serve};
use crate::tls::CertStore;

/// How long to wait after an accept error (e.g. out of file descriptors)
/// before trying again, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket and the configuration it serves.
pub struct BoundListener {
    pub config: Arc<ListenerConfig>,
    pub socket: TcpListener,
}

impl BoundListener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the configuration has no [[listeners]]")]
    NoListeners,
    #[error("listener {listener}: {message}")]
    Tls { listener: String, message: String },
    #[error("listeners[{index}].bind: cannot listen on {addr}: {source}")]
    Bind {
        index: usize,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds every configured listener.
pub async fn bind_all(config: &RuntimeConfig) -> Result<Vec<BoundListener>, ServerError> {
    if config.listeners.is_empty() {
        return Err(ServerError::NoListeners);
    }
    let mut bound = Vec::with_capacity(config.listeners.len());
    for (index, listener) in config.listeners.iter().enumerate() {
        let socket =
            TcpListener::bind(listener.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    index,
                    addr: listener.bind,
                    source,
                })?;
        bound.push(BoundListener {
            config: listener.clone(),
            socket,
        });
    }
    Ok(bound)
}

/// Serves `listeners` until `shutdown` completes, then drains.
pub async fn run(
    config: Arc<RuntimeConfig>,
    listeners: Vec<BoundListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    crate::tls::install_default_provider();
    let mut cert_stores = Vec::new();
    let mut listener_tls = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        let tls = match &listener.config.tls {
            None => None,
            Some(tls) => {
                let error = |message: String| ServerError::Tls {
                    listener: listener.config.name.clone(),
                    message,
                };
                let store = CertStore::load(&tls.cert, &tls.key).map_err(error)?;
                cert_stores.push(store.clone());
                Some(crate::tls::base_server_config(store).map_err(error)?)
            }
        };
        listener_tls.push(tls);
    }
    // Certificates rotate on SIGHUP and when their files change.
    let _reloader = (!cert_stores.is_empty()).then(|| crate::tls::reload::spawn(cert_stores));

    let stop_accepting = CancellationToken::new();
    let stop_everything = CancellationToken::new();
    let sessions = TaskTracker::new();
    let admission = Arc::new(Semaphore::new(config.server.max_sessions));
    let passwords = PasswordChecker::default();
    let next_id = Arc::new(AtomicU64::new(1));

    let mut acceptors = Vec::with_capacity(listeners.len());
    for (listener, tls) in listeners.into_iter().zip(listener_tls) {
        match listener.local_addr() {
            Ok(addr) => info!(listener = %listener.config.name, %addr, "listening"),
            Err(e) => {
                warn!(listener = %listener.config.name, error = %e, "listener has no address")
            }
        }
        let ctx = SessionContext {
            config: config.clone(),
            passive_ports: Arc::new(PassivePorts::new(listener.config.passive_ports.clone())),
            listener: listener.config.clone(),
            passwords: passwords.clone(),
            shutdown: stop_accepting.clone(),
            tls,
        };
        let acceptor = Acceptor {
            socket: listener.socket,
            ctx,
            sessions: sessions.clone(),
            admission: admission.clone(),
            stop_accepting: stop_accepting.clone(),
            stop_everything: stop_everything.clone(),
            next_id: next_id.clone(),
        };
        acceptors.push(tokio::spawn(acceptor.run()));
    }

    shutdown.await;
    info!("shutdown requested: no new sessions; idle sessions are closed");
    stop_accepting.cancel();
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    sessions.close();
    let grace = config.server.shutdown_grace;
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        warn!(
            remaining = sessions.len(),
            "transfers still running after the shutdown grace period; stopping them"
        );
        stop_everything.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
    }
    info!("shutdown complete");
    Ok(())
}

struct Acceptor {
    socket: TcpListener,
    ctx: SessionContext,
    sessions: TaskTracker,
    admission: Arc<Semaphore>,
    stop_accepting: CancellationToken,
    stop_everything: CancellationToken,
    next_id: Arc<AtomicU64>,
}

impl Acceptor {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                _ = self.stop_accepting.cancelled() => return,
                accepted = self.socket.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) => {
                    error!(listener = %self.ctx.listener.name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.admission.clone().try_acquire_owned() else {
            warn!(%peer, listener = %self.ctx.listener.name, "session limit reached; refusing connection");
            self.sessions.spawn(refuse(stream));
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ctx = self.ctx.clone();
        let stop = self.stop_everything.clone();
        self.sessions.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = serve(stream, peer, ctx, id) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// RFC 959 §4.2: 421 is the reply for "service not available, closing".
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(b"421 Too many sessions; try again later.\r\n"),
    )
    .await;
    let _ = stream.shutdown().await;
}
