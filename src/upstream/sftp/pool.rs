//! Reuse of authenticated SSH connections to SFTP upstreams.
//!
//! A TCP connect, SSH key exchange and authentication cost ~160 ms on
//! loopback (more over a WAN), orders of magnitude more than an SFTP request,
//! so a login that opens a fresh SSH connection is what users notice. The
//! pool keeps authenticated connections per upstream and credential set;
//! each FTP session opens its own `sftp` channel on one of them (SSH
//! multiplexes channels; OpenSSH allows `MaxSessions`, 10 by default, per
//! connection). Starting the `sftp` subsystem costs another ~80 ms on
//! OpenSSH (measured, with OpenSSH's own client on a multiplexed connection
//! as well): the server forks and execs `sftp-server`. So a session that ends
//! with its channel clean (no request outstanding, nothing else holding it)
//! leaves it open in the pool, and the next session with the same
//! credentials takes it over. SFTP has no per-channel state besides open
//! handles, which the session closed.
//!
//! **Identity.** A connection is found only under the key it was
//! authenticated with: the upstream's name and settings and a salted SHA-256
//! of the exact credentials (user name plus password, or user name plus
//! private key). A pass-through connection enters the pool only once the
//! upstream accepted that password, and only a later login with the same
//! name *and* password finds it; a wrong password never matches a pooled
//! connection and goes to the upstream, which refuses it. Logins that arrive
//! while a connection for their key is being set up wait for it (and share
//! its refusal) instead of each opening their own.
//!
//! **Health.** A connection idle for [`PING_AFTER`] is pinged before reuse;
//! opening a channel, or a REALPATH on a channel left open, is the final
//! check. A connection that fails either is
//! retired and the login continues on another or a fresh one, so a dead
//! pooled connection costs the user nothing but the new handshake.
//!
//! **Bounds.** At most `max_connections` pooled connections per upstream
//! (over all credential sets; an idle one of another set is evicted to make
//! room, otherwise the login gets an unpooled connection of its own), at
//! most `channels_per_connection` sessions on each, closed after
//! `idle_timeout` without sessions, and given no new sessions after
//! `max_age`, so a password changed or an account disabled on the upstream
//! takes effect for new logins within that time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, info};

use super::channel::SftpChannel;
use super::client::SftpClient;
use super::connect::{self, SftpCredentials, SftpSettings, SshHandle};
use crate::obs::metrics::{UpstreamLabels, UpstreamResultLabels};
use crate::upstream::error::{ErrorKind, Result, UpstreamError};

/// A pooled connection unused for this long is pinged before it is reused.
pub const PING_AFTER: Duration = Duration::from_secs(1);
/// How long a health-check ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a polite disconnect of a retired connection may take.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts to find a working pooled connection before going unpooled.
const ATTEMPTS: usize = 3;

/// `result` values of `ftpbridge_upstream_sessions_total`.
pub const SESSION_RESULTS: [&str; 4] = ["reused", "connected", "unpooled", "replaced"];

/// `[[upstreams]] pool_*` for an SFTP upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Pooled SSH connections per upstream; 0 turns the pool off (one SSH
    /// connection per FTP session, closed with it).
    pub max_connections: usize,
    /// FTP sessions sharing one SSH connection, each on its own channel.
    pub channels_per_connection: usize,
    /// A connection without sessions for this long is closed.
    pub idle_timeout: Duration,
    /// A connection this old takes no new sessions.
    pub max_age: Duration,
}

impl PoolSettings {
    pub fn enabled(&self) -> bool {
        self.max_connections > 0
    }
}

/// Where the pool counts what it does.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    /// Upstream sessions by how their SSH connection was obtained.
    pub sessions: Family<UpstreamResultLabels, Counter>,
    /// Pooled SSH connections open.
    pub connections: Family<UpstreamLabels, Gauge>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    upstream: String,
    tag: [u8; 32],
}

type Outcome = Option<std::result::Result<Arc<SshHandle>, (ErrorKind, String)>>;

struct Entry {
    id: u64,
    /// `None` while the connection is being set up.
    handle: Option<Arc<SshHandle>>,
    ready: watch::Receiver<Outcome>,
    settings: PoolSettings,
    in_use: usize,
    created: Instant,
    /// When the last session left (or the connection was made).
    idle_since: Instant,
    /// Open `sftp` channels that sessions left behind, ready for the next.
    idle_channels: Vec<SftpChannel>,
    /// Takes no new sessions; closed when the last one leaves.
    retired: bool,
}

impl Entry {
    fn accepts(&self, now: Instant) -> bool {
        !self.retired
            && (!self.idle_channels.is_empty()
                || self.in_use + self.idle_channels.len() < self.settings.channels_per_connection)
            && now.saturating_duration_since(self.created) < self.settings.max_age
            && self.handle.as_ref().is_none_or(|h| !h.is_closed())
    }
}

#[derive(Default)]
struct State {
    by_key: HashMap<PoolKey, Vec<Entry>>,
    next_id: u64,
}

impl State {
    fn pooled_for(&self, upstream: &str) -> usize {
        self.by_key
            .iter()
            .filter(|(key, _)| key.upstream == upstream)
            .map(|(_, entries)| entries.len())
            .sum()
    }

    fn entry_mut(&mut self, key: &PoolKey, id: u64) -> Option<&mut Entry> {
        self.by_key.get_mut(key)?.iter_mut().find(|e| e.id == id)
    }

    fn remove(&mut self, key: &PoolKey, id: u64) -> Option<Entry> {
        let entries = self.by_key.get_mut(key)?;
        let at = entries.iter().position(|e| e.id == id)?;
        let entry = entries.swap_remove(at);
        if entries.is_empty() {
            self.by_key.remove(key);
        }
        Some(entry)
    }
}

struct Inner {
    salt: [u8; 32],
    state: Mutex<State>,
    metrics: PoolMetrics,
    reaper: AtomicBool,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The maps stay consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, upstream: &str, result: &'static str) {
        self.metrics
            .sessions
            .get_or_create(&UpstreamResultLabels {
                upstream: upstream.to_owned(),
                result,
            })
            .inc();
    }

    fn publish(&self, state: &State, upstream: &str) {
        let open = state
            .by_key
            .iter()
            .filter(|(key, _)| key.upstream == upstream)
            .flat_map(|(_, entries)| entries)
            .filter(|e| e.handle.is_some())
            .count();
        self.metrics
            .connections
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .set(open as i64);
    }

    /// A session left connection `id`, perhaps leaving its channel open.
    fn release(&self, key: &PoolKey, id: u64, retire: bool, channel: Option<SftpChannel>) {
        let closing = {
            let mut state = self.lock();
            let Some(entry) = state.entry_mut(key, id) else {
                return;
            };
            entry.in_use = entry.in_use.saturating_sub(1);
            entry.retired |= retire;
            if let Some(channel) = channel
                && !entry.retired
            {
                entry.idle_channels.push(channel);
            }
            entry.idle_since = Instant::now();
            let done = entry.retired && entry.in_use == 0;
            let closing = if done { state.remove(key, id) } else { None };
            self.publish(&state, &key.upstream);
            closing
        };
        if let Some(entry) = closing {
            disconnect_later(entry.handle);
        }
    }
}

/// Authenticated SSH connections shared by FTP sessions; cheap to clone.
#[derive(Clone)]
pub struct SshPool {
    inner: Arc<Inner>,
}

impl Default for SshPool {
    fn default() -> Self {
        SshPool::new(PoolMetrics::default())
    }
}

/// An SSH connection held by one FTP session: pooled (returned when dropped)
/// or the session's own.
pub struct Lease {
    handle: Arc<SshHandle>,
    pooled: Option<PooledLease>,
}

struct PooledLease {
    pool: Weak<Inner>,
    key: PoolKey,
    id: u64,
    retire: bool,
    /// The session's channel, left open for the next session.
    channel: Option<SftpChannel>,
}

impl Lease {
    fn unpooled(handle: SshHandle) -> Lease {
        Lease {
            handle: Arc::new(handle),
            pooled: None,
        }
    }

    pub fn handle(&self) -> &SshHandle {
        &self.handle
    }

    pub fn is_pooled(&self) -> bool {
        self.pooled.is_some()
    }

    /// Leaves the session's `sftp` channel open for the next session, if
    /// nothing of this session can use it any more.
    pub fn keep_channel(&mut self, channel: &SftpChannel) {
        if let Some(pooled) = &mut self.pooled
            && !pooled.retire
            && channel.is_reusable()
        {
            pooled.channel = Some(channel.clone());
        }
    }

    /// The connection misbehaved: no further sessions go to it.
    fn retire(&mut self) {
        if let Some(pooled) = &mut self.pooled {
            pooled.retire = true;
        }
    }

    /// Disconnects a connection of the session's own; a pooled one stays
    /// open and is returned when the lease is dropped.
    pub async fn close(&self) {
        if self.pooled.is_none() {
            let disconnect =
                self.handle
                    .disconnect(russh::Disconnect::ByApplication, "session ended", "en");
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, disconnect).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take()
            && let Some(inner) = pooled.pool.upgrade()
        {
            inner.release(&pooled.key, pooled.id, pooled.retire, pooled.channel);
        }
    }
}

fn disconnect_later(handle: Option<Arc<SshHandle>>) {
    let Some(handle) = handle else {
        return;
    };
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let bye = handle.disconnect(russh::Disconnect::ByApplication, "idle", "en");
            let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, bye).await;
        });
    }
}

enum Plan {
    Reuse {
        id: u64,
        handle: Arc<SshHandle>,
        channel: Option<SftpChannel>,
        ping: bool,
    },
    Wait {
        id: u64,
        ready: watch::Receiver<Outcome>,
    },
    Connect {
        id: u64,
        done: watch::Sender<Outcome>,
    },
    Unpooled,
}

/// Removes a connecting entry whose connect was abandoned (the FTP session
/// went away mid-PASS), waking its waiters.
struct ConnectGuard<'a> {
    inner: &'a Arc<Inner>,
    key: &'a PoolKey,
    id: u64,
    armed: bool,
}

impl Drop for ConnectGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.inner.lock();
            state.remove(self.key, self.id);
            self.inner.publish(&state, &self.key.upstream);
        }
    }
}

impl SshPool {
    pub fn new(metrics: PoolMetrics) -> Self {
        SshPool {
            inner: Arc::new(Inner {
                salt: rand::random(),
                state: Mutex::new(State::default()),
                metrics,
                reaper: AtomicBool::new(false),
            }),
        }
    }

    fn key(
        &self,
        upstream: &str,
        settings: &SftpSettings,
        credentials: &SftpCredentials,
    ) -> PoolKey {
        let mut hash = Sha256::new();
        hash.update(self.inner.salt);
        let settings = format!("{settings:?}");
        let (kind, username, secret): (&[u8], &str, Vec<u8>) = match credentials {
            SftpCredentials::Password { username, password } => {
                (b"password", username, password.expose().as_bytes().to_vec())
            }
            SftpCredentials::Key { username, key } => (
                b"key",
                username,
                key.public_key()
                    .fingerprint(russh::keys::HashAlg::Sha256)
                    .to_string()
                    .into_bytes(),
            ),
        };
        for part in [
            upstream.as_bytes(),
            settings.as_bytes(),
            kind,
            username.as_bytes(),
            &secret,
        ] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        PoolKey {
            upstream: upstream.to_owned(),
            tag: hash.finalize().into(),
        }
    }

    /// An authenticated connection for `credentials` and an `sftp` channel
    /// on it: reused from the pool when one fits, otherwise a new one.
    pub async fn open(
        &self,
        upstream: &str,
        settings: &SftpSettings,
        credentials: &SftpCredentials,
    ) -> Result<(Lease, SftpChannel)> {
        if !settings.pool.enabled() {
            let handle = connect::connect_ssh(settings, credentials).await?;
            let channel = connect::start_sftp(&handle, settings).await?;
            return Ok((Lease::unpooled(handle), channel));
        }
        let key = self.key(upstream, settings, credentials);
        for _ in 0..ATTEMPTS {
            let (mut lease, idle_channel) = match self.lease(&key, settings, credentials).await? {
                Some(found) => found,
                None => break,
            };
            if let Some(channel) = idle_channel {
                // One cheap request every server answers proves that the
                // channel (and the connection under it) still works.
                let client = SftpClient::new(channel.clone());
                let check = tokio::time::timeout(settings.connect_timeout, client.realpath(b"."));
                if let Ok(Ok(_)) = check.await {
                    return Ok((lease, channel));
                }
                debug!(
                    upstream,
                    "pooled sftp channel failed its check; retiring the connection"
                );
                self.inner.count(upstream, "replaced");
                lease.retire();
                continue;
            }
            let opened = tokio::time::timeout(
                settings.connect_timeout,
                connect::start_sftp(&lease.handle, settings),
            )
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::new(ErrorKind::Timeout)
                    .with_detail("opening an sftp channel timed out"))
            });
            match opened {
                Ok(channel) => return Ok((lease, channel)),
                Err(e) => {
                    debug!(upstream, error = %e, "pooled SSH connection failed to open a channel; retiring it");
                    self.inner.count(upstream, "replaced");
                    lease.retire();
                }
            }
        }
        self.inner.count(upstream, "unpooled");
        let handle = connect::connect_ssh(settings, credentials).await?;
        let channel = connect::start_sftp(&handle, settings).await?;
        Ok((Lease::unpooled(handle), channel))
    }

    /// A pooled connection with a channel slot reserved (and an open channel
    /// left by an earlier session, if there is one), or `None` when the pool
    /// is full and the caller should connect on its own.
    async fn lease(
        &self,
        key: &PoolKey,
        settings: &SftpSettings,
        credentials: &SftpCredentials,
    ) -> Result<Option<(Lease, Option<SftpChannel>)>> {
        let upstream = key.upstream.as_str();
        for _ in 0..ATTEMPTS {
            let plan = self.plan(key, settings.pool);
            let lease = |id, handle| Lease {
                handle,
                pooled: Some(PooledLease {
                    pool: Arc::downgrade(&self.inner),
                    key: key.clone(),
                    id,
                    retire: false,
                    channel: None,
                }),
            };
            match plan {
                Plan::Reuse {
                    id,
                    handle,
                    channel,
                    ping,
                } => {
                    let mut lease = lease(id, handle);
                    if ping && !healthy(&lease.handle).await {
                        debug!(
                            upstream,
                            "pooled SSH connection failed its health check; retiring it"
                        );
                        self.inner.count(upstream, "replaced");
                        lease.retire();
                        continue;
                    }
                    self.inner.count(upstream, "reused");
                    return Ok(Some((lease, channel.filter(|c| !c.is_closed()))));
                }
                Plan::Wait { id, mut ready } => {
                    let outcome = ready.wait_for(Option::is_some).await.map(|o| o.clone());
                    match outcome {
                        Ok(Some(Ok(handle))) => {
                            self.inner.count(upstream, "reused");
                            return Ok(Some((lease(id, handle), None)));
                        }
                        Ok(Some(Err((kind, detail)))) => {
                            return Err(UpstreamError::new(kind).with_detail(detail));
                        }
                        // The connecting session went away: try again.
                        Ok(None) | Err(_) => continue,
                    }
                }
                Plan::Connect { id, done } => {
                    let mut guard = ConnectGuard {
                        inner: &self.inner,
                        key,
                        id,
                        armed: true,
                    };
                    match connect::connect_ssh(settings, credentials).await {
                        Ok(handle) => {
                            let handle = Arc::new(handle);
                            {
                                let mut state = self.inner.lock();
                                if let Some(entry) = state.entry_mut(key, id) {
                                    entry.handle = Some(handle.clone());
                                    entry.idle_since = Instant::now();
                                }
                                self.inner.publish(&state, upstream);
                            }
                            guard.armed = false;
                            let _ = done.send(Some(Ok(handle.clone())));
                            self.start_reaper();
                            self.inner.count(upstream, "connected");
                            info!(upstream, "new pooled SSH connection");
                            return Ok(Some((lease(id, handle), None)));
                        }
                        Err(e) => {
                            drop(guard);
                            let detail = e.detail().unwrap_or_default().to_owned();
                            let _ = done.send(Some(Err((e.kind(), detail))));
                            return Err(e);
                        }
                    }
                }
                Plan::Unpooled => return Ok(None),
            }
        }
        Ok(None)
    }

    fn plan(&self, key: &PoolKey, settings: PoolSettings) -> Plan {
        let now = Instant::now();
        let mut state = self.inner.lock();
        let mut evicted = None;
        if let Some(entries) = state.by_key.get_mut(key) {
            for entry in entries.iter_mut() {
                entry.idle_channels.retain(|c| !c.is_closed());
            }
            // Ready connections first: one with an open channel to take
            // over, else the busiest that still has room, so that idle ones
            // can expire.
            let ready = entries
                .iter_mut()
                .filter(|e| e.handle.is_some() && e.accepts(now))
                .max_by_key(|e| (!e.idle_channels.is_empty(), e.in_use));
            if let Some(entry) = ready {
                entry.in_use += 1;
                let ping = entry.in_use == 1
                    && now.saturating_duration_since(entry.idle_since) >= PING_AFTER;
                if let Some(handle) = entry.handle.clone() {
                    return Plan::Reuse {
                        id: entry.id,
                        handle,
                        channel: entry.idle_channels.pop(),
                        ping,
                    };
                }
            }
            if let Some(entry) = entries
                .iter_mut()
                .find(|e| e.handle.is_none() && e.accepts(now))
            {
                entry.in_use += 1;
                return Plan::Wait {
                    id: entry.id,
                    ready: entry.ready.clone(),
                };
            }
        }
        if state.pooled_for(&key.upstream) >= settings.max_connections {
            // Make room by closing an idle connection of this upstream.
            let idle = state
                .by_key
                .iter()
                .filter(|(k, _)| k.upstream == key.upstream)
                .flat_map(|(k, entries)| entries.iter().map(move |e| (k, e)))
                .filter(|(_, e)| e.in_use == 0 && e.handle.is_some())
                .min_by_key(|(_, e)| e.idle_since)
                .map(|(k, e)| (k.clone(), e.id));
            match idle {
                Some((k, id)) => evicted = state.remove(&k, id),
                None => return Plan::Unpooled,
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        let (done, ready) = watch::channel(None);
        state.by_key.entry(key.clone()).or_default().push(Entry {
            id,
            handle: None,
            ready,
            settings,
            in_use: 1,
            created: now,
            idle_since: now,
            idle_channels: Vec::new(),
            retired: false,
        });
        self.inner.publish(&state, &key.upstream);
        drop(state);
        if let Some(entry) = evicted {
            disconnect_later(entry.handle);
        }
        Plan::Connect { id, done }
    }

    fn start_reaper(&self) {
        if self.inner.reaper.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut period = Duration::from_millis(500);
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                period = reap(&inner);
            }
        });
    }

    /// Pooled connections open now (tests and diagnostics).
    pub fn open_connections(&self) -> usize {
        let state = self.inner.lock();
        state
            .by_key
            .values()
            .flatten()
            .filter(|e| e.handle.is_some())
            .count()
    }
}

/// Closes connections idle past their timeout, dead or too old and unused;
/// returns how long to wait before looking again.
fn reap(inner: &Inner) -> Duration {
    let now = Instant::now();
    let mut closing = Vec::new();
    let mut shortest = Duration::from_secs(5);
    {
        let mut state = inner.lock();
        let mut upstreams = Vec::new();
        for (key, entries) in state.by_key.iter_mut() {
            entries.retain_mut(|e| {
                let Some(handle) = &e.handle else {
                    return true;
                };
                shortest = shortest.min(e.settings.idle_timeout / 2);
                let idle = now.saturating_duration_since(e.idle_since);
                let expired = e.in_use == 0
                    && (idle >= e.settings.idle_timeout
                        || e.retired
                        || now.saturating_duration_since(e.created) >= e.settings.max_age);
                if expired || handle.is_closed() {
                    if e.in_use > 0 {
                        // Sessions still hold it; close it when they leave.
                        e.retired = true;
                        return true;
                    }
                    debug!(upstream = %key.upstream, idle_ms = idle.as_millis() as u64, "closing pooled SSH connection");
                    closing.push(e.handle.take());
                    upstreams.push(key.upstream.clone());
                    return false;
                }
                true
            });
        }
        state.by_key.retain(|_, entries| !entries.is_empty());
        upstreams.dedup();
        for upstream in upstreams {
            inner.publish(&state, &upstream);
        }
    }
    for handle in closing {
        disconnect_later(handle);
    }
    shortest.clamp(Duration::from_millis(50), Duration::from_secs(5))
}

async fn healthy(handle: &SshHandle) -> bool {
    if handle.is_closed() {
        return false;
    }
    matches!(
        tokio::time::timeout(PING_TIMEOUT, handle.send_ping()).await,
        Ok(Ok(()))
    ) && !handle.is_closed()
}
