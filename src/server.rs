//! Listeners, session admission and shutdown.
//!
//! [`run`] receives already-bound listeners and a shutdown future (as
//! mini-redis's `server::run` does), so tests run the real server in-process
//! on port 0. On shutdown: listeners close at once, idle sessions get 421,
//! readiness turns false, running transfers may finish within
//! `shutdown.drain_timeout`, then whatever is left is stopped (unfinished
//! uploads undo themselves). [`run_with`] adds config reload and the admin
//! endpoint.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::{ListenerConfig, RuntimeConfig};
use crate::ftp::{SessionContext, serve};
use crate::limit::IpSlot;
use crate::net::canonical;
use crate::net::proxy_protocol::{Origin, read_origin};
use crate::obs::LogControl;
use crate::obs::metrics::{ListenerLabels, ReasonLabels};
use crate::state::Shared;

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
    #[error("{0}")]
    Setup(String),
    #[error("admin.bind: cannot listen on {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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

/// Settings of a run that do not come from the config.
#[derive(Default)]
pub struct RunOptions {
    /// The file to reload from on SIGHUP or when it changes; without it a
    /// reload re-applies the running config (re-reading certificates).
    pub config_path: Option<PathBuf>,
    /// An already-bound admin listener (tests bind port 0); otherwise
    /// `[admin] bind` is bound when configured.
    pub admin: Option<TcpListener>,
    /// Lets reloads change the log level.
    pub log: Option<LogControl>,
}

/// Serves `listeners` until `shutdown` completes, then drains.
pub async fn run(
    config: Arc<RuntimeConfig>,
    listeners: Vec<BoundListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with(RunOptions::default(), config, listeners, shutdown).await
}

/// [`run`] with reload, admin and logging options.
pub async fn run_with(
    options: RunOptions,
    config: Arc<RuntimeConfig>,
    listeners: Vec<BoundListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    crate::tls::install_default_provider();
    let shared = Shared::new((*config).clone(), options.log).map_err(ServerError::Setup)?;
    let _reloader = crate::reload::spawn(shared.clone(), options.config_path);

    let stop_admin = CancellationToken::new();
    let admin = match (options.admin, &config.admin) {
        (Some(listener), _) => Some(listener),
        (None, Some(settings)) => {
            Some(TcpListener::bind(settings.bind).await.map_err(|source| {
                ServerError::AdminBind {
                    addr: settings.bind,
                    source,
                }
            })?)
        }
        (None, None) => None,
    };
    if let Some(listener) = admin {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
        }
        tokio::spawn(crate::admin::serve(
            listener,
            shared.clone(),
            stop_admin.clone(),
        ));
    }

    let stop_accepting = CancellationToken::new();
    let stop_everything = CancellationToken::new();
    let sessions = TaskTracker::new();
    let admission = Arc::new(Semaphore::new(config.server.max_sessions));
    let next_id = Arc::new(AtomicU64::new(1));

    let mut acceptors = Vec::with_capacity(listeners.len());
    for listener in listeners {
        if listener.config.data_source.any {
            // Also warned at validation, but at start-up logging begins
            // only after the config loaded.
            warn!(
                listener = %listener.config.name,
                "data_source = [\"any\"]: passive data connections are accepted from any address; whoever reaches a passive port first gets the transfer"
            );
        }
        match listener.local_addr() {
            Ok(addr) => info!(listener = %listener.config.name, %addr, "listening"),
            Err(e) => {
                warn!(listener = %listener.config.name, error = %e, "listener has no address")
            }
        }
        let acceptor = Acceptor {
            name: listener.config.name.clone(),
            socket: listener.socket,
            shared: shared.clone(),
            sessions: sessions.clone(),
            admission: admission.clone(),
            stop_accepting: stop_accepting.clone(),
            stop_everything: stop_everything.clone(),
            next_id: next_id.clone(),
        };
        acceptors.push(tokio::spawn(acceptor.run()));
    }

    shutdown.await;
    // Readiness turns false first, so load balancers stop sending clients.
    shared.stop_accepting();
    info!("shutdown requested: no new sessions; idle sessions are closed");
    stop_accepting.cancel();
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    sessions.close();
    let drain = shared.config().shutdown.drain_timeout;
    if tokio::time::timeout(drain, sessions.wait()).await.is_err() {
        warn!(
            remaining = sessions.len(),
            "transfers still running after the drain timeout; stopping them"
        );
        stop_everything.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
    }
    stop_admin.cancel();
    info!("shutdown complete");
    Ok(())
}

struct Acceptor {
    name: String,
    socket: TcpListener,
    shared: Arc<Shared>,
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
                    error!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    /// The context for a new session: this listener's settings as of now.
    fn context(&self) -> Option<SessionContext> {
        let state = self.shared.listener(&self.name)?;
        Some(SessionContext {
            shared: self.shared.clone(),
            listener: state.config.clone(),
            passive_ports: state.passive_ports.clone(),
            tls: state.tls.clone(),
            shutdown: self.stop_accepting.clone(),
        })
    }

    /// Takes a connection in under the server-wide session limit, then, in
    /// the session's own task (a slow load balancer must not hold up the
    /// accept loop), finds the real client (PROXY header) and applies the
    /// per-address checks to it, not to the load balancer.
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let Ok(permit) = self.admission.clone().try_acquire_owned() else {
            warn!(%peer, listener = %self.name, "session limit reached; refusing connection");
            count_refusal(&self.shared, &self.name, "session_limit");
            self.sessions
                .spawn(refuse(stream, "Too many sessions; try again later.".into()));
            return;
        };
        let Some(ctx) = self.context() else {
            error!(listener = %self.name, "listener state missing; refusing connection");
            self.sessions
                .spawn(refuse(stream, "Service not available.".into()));
            return;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = self.stop_everything.clone();
        let shared = self.shared.clone();
        self.sessions.spawn(async move {
            let _permit = permit;
            let admitted = tokio::select! {
                admitted = screen_origin(stream, peer, &ctx, &shared) => admitted,
                _ = stop.cancelled() => None,
            };
            let Some((stream, origin, _ip_slot)) = admitted else {
                return;
            };
            let labels = ListenerLabels {
                listener: ctx.listener.name.clone(),
            };
            shared.metrics.sessions.get_or_create(&labels).inc();
            let active = shared
                .metrics
                .sessions_active
                .get_or_create(&labels)
                .clone();
            active.inc();
            tokio::select! {
                _ = serve(stream, origin, ctx, id) => {}
                _ = stop.cancelled() => {}
            }
            active.dec();
        });
    }
}

fn count_refusal(shared: &Shared, listener: &str, reason: &'static str) {
    shared
        .metrics
        .sessions_refused
        .get_or_create(&ReasonLabels {
            listener: listener.to_owned(),
            reason,
        })
        .inc();
}

/// Where the connection really comes from (after the PROXY header of a
/// trusted load balancer) and the per-address checks on that client;
/// `None` when it was turned away (a refused client gets its 421 first).
async fn screen_origin(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &SessionContext,
    shared: &Shared,
) -> Option<(TcpStream, Origin, Option<IpSlot>)> {
    let listener = &ctx.listener.name;
    let origin = match &ctx.listener.proxy_protocol {
        None => Origin::Direct(peer),
        Some(proxy) => {
            match read_origin(
                &mut stream,
                peer,
                &proxy.trusted_proxies,
                proxy.header_timeout,
            )
            .await
            {
                Ok(origin) => origin,
                Err(e) => {
                    count_refusal(shared, listener, "proxy_header");
                    warn!(proxy = %peer, %listener, error = %e, "closed a control connection from a trusted proxy without a valid PROXY header");
                    return None;
                }
            }
        }
    };
    let ip_slot = match origin {
        // The trusted proxy's own connection (a health check) is no client:
        // per-address limits would end up refusing the load balancer.
        Origin::Local(proxy) => {
            debug!(%proxy, %listener, "PROXY LOCAL connection (a health check); serving it as the proxy's own");
            None
        }
        Origin::Direct(_) | Origin::Proxied { .. } => {
            let client = origin.client();
            match screen(shared, canonical(client.ip())) {
                Ok(slot) => Some(slot),
                Err(refusal) => {
                    info!(peer = %client, %listener, reason = refusal.reason, "connection refused");
                    count_refusal(shared, listener, refusal.reason);
                    refuse(stream, refusal.text).await;
                    return None;
                }
            }
        }
    };
    Some((stream, origin, ip_slot))
}

/// Why a connection was turned away before its session started.
struct Refusal {
    reason: &'static str,
    text: String,
}

/// The checks on a new client address, cheapest first: a ban for failed
/// logins, the connection rate, and concurrent sessions from the address.
fn screen(shared: &Shared, ip: IpAddr) -> Result<IpSlot, Refusal> {
    if shared.login_guard.banned(ip, Instant::now()).is_some() {
        return Err(Refusal {
            reason: "banned",
            text: "Too many failed logins from your address; try again later.".into(),
        });
    }
    if !shared.connection_rate.allow(ip) {
        return Err(Refusal {
            reason: "connection_rate",
            text: "Too many connections from your address; slow down.".into(),
        });
    }
    let max = shared.config().server.max_sessions_per_ip;
    shared
        .session_counts
        .enter_ip(ip, max)
        .map_err(|max| Refusal {
            reason: "ip_sessions",
            text: format!("Too many sessions from your address (limit {max}); try again later."),
        })
}

/// RFC 959 §4.2: 421 is the reply for "service not available, closing".
async fn refuse(mut stream: TcpStream, text: String) {
    let line = format!("421 {text}\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line.as_bytes())).await;
    let _ = stream.shutdown().await;
}
