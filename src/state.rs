//! What the running server shares between its listeners, its sessions and
//! reloads.
//!
//! A reload builds a whole new [`RuntimeConfig`], and only once it validated
//! and every listener's derived state (TLS certificate, passive ports) was
//! built does it swap both in, atomically. Sessions take their listener's
//! settings when they start and look users up in the current config at PASS:
//! a running session keeps its upstream session and finishes its transfers,
//! a new login sees the new config, and a user removed from the config cannot
//! log in again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tracing::{info, warn};

use crate::auth::PasswordChecker;
use crate::config::{ListenerConfig, ListenerTls, RuntimeConfig};
use crate::ftp::passive::PassivePorts;
use crate::limit::{ConnectionRate, Limits, LoginGuard, SessionCounts};
use crate::obs::LogControl;
use crate::obs::metrics::{ListenerLabels, Metrics, ResultLabels};
use crate::obs::xferlog::XferLog;
use crate::routing::hook::HookCache;
use crate::tls::CertStore;
use crate::upstream::sftp::{PoolMetrics, SshPool};

/// A listener's settings and what is built from them.
pub struct ListenerState {
    pub config: Arc<ListenerConfig>,
    pub passive_ports: Arc<PassivePorts>,
    /// The listener-wide TLS config, when it offers FTPS.
    pub tls: Option<Arc<ServerConfig>>,
    cert_store: Option<Arc<CertStore>>,
}

impl ListenerState {
    /// Builds the state for `config`, reusing what `previous` already has
    /// when nothing it depends on changed (passive ports in use stay
    /// registered; an unchanged certificate path is re-read in place).
    fn build(
        config: &Arc<ListenerConfig>,
        previous: Option<&ListenerState>,
        metrics: &Metrics,
    ) -> Result<ListenerState, String> {
        let passive_ports = match previous {
            Some(old) if old.config.passive_ports == config.passive_ports => {
                old.passive_ports.clone()
            }
            _ => {
                let open = metrics
                    .passive_ports_open
                    .get_or_create(&ListenerLabels {
                        listener: config.name.clone(),
                    })
                    .clone();
                Arc::new(PassivePorts::new(config.passive_ports.clone(), open))
            }
        };
        let (tls, cert_store) = match &config.tls {
            None => (None, None),
            Some(settings) => {
                let reusable = previous.and_then(|old| {
                    let same_files = old
                        .config
                        .tls
                        .as_ref()
                        .is_some_and(|t| same_certificate(t, settings));
                    same_files
                        .then(|| old.cert_store.clone().zip(old.tls.clone()))
                        .flatten()
                });
                match reusable {
                    Some((store, tls)) => {
                        store.reload()?;
                        (Some(tls), Some(store))
                    }
                    None => {
                        let store = CertStore::load(&settings.cert, &settings.key)?;
                        let tls = crate::tls::base_server_config(store.clone())?;
                        (Some(tls), Some(store))
                    }
                }
            }
        };
        Ok(ListenerState {
            config: config.clone(),
            passive_ports,
            tls,
            cert_store,
        })
    }
}

fn same_certificate(a: &ListenerTls, b: &ListenerTls) -> bool {
    a.cert == b.cert && a.key == b.key
}

type ListenerMap = HashMap<String, Arc<ListenerState>>;

pub struct Shared {
    config: ArcSwap<RuntimeConfig>,
    listeners: ArcSwap<ListenerMap>,
    pub metrics: Arc<Metrics>,
    pub passwords: PasswordChecker,
    pub xferlog: XferLog,
    /// Rate limits shared between sessions (tenants, users).
    pub limits: Arc<Limits>,
    pub session_counts: Arc<SessionCounts>,
    pub connection_rate: ConnectionRate,
    pub login_guard: LoginGuard,
    /// Answers of the `[auth_hook]`, reused for `auth_hook.cache`.
    pub hook_cache: HookCache,
    /// Authenticated SSH connections shared by sessions.
    pub sftp_pool: SshPool,
    log: Option<LogControl>,
    /// Cleared the moment shutdown begins, so load balancers stop sending.
    accepting: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(config: RuntimeConfig, log: Option<LogControl>) -> Result<Arc<Shared>, String> {
        let metrics = Arc::new(Metrics::new());
        metrics.prime(&config);
        let mut listeners = ListenerMap::new();
        for listener in &config.listeners {
            let state = ListenerState::build(listener, None, &metrics)
                .map_err(|e| format!("listener {}: {e}", listener.name))?;
            listeners.insert(listener.name.clone(), Arc::new(state));
        }
        let xferlog = XferLog::start(config.logging.xferlog.clone());
        let limits = Arc::new(Limits::new(&config));
        let connection_rate = ConnectionRate::default();
        connection_rate.apply(config.security.connection_rate);
        let passwords = PasswordChecker::new(
            config.security.password_cache,
            metrics.password_verifications.clone(),
        );
        let sftp_pool = SshPool::new(PoolMetrics {
            sessions: metrics.upstream_sessions.clone(),
            connections: metrics.upstream_pool_connections.clone(),
        });
        Ok(Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            listeners: ArcSwap::from_pointee(listeners),
            metrics,
            passwords,
            xferlog,
            limits,
            session_counts: Arc::default(),
            connection_rate,
            login_guard: LoginGuard::default(),
            hook_cache: HookCache::default(),
            sftp_pool,
            log,
            accepting: AtomicBool::new(true),
            last_reload_error: Mutex::new(None),
        }))
    }

    /// The config new logins and sessions use.
    pub fn config(&self) -> Arc<RuntimeConfig> {
        self.config.load_full()
    }

    pub fn listener(&self, name: &str) -> Option<Arc<ListenerState>> {
        self.listeners.load().get(name).cloned()
    }

    /// Certificate and key files to watch for changes.
    pub fn certificate_files(&self) -> Vec<PathBuf> {
        self.config()
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| [tls.cert.clone(), tls.key.clone()])
            .collect()
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// The last reload's error, if it failed (shown by /readyz).
    pub fn last_reload_error(&self) -> Option<String> {
        self.last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a reload that could not even produce a config (a parse or
    /// validation error): the running config stays.
    pub fn reload_failed(&self, error: String) {
        warn!(error = %error, "configuration reload failed; keeping the running configuration");
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "failed" })
            .inc();
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// Swaps in `new` if every listener's state can be built from it;
    /// otherwise nothing changes.
    pub fn apply(&self, new: RuntimeConfig) -> Result<(), String> {
        let old_config = self.config();
        let old_listeners = self.listeners.load_full();
        let mut listeners = ListenerMap::new();
        for listener in &new.listeners {
            let previous = old_listeners.get(&listener.name).map(Arc::as_ref);
            if let Some(previous) = previous
                && previous.config.bind != listener.bind
            {
                warn!(
                    listener = %listener.name,
                    running = %previous.config.bind,
                    configured = %listener.bind,
                    "a listener's bind address changes only on restart"
                );
            }
            if previous.is_none() {
                warn!(listener = %listener.name, "a new listener starts only on restart");
            }
            match ListenerState::build(listener, previous, &self.metrics) {
                Ok(state) => {
                    listeners.insert(listener.name.clone(), Arc::new(state));
                }
                Err(e) => {
                    let error = format!("listener {}: {e}", listener.name);
                    self.reload_failed(error.clone());
                    return Err(error);
                }
            }
        }
        for (name, state) in old_listeners.iter() {
            if !listeners.contains_key(name) {
                warn!(listener = %name, "a removed listener keeps its settings until restart");
                listeners.insert(name.clone(), state.clone());
            }
        }
        if new.logging.xferlog != old_config.logging.xferlog {
            self.xferlog.reopen(new.logging.xferlog.clone());
        } else if new.logging.xferlog.is_some() {
            // Reopen anyway: log rotation renames the file and sends SIGHUP.
            self.xferlog.reopen(new.logging.xferlog.clone());
        }
        if let Some(log) = &self.log
            && let Err(e) = log.set_level(&new.logging.level)
        {
            warn!(error = %e, "cannot apply the new log level");
        }
        self.metrics.prime(&new);
        self.limits.apply(&new);
        self.connection_rate.apply(new.security.connection_rate);
        self.login_guard.lift_bans_of(&new.security.ban_exempt);
        self.passwords.set_cache_ttl(new.security.password_cache);
        self.listeners.store(Arc::new(listeners));
        self.config.store(Arc::new(new));
        *self
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        info!("configuration reloaded");
        Ok(())
    }
}
