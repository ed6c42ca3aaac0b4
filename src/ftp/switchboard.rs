//! The passive ports of one listener, shared between its sessions.
//!
//! A session that sends PASV/EPSV registers a *slot* (its source rules, see
//! `source_policy`) on a port. The port's listening socket stays open while
//! at least one slot waits on it and closes as soon as none does, so ports
//! return to the pool the moment their data connection arrived (or the
//! session gave up). Each incoming connection is dispatched by its source
//! address (the PROXY header's, behind a load balancer):
//!
//! 1. a slot whose address rules accept it gets it, and leaves the port;
//! 2. else a slot that accepts a TLS-session proof gets a *candidate*: its
//!    TLS handshake runs now, with the session's config, and only a
//!    handshake that resumed the session makes it the slot's connection;
//! 3. else it is closed at once, logged with both addresses, and counted.
//!    The slot stays open for its real connection.
//!
//! Several slots may share a port (Kubernetes Services expose only a few
//! ports) when `SlotRules::can_share_port_with` says the source address
//! alone tells their connections apart; a slot that could accept any
//! address (TLS proof, `any`) gets a port of its own while it waits.
//!
//! Lock discipline: one `std::sync::Mutex` over the port table, never held
//! across an await; binding and closing sockets under it are plain syscalls.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::data_stream::{DataStream, Secured};
use super::refusals::{Refusal, RefusalCounters};
use super::source_policy::{SlotRules, Verdict};
use crate::config::{CloseNotifyPolicy, ProxyProtocol};
use crate::net::proxy_protocol::{Origin, read_origin};

/// TLS-session candidates one waiting transfer runs at once; more are
/// refused, so a flood of handshakes to one port cannot pile up.
const MAX_CANDIDATES: usize = 4;
/// Pending connections per passive listening socket.
const BACKLOG: u32 = 64;
/// Pause after an accept error that is about the process (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// TLS settings for a protected data connection.
#[derive(Clone)]
pub struct DataTls {
    /// The control connection's session config (its private session cache).
    pub config: Arc<ServerConfig>,
    pub handshake_timeout: Duration,
    pub close_notify: CloseNotifyPolicy,
}

/// What a waiting transfer tells its slot about TLS; known only at the
/// transfer command (the client may connect before sending it).
#[derive(Clone, Default)]
pub enum TlsOffer {
    #[default]
    Unknown,
    Clear,
    Protected(DataTls),
}

/// A data connection handed to its slot.
pub enum Delivered {
    /// Accepted by an address rule; TLS (if any) comes next.
    Tcp(TcpStream),
    /// Accepted because its TLS handshake resumed the session.
    Proven(Secured),
}

impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivered::Tcp(stream) => f.debug_tuple("Tcp").field(stream).finish(),
            Delivered::Proven(_) => f.write_str("Proven(TLS, resumed)"),
        }
    }
}

/// What a session asks for when it opens a passive port.
pub struct SlotRequest {
    pub rules: SlotRules,
    /// PROXY protocol on the port (from the listener's config).
    pub proxy: Option<ProxyProtocol>,
    /// How long the slot may wait for its transfer command before another
    /// session may reclaim its port (`data_connect_timeout`).
    pub unclaimed_after: Duration,
    /// Where refusals are counted (the listener's metric series).
    pub refusals: RefusalCounters,
}

/// Why no port could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("every passive port in {0}-{1} is in use")]
    Exhausted(u16, u16),
    #[error("cannot listen on a passive port: {0}")]
    Io(#[from] io::Error),
}

/// The state a slot shares with the session waiting on it and with its
/// candidates.
pub struct SlotShared {
    delivery: Mutex<Option<oneshot::Sender<Delivered>>>,
    /// Set when the transfer command started waiting (no reclaiming then).
    claimed: AtomicBool,
    /// How many connections this slot was seen to refuse.
    pub refused: watch::Sender<u32>,
    pub offer: watch::Sender<TlsOffer>,
    /// Cancelled when the slot ends, so its candidates stop.
    closed: CancellationToken,
    candidates: AtomicUsize,
}

impl SlotShared {
    fn take_sender(&self) -> Option<oneshot::Sender<Delivered>> {
        self.delivery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The session is waiting now; the slot is no longer reclaimable.
    pub fn claim(&self) {
        self.claimed.store(true, Ordering::Relaxed);
    }

    /// TLS-session candidates still handshaking.
    pub fn candidates_in_flight(&self) -> usize {
        self.candidates.load(Ordering::Acquire)
    }

    fn note_refusal(&self) {
        self.refused.send_modify(|n| *n = n.saturating_add(1));
    }
}

/// A slot as registered: what its session holds.
pub struct Registration {
    pub port: SocketAddr,
    pub id: u64,
    pub shared: Arc<SlotShared>,
    pub delivered: oneshot::Receiver<Delivered>,
}

struct Slot {
    id: u64,
    refusals: RefusalCounters,
    rules: SlotRules,
    /// When an unclaimed slot may be reclaimed.
    expires: Instant,
    shared: Arc<SlotShared>,
}

struct Port {
    proxy: Option<ProxyProtocol>,
    /// The listener's refusal counters (every slot of a switchboard carries
    /// the same ones), for refusals no slot can be blamed for.
    refusals: RefusalCounters,
    slots: Vec<Slot>,
    /// The only lasting reference to the listening socket (its accept loop
    /// holds a weak one), so removing the port closes the socket right
    /// away and the port can be listened on again at once.
    _listener: Arc<TcpListener>,
    accept: AbortHandle,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.accept.abort();
        for slot in &self.slots {
            slot.shared.closed.cancel();
        }
    }
}

/// One listener's open passive ports and the slots waiting on them.
pub struct Switchboard {
    ports: Mutex<HashMap<SocketAddr, Port>>,
    /// How many ports listen (`ftpbridge_passive_ports_open`), set whenever
    /// the table's lock is released.
    open_gauge: Gauge,
    next_id: AtomicU64,
    /// The counters of the last slot opened (the listener's): for refusals
    /// on a port that closed meanwhile.
    last_refusals: Mutex<RefusalCounters>,
}

impl Switchboard {
    pub fn new(open_gauge: Gauge) -> Arc<Switchboard> {
        Arc::new(Switchboard {
            ports: Mutex::new(HashMap::new()),
            open_gauge,
            next_id: AtomicU64::new(1),
            last_refusals: Mutex::new(RefusalCounters::default()),
        })
    }

    fn ports(&self) -> PortTable<'_> {
        PortTable {
            ports: self.ports.lock().unwrap_or_else(|e| e.into_inner()),
            gauge: &self.open_gauge,
        }
    }

    /// Registers a slot on a port of `range` at `ip`: an open port it can
    /// share, else a free one (`None`: any port the kernel picks).
    pub fn open(
        self: &Arc<Self>,
        ip: IpAddr,
        range: Option<&RangeInclusive<u16>>,
        request: SlotRequest,
    ) -> Result<Registration, OpenError> {
        *self.last_refusals.lock().unwrap_or_else(|e| e.into_inner()) = request.refusals.clone();
        let mut ports = self.ports();
        reclaim_unclaimed(&mut ports);
        let key = match range {
            Some(range) => match shareable_port(&ports, ip, range, &request) {
                Some(key) => key,
                None => {
                    let (key, listener) = bind_free_port(&ports, ip, range)?;
                    self.add_port(&mut ports, key, listener, &request);
                    key
                }
            },
            None => {
                let listener = listen(SocketAddr::new(ip, 0))?;
                let key = listener.local_addr()?;
                self.add_port(&mut ports, key, listener, &request);
                key
            }
        };
        let (sender, delivered) = oneshot::channel();
        let shared = Arc::new(SlotShared {
            delivery: Mutex::new(Some(sender)),
            claimed: AtomicBool::new(false),
            refused: watch::Sender::new(0),
            offer: watch::Sender::new(TlsOffer::Unknown),
            closed: CancellationToken::new(),
            candidates: AtomicUsize::new(0),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let port = ports
            .get_mut(&key)
            .ok_or_else(|| io::Error::other("passive port vanished"))?;
        port.slots.push(Slot {
            id,
            refusals: request.refusals,
            rules: request.rules,
            expires: Instant::now() + request.unclaimed_after,
            shared: shared.clone(),
        });
        debug!(port = %key, sessions = port.slots.len(), "passive port slot opened");
        Ok(Registration {
            port: key,
            id,
            shared,
            delivered,
        })
    }

    fn add_port(
        self: &Arc<Self>,
        ports: &mut HashMap<SocketAddr, Port>,
        key: SocketAddr,
        listener: TcpListener,
        request: &SlotRequest,
    ) {
        let listener = Arc::new(listener);
        let task = tokio::spawn(accept_loop(
            Arc::downgrade(self),
            key,
            Arc::downgrade(&listener),
            request.proxy.clone(),
        ));
        ports.insert(
            key,
            Port {
                proxy: request.proxy.clone(),
                refusals: request.refusals.clone(),
                slots: Vec::new(),
                _listener: listener,
                accept: task.abort_handle(),
            },
        );
    }

    /// Ends a slot (its session no longer waits); closes the port when it
    /// was the last.
    pub fn remove(&self, key: SocketAddr, id: u64) {
        let mut ports = self.ports();
        if let Some(port) = ports.get_mut(&key) {
            port.slots.retain(|slot| slot.id != id);
            if port.slots.is_empty() {
                ports.remove(&key);
                debug!(port = %key, "passive port closed");
            }
        }
    }

    /// Open passive ports (for tests and metrics).
    pub fn open_ports(&self) -> usize {
        self.ports().len()
    }

    /// Hands `stream`, from `source` (via `proxy`), to the slot it belongs to.
    fn dispatch(
        self: &Arc<Self>,
        key: SocketAddr,
        stream: TcpStream,
        source: SocketAddr,
        proxy: Option<SocketAddr>,
    ) {
        let mut ports = self.ports();
        let Some(port) = ports.get_mut(&key) else {
            drop(ports);
            self.refuse_unexpected(key, stream, source);
            return;
        };
        let verdicts: Vec<Verdict> = port
            .slots
            .iter()
            .map(|slot| slot.rules.judge(source.ip()))
            .collect();
        if let Some(index) = verdicts.iter().position(|v| *v == Verdict::Accept) {
            let slot = port.slots.remove(index);
            if port.slots.is_empty() {
                ports.remove(&key);
            }
            drop(ports);
            debug!(port = %key, data_peer = %source, via = ?proxy, control_peer = %slot.rules.control_ip(), "data connection accepted");
            deliver(&slot.shared, Delivered::Tcp(stream), key, source);
            return;
        }
        if let Some(index) = verdicts.iter().position(|v| *v == Verdict::NeedsTlsProof) {
            let slot = &port.slots[index];
            let shared = slot.shared.clone();
            let refusals = slot.refusals.clone();
            let (id, control) = (slot.id, slot.rules.control_ip());
            drop(ports);
            if shared.candidates.fetch_add(1, Ordering::AcqRel) >= MAX_CANDIDATES {
                shared.candidates.fetch_sub(1, Ordering::AcqRel);
                refuse(
                    &refusals,
                    Refusal::CandidateLimit,
                    key,
                    stream,
                    source,
                    &[control],
                );
                return;
            }
            debug!(port = %key, data_peer = %source, control_peer = %control, "data connection not accepted by address; checking its TLS session");
            let candidate = Candidate {
                key,
                id,
                shared,
                refusals,
                source,
            };
            tokio::spawn(self.clone().prove(candidate, stream));
            return;
        }
        let controls: Vec<IpAddr> = port.slots.iter().map(|s| s.rules.control_ip()).collect();
        // With one session on the port, the refusal is about it: its transfer
        // then fails fast instead of waiting out the whole timeout.
        if let [slot] = port.slots.as_slice() {
            slot.shared.note_refusal();
        }
        let refusals = port.refusals.clone();
        drop(ports);
        refuse(
            &refusals,
            Refusal::ForeignAddress,
            key,
            stream,
            source,
            &controls,
        );
    }

    /// Runs a TLS-session candidate's handshake once the transfer says it is
    /// protected; a resumed handshake makes it the slot's connection.
    async fn prove(self: Arc<Self>, candidate: Candidate, stream: TcpStream) {
        let Candidate {
            key,
            id,
            shared,
            refusals,
            source,
        } = candidate;
        let _candidate = CandidateGuard(shared.clone());
        let mut offers = shared.offer.subscribe();
        let offer = tokio::select! {
            _ = shared.closed.cancelled() => return,
            offer = offers.wait_for(|o| !matches!(o, TlsOffer::Unknown)) => match offer {
                Ok(offer) => offer.clone(),
                Err(_) => return,
            },
        };
        let control = self.control_of(key, id);
        let tls = match offer {
            TlsOffer::Protected(tls) => tls,
            TlsOffer::Clear | TlsOffer::Unknown => {
                shared.note_refusal();
                refuse(
                    &refusals,
                    Refusal::ForeignAddress,
                    key,
                    stream,
                    source,
                    &control,
                );
                return;
            }
        };
        let handshake =
            DataStream::secure(stream, tls.config, tls.handshake_timeout, tls.close_notify);
        let result = tokio::select! {
            _ = shared.closed.cancelled() => return,
            result = handshake => result,
        };
        match result {
            Ok(secured) if secured.resumed => {
                let taken = self.take_slot(key, id);
                match taken {
                    Some(slot) => {
                        info!(port = %key, data_peer = %source, control_peer = %slot.rules.control_ip(), "data connection accepted by TLS session: its handshake resumed the control connection's session");
                        deliver(&slot.shared, Delivered::Proven(secured), key, source);
                    }
                    None => {
                        debug!(port = %key, data_peer = %source, "TLS-session candidate arrived after its slot was taken");
                        refusals.record(Refusal::NoTransferWaiting);
                    }
                }
            }
            Ok(_) => {
                shared.note_refusal();
                refusals.record(Refusal::NotResumed);
                warn!(port = %key, data_peer = %source, control_peer = ?control, reason = Refusal::NotResumed.label(), "refused a data connection: its address is not allowed and its TLS handshake did not resume the control connection's session");
            }
            Err(e) => {
                shared.note_refusal();
                refusals.record(Refusal::TlsHandshake);
                warn!(port = %key, data_peer = %source, control_peer = ?control, error = %e, reason = Refusal::TlsHandshake.label(), "refused a data connection: its address is not allowed and its TLS handshake failed");
            }
        }
    }

    fn control_of(&self, key: SocketAddr, id: u64) -> Vec<IpAddr> {
        self.ports()
            .get(&key)
            .and_then(|port| port.slots.iter().find(|s| s.id == id))
            .map(|slot| vec![slot.rules.control_ip()])
            .unwrap_or_default()
    }

    fn take_slot(&self, key: SocketAddr, id: u64) -> Option<Slot> {
        let mut ports = self.ports();
        let port = ports.get_mut(&key)?;
        let index = port.slots.iter().position(|s| s.id == id)?;
        let slot = port.slots.remove(index);
        if port.slots.is_empty() {
            ports.remove(&key);
        }
        Some(slot)
    }

    /// The counters of the port `key`, or the listener's last known ones.
    fn refusals_of(&self, key: SocketAddr) -> RefusalCounters {
        match self.ports().get(&key) {
            Some(port) => port.refusals.clone(),
            None => self
                .last_refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn refuse_unexpected(&self, key: SocketAddr, stream: TcpStream, source: SocketAddr) {
        self.refusals_of(key).record(Refusal::NoTransferWaiting);
        info!(port = %key, data_peer = %source, reason = Refusal::NoTransferWaiting.label(), "refused a connection to a passive port where no transfer waits");
        close(stream);
    }

    async fn after_proxy_header(
        self: Arc<Self>,
        key: SocketAddr,
        mut stream: TcpStream,
        peer: SocketAddr,
        proxy: ProxyProtocol,
    ) {
        match read_origin(
            &mut stream,
            peer,
            &proxy.trusted_proxies,
            proxy.header_timeout,
        )
        .await
        {
            Ok(Origin::Local(_)) => {
                debug!(port = %key, %peer, "PROXY LOCAL connection (health check) on a passive port");
            }
            Ok(origin) => self.dispatch(key, stream, origin.client(), origin.proxy()),
            Err(e) => {
                self.refusals_of(key).record(Refusal::ProxyHeader);
                warn!(port = %key, proxy = %peer, error = %e, reason = Refusal::ProxyHeader.label(), "refused a passive data connection from a trusted proxy");
                close(stream);
            }
        }
    }
}

/// The locked port table; publishes the number of open ports on unlock, so
/// every change (open, deliver, remove, reclaim) reaches the gauge.
struct PortTable<'a> {
    ports: MutexGuard<'a, HashMap<SocketAddr, Port>>,
    gauge: &'a Gauge,
}

impl std::ops::Deref for PortTable<'_> {
    type Target = HashMap<SocketAddr, Port>;

    fn deref(&self) -> &Self::Target {
        &self.ports
    }
}

impl std::ops::DerefMut for PortTable<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ports
    }
}

impl Drop for PortTable<'_> {
    fn drop(&mut self) {
        self.gauge
            .set(i64::try_from(self.ports.len()).unwrap_or(i64::MAX));
    }
}

/// A connection that only a TLS-session proof can admit, and its slot.
struct Candidate {
    key: SocketAddr,
    id: u64,
    shared: Arc<SlotShared>,
    refusals: RefusalCounters,
    source: SocketAddr,
}

/// Counts and logs a refused connection, and closes it.
fn refuse(
    refusals: &RefusalCounters,
    reason: Refusal,
    key: SocketAddr,
    stream: TcpStream,
    source: SocketAddr,
    controls: &[IpAddr],
) {
    refusals.record(reason);
    warn!(port = %key, data_peer = %source, control_peer = ?controls, reason = reason.label(), "refused a passive data connection");
    close(stream);
}

/// Decrements the slot's candidate count when a candidate ends.
struct CandidateGuard(Arc<SlotShared>);

impl Drop for CandidateGuard {
    fn drop(&mut self) {
        self.0.candidates.fetch_sub(1, Ordering::AcqRel);
    }
}

fn deliver(shared: &SlotShared, connection: Delivered, key: SocketAddr, source: SocketAddr) {
    let sent = shared
        .take_sender()
        .map(|sender| sender.send(connection).is_ok())
        .unwrap_or(false);
    shared.closed.cancel();
    if !sent {
        debug!(port = %key, data_peer = %source, "the session stopped waiting before its data connection arrived");
    }
}

/// Slots whose session never started waiting within its time: their ports
/// go back to the pool (their transfer command then gets 425).
fn reclaim_unclaimed(ports: &mut HashMap<SocketAddr, Port>) {
    let now = Instant::now();
    for port in ports.values_mut() {
        port.slots.retain(|slot| {
            let keep = slot.shared.claimed.load(Ordering::Relaxed) || now < slot.expires;
            if !keep {
                slot.shared.closed.cancel();
                drop(slot.shared.take_sender());
            }
            keep
        });
    }
    ports.retain(|_, port| !port.slots.is_empty());
}

fn shareable_port(
    ports: &HashMap<SocketAddr, Port>,
    ip: IpAddr,
    range: &RangeInclusive<u16>,
    request: &SlotRequest,
) -> Option<SocketAddr> {
    ports
        .iter()
        .filter(|(key, _)| key.ip() == ip && range.contains(&key.port()))
        .filter(|(_, port)| {
            port.proxy == request.proxy
                && port
                    .slots
                    .iter()
                    .all(|slot| slot.rules.can_share_port_with(&request.rules))
        })
        .map(|(key, _)| *key)
        .next()
}

/// Binds the first free port of `range`, starting at a random one so ports
/// are not predictable.
fn bind_free_port(
    ports: &HashMap<SocketAddr, Port>,
    ip: IpAddr,
    range: &RangeInclusive<u16>,
) -> Result<(SocketAddr, TcpListener), OpenError> {
    let (low, high) = (*range.start(), *range.end());
    let span = u32::from(high - low) + 1;
    let start = rand::random::<u32>() % span;
    for step in 0..span {
        let Ok(port) = u16::try_from(u32::from(low) + (start + step) % span) else {
            continue;
        };
        let key = SocketAddr::new(ip, port);
        if ports.contains_key(&key) {
            continue;
        }
        match listen(key) {
            Ok(listener) => return Ok((key, listener)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(OpenError::Io(e)),
        }
    }
    Err(OpenError::Exhausted(low, high))
}

/// A listening socket; SO_REUSEADDR so a port whose last data connection is
/// in TIME_WAIT can be listened on again at once.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts on a passive port until the port is removed. The socket is only
/// borrowed for each poll, so dropping the port closes it synchronously.
async fn accept_loop(
    board: Weak<Switchboard>,
    key: SocketAddr,
    listener: Weak<TcpListener>,
    proxy: Option<ProxyProtocol>,
) {
    loop {
        let accepted = std::future::poll_fn(|cx| match listener.upgrade() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => std::task::Poll::Ready(None),
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_transient_accept_error(&e) => {
                debug!(port = %key, error = %e, "transient accept error on a passive port");
                continue;
            }
            Err(e) => {
                warn!(port = %key, error = %e, "accept failed on a passive port");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(board) = board.upgrade() else {
            return;
        };
        let _ = stream.set_nodelay(true);
        match &proxy {
            Some(proxy) if crate::net::cidr::any_contains(&proxy.trusted_proxies, peer.ip()) => {
                // The header read waits on the peer: never in this loop.
                tokio::spawn(board.after_proxy_header(key, stream, peer, proxy.clone()));
            }
            _ => board.dispatch(key, stream, peer, None),
        }
    }
}

/// Errors about one aborted incoming connection, not about the socket.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Closes a refused connection at once, with a FIN rather than a reset: a
/// reset can reach the client before its `connect` completes, and clients
/// such as curl then take the data port for unreachable and retry another
/// way, where a plain close lets them read the 425 that explains why.
fn close(stream: TcpStream) {
    drop(stream);
}
